//! Hard constraints (does a task fit a node, and on which devices) and the choice of
//! devices inside a node, topology first.

use std::fmt;

use crate::cluster::NodeState;
use crate::request::Request;

/// Why a node cannot take a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    Cpu,
    Memory,
    /// The node has no devices at all.
    NoDevices,
    /// The node's device model is not accepted.
    Model,
    /// Too few devices with room (after UUID filters).
    Devices,
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unfit::Cpu => "insufficient cpu",
            Unfit::Memory => "insufficient memory",
            Unfit::NoDevices => "node has no devices",
            Unfit::Model => "device model not accepted",
            Unfit::Devices => "too few devices with room for the request",
        })
    }
}

/// How devices are ordered inside a node once topology is satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceOrder {
    /// Least free compute first (fills shared devices, keeps idle ones whole).
    #[default]
    Tightest,
    /// Most free compute first (spreads tasks over devices).
    Loosest,
    /// Lowest index first.
    Index,
}

/// Whether device `i` of `node` can hold one device's worth of `request`.
pub fn device_fits(node: &NodeState, i: usize, request: &Request) -> bool {
    if request.has_uuid_filter() && !request.accepts_uuid(&node.spec.devices[i].uuid) {
        return false;
    }
    if request.is_whole_device() {
        node.device_is_idle(i)
    } else {
        node.device_free_milli[i] >= request.milli_per_device
            && node.device_free_memory[i] >= request.memory_per_device_mib
    }
}

/// Checks every hard constraint of `request` on `node`.
pub fn check(node: &NodeState, request: &Request) -> Result<(), Unfit> {
    if node.cpu_free < request.cpu_milli {
        return Err(Unfit::Cpu);
    }
    if node.memory_free < request.memory_mib {
        return Err(Unfit::Memory);
    }
    if request.is_cpu_only() {
        return Ok(());
    }
    match node.spec.model {
        _ if node.device_count() == 0 => return Err(Unfit::NoDevices),
        Some(m) if request.models.contains(m) => {}
        _ => return Err(Unfit::Model),
    }
    let fitting = (0..node.device_count())
        .filter(|&i| device_fits(node, i, request))
        .count();
    if fitting < request.device_count as usize {
        return Err(Unfit::Devices);
    }
    Ok(())
}

/// Picks the devices for `request` on `node`, or `None` when it does not fit.
///
/// A multi-device request stays inside one NVLink group when some group has enough
/// devices with room, else inside one NUMA node, else takes any; among candidate groups
/// the one with the fewest such devices wins, so larger groups stay whole for larger tasks.
pub fn choose_devices(
    node: &NodeState,
    request: &Request,
    order: DeviceOrder,
) -> Option<Vec<usize>> {
    let want = request.device_count as usize;
    if want == 0 {
        return Some(Vec::new());
    }
    let mut fitting: Vec<usize> = (0..node.device_count())
        .filter(|&i| device_fits(node, i, request))
        .collect();
    if fitting.len() < want {
        return None;
    }
    sort_devices(node, &mut fitting, order);
    if want > 1 {
        let link = |i: usize| node.spec.devices[i].link_group;
        let numa = |i: usize| node.spec.devices[i].numa;
        if let Some(group) = smallest_group(&fitting, want, link) {
            return Some(group);
        }
        if let Some(group) = smallest_group(&fitting, want, numa) {
            return Some(group);
        }
    }
    fitting.truncate(want);
    Some(fitting)
}

fn sort_devices(node: &NodeState, devices: &mut [usize], order: DeviceOrder) {
    match order {
        DeviceOrder::Tightest => devices.sort_by_key(|&i| (node.device_free_milli[i], i)),
        DeviceOrder::Loosest => {
            devices.sort_by_key(|&i| (std::cmp::Reverse(node.device_free_milli[i]), i));
        }
        DeviceOrder::Index => devices.sort_unstable(),
    }
}

/// The first `want` devices (in the given order) of the smallest known group holding at
/// least `want` of them; ties go to the group met first.
fn smallest_group(
    ordered: &[usize],
    want: usize,
    group_of: impl Fn(usize) -> Option<u16>,
) -> Option<Vec<usize>> {
    let mut groups: Vec<(u16, usize)> = Vec::new();
    for &i in ordered {
        let Some(g) = group_of(i) else { continue };
        match groups.iter_mut().find(|(k, _)| *k == g) {
            Some((_, n)) => *n += 1,
            None => groups.push((g, 1)),
        }
    }
    let (best, _) = groups
        .iter()
        .filter(|(_, n)| *n >= want)
        .min_by_key(|(_, n)| *n)?;
    Some(
        ordered
            .iter()
            .copied()
            .filter(|&i| group_of(i) == Some(*best))
            .take(want)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{DeviceSpec, NodeSpec};
    use crate::model::ModelSet;

    fn node_with(topology: &[(Option<u16>, Option<u16>)]) -> NodeState {
        NodeState::new(NodeSpec {
            name: "n".into(),
            cpu_milli: 64_000,
            memory_mib: 65_536,
            model: Some(0),
            devices: topology
                .iter()
                .enumerate()
                .map(|(i, &(numa, link))| DeviceSpec {
                    uuid: format!("GPU-{i}"),
                    memory_mib: 16_384,
                    numa,
                    link_group: link,
                })
                .collect(),
        })
    }

    #[test]
    fn check_reports_the_first_missing_resource() {
        let node = node_with(&[(None, None)]);
        assert_eq!(
            check(&node, &Request::cpu_only(100_000, 0)),
            Err(Unfit::Cpu)
        );
        assert_eq!(
            check(&node, &Request::cpu_only(1, 100_000)),
            Err(Unfit::Memory)
        );
        assert_eq!(check(&node, &Request::whole(1, 1, 2)), Err(Unfit::Devices));
        let mut other_model = Request::share(1, 1, 100, 0);
        other_model.models = ModelSet::NONE.with(3);
        assert_eq!(check(&node, &other_model), Err(Unfit::Model));
        let mut too_much_memory = Request::share(1, 1, 100, 20_000);
        too_much_memory.models = ModelSet::ANY;
        assert_eq!(check(&node, &too_much_memory), Err(Unfit::Devices));
        assert_eq!(check(&node, &Request::share(1, 1, 100, 8_000)), Ok(()));
    }

    #[test]
    fn multi_device_requests_stay_in_one_nvlink_group_when_one_has_room() {
        // Two NVLink quads; device 1 of the first quad is busy, so a 4-device task must
        // take the second quad even though lower indices are free.
        let mut node = node_with(&[
            (Some(0), Some(0)),
            (Some(0), Some(0)),
            (Some(0), Some(0)),
            (Some(0), Some(0)),
            (Some(1), Some(1)),
            (Some(1), Some(1)),
            (Some(1), Some(1)),
            (Some(1), Some(1)),
        ]);
        node.device_free_milli[1] = 500;
        let chosen = choose_devices(&node, &Request::whole(1, 1, 4), DeviceOrder::Index).unwrap();
        assert_eq!(chosen, vec![4, 5, 6, 7]);
        // A pair fits in the partly used quad, the smaller candidate group.
        let pair = choose_devices(&node, &Request::whole(1, 1, 2), DeviceOrder::Index).unwrap();
        assert_eq!(pair, vec![0, 2]);
    }

    #[test]
    fn numa_is_used_when_no_link_group_has_room() {
        // Link groups are pairs; NUMA nodes are quads. A 3-device task fits no pair,
        // so it lands inside one NUMA node: the first, whose three free devices fit it
        // exactly, leaving the second NUMA node whole for a 4-device task.
        let mut node = node_with(&[
            (Some(0), Some(0)),
            (Some(0), Some(0)),
            (Some(0), Some(1)),
            (Some(0), Some(1)),
            (Some(1), Some(2)),
            (Some(1), Some(2)),
            (Some(1), Some(3)),
            (Some(1), Some(3)),
        ]);
        node.device_free_milli[0] = 0;
        let chosen = choose_devices(&node, &Request::whole(1, 1, 3), DeviceOrder::Index).unwrap();
        assert_eq!(chosen, vec![1, 2, 3]);
        node.device_free_milli[1] = 0;
        let chosen = choose_devices(&node, &Request::whole(1, 1, 3), DeviceOrder::Index).unwrap();
        assert_eq!(chosen, vec![4, 5, 6]);
    }

    #[test]
    fn without_topology_the_device_order_decides() {
        let mut node = node_with(&[(None, None), (None, None), (None, None)]);
        node.device_free_milli = vec![1000, 300, 600];
        let r = Request::share(1, 1, 250, 0);
        assert_eq!(
            choose_devices(&node, &r, DeviceOrder::Tightest),
            Some(vec![1])
        );
        assert_eq!(
            choose_devices(&node, &r, DeviceOrder::Loosest),
            Some(vec![0])
        );
        assert_eq!(choose_devices(&node, &r, DeviceOrder::Index), Some(vec![0]));
        let mut pinned = r.clone();
        pinned.uuid_include = vec!["GPU-2".into()];
        assert_eq!(
            choose_devices(&node, &pinned, DeviceOrder::Tightest),
            Some(vec![2])
        );
        assert_eq!(
            choose_devices(&node, &Request::share(1, 1, 700, 0), DeviceOrder::Tightest),
            Some(vec![0])
        );
    }
}
