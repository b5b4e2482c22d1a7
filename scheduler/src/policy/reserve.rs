//! Host slots kept for the rare multi-device task classes.
//!
//! A multi-device task needs a node with that many idle devices *and* the CPU and memory
//! beside them. Some such classes are too rare to be in the target workload (in openb,
//! eight-device tasks asking 120 cores and 625–720 GiB, which only the 39 G3 nodes can
//! host), so the fragmentation measure never sees them: ours broke their hosts early and
//! they failed while most devices were still free. Over the rest of a run about
//! `share × free compute / compute per task` tasks of such a class still arrive; a
//! placement that takes one of the class's host slots is charged the slot's compute times
//! the chance that the class runs short, `min(1, expected tasks / slots)^4`. The fourth
//! power keeps the charge near zero while slots are plentiful (a linear charge pushed
//! everything off the large nodes from the first task and cost more than it saved) and
//! makes it bite as the slots run down to the expected demand.

use crate::cluster::{Cluster, NodeState};
use crate::frag::WorkloadClass;
use crate::request::Request;

/// Exponent of the shortage ratio in the charge (chosen on seeds 1–10, see the module doc).
const SHORTAGE_EXPONENT: i32 = 4;

/// One node's contribution to the cluster-wide counts, as of a node version.
#[derive(Debug, Clone)]
struct NodeSlots {
    version: u64,
    slots: Vec<u32>,
    idle: u32,
    free_milli: u64,
}

/// The host slots of every rare multi-device class over the cluster, recounted only for
/// the nodes that changed since the last decision.
#[derive(Debug, Default)]
pub struct Reservation {
    classes: Vec<WorkloadClass>,
    milli_per_task: f64,
    nodes: Vec<NodeSlots>,
    /// Per class: its slots over the cluster.
    slots: Vec<u64>,
    free_milli: u64,
}

impl Reservation {
    /// Keeps slots for `classes`, whose probabilities are shares of all tasks;
    /// `milli_per_task` is the mean device compute per task.
    pub fn new(classes: Vec<WorkloadClass>, milli_per_task: f64) -> Self {
        Reservation {
            slots: vec![0; classes.len()],
            classes,
            milli_per_task,
            nodes: Vec::new(),
            free_milli: 0,
        }
    }

    /// Whether there is nothing to keep slots for.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty() || self.milli_per_task <= 0.0
    }

    /// Whether node `index` could host a task of some rare class when last counted
    /// (placements elsewhere cannot take its slots, so only such nodes are charged).
    pub fn hosts_any(&self, index: usize) -> bool {
        self.nodes
            .get(index)
            .is_some_and(|n| n.slots.iter().any(|&s| s > 0))
    }

    /// Brings the counts up to date with `cluster`.
    pub fn refresh(&mut self, cluster: &Cluster) {
        if self.nodes.len() != cluster.nodes.len() {
            let stale = NodeSlots {
                version: u64::MAX,
                slots: vec![0; self.classes.len()],
                idle: 0,
                free_milli: 0,
            };
            self.nodes = vec![stale; cluster.nodes.len()];
            self.slots = vec![0; self.classes.len()];
            self.free_milli = 0;
        }
        for (node, counted) in cluster.nodes.iter().zip(&mut self.nodes) {
            if counted.version == node.version {
                continue;
            }
            let idle = idle_devices(node);
            for ((class, old), total) in self
                .classes
                .iter()
                .zip(&mut counted.slots)
                .zip(&mut self.slots)
            {
                let now = slots(class, node, node.cpu_free, node.memory_free, idle);
                *total = *total - u64::from(*old) + u64::from(now);
                *old = now;
            }
            counted.idle = idle;
            let free = node.free_milli_total();
            self.free_milli = self.free_milli - counted.free_milli + free;
            counted.free_milli = free;
            counted.version = node.version;
        }
    }

    /// The expected compute (milli-device) of rare tasks that will find no host because
    /// `request` takes `idle_taken` idle devices and its CPU and memory on node `index`,
    /// `node` (as of the last [`Reservation::refresh`]).
    pub fn charge(
        &self,
        index: usize,
        node: &NodeState,
        request: &Request,
        idle_taken: u32,
    ) -> f64 {
        let Some(counted) = self.nodes.get(index) else {
            return 0.0;
        };
        let idle = counted.idle;
        let cpu_after = node.cpu_free.saturating_sub(request.cpu_milli);
        let memory_after = node.memory_free.saturating_sub(request.memory_mib);
        let mut charge = 0.0;
        for ((class, &cluster_slots), &before) in
            self.classes.iter().zip(&self.slots).zip(&counted.slots)
        {
            if before == 0 {
                continue;
            }
            let after = slots(
                class,
                node,
                cpu_after,
                memory_after,
                idle.saturating_sub(idle_taken),
            );
            if after >= before {
                continue;
            }
            let expected = class.probability * self.free_milli as f64 / self.milli_per_task;
            let shortage = (expected / cluster_slots.max(1) as f64)
                .min(1.0)
                .powi(SHORTAGE_EXPONENT);
            charge += f64::from(before - after)
                * f64::from(class.device_count)
                * f64::from(class.milli)
                * shortage;
        }
        charge
    }
}

fn idle_devices(node: &NodeState) -> u32 {
    let idle = (0..node.device_count())
        .filter(|&g| node.device_is_idle(g))
        .count();
    u32::try_from(idle).unwrap_or(u32::MAX)
}

/// Tasks of `class` a node could still host with this CPU, memory and idle devices.
fn slots(class: &WorkloadClass, node: &NodeState, cpu: u64, memory: u64, idle: u32) -> u32 {
    match node.spec.model {
        Some(m) if class.models.contains(m) => {}
        _ => return 0,
    }
    let by_devices = u64::from(idle / class.device_count.max(1));
    let by_cpu = cpu.checked_div(class.cpu_milli).unwrap_or(u64::MAX);
    let by_memory = memory.checked_div(class.memory_mib).unwrap_or(u64::MAX);
    u32::try_from(by_devices.min(by_cpu).min(by_memory)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{DeviceSpec, NodeSpec};
    use crate::model::{ModelSet, ModelTable};

    fn cluster(nodes: usize) -> Cluster {
        let spec = |i: usize| NodeSpec {
            name: format!("n{i}"),
            cpu_milli: 128_000,
            memory_mib: 1 << 20,
            model: Some(0),
            devices: (0..8)
                .map(|g| DeviceSpec {
                    uuid: format!("n{i}g{g}"),
                    memory_mib: 0,
                    numa: None,
                    link_group: None,
                })
                .collect(),
        };
        Cluster::new((0..nodes).map(spec).collect(), ModelTable::default())
    }

    /// An eight-device class asking 120 cores, `share` of all tasks, tasks of 1000 milli.
    fn eight_device(share: f64) -> Reservation {
        Reservation::new(
            vec![WorkloadClass {
                cpu_milli: 120_000,
                milli: 1000,
                device_count: 8,
                models: ModelSet::ANY,
                memory_mib: 0,
                probability: share,
            }],
            1000.0,
        )
    }

    #[test]
    fn taking_a_slot_costs_little_while_slots_abound_and_its_devices_once_they_run_short() {
        let mut c = cluster(4);
        let one = Request::whole(1000, 0, 1);
        // 32 devices free: 32 tasks to come, 1 in 32 of them eight-device, 4 slots.
        let mut r = eight_device(1.0 / 32.0);
        r.refresh(&c);
        let plenty = r.charge(0, &c.nodes[0], &one, 1);
        assert_eq!(plenty, 8000.0 * 0.25f64.powi(4));
        // A CPU-only task of 8 cores leaves 120: the slot survives, nothing is charged.
        assert_eq!(
            r.charge(0, &c.nodes[0], &Request::cpu_only(8000, 0), 0),
            0.0
        );
        // Three nodes broken: one slot left for about one expected task.
        for n in 0..3 {
            c.apply(n, &one, &[0]).unwrap();
        }
        r.refresh(&c);
        // 29 devices free: 29/32 of a task expected for the one slot left.
        let short = r.charge(3, &c.nodes[3], &one, 1);
        assert!(
            (short - 8000.0 * (29.0f64 / 32.0).powi(4)).abs() < 1e-9,
            "{short}"
        );
        // A node that already lost its slot is free to take more.
        assert_eq!(r.charge(0, &c.nodes[0], &one, 1), 0.0);
    }

    #[test]
    fn counts_follow_the_changed_nodes_only() {
        let mut c = cluster(3);
        let mut r = eight_device(0.5);
        r.refresh(&c);
        assert_eq!((r.slots[0], r.free_milli), (3, 24_000));
        c.apply(1, &Request::cpu_only(10_000, 0), &[]).unwrap();
        r.refresh(&c);
        assert_eq!(r.slots[0], 2);
        c.apply(2, &Request::whole(1000, 0, 2), &[0, 1]).unwrap();
        r.refresh(&c);
        assert_eq!((r.slots[0], r.free_milli), (1, 22_000));
        // Another cluster (the extender's one-node scratch) starts the counts over.
        r.refresh(&cluster(1));
        assert_eq!((r.slots[0], r.free_milli), (1, 8000));
    }

    #[test]
    fn nothing_to_reserve_without_rare_classes() {
        assert!(Reservation::new(Vec::new(), 700.0).is_empty());
        assert!(!eight_device(0.1).is_empty());
    }
}
