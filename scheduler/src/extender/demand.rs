//! What a pod asks of devices, read from HAMi resources (`nvidia.com/gpu`, `gpumem`,
//! `gpumem-percentage`, `gpucores`) and `hami.io/*` annotations (pod-wide or
//! `.<container>`-specific; an annotation wins over a resource), and turned into one
//! [`Request`] per device-using container for a given node.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use thiserror::Error;

use crate::cluster::{FULL_DEVICE_MILLI, NodeState};
use crate::fit::DeviceOrder;
use crate::model::{ModelSet, ModelTable};
use crate::policy::NodePolicy;
use crate::request::Request;
use hami_request::keys::{bookkeeping, container_key, knob, pod_key, resource};
use hami_request::quantity::{self, QuantityError};

/// Device memory per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceMemory {
    /// Not given: with no compute share either, the devices are taken whole.
    Unset,
    Mib(u64),
    /// A share (1..=100) of each device's memory.
    Percent(u32),
}

/// The device demand of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDemand {
    pub name: String,
    pub count: u32,
    pub memory: DeviceMemory,
    /// Compute per device, % (1..=100); `None` reserves no compute share.
    pub cores_percent: Option<u32>,
}

impl ContainerDemand {
    /// Whether the container takes whole devices (no memory or compute share given, or
    /// 100 % compute).
    pub fn is_whole(&self) -> bool {
        self.cores_percent == Some(100)
            || (self.memory == DeviceMemory::Unset && self.cores_percent.is_none())
    }
}

/// Everything the scheduler needs from a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDemand {
    pub cpu_milli: u64,
    pub memory_mib: u64,
    /// Containers that use devices, in spec order.
    pub containers: Vec<ContainerDemand>,
    /// Device type filters (case-insensitive substrings of the model name).
    pub use_types: Vec<String>,
    pub nouse_types: Vec<String>,
    pub use_uuids: Vec<String>,
    pub nouse_uuids: Vec<String>,
    pub node_policy: Option<NodePolicy>,
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
    #[error("{key}={value:?} of container {container} is out of range ({range})")]
    OutOfRange {
        container: String,
        key: String,
        value: String,
        range: &'static str,
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
            if let Some(d) = container_demand(c, annotations)? {
                containers.push(d);
            }
        }
        let list = |knob: &str| -> Vec<String> {
            annotations
                .get(&pod_key(knob))
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
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
        let device_order = annotations
            .get(&pod_key(knob::PLACEMENT_POLICY))
            .map(|v| match v.trim() {
                "binpack" => Ok(DeviceOrder::Tightest),
                "spread" => Ok(DeviceOrder::Loosest),
                other => Err(DemandError::Annotation {
                    key: pod_key(knob::PLACEMENT_POLICY),
                    value: other.into(),
                    reason: "expected binpack or spread".into(),
                }),
            })
            .transpose()?;
        Ok(PodDemand {
            cpu_milli,
            memory_mib,
            containers,
            use_types: list(knob::USE_TYPE),
            nouse_types: list(knob::NOUSE_TYPE),
            use_uuids: list(knob::USE_UUID),
            nouse_uuids: list(knob::NOUSE_UUID),
            node_policy,
            device_order,
        })
    }

    /// The accepted device models among `models`.
    pub fn model_set(&self, models: &ModelTable) -> ModelSet {
        if self.use_types.is_empty() && self.nouse_types.is_empty() {
            return ModelSet::ANY;
        }
        let matches = |name: &str, list: &[String]| {
            let name = name.to_ascii_lowercase();
            list.iter().any(|t| name.contains(&t.to_ascii_lowercase()))
        };
        let mut set = ModelSet::NONE;
        for (id, name) in models.names().iter().enumerate() {
            let accepted = (self.use_types.is_empty() || matches(name, &self.use_types))
                && !matches(name, &self.nouse_types);
            if accepted && let Ok(id) = u8::try_from(id) {
                set = set.with(id);
            }
        }
        set
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
        let accepted = self.model_set(models);
        let mut out: Vec<Request> = self
            .containers
            .iter()
            .map(|c| {
                let mut r = if c.is_whole() {
                    Request::whole(0, 0, c.count)
                } else {
                    let memory = match c.memory {
                        DeviceMemory::Unset => 0,
                        DeviceMemory::Mib(m) => m,
                        DeviceMemory::Percent(p) => device_memory * u64::from(p) / 100,
                    };
                    let milli = c.cores_percent.unwrap_or(0) * FULL_DEVICE_MILLI / 100;
                    Request {
                        device_count: c.count,
                        ..Request::share(0, 0, milli, memory)
                    }
                };
                r.models = accepted;
                r.uuid_include.clone_from(&self.use_uuids);
                r.uuid_exclude.clone_from(&self.nouse_uuids);
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

/// The container's device demand, or `None` when it uses no device.
fn container_demand(
    c: &Container,
    annotations: &BTreeMap<String, String>,
) -> Result<Option<ContainerDemand>, DemandError> {
    let limit = |name: &str| -> Result<Option<u64>, DemandError> {
        let res = c.resources.as_ref();
        let value = res
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get(name))
            .or_else(|| {
                res.and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get(name))
            });
        value
            .map(|Quantity(q)| {
                quantity::count(q).map_err(|source| DemandError::Quantity {
                    container: c.name.clone(),
                    key: name.into(),
                    source,
                })
            })
            .transpose()
    };
    // `hami.io/<knob>.<container>` wins over `hami.io/<knob>`, which wins over the resource.
    let knob = |knob: &str| -> Option<(String, &String)> {
        let specific = container_key(knob, &c.name);
        let pod_wide = pod_key(knob);
        annotations
            .get(&specific)
            .map(|v| (specific.clone(), v))
            .or_else(|| annotations.get(&pod_wide).map(|v| (pod_wide.clone(), v)))
    };
    let knob_number = |name: &str, parse: fn(&str) -> Result<u64, QuantityError>| {
        knob(name)
            .map(|(key, v)| {
                parse(v).map_err(|source| DemandError::Quantity {
                    container: c.name.clone(),
                    key,
                    source,
                })
            })
            .transpose()
    };
    let count = knob_number(knob::GPU_COUNT, quantity::count)?.or(limit(resource::GPU)?);
    let memory_mib =
        knob_number(knob::GPU_MEMORY, quantity::gpu_memory_mib)?.or(limit(resource::GPU_MEMORY)?);
    let memory_percent = knob_number(knob::GPU_MEMORY_PERCENTAGE, quantity::count)?
        .or(limit(resource::GPU_MEMORY_PERCENTAGE)?);
    let cores = knob_number(knob::GPU_CORES, quantity::count)?.or(limit(resource::GPU_CORES)?);
    if count.is_none() && memory_mib.is_none() && memory_percent.is_none() && cores.is_none() {
        return Ok(None);
    }
    let range = |key: &str, value: u64, lo: u64, hi: u64, text: &'static str| {
        if (lo..=hi).contains(&value) {
            Ok(u32::try_from(value).unwrap_or(u32::MAX))
        } else {
            Err(DemandError::OutOfRange {
                container: c.name.clone(),
                key: key.into(),
                value: value.to_string(),
                range: text,
            })
        }
    };
    let count = range("gpu count", count.unwrap_or(1), 1, 16, "1 to 16")?;
    let memory = match (memory_mib, memory_percent) {
        (Some(m), _) => DeviceMemory::Mib(m),
        (None, Some(p)) => {
            DeviceMemory::Percent(range("gpu memory percentage", p, 1, 100, "1 to 100")?)
        }
        (None, None) => DeviceMemory::Unset,
    };
    let cores_percent = cores
        .map(|v| range("gpu cores", v, 0, 100, "0 to 100"))
        .transpose()?;
    Ok(Some(ContainerDemand {
        name: c.name.clone(),
        count,
        memory,
        cores_percent,
    }))
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
        assert_eq!(
            d.containers[0],
            ContainerDemand {
                name: "a".into(),
                count: 2,
                memory: DeviceMemory::Mib(4096),
                cores_percent: Some(50)
            }
        );
        // The container-specific annotation wins over the resource.
        assert_eq!(d.containers[1].cores_percent, Some(30));
        assert_eq!(d.containers[1].memory, DeviceMemory::Percent(25));
        let mut models = ModelTable::default();
        let a100 = models.intern("NVIDIA A100-SXM4-80GB").unwrap();
        let t4 = models.intern("Tesla T4").unwrap();
        let set = d.model_set(&models);
        assert!(set.contains(a100) && !set.contains(t4));
    }

    #[test]
    fn a_bare_gpu_count_means_whole_devices_and_bad_values_are_named() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}),
        );
        assert!(PodDemand::from_pod(&p).unwrap().containers[0].is_whole());
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
            err.contains("gpu cores") && err.contains("0 to 100"),
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
