//! What a pod asks of devices: one [`ContainerRequest`] per device-using container, read by
//! `hami_request` from the pod's `hami.io/*` annotations and the container's HAMi resources
//! (`nvidia.com/gpu`, `gpumem`, `gpumem-percentage`, `gpucores`) exactly as the shim reads
//! them, and turned into the placement core's [`Request`]s for a given node.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use thiserror::Error;

use crate::cluster::{FULL_DEVICE_MILLI, NodeState};
use crate::fit::DeviceOrder;
use crate::model::{ModelSet, ModelTable};
use crate::policy::NodePolicy;
use crate::request::Request;
use hami_request::keys::{bookkeeping, pod_key};
use hami_request::knobs::PlacementPolicy;
use hami_request::quantity::{self, QuantityError};
use hami_request::{ContainerRequest, DeviceSelection, MemoryRequest, RequestError};

/// The device demand of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDemand {
    pub name: String,
    pub request: ContainerRequest,
}

impl ContainerDemand {
    /// Device memory per device in MiB (the placement core's unit, rounded up); a percentage
    /// is taken of `device_mib`; `None` when no memory share was asked.
    pub fn memory_mib(&self, device_mib: u64) -> Option<u64> {
        match self.request.memory? {
            MemoryRequest::Bytes(bytes) => Some(bytes.div_ceil(1 << 20)),
            MemoryRequest::Percent(p) => Some(device_mib * u64::from(p) / 100),
        }
    }
}

/// Everything the scheduler needs from a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDemand {
    pub cpu_milli: u64,
    pub memory_mib: u64,
    /// Containers that use devices, in spec order.
    pub containers: Vec<ContainerDemand>,
    pub node_policy: Option<NodePolicy>,
    /// The device order the pod asked for (`hami.io/gpu-scheduler-policy`, of its first
    /// device-using container).
    pub device_order: Option<DeviceOrder>,
}

/// Why a pod's demand cannot be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DemandError {
    #[error("pod has no spec")]
    NoSpec,
    #[error("{key} of container {container}: {source}")]
    Quantity {
        container: String,
        key: String,
        source: QuantityError,
    },
    #[error("container {container}: {source}")]
    Request {
        container: String,
        source: RequestError,
    },
    #[error("annotation {key}={value:?}: {reason}")]
    Annotation {
        key: String,
        value: String,
        reason: String,
    },
}

impl PodDemand {
    /// Reads the demand of `pod`.
    pub fn from_pod(pod: &Pod) -> Result<Self, DemandError> {
        let spec = pod.spec.as_ref().ok_or(DemandError::NoSpec)?;
        let empty = BTreeMap::new();
        let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
        let (mut cpu_milli, mut memory_mib) = (0, 0);
        let mut containers = Vec::new();
        for c in &spec.containers {
            cpu_milli += resource(c, "cpu", quantity::cpu_milli)?.unwrap_or(0);
            memory_mib += resource(c, "memory", quantity::memory_mib)?.unwrap_or(0);
            let request = ContainerRequest::read(annotations, &c.name, &device_limits(c)).map_err(
                |source| DemandError::Request {
                    container: c.name.clone(),
                    source,
                },
            )?;
            if let Some(request) = request {
                containers.push(ContainerDemand {
                    name: c.name.clone(),
                    request,
                });
            }
        }
        let node_policy = annotations
            .get(&pod_key(bookkeeping::NODE_SCHEDULER_POLICY))
            .map(|v| {
                v.parse::<NodePolicy>()
                    .map_err(|e| DemandError::Annotation {
                        key: pod_key(bookkeeping::NODE_SCHEDULER_POLICY),
                        value: v.clone(),
                        reason: e.to_string(),
                    })
            })
            .transpose()?;
        let device_order = containers
            .iter()
            .find_map(|c| c.request.placement)
            .map(|policy| match policy {
                PlacementPolicy::Binpack => DeviceOrder::Tightest,
                PlacementPolicy::Spread => DeviceOrder::Loosest,
            });
        Ok(PodDemand {
            cpu_milli,
            memory_mib,
            containers,
            node_policy,
            device_order,
        })
    }

    /// One request per device-using container for `node` (percentages resolved against the
    /// node's devices); the pod's CPU and memory ride on the first request, or on a
    /// CPU-only request when no container uses devices.
    pub fn requests_on(&self, node: &NodeState, models: &ModelTable) -> Vec<Request> {
        let device_memory = node
            .spec
            .devices
            .iter()
            .map(|d| d.memory_mib)
            .min()
            .unwrap_or(0);
        let mut out: Vec<Request> = self
            .containers
            .iter()
            .map(|c| {
                let count = c.request.device_count;
                let mut r = if c.request.is_whole() {
                    Request::whole(0, 0, count)
                } else {
                    let memory = c.memory_mib(device_memory).unwrap_or(0);
                    let milli = c.request.compute_percent.unwrap_or(0) * FULL_DEVICE_MILLI / 100;
                    Request {
                        device_count: count,
                        ..Request::share(0, 0, milli, memory)
                    }
                };
                let selection = &c.request.selection;
                r.models = model_set(selection, models);
                r.uuid_include.clone_from(&selection.use_uuids);
                r.uuid_exclude.clone_from(&selection.nouse_uuids);
                r
            })
            .collect();
        match out.first_mut() {
            Some(first) => {
                first.cpu_milli = self.cpu_milli;
                first.memory_mib = self.memory_mib;
            }
            None => out.push(Request::cpu_only(self.cpu_milli, self.memory_mib)),
        }
        out
    }
}

/// The device models among `models` that `selection` accepts.
pub fn model_set(selection: &DeviceSelection, models: &ModelTable) -> ModelSet {
    if !selection.filters_types() {
        return ModelSet::ANY;
    }
    let mut set = ModelSet::NONE;
    for (id, name) in models.names().iter().enumerate() {
        if selection.accepts_type(&[name]).is_ok()
            && let Ok(id) = u8::try_from(id)
        {
            set = set.with(id);
        }
    }
    set
}

/// A container's `requests` (else `limits`) value of a core resource.
fn resource(
    c: &Container,
    name: &str,
    parse: fn(&str) -> Result<u64, QuantityError>,
) -> Result<Option<u64>, DemandError> {
    let Some(res) = &c.resources else {
        return Ok(None);
    };
    let value = res
        .requests
        .as_ref()
        .and_then(|r| r.get(name))
        .or_else(|| res.limits.as_ref().and_then(|l| l.get(name)));
    value
        .map(|Quantity(q)| {
            parse(q).map_err(|source| DemandError::Quantity {
                container: c.name.clone(),
                key: name.into(),
                source,
            })
        })
        .transpose()
}

/// The container's resources by name, limits over requests (extended resources must have
/// both equal; a request alone is read as its limit).
fn device_limits(c: &Container) -> BTreeMap<String, String> {
    let Some(res) = &c.resources else {
        return BTreeMap::new();
    };
    let mut out: BTreeMap<String, String> = res
        .requests
        .iter()
        .flatten()
        .map(|(name, Quantity(q))| (name.clone(), q.clone()))
        .collect();
    out.extend(
        res.limits
            .iter()
            .flatten()
            .map(|(name, Quantity(q))| (name.clone(), q.clone())),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn hami_resources_become_per_container_demand() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "annotations": {"hami.io/gpu-cores.b": "30", "hami.io/use-gputype": "a100"}},
            "spec": {"containers": [
                {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                  "limits": {"nvidia.com/gpu": "2", "nvidia.com/gpumem": "4096", "nvidia.com/gpucores": "50"}}},
                {"name": "b", "resources": {"limits": {"cpu": "1", "nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "25", "nvidia.com/gpucores": "90"}}},
                {"name": "sidecar", "resources": {"requests": {"cpu": "100m"}}}
            ]}
        }));
        let d = PodDemand::from_pod(&p).unwrap();
        assert_eq!((d.cpu_milli, d.memory_mib), (1600, 1024));
        assert_eq!(d.containers.len(), 2);
        let a = &d.containers[0];
        assert_eq!(a.name, "a");
        assert_eq!(a.request.device_count, 2);
        assert_eq!(a.memory_mib(80 << 10), Some(4096));
        assert_eq!(a.request.compute_percent, Some(50));
        // The container-specific annotation wins over the resource.
        let b = &d.containers[1].request;
        assert_eq!(b.compute_percent, Some(30));
        assert_eq!(b.memory, Some(MemoryRequest::Percent(25)));
        let mut models = ModelTable::default();
        let a100 = models.intern("NVIDIA A100-SXM4-80GB").unwrap();
        let t4 = models.intern("Tesla T4").unwrap();
        let set = model_set(&a.request.selection, &models);
        assert!(set.contains(a100) && !set.contains(t4));
    }

    #[test]
    fn a_bare_gpu_count_means_whole_devices_and_bad_values_are_named() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}),
        );
        assert!(
            PodDemand::from_pod(&p).unwrap().containers[0]
                .request
                .is_whole()
        );
        let p = pod(
            serde_json::json!({"metadata": {"name": "p", "annotations": {"hami.io/node-scheduler-policy": "worst"}},
            "spec": {"containers": [{"name": "a"}]}}),
        );
        let err = PodDemand::from_pod(&p).unwrap_err().to_string();
        assert!(
            err.contains("hami.io/node-scheduler-policy") && err.contains("worst"),
            "{err}"
        );
        let p = pod(
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "resources": {"limits": {"nvidia.com/gpucores": "150"}}}]}}),
        );
        let err = PodDemand::from_pod(&p).unwrap_err().to_string();
        assert!(
            err.contains("nvidia.com/gpucores") && err.contains("1 to 100"),
            "{err}"
        );
        let p = pod(
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "resources": {"limits": {"nvidia.com/gpumem": "lots"}}}]}}),
        );
        assert!(
            PodDemand::from_pod(&p)
                .unwrap_err()
                .to_string()
                .contains("nvidia.com/gpumem")
        );
    }
}
