//! Placement: the feasible node with the best score under the chosen policy, then the
//! devices inside it.
//!
//! Pure: a [`Scheduler`] reads a [`Cluster`] and a [`Request`] and returns a
//! [`Decision`]; applying it is the caller's business.

mod baselines;
mod fgd;
mod kind;
mod reserve;

pub use fgd::{FragScore, Scorer};
pub use kind::{NodePolicy, PolicyNameError};

use crate::cluster::{Cluster, NodeState};
use crate::fit::{self, DeviceOrder, device_fits};
use crate::frag::TargetWorkload;
use crate::request::Request;
use crate::rng::Rng;
use reserve::Reservation;

/// Where a task goes: a node index and the device indices on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub node: usize,
    pub devices: Vec<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Cached {
    version: u64,
    score: FragScore,
}

/// A placement engine for one policy, with its tie-break order and score caches.
#[derive(Debug)]
pub struct Scheduler {
    policy: NodePolicy,
    device_order: Option<DeviceOrder>,
    rng: Rng,
    /// Tie-break rank per node index: lower wins (the artifact's random node priority).
    rank: Vec<u32>,
    scorer: Scorer,
    cache: Vec<Vec<Option<Cached>>>,
    /// Ours only: host slots kept for the rare multi-device classes.
    reservation: Reservation,
}

impl Scheduler {
    /// A scheduler for `policy`. `workload` is the target workload of FGD and ours (others
    /// ignore it); `seed` fixes the random node priority and every random choice.
    pub fn new(policy: NodePolicy, workload: TargetWorkload, node_count: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut order: Vec<u32> = (0..u32::try_from(node_count).unwrap_or(u32::MAX)).collect();
        rng.shuffle(&mut order);
        let mut rank = vec![0u32; order.len()];
        for (position, &node) in order.iter().enumerate() {
            rank[node as usize] = u32::try_from(position).unwrap_or(u32::MAX);
        }
        Scheduler {
            policy,
            device_order: None,
            rng,
            rank,
            reservation: if policy == NodePolicy::Ours {
                Reservation::new(workload.rare_classes.clone(), workload.milli_per_task)
            } else {
                Reservation::default()
            },
            scorer: Scorer::new(workload),
            cache: Vec::new(),
        }
    }

    /// Overrides the policy's own device choice inside the chosen node.
    pub fn with_device_order(mut self, order: DeviceOrder) -> Self {
        self.device_order = Some(order);
        self
    }

    /// The policy in use.
    pub fn policy(&self) -> NodePolicy {
        self.policy
    }

    /// The best placement of `request` over every node, or `None` when no node fits.
    pub fn decide(&mut self, cluster: &Cluster, request: &Request) -> Option<Decision> {
        self.decide_among(cluster, request, 0..cluster.nodes.len())
    }

    /// The best placement of `request` over the given node indices.
    pub fn decide_among(
        &mut self,
        cluster: &Cluster,
        request: &Request,
        candidates: impl IntoIterator<Item = usize>,
    ) -> Option<Decision> {
        if self.policy == NodePolicy::Random {
            return self.decide_random(cluster, request, candidates);
        }
        let reserving = self.policy == NodePolicy::Ours && !self.reservation.is_empty();
        if reserving {
            self.reservation.refresh(cluster);
        }
        let mut best: Option<(usize, FragScore)> = None;
        for i in candidates {
            let Some(node) = cluster.nodes.get(i) else {
                continue;
            };
            let Some(mut score) = self.score(i, node, request) else {
                continue;
            };
            if reserving && self.reservation.hosts_any(i) {
                self.charge_reservation(i, node, request, &mut score);
            }
            let better = match &best {
                None => true,
                Some((j, b)) => {
                    score.primary > b.primary
                        || (score.primary == b.primary
                            && (score.secondary > b.secondary
                                || (score.secondary == b.secondary
                                    && self.rank_of(i) < self.rank_of(*j))))
                }
            };
            if better {
                best = Some((i, score));
            }
        }
        let (node, score) = best?;
        let devices = self.devices_on(&cluster.nodes[node], request, score.device)?;
        Some(Decision { node, devices })
    }

    /// The policy's score of `request` on node `index`, or `None` if it does not fit.
    pub fn score(
        &mut self,
        index: usize,
        node: &NodeState,
        request: &Request,
    ) -> Option<FragScore> {
        fit::check(node, request).ok()?;
        let plain = |primary| {
            Some(FragScore {
                primary,
                secondary: 0.0,
                raw: 0.0,
                device: None,
            })
        };
        match self.policy {
            NodePolicy::Random => plain(0.0),
            NodePolicy::BestFit => plain(baselines::best_fit(node, request)),
            NodePolicy::DotProduct => plain(baselines::dot_product(node, request)),
            NodePolicy::Packing => plain(baselines::packing(node, request)),
            NodePolicy::Clustering => plain(baselines::clustering(node, request)),
            NodePolicy::Binpack => plain(baselines::binpack(node, request)),
            NodePolicy::Spread => plain(baselines::spread(node, request)),
            NodePolicy::Fgd | NodePolicy::Ours => {
                Some(self.cached_frag_score(index, node, request))
            }
        }
    }

    /// Lowers ours' score of a placement by the rare tasks it leaves without a host
    /// (see [`reserve`]); the charge is in the measure's unit, so it joins the change of
    /// fragmentation before the quantisation.
    fn charge_reservation(
        &self,
        index: usize,
        node: &NodeState,
        request: &Request,
        score: &mut FragScore,
    ) {
        let idle_taken = if request.is_cpu_only() {
            0
        } else if request.is_whole_device() {
            request.device_count
        } else {
            let devices = self
                .devices_on(node, request, score.device)
                .unwrap_or_default();
            let idle = devices.iter().filter(|&&g| node.device_is_idle(g)).count();
            u32::try_from(idle).unwrap_or(u32::MAX)
        };
        let charge = self.reservation.charge(index, node, request, idle_taken);
        if charge > 0.0 {
            score.primary = fgd::quantise(score.raw - charge);
        }
    }

    fn cached_frag_score(
        &mut self,
        index: usize,
        node: &NodeState,
        request: &Request,
    ) -> FragScore {
        let class = request
            .class
            .filter(|_| !request.has_uuid_filter())
            .map(|c| c as usize);
        if let Some(class) = class
            && let Some(Some(hit)) = self.cache.get(index).and_then(|row| row.get(class))
            && hit.version == node.version
        {
            return hit.score;
        }
        let score = match self.policy {
            NodePolicy::Fgd => self.scorer.fgd(node, request),
            _ => self.scorer.ours(node, request),
        };
        if let Some(class) = class {
            if self.cache.len() <= index {
                self.cache.resize_with(index + 1, Vec::new);
            }
            let row = &mut self.cache[index];
            if row.len() <= class {
                row.resize(class + 1, None);
            }
            row[class] = Some(Cached {
                version: node.version,
                score,
            });
        }
        score
    }

    fn decide_random(
        &mut self,
        cluster: &Cluster,
        request: &Request,
        candidates: impl IntoIterator<Item = usize>,
    ) -> Option<Decision> {
        let feasible: Vec<usize> = candidates
            .into_iter()
            .filter(|&i| {
                cluster
                    .nodes
                    .get(i)
                    .is_some_and(|n| fit::check(n, request).is_ok())
            })
            .collect();
        if feasible.is_empty() {
            return None;
        }
        let node = feasible[self.rng.below(feasible.len())];
        let state = &cluster.nodes[node];
        let devices = if request.device_count == 1
            && !request.is_whole_device()
            && self.device_order.is_none()
        {
            let fitting: Vec<usize> = (0..state.device_count())
                .filter(|&g| device_fits(state, g, request))
                .collect();
            vec![fitting[self.rng.below(fitting.len())]]
        } else {
            fit::choose_devices(
                state,
                request,
                self.device_order.unwrap_or(DeviceOrder::Index),
            )?
        };
        Some(Decision { node, devices })
    }

    fn devices_on(
        &self,
        node: &NodeState,
        request: &Request,
        hint: Option<u16>,
    ) -> Option<Vec<usize>> {
        if let (Some(g), None) = (hint, self.device_order) {
            return Some(vec![usize::from(g)]);
        }
        let order = self.device_order.unwrap_or(match self.policy {
            NodePolicy::Spread => DeviceOrder::Loosest,
            _ => DeviceOrder::Tightest,
        });
        fit::choose_devices(node, request, order)
    }

    fn rank_of(&self, node: usize) -> u32 {
        self.rank
            .get(node)
            .copied()
            .unwrap_or(u32::try_from(node).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{DeviceSpec, NodeSpec};
    use crate::model::ModelTable;

    fn cluster(shapes: &[(u64, usize)]) -> Cluster {
        let specs = shapes
            .iter()
            .enumerate()
            .map(|(i, &(cpu, gpus))| NodeSpec {
                name: format!("node-{i}"),
                cpu_milli: cpu,
                memory_mib: 1 << 20,
                model: Some(0),
                devices: (0..gpus)
                    .map(|g| DeviceSpec {
                        uuid: format!("n{i}g{g}"),
                        memory_mib: 0,
                        numa: None,
                        link_group: None,
                    })
                    .collect(),
            })
            .collect();
        Cluster::new(specs, ModelTable::default())
    }

    #[test]
    fn every_policy_places_a_fitting_task_and_refuses_an_impossible_one() {
        let names = NodePolicy::NAMES;
        for name in names {
            let policy: NodePolicy = name.parse().unwrap();
            let mut c = cluster(&[(16_000, 2), (96_000, 8)]);
            let mut s = Scheduler::new(policy, TargetWorkload::default(), 2, 1);
            let eight = Request::whole(8_000, 0, 8);
            let d = s
                .decide(&c, &eight)
                .unwrap_or_else(|| panic!("{name} found no node"));
            assert_eq!(d.node, 1, "{name}");
            c.apply(d.node, &eight, &d.devices).unwrap();
            assert_eq!(s.decide(&c, &Request::whole(1000, 0, 4)), None, "{name}");
            let share = Request::share(1000, 0, 300, 0);
            let d = s.decide(&c, &share).unwrap();
            assert_eq!(d.node, 0, "{name}");
            assert_eq!(d.devices.len(), 1);
        }
    }

    #[test]
    fn binpack_fills_a_used_node_and_spread_avoids_it() {
        let mut c = cluster(&[(64_000, 4), (64_000, 4)]);
        c.apply(1, &Request::share(1000, 0, 500, 0), &[2]).unwrap();
        let r = Request::share(1000, 0, 300, 0);
        let mut binpack = Scheduler::new(NodePolicy::Binpack, TargetWorkload::default(), 2, 3);
        assert_eq!(
            binpack.decide(&c, &r),
            Some(Decision {
                node: 1,
                devices: vec![2]
            })
        );
        let mut spread = Scheduler::new(NodePolicy::Spread, TargetWorkload::default(), 2, 3);
        assert_eq!(spread.decide(&c, &r).map(|d| d.node), Some(0));
    }

    #[test]
    fn device_order_override_is_honoured() {
        let mut c = cluster(&[(64_000, 4)]);
        c.apply(0, &Request::share(1000, 0, 500, 0), &[2]).unwrap();
        let r = Request::share(1000, 0, 300, 0);
        let mut s = Scheduler::new(NodePolicy::Binpack, TargetWorkload::default(), 1, 3)
            .with_device_order(DeviceOrder::Loosest);
        assert_eq!(s.decide(&c, &r).unwrap().devices, vec![0]);
    }
}
