//! The extender's view of the cluster: node inventories, the placements of bound pods
//! and of pods assumed at bind but not yet seen bound, and the per-pod decisions.
//!
//! Every reservation happens under the one lock that guards this state, so two binds to
//! one node are serialized here and can never commit the same device capacity twice; no
//! lock on the Node object is needed.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use hami_request::keys::{bookkeeping, container_key, knob, pod_key};
use hami_request::{MemoryRequest, quantity};
use k8s_openapi::api::core::v1::{Node, Pod};

use super::demand::PodDemand;
use super::inventory::{self, InventoryError};
use super::wire::{HostPriority, MAX_EXTENDER_PRIORITY};
use crate::cluster::{Cluster, NodeState};
use crate::fit::{self, DeviceOrder};
use crate::frag::TargetWorkload;
use crate::model::ModelTable;
use crate::policy::{NodePolicy, Scheduler};
use crate::request::Request;

/// How long a pod reserved at bind is kept while the API server does not list it bound.
pub const ASSUME_GRACE: Duration = Duration::from_secs(120);

/// The devices of one container of a placed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPlacement {
    pub container: String,
    pub request: Request,
    pub devices: Vec<usize>,
    pub uuids: Vec<String>,
}

/// Where a pod's containers are placed.
#[derive(Debug, Clone)]
pub struct Placement {
    pub node: String,
    pub containers: Vec<ContainerPlacement>,
    /// Pod CPU/memory when no container uses devices (kept on a CPU-only request).
    pub host_request: Option<Request>,
    /// When the reservation was made (for assumed pods not yet listed as bound).
    pub since: Instant,
}

/// Extender state; wrap it in a mutex.
pub struct ExtenderState {
    cluster: Cluster,
    by_name: HashMap<String, usize>,
    default_policy: NodePolicy,
    workload: TargetWorkload,
    /// Demands of pods seen at filter/prioritize, by pod UID.
    demands: HashMap<String, PodDemand>,
    /// Placed pods (bound, or assumed at bind), by pod UID.
    placed: HashMap<String, Placement>,
    schedulers: HashMap<(NodePolicy, Option<DeviceOrder>), Scheduler>,
    assume_grace: Duration,
}

impl ExtenderState {
    /// Empty state scoring with `default_policy` (pods may choose theirs) and `workload`.
    pub fn new(default_policy: NodePolicy, workload: TargetWorkload) -> Self {
        ExtenderState {
            cluster: Cluster {
                nodes: Vec::new(),
                models: ModelTable::default(),
            },
            by_name: HashMap::new(),
            default_policy,
            workload,
            demands: HashMap::new(),
            placed: HashMap::new(),
            schedulers: HashMap::new(),
            assume_grace: ASSUME_GRACE,
        }
    }

    /// Changes how long assumed pods survive resyncs that do not list them.
    pub fn with_assume_grace(mut self, grace: Duration) -> Self {
        self.assume_grace = grace;
        self
    }

    /// Whether the node's inventory is known.
    pub fn knows_node(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The node's current state.
    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.by_name.get(name).map(|&i| &self.cluster.nodes[i])
    }

    /// Records (or refreshes) a node's inventory; placements on it are re-applied when its
    /// devices changed.
    pub fn upsert_node(&mut self, node: &Node) -> Result<(), InventoryError> {
        let spec = inventory::node_spec(node, &mut self.cluster.models)?;
        match self.by_name.get(&spec.name) {
            Some(&i) if self.cluster.nodes[i].spec == spec => {}
            Some(&i) => {
                self.cluster.nodes[i] = NodeState::new(spec.clone());
                let name = spec.name;
                let on_node: Vec<Placement> = self
                    .placed
                    .values()
                    .filter(|p| p.node == name)
                    .cloned()
                    .collect();
                for p in on_node {
                    // Devices that vanished cannot be re-applied; the pod keeps running there
                    // but no longer counts against the new inventory.
                    let _ = self.apply(i, &p);
                }
            }
            None => {
                self.by_name
                    .insert(spec.name.clone(), self.cluster.nodes.len());
                self.cluster.nodes.push(NodeState::new(spec));
            }
        }
        Ok(())
    }

    /// Remembers a pod's demand for its later bind.
    pub fn remember(&mut self, uid: &str, demand: PodDemand) {
        self.demands.insert(uid.to_owned(), demand);
    }

    /// The remembered demand of a pod.
    pub fn demand(&self, uid: &str) -> Option<&PodDemand> {
        self.demands.get(uid)
    }

    /// Splits `names` into nodes that can take the pod and the reasons of the others.
    pub fn filter(
        &mut self,
        demand: &PodDemand,
        names: &[String],
    ) -> (Vec<String>, BTreeMap<String, String>) {
        let mut pass = Vec::new();
        let mut failed = BTreeMap::new();
        for name in names {
            match self.trial(demand, name) {
                Ok(_) => pass.push(name.clone()),
                Err(reason) => {
                    failed.insert(name.clone(), reason);
                }
            }
        }
        (pass, failed)
    }

    /// Scores 0..=10 for `names` (nodes that cannot take the pod get 0), min-max
    /// normalised over the nodes that can.
    pub fn prioritize(&mut self, demand: &PodDemand, names: &[String]) -> Vec<HostPriority> {
        let raw: Vec<Option<f64>> = names
            .iter()
            .map(|n| self.trial(demand, n).ok().map(|(s, _)| s))
            .collect();
        let fitting = raw.iter().flatten();
        let lo = fitting.clone().copied().fold(f64::INFINITY, f64::min);
        let hi = fitting.copied().fold(f64::NEG_INFINITY, f64::max);
        names
            .iter()
            .zip(raw)
            .map(|(host, score)| {
                let score = match score {
                    None => 0,
                    Some(_) if hi <= lo => MAX_EXTENDER_PRIORITY,
                    Some(s) => ((s - lo) / (hi - lo) * MAX_EXTENDER_PRIORITY as f64).round() as i64,
                };
                HostPriority {
                    host: host.clone(),
                    score,
                }
            })
            .collect()
    }

    /// Reserves the pod's devices on `node_name` (the pod is assumed from now on).
    pub fn reserve(
        &mut self,
        uid: &str,
        demand: &PodDemand,
        node_name: &str,
    ) -> Result<Placement, String> {
        if let Some(existing) = self.placed.get(uid) {
            if existing.node == node_name {
                return Ok(existing.clone());
            }
            return Err(format!("pod is already placed on node {}", existing.node));
        }
        let (_, devices) = self.trial(demand, node_name)?;
        let &index = self
            .by_name
            .get(node_name)
            .ok_or_else(|| format!("unknown node {node_name}"))?;
        let node = &self.cluster.nodes[index];
        let requests = demand.requests_on(node, &self.cluster.models);
        let containers = demand
            .containers
            .iter()
            .zip(&requests)
            .zip(devices)
            .map(|((c, r), d)| ContainerPlacement {
                container: c.name.clone(),
                request: r.clone(),
                uuids: d
                    .iter()
                    .map(|&i| node.spec.devices[i].uuid.clone())
                    .collect(),
                devices: d,
            })
            .collect();
        let host_request = demand.containers.is_empty().then(|| requests[0].clone());
        let placement = Placement {
            node: node_name.to_owned(),
            containers,
            host_request,
            since: Instant::now(),
        };
        self.apply(index, &placement).map_err(|e| e.to_string())?;
        self.placed.insert(uid.to_owned(), placement.clone());
        Ok(placement)
    }

    /// Drops a pod's reservation (its bind failed, or it left).
    pub fn forget(&mut self, uid: &str) {
        self.demands.remove(uid);
        if let Some(p) = self.placed.remove(uid)
            && let Some(&i) = self.by_name.get(&p.node)
        {
            for c in &p.containers {
                let _ = self.cluster.release(i, &c.request, &c.devices);
            }
            if let Some(r) = &p.host_request {
                let _ = self.cluster.release(i, r, &[]);
            }
        }
    }

    /// Rebuilds placements from the pods the API server lists as bound: adds bound pods
    /// the state does not know (placed by an earlier run, or by hand), drops pods that
    /// finished or disappeared, and keeps pods assumed within the grace period
    /// ([`ASSUME_GRACE`] unless changed).
    pub fn resync(&mut self, pods: &[Pod]) {
        let mut listed = std::collections::HashSet::new();
        for pod in pods {
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            let finished = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|p| p == "Succeeded" || p == "Failed");
            if finished {
                continue;
            }
            listed.insert(uid.clone());
            if self.placed.contains_key(&uid) {
                continue;
            }
            let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                continue;
            };
            let (Some(&index), Ok(demand)) =
                (self.by_name.get(&node_name), PodDemand::from_pod(pod))
            else {
                continue;
            };
            if let Some(placement) = self.placement_from_annotations(pod, &demand, index)
                && self.apply(index, &placement).is_ok()
            {
                self.placed.insert(uid, placement);
            }
        }
        let gone: Vec<String> = self
            .placed
            .iter()
            .filter(|(uid, p)| !listed.contains(*uid) && p.since.elapsed() >= self.assume_grace)
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in gone {
            self.forget(&uid);
        }
    }

    fn placement_from_annotations(
        &self,
        pod: &Pod,
        demand: &PodDemand,
        index: usize,
    ) -> Option<Placement> {
        let annotations = pod.metadata.annotations.as_ref()?;
        let node = &self.cluster.nodes[index];
        let requests = demand.requests_on(node, &self.cluster.models);
        let mut containers = Vec::new();
        for (c, r) in demand.containers.iter().zip(&requests) {
            let text = annotations
                .get(&container_key(knob::ASSIGNED_DEVICES, &c.name))
                .or_else(|| annotations.get(&pod_key(knob::ASSIGNED_DEVICES)))?;
            let uuids: Vec<String> = text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            let devices = uuids
                .iter()
                .map(|u| node.spec.devices.iter().position(|d| &d.uuid == u))
                .collect::<Option<Vec<usize>>>()?;
            containers.push(ContainerPlacement {
                container: c.name.clone(),
                request: r.clone(),
                devices,
                uuids,
            });
        }
        let host_request = demand.containers.is_empty().then(|| requests[0].clone());
        Some(Placement {
            node: node.spec.name.clone(),
            containers,
            host_request,
            since: Instant::now(),
        })
    }

    fn apply(
        &mut self,
        index: usize,
        placement: &Placement,
    ) -> Result<(), crate::cluster::PlacementError> {
        for (applied, c) in placement.containers.iter().enumerate() {
            if let Err(e) = self.cluster.apply(index, &c.request, &c.devices) {
                for undo in &placement.containers[..applied] {
                    let _ = self.cluster.release(index, &undo.request, &undo.devices);
                }
                return Err(e);
            }
        }
        if let Some(r) = &placement.host_request
            && let Err(e) = self.cluster.apply(index, r, &[])
        {
            for undo in &placement.containers {
                let _ = self.cluster.release(index, &undo.request, &undo.devices);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Places the pod on a scratch copy of the node: its policy score and the devices
    /// per device-using container, or why it does not fit.
    fn trial(&mut self, demand: &PodDemand, name: &str) -> Result<(f64, Vec<Vec<usize>>), String> {
        let &index = self
            .by_name
            .get(name)
            .ok_or_else(|| format!("node {name} has no known device inventory"))?;
        let node = self.cluster.nodes[index].clone();
        let requests = demand.requests_on(&node, &self.cluster.models);
        let key = (
            demand.node_policy.unwrap_or(self.default_policy),
            demand.device_order,
        );
        let workload = &self.workload;
        let scheduler = self.schedulers.entry(key).or_insert_with(|| {
            let s = Scheduler::new(key.0, workload.clone(), 1, 0);
            match key.1 {
                Some(order) => s.with_device_order(order),
                None => s,
            }
        });
        let mut scratch = Cluster {
            nodes: vec![node],
            models: ModelTable::default(),
        };
        let why = |node: &NodeState, i: usize, r: &Request| {
            let which = demand
                .containers
                .get(i)
                .map_or(String::new(), |c| format!("container {}: ", c.name));
            let reason = fit::check(node, r).err().map_or_else(
                || "too few free devices in one topology group".to_owned(),
                |u| u.to_string(),
            );
            format!("{which}{reason}")
        };
        let score = scheduler
            .score(0, &scratch.nodes[0], &requests[0])
            .ok_or_else(|| why(&scratch.nodes[0], 0, &requests[0]))?;
        let mut devices = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            let d = scheduler
                .decide(&scratch, r)
                .ok_or_else(|| why(&scratch.nodes[0], i, r))?;
            scratch.apply(0, r, &d.devices).map_err(|e| e.to_string())?;
            if !r.is_cpu_only() {
                devices.push(d.devices);
            }
        }
        Ok((score.primary + score.secondary * 1e-3, devices))
    }
}

/// The annotations written at bind: the devices per container, the knobs the shim
/// needs when the pod asked through resources, and HAMi's bookkeeping keys.
pub fn bind_annotations(
    demand: &PodDemand,
    placement: &Placement,
    unix_time: u64,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (c, p) in demand.containers.iter().zip(&placement.containers) {
        out.insert(
            container_key(knob::ASSIGNED_DEVICES, &c.name),
            p.uuids.join(","),
        );
        let request = &c.request;
        out.insert(
            container_key(knob::GPU_COUNT, &c.name),
            request.device_count.to_string(),
        );
        match request.memory {
            Some(MemoryRequest::Bytes(bytes)) => {
                out.insert(
                    container_key(knob::GPU_MEMORY, &c.name),
                    quantity::exact_bytes(bytes),
                );
            }
            Some(MemoryRequest::Percent(p)) => {
                out.insert(
                    container_key(knob::GPU_MEMORY_PERCENTAGE, &c.name),
                    p.to_string(),
                );
            }
            None => {}
        }
        if let Some(cores) = request.compute_percent {
            out.insert(container_key(knob::GPU_CORES, &c.name), cores.to_string());
        }
    }
    out.insert(pod_key(bookkeeping::VGPU_NODE), placement.node.clone());
    out.insert(pod_key(bookkeeping::BIND_PHASE), "allocating".into());
    out.insert(pod_key(bookkeeping::BIND_TIME), unix_time.to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gpu-a", "annotations": {inventory::register_annotation():
                r#"[{"id":"GPU-0","index":0,"devmem":16384,"type":"T4"},{"id":"GPU-1","index":1,"devmem":16384,"type":"T4"}]"#}},
            "status": {"allocatable": {"cpu": "32", "memory": "128Gi"}}
        }))
        .unwrap()
    }

    fn bound_pod(uid: &str, device: &str, phase: &str) -> Pod {
        let annotations = if device.is_empty() {
            serde_json::json!({})
        } else {
            serde_json::json!({"hami.io/assigned-devices.main": device})
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": uid, "uid": uid, "annotations": annotations},
            "spec": {"nodeName": "gpu-a", "containers": [{"name": "main", "resources": {"limits": {
                "nvidia.com/gpu": "1", "nvidia.com/gpucores": "40"}}}]},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn resync_counts_bound_pods_and_frees_finished_or_vanished_ones() {
        let mut state = ExtenderState::new(NodePolicy::Binpack, TargetWorkload::default())
            .with_assume_grace(Duration::ZERO);
        state.upsert_node(&node()).unwrap();
        state.resync(&[
            bound_pod("a", "GPU-1", "Running"),
            bound_pod("b", "GPU-1", "Succeeded"),
        ]);
        assert_eq!(
            state.node("gpu-a").unwrap().device_free_milli,
            vec![1000, 600]
        );
        // The pod finished: its share comes back.
        state.resync(&[bound_pod("a", "GPU-1", "Succeeded")]);
        assert_eq!(
            state.node("gpu-a").unwrap().device_free_milli,
            vec![1000, 1000]
        );
    }

    #[test]
    fn pods_assumed_at_bind_survive_resyncs_within_the_grace_period() {
        let mut state = ExtenderState::new(NodePolicy::Binpack, TargetWorkload::default());
        state.upsert_node(&node()).unwrap();
        let demand = PodDemand::from_pod(&bound_pod("x", "", "Pending")).unwrap();
        let placement = state.reserve("x", &demand, "gpu-a").unwrap();
        assert_eq!(placement.containers[0].uuids.len(), 1);
        state.resync(&[]);
        assert_eq!(state.node("gpu-a").unwrap().free_milli_total(), 1600);
        state.forget("x");
        assert_eq!(state.node("gpu-a").unwrap().free_milli_total(), 2000);
    }
}
