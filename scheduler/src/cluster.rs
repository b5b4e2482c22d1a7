//! Cluster state: nodes with CPU, memory and devices, what is free on each, and the
//! placements applied to them.
//!
//! Every change bumps the node's version, so policies may cache per-node scores and
//! recompute only the nodes that changed since.

use thiserror::Error;

use crate::model::{ModelId, ModelTable};
use crate::request::Request;

/// Compute capacity of one device in milli-device units (1000 = the whole device).
pub const FULL_DEVICE_MILLI: u32 = 1000;

/// One device of a node, as its inventory describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    pub uuid: String,
    /// Device memory in MiB (0 when unknown: memory is then never a constraint).
    pub memory_mib: u64,
    /// NUMA node the device is attached to, where known.
    pub numa: Option<u16>,
    /// NVLink (or other fast-interconnect) group, where known: devices of one group talk fast.
    pub link_group: Option<u16>,
}

/// A node as its inventory describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    pub cpu_milli: u64,
    pub memory_mib: u64,
    /// Model of the node's devices (`None` for a node without devices).
    pub model: Option<ModelId>,
    pub devices: Vec<DeviceSpec>,
}

/// How many GPU tasks of each shape tag a node holds (GPU Clustering reads this).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagCounts {
    counts: Vec<(u32, u32)>,
}

impl TagCounts {
    /// Tag of sharing tasks (whole-device tasks use their device count as tag).
    pub const SHARE: u32 = 0;

    fn add(&mut self, tag: u32, delta: i64) {
        match self.counts.iter_mut().find(|(t, _)| *t == tag) {
            Some((_, n)) => *n = u32::try_from(i64::from(*n) + delta).unwrap_or(0),
            None if delta > 0 => self.counts.push((tag, u32::try_from(delta).unwrap_or(0))),
            None => {}
        }
        self.counts.retain(|(_, n)| *n > 0);
    }

    /// Tasks on the node carrying `tag`.
    pub fn count(&self, tag: u32) -> u32 {
        self.counts
            .iter()
            .find(|(t, _)| *t == tag)
            .map_or(0, |(_, n)| *n)
    }

    /// GPU tasks on the node, all tags together.
    pub fn total(&self) -> u32 {
        self.counts.iter().map(|(_, n)| n).sum()
    }
}

/// A node and what is free on it.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub spec: NodeSpec,
    pub cpu_free: u64,
    pub memory_free: u64,
    /// Free compute per device, milli-device.
    pub device_free_milli: Vec<u32>,
    /// Free memory per device, MiB.
    pub device_free_memory: Vec<u64>,
    pub tags: TagCounts,
    /// Bumped on every change; caches keyed by it stay valid until the node changes.
    pub version: u64,
}

impl NodeState {
    /// An empty node.
    pub fn new(spec: NodeSpec) -> Self {
        let n = spec.devices.len();
        NodeState {
            cpu_free: spec.cpu_milli,
            memory_free: spec.memory_mib,
            device_free_milli: vec![FULL_DEVICE_MILLI; n],
            device_free_memory: spec.devices.iter().map(|d| d.memory_mib).collect(),
            tags: TagCounts::default(),
            version: 0,
            spec,
        }
    }

    /// Whether device `i` holds nothing at all.
    pub fn device_is_idle(&self, i: usize) -> bool {
        self.device_free_milli[i] == FULL_DEVICE_MILLI
            && self.device_free_memory[i] == self.spec.devices[i].memory_mib
    }

    /// Free compute over all devices (U in the FGD paper), milli-device.
    pub fn free_milli_total(&self) -> u64 {
        self.device_free_milli.iter().map(|&m| u64::from(m)).sum()
    }

    /// Devices of the node.
    pub fn device_count(&self) -> usize {
        self.spec.devices.len()
    }
}

/// Errors raised when a placement is applied to or removed from a node.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error("node index {0} is out of range")]
    NoSuchNode(usize),
    #[error("device index {device} is out of range on node {node}")]
    NoSuchDevice { node: String, device: usize },
    #[error("{0} devices chosen but the request asks for {1}")]
    WrongDeviceCount(usize, u32),
    #[error("node {node} lacks {what} for this placement")]
    Insufficient { node: String, what: &'static str },
    #[error("device {device} of node {node} is chosen twice")]
    DuplicateDevice { node: String, device: usize },
}

/// Every node of the cluster and the interned device models.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub nodes: Vec<NodeState>,
    pub models: ModelTable,
}

impl Cluster {
    /// A cluster of empty nodes.
    pub fn new(specs: Vec<NodeSpec>, models: ModelTable) -> Self {
        Cluster {
            nodes: specs.into_iter().map(NodeState::new).collect(),
            models,
        }
    }

    /// Total compute of every device, milli-device.
    pub fn capacity_milli(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.device_count() as u64)
            .sum::<u64>()
            * u64::from(FULL_DEVICE_MILLI)
    }

    /// Takes the request's resources from `node` on `devices`, refusing (and changing
    /// nothing) when they are not free.
    pub fn apply(
        &mut self,
        node: usize,
        request: &Request,
        devices: &[usize],
    ) -> Result<(), PlacementError> {
        let state = self
            .nodes
            .get_mut(node)
            .ok_or(PlacementError::NoSuchNode(node))?;
        check_devices(state, request, devices)?;
        let short = |what| PlacementError::Insufficient {
            node: state.spec.name.clone(),
            what,
        };
        if state.cpu_free < request.cpu_milli {
            return Err(short("cpu"));
        }
        if state.memory_free < request.memory_mib {
            return Err(short("memory"));
        }
        for &d in devices {
            let milli_ok = if request.is_whole_device() {
                state.device_is_idle(d)
            } else {
                state.device_free_milli[d] >= request.milli_per_device
                    && state.device_free_memory[d] >= request.memory_per_device_mib
            };
            if !milli_ok {
                return Err(short("device capacity"));
            }
        }
        state.cpu_free -= request.cpu_milli;
        state.memory_free -= request.memory_mib;
        for &d in devices {
            if request.is_whole_device() {
                state.device_free_milli[d] = 0;
                state.device_free_memory[d] = 0;
            } else {
                state.device_free_milli[d] -= request.milli_per_device;
                state.device_free_memory[d] -= request.memory_per_device_mib;
            }
        }
        if let Some(tag) = request.tag() {
            state.tags.add(tag, 1);
        }
        state.version += 1;
        Ok(())
    }

    /// Gives back what [`Cluster::apply`] took (a pod left the node).
    pub fn release(
        &mut self,
        node: usize,
        request: &Request,
        devices: &[usize],
    ) -> Result<(), PlacementError> {
        let state = self
            .nodes
            .get_mut(node)
            .ok_or(PlacementError::NoSuchNode(node))?;
        check_devices(state, request, devices)?;
        state.cpu_free = (state.cpu_free + request.cpu_milli).min(state.spec.cpu_milli);
        state.memory_free = (state.memory_free + request.memory_mib).min(state.spec.memory_mib);
        for &d in devices {
            let total_mem = state.spec.devices[d].memory_mib;
            if request.is_whole_device() {
                state.device_free_milli[d] = FULL_DEVICE_MILLI;
                state.device_free_memory[d] = total_mem;
            } else {
                state.device_free_milli[d] =
                    (state.device_free_milli[d] + request.milli_per_device).min(FULL_DEVICE_MILLI);
                state.device_free_memory[d] =
                    (state.device_free_memory[d] + request.memory_per_device_mib).min(total_mem);
            }
        }
        if let Some(tag) = request.tag() {
            state.tags.add(tag, -1);
        }
        state.version += 1;
        Ok(())
    }
}

fn check_devices(
    state: &NodeState,
    request: &Request,
    devices: &[usize],
) -> Result<(), PlacementError> {
    if devices.len() != request.device_count as usize {
        return Err(PlacementError::WrongDeviceCount(
            devices.len(),
            request.device_count,
        ));
    }
    for (i, &d) in devices.iter().enumerate() {
        if d >= state.device_count() {
            return Err(PlacementError::NoSuchDevice {
                node: state.spec.name.clone(),
                device: d,
            });
        }
        if devices[..i].contains(&d) {
            return Err(PlacementError::DuplicateDevice {
                node: state.spec.name.clone(),
                device: d,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Request;

    fn node(devices: usize) -> NodeSpec {
        NodeSpec {
            name: "n0".into(),
            cpu_milli: 8000,
            memory_mib: 1024,
            model: Some(0),
            devices: (0..devices)
                .map(|i| DeviceSpec {
                    uuid: format!("GPU-{i}"),
                    memory_mib: 16384,
                    numa: None,
                    link_group: None,
                })
                .collect(),
        }
    }

    #[test]
    fn apply_then_release_restores_the_node_and_bumps_versions() {
        let mut cluster = Cluster::new(vec![node(2)], ModelTable::default());
        let share = Request::share(2000, 256, 400, 4096);
        cluster.apply(0, &share, &[1]).unwrap();
        let n = &cluster.nodes[0];
        assert_eq!((n.cpu_free, n.memory_free), (6000, 768));
        assert_eq!(n.device_free_milli, vec![1000, 600]);
        assert_eq!(n.device_free_memory, vec![16384, 12288]);
        assert_eq!(n.tags.count(TagCounts::SHARE), 1);
        cluster.release(0, &share, &[1]).unwrap();
        let n = &cluster.nodes[0];
        assert_eq!(n.device_free_milli, vec![1000, 1000]);
        assert_eq!(n.tags.total(), 0);
        assert_eq!(n.version, 2);
    }

    #[test]
    fn apply_refuses_overcommit_and_changes_nothing() {
        let mut cluster = Cluster::new(vec![node(2)], ModelTable::default());
        cluster
            .apply(0, &Request::share(1000, 0, 700, 0), &[0])
            .unwrap();
        let err = cluster
            .apply(0, &Request::share(1000, 0, 400, 0), &[0])
            .unwrap_err();
        assert!(matches!(
            err,
            PlacementError::Insufficient {
                what: "device capacity",
                ..
            }
        ));
        let err = cluster
            .apply(0, &Request::whole(1000, 0, 1), &[0])
            .unwrap_err();
        assert!(matches!(err, PlacementError::Insufficient { .. }));
        assert_eq!(cluster.nodes[0].device_free_milli, vec![300, 1000]);
        let err = cluster
            .apply(0, &Request::whole(1000, 0, 2), &[1, 1])
            .unwrap_err();
        assert!(matches!(err, PlacementError::DuplicateDevice { .. }));
    }
}
