//! A read-only view of a node's ledger for metrics and `hami top`: the node part's devices and,
//! per container directory, its limits and a copy of its usage.
//!
//! The usage parts are the containers' to write, so they are read with
//! [`UsageCopy::read`](hami_ledger::UsageCopy::read) (no mapping, no blocking open): a hostile
//! container can make its own entry unreadable, never the reader fault or hang. A container
//! whose files cannot be read is kept in the view with its problem as text, so one bad entry
//! never hides the others. A container appears as soon as its directory exists.

use std::path::PathBuf;

use hami_ledger::paths::LedgerDir;
use hami_ledger::{ContainerLimits, DeviceInfo, NodeLedger, UsageCopy, limits};

/// What a node's ledger holds at one moment.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub root: PathBuf,
    /// The node part's devices, each with what the containers hold on it.
    pub devices: Vec<DeviceView>,
    /// Why the node part could not be read (then `devices` is empty).
    pub node_problem: Option<String>,
    /// Container entries, ordered by id.
    pub containers: Vec<ContainerView>,
    /// Why the container directory could not be listed (then `containers` is empty).
    pub containers_problem: Option<String>,
}

/// One device of the node with the containers' aggregates on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceView {
    pub info: DeviceInfo,
    /// Containers whose limits name this device.
    pub containers: usize,
    /// Containers on this device without a memory cap (not in `memory_committed`).
    pub uncapped_containers: usize,
    /// Sum of the memory caps of the containers on this device, bytes.
    pub memory_committed: u64,
    /// Sum of what those containers' usage parts say they hold on it, bytes.
    pub memory_used: u64,
}

/// One container directory of the ledger.
#[derive(Clone, Debug)]
pub struct ContainerView {
    /// The directory name: the container id the shim or `hami run` used.
    pub id: String,
    pub limits: Option<ContainerLimits>,
    pub usage: Option<UsageCopy>,
    /// What could not be read, in words (limits, usage or both); `None` when all was read.
    pub problem: Option<String>,
}

/// One device of one container: its slice and what it uses of it.
#[derive(Clone, Copy, Debug)]
pub struct ContainerDevice<'a> {
    /// Position in the container's own device order (its usage part's index).
    pub position: usize,
    pub uuid: &'a str,
    /// The node's index of the device (`None`: the node part does not list it).
    pub node_index: Option<u32>,
    pub limit: &'a hami_ledger::DeviceLimit,
    /// Bytes held, per the usage part (`None` when it could not be read).
    pub used: Option<u64>,
    pub compute: Option<hami_ledger::ComputeCounters>,
}

impl NodeView {
    /// Reads the node part and every container entry under `ledger` once.
    pub fn read(ledger: &LedgerDir) -> Self {
        let (infos, node_problem) = match NodeLedger::open(ledger.node()) {
            Ok(node) => (node.devices(), None),
            Err(err) => (Vec::new(), Some(err.to_string())),
        };
        let (containers, containers_problem) = match read_containers(ledger) {
            Ok(containers) => (containers, None),
            Err(problem) => (Vec::new(), Some(problem)),
        };
        let devices = infos
            .into_iter()
            .map(|info| aggregate(info, &containers))
            .collect();
        Self {
            root: ledger.root().to_owned(),
            devices,
            node_problem,
            containers,
            containers_problem,
        }
    }

    /// The node's device with `uuid`.
    pub fn device(&self, uuid: &str) -> Option<&DeviceView> {
        self.devices.iter().find(|d| d.info.uuid == uuid)
    }

    /// The devices of `container` with their node index, cap and usage.
    pub fn container_devices<'a>(
        &'a self,
        container: &'a ContainerView,
    ) -> Vec<ContainerDevice<'a>> {
        let Some(limits) = &container.limits else {
            return Vec::new();
        };
        limits
            .devices
            .iter()
            .enumerate()
            .map(|(position, limit)| ContainerDevice {
                position,
                uuid: &limit.uuid,
                node_index: self.device(&limit.uuid).map(|d| d.info.index),
                limit,
                used: container
                    .usage
                    .as_ref()
                    .and_then(|u| u.snapshot.devices.get(position).copied()),
                compute: container
                    .usage
                    .as_ref()
                    .and_then(|u| u.compute.get(position).copied()),
            })
            .collect()
    }
}

/// `<root>/containers`, the parent of every container directory.
fn containers_root(ledger: &LedgerDir) -> Option<PathBuf> {
    // The ledger's paths module names a container's directory, not their parent: ask it for
    // one with a fixed valid id and take the parent, so the layout stays defined in one place.
    let probe = ledger.container_dir("probe").ok()?;
    probe.parent().map(PathBuf::from)
}

fn read_containers(ledger: &LedgerDir) -> Result<Vec<ContainerView>, String> {
    let Some(root) = containers_root(ledger) else {
        return Err(format!(
            "{} has no containers directory path",
            ledger.root().display()
        ));
    };
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        // No container has started yet: an empty node, not a problem.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(format!("cannot list {}: {err}", root.display())),
    };
    let mut containers: Vec<ContainerView> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        // Temporary names of atomic writers and anything else that is not a container id.
        .filter(|id| ledger.container_dir(id).is_ok())
        .map(|id| read_container(ledger, id))
        .collect();
    containers.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(containers)
}

fn read_container(ledger: &LedgerDir, id: String) -> ContainerView {
    let mut problems = Vec::new();
    let limits = match ledger.limits(&id) {
        Ok(path) => limits::read(&path)
            .map_err(|err| problems.push(err.to_string()))
            .ok(),
        Err(err) => {
            problems.push(err.to_string());
            None
        }
    };
    let usage = match ledger.usage(&id) {
        Ok(path) => UsageCopy::read(&path)
            .map_err(|err| problems.push(err.to_string()))
            .ok(),
        Err(err) => {
            problems.push(err.to_string());
            None
        }
    };
    if let (Some(limits), Some(usage)) = (&limits, &usage)
        && limits.devices.len() != usage.snapshot.devices.len()
    {
        problems.push(format!(
            "limits name {} devices, usage counts {}",
            limits.devices.len(),
            usage.snapshot.devices.len()
        ));
    }
    ContainerView {
        id,
        limits,
        usage,
        problem: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}

fn aggregate(info: DeviceInfo, containers: &[ContainerView]) -> DeviceView {
    let mut view = DeviceView {
        info,
        containers: 0,
        uncapped_containers: 0,
        memory_committed: 0,
        memory_used: 0,
    };
    for container in containers {
        let Some(limits) = &container.limits else {
            continue;
        };
        let Some(position) = limits.devices.iter().position(|d| d.uuid == view.info.uuid) else {
            continue;
        };
        view.containers += 1;
        match limits.devices[position].memory_limit {
            Some(cap) => view.memory_committed = view.memory_committed.saturating_add(cap),
            None => view.uncapped_containers += 1,
        }
        let used = container
            .usage
            .as_ref()
            .and_then(|u| u.snapshot.devices.get(position).copied())
            .unwrap_or(0);
        view.memory_used = view.memory_used.saturating_add(used);
    }
    view
}

#[cfg(test)]
mod tests {
    use hami_ledger::{ComputePolicy, DeviceLimit, Priority, UsageLedger, Vendor};

    use super::*;

    const MIB: u64 = 1 << 20;

    fn device(index: u32) -> DeviceInfo {
        DeviceInfo {
            uuid: format!("GPU-view0000-0000-4000-8000-{index:012x}"),
            index,
            vendor: Vendor::Nvidia,
            total_memory: 1024 * MIB,
            compute_units: 132,
        }
    }

    fn entry(ledger: &LedgerDir, id: &str, devices: &[(u32, Option<u64>)]) -> UsageLedger {
        std::fs::create_dir_all(ledger.container_dir(id).unwrap()).unwrap();
        let limits = ContainerLimits {
            container_id: id.into(),
            devices: devices
                .iter()
                .map(|&(index, memory_limit)| DeviceLimit {
                    uuid: device(index).uuid,
                    memory_limit,
                    compute_percent: Some(30),
                    policy: ComputePolicy::Hard,
                    priority: Priority::Normal,
                })
                .collect(),
        };
        limits::write(ledger.limits(id).unwrap(), &limits).unwrap();
        let path = ledger.usage(id).unwrap();
        UsageLedger::create(&path, devices.len()).unwrap();
        UsageLedger::attach(&path).unwrap()
    }

    #[test]
    fn aggregates_per_device_and_keeps_a_bad_container_visible() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = LedgerDir::new(dir.path());
        NodeLedger::create(ledger.node(), &[device(0), device(1)]).unwrap();
        let a = entry(&ledger, "a", &[(0, Some(256 * MIB)), (1, Some(128 * MIB))]);
        let b = entry(&ledger, "b", &[(1, None)]);
        let slot_a = a.register().unwrap();
        a.reserve(&slot_a, 0, 10 * MIB, u64::MAX).unwrap();
        a.reserve(&slot_a, 1, 2 * MIB, u64::MAX).unwrap();
        let slot_b = b.register().unwrap();
        b.reserve(&slot_b, 0, 6 * MIB, u64::MAX).unwrap();
        // A container that truncated its usage part.
        entry(&ledger, "c", &[(0, Some(MIB))]);
        std::fs::write(ledger.usage("c").unwrap(), b"garbage").unwrap();
        // A directory only: the entry is being written.
        std::fs::create_dir_all(ledger.container_dir("d").unwrap()).unwrap();

        let view = NodeView::read(&ledger);
        assert_eq!(view.node_problem, None);
        let ids: Vec<&str> = view.containers.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        assert_eq!(
            (view.devices[0].containers, view.devices[0].memory_committed),
            (2, 256 * MIB + MIB)
        );
        assert_eq!(view.devices[0].memory_used, 10 * MIB);
        assert_eq!(
            (
                view.devices[1].containers,
                view.devices[1].uncapped_containers,
                view.devices[1].memory_committed,
                view.devices[1].memory_used
            ),
            (2, 1, 128 * MIB, 2 * MIB + 6 * MIB)
        );
        assert_eq!(view.containers[0].problem, None);
        let bad = view.containers[2].problem.as_deref().unwrap();
        assert!(
            bad.contains("usage.ledger") && bad.contains("truncated"),
            "{bad}"
        );
        assert!(view.containers[3].problem.is_some());

        let rows = view.container_devices(&view.containers[0]);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[1].node_index, rows[1].used, rows[1].limit.memory_limit),
            (Some(1), Some(2 * MIB), Some(128 * MIB))
        );
        drop((slot_a, slot_b));
    }

    #[test]
    fn an_empty_or_missing_ledger_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let view = NodeView::read(&LedgerDir::new(dir.path().join("absent")));
        assert!(view.devices.is_empty() && view.containers.is_empty());
        assert!(view.node_problem.unwrap().contains("node.ledger"));
        assert_eq!(view.containers_problem, None);
    }
}
