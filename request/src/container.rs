//! What one container asks of devices ([`ContainerRequest`]), read from a pod's `hami.io/*`
//! annotations and from HAMi's resource names in the container's limits, in one place for the
//! shim (annotations only: the OCI spec carries no resources), the scheduler and the node agent.
//!
//! Every knob can be set for the whole pod (`hami.io/gpu-memory`) or for one container
//! (`hami.io/gpu-memory.<container-name>`). The container-specific annotation wins over the
//! pod-wide one, which wins over the resource (`nvidia.com/gpumem`). Anything under `hami.io/`
//! that is neither a knob nor a bookkeeping key is an error, so a misspelt knob fails the
//! container instead of leaving it uncapped.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::keys::{BOOKKEEPING_PREFIXES, PREFIX, knob, pod_key, resource};
use crate::knobs::{self, ComputePolicy, PlacementPolicy, Priority};
use crate::quantity::{self, QuantityError};

/// Most devices one container may ask for (the ledger's per-container device count).
pub const MAX_DEVICES_PER_CONTAINER: u32 = hami_ledger::MAX_DEVICES as u32;

/// How much device memory the container may use on each of its devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryRequest {
    Bytes(u64),
    /// A percentage (1..=100) of each chosen device's total memory.
    Percent(u32),
}

/// Which devices the container may be placed on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSelection {
    /// Device types (model name or vendor, case-insensitive substring); empty = any.
    pub use_types: Vec<String>,
    pub nouse_types: Vec<String>,
    /// Device UUIDs; empty = any.
    pub use_uuids: Vec<String>,
    pub nouse_uuids: Vec<String>,
}

/// Why a device is not eligible for a container: the knob that excludes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Excluded(pub &'static str);

impl DeviceSelection {
    /// Whether a device known by these type names (model, vendor) is wanted: some name
    /// contains a wanted type (when any is given) and none contains an unwanted one.
    pub fn accepts_type<S: AsRef<str>>(&self, type_names: &[S]) -> Result<(), Excluded> {
        let named = |pattern: &String| {
            let pattern = pattern.to_ascii_lowercase();
            type_names
                .iter()
                .any(|name| name.as_ref().to_ascii_lowercase().contains(&pattern))
        };
        if !self.use_types.is_empty() && !self.use_types.iter().any(named) {
            return Err(Excluded(knob::USE_TYPE));
        }
        if self.nouse_types.iter().any(named) {
            return Err(Excluded(knob::NOUSE_TYPE));
        }
        Ok(())
    }

    /// Whether the device with this UUID is wanted.
    pub fn accepts_uuid(&self, uuid: &str) -> Result<(), Excluded> {
        if !self.use_uuids.is_empty() && !self.use_uuids.iter().any(|u| u == uuid) {
            return Err(Excluded(knob::USE_UUID));
        }
        if self.nouse_uuids.iter().any(|u| u == uuid) {
            return Err(Excluded(knob::NOUSE_UUID));
        }
        Ok(())
    }

    /// Whether any type filter is set.
    pub fn filters_types(&self) -> bool {
        !self.use_types.is_empty() || !self.nouse_types.is_empty()
    }
}

/// Everything one container asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRequest {
    /// `None`: no memory cap, and placement commits the whole device.
    pub memory: Option<MemoryRequest>,
    /// Share of each device's compute, 1..=100; `None`: no compute cap.
    pub compute_percent: Option<u32>,
    pub policy: ComputePolicy,
    pub priority: Priority,
    pub device_count: u32,
    pub selection: DeviceSelection,
    /// `None`: the node's configured policy.
    pub placement: Option<PlacementPolicy>,
    /// The scheduler's decision (device UUIDs); when present, no node-local placement happens.
    pub assigned_devices: Option<Vec<String>>,
}

impl ContainerRequest {
    /// Whether the container takes its devices whole: neither a memory nor a compute share,
    /// or all of the compute.
    pub fn is_whole(&self) -> bool {
        self.compute_percent == Some(100)
            || (self.memory.is_none() && self.compute_percent.is_none())
    }

    /// Reads container `container`'s request from a pod's annotations alone (the shim's view).
    ///
    /// `Ok(None)`: no knob asks this container for a device; it runs exactly as with runc.
    /// Every `hami.io/*` annotation is still checked, so a misspelt or malformed one is an
    /// error either way.
    pub fn from_annotations(
        annotations: &BTreeMap<String, String>,
        container: &str,
    ) -> Result<Option<Self>, RequestError> {
        Self::read(annotations, container, &BTreeMap::new())
    }

    /// Reads container `container`'s request from a pod's annotations and the container's
    /// resource limits (`name → quantity`, e.g. `nvidia.com/gpumem → 3000`); an annotation
    /// wins over a resource.
    pub fn read(
        annotations: &BTreeMap<String, String>,
        container: &str,
        limits: &BTreeMap<String, String>,
    ) -> Result<Option<Self>, RequestError> {
        let mut settings = effective_knobs(annotations, container)?;
        add_resources(&mut settings, limits);
        let asks = DEMANDS.iter().any(|knob| settings.contains_key(knob));
        let request = Settings(settings).request()?;
        Ok(asks.then_some(request))
    }
}

/// The knobs that ask for devices. The others (policy, priority, device selection, placement)
/// only shape a request, so a pod-wide `hami.io/use-gputype` gives no device to a sidecar.
const DEMANDS: [&str; 5] = [
    knob::GPU_MEMORY,
    knob::GPU_MEMORY_PERCENTAGE,
    knob::GPU_CORES,
    knob::GPU_COUNT,
    knob::ASSIGNED_DEVICES,
];

/// A request that cannot be honoured, naming the annotation or resource and what it accepts.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("{} {key}={value:?} is invalid: {reason}; accepted: {accepted}", .origin.noun())]
    Invalid {
        origin: Origin,
        key: String,
        value: String,
        reason: String,
        accepted: &'static str,
    },
    #[error("annotation {key} is unknown; accepted keys: hami.io/<knob> or hami.io/<knob>.<container-name> with <knob> one of {}", knob::ALL.join(", "))]
    UnknownKey { key: String },
    #[error("annotations {first} and {second} contradict each other: {reason}")]
    Contradiction {
        first: String,
        second: String,
        reason: String,
    },
}

/// Where a setting was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Annotation,
    /// A resource limit, where zero means "not asked" as in HAMi.
    Resource,
}

impl Origin {
    fn noun(self) -> &'static str {
        match self {
            Origin::Annotation => "annotation",
            Origin::Resource => "resource limit",
        }
    }
}

/// One knob's setting: where it was written, its full key and its value.
struct Setting<'a> {
    origin: Origin,
    key: &'a str,
    value: &'a str,
}

const ACCEPT_MEMORY: &str =
    "a Kubernetes quantity such as 3000 (a bare number is MiB), 1.5Gi, 1536Mi, 500M, 1e9";
const ACCEPT_PERCENT: &str = "a whole number from 1 to 100";
const ACCEPT_CORES: &str = "a whole number from 1 to 100 (percent of the device's compute)";
const ACCEPT_COUNT: &str = "a whole number from 1 to 16";
const ACCEPT_LIST: &str = "a comma-separated list of distinct, non-empty names";

/// Picks, for every knob, the container-specific annotation if present, else the pod-wide one.
fn effective_knobs<'a>(
    annotations: &'a BTreeMap<String, String>,
    container_name: &str,
) -> Result<BTreeMap<&'static str, Setting<'a>>, RequestError> {
    let mut pod_wide = BTreeMap::new();
    let mut specific = BTreeMap::new();
    for (key, value) in annotations {
        let Some(rest) = key.strip_prefix(PREFIX) else {
            continue;
        };
        if BOOKKEEPING_PREFIXES.iter().any(|p| rest.starts_with(p)) {
            continue;
        }
        let (knob, container) = match rest.split_once('.') {
            Some((knob, container)) => (knob, Some(container)),
            None => (rest, None),
        };
        let Some(knob) = knob::ALL.iter().copied().find(|k| *k == knob) else {
            return Err(RequestError::UnknownKey { key: key.clone() });
        };
        let setting = Setting {
            origin: Origin::Annotation,
            key,
            value,
        };
        match container {
            None => {
                pod_wide.insert(knob, setting);
            }
            Some(c) if c == container_name => {
                specific.insert(knob, setting);
            }
            Some("") => return Err(RequestError::UnknownKey { key: key.clone() }),
            Some(_) => {}
        }
    }
    // Memory is one setting written two ways: a container-specific form of either one replaces
    // both pod-wide forms, so a container can switch from a percentage to an amount.
    if specific.contains_key(knob::GPU_MEMORY) || specific.contains_key(knob::GPU_MEMORY_PERCENTAGE)
    {
        pod_wide.remove(knob::GPU_MEMORY);
        pod_wide.remove(knob::GPU_MEMORY_PERCENTAGE);
    }
    pod_wide.extend(specific);
    Ok(pod_wide)
}

/// Adds the knobs HAMi's resource names set and no annotation did. A resource of zero asks
/// nothing (HAMi's meaning); an amount of memory wins over a percentage, as in HAMi.
fn add_resources<'a>(
    settings: &mut BTreeMap<&'static str, Setting<'a>>,
    limits: &'a BTreeMap<String, String>,
) {
    let memory_set = settings.contains_key(knob::GPU_MEMORY)
        || settings.contains_key(knob::GPU_MEMORY_PERCENTAGE);
    let mut memory_from_resource = false;
    for (name, knob) in [
        (resource::GPU, knob::GPU_COUNT),
        (resource::GPU_MEMORY, knob::GPU_MEMORY),
        (resource::GPU_MEMORY_PERCENTAGE, knob::GPU_MEMORY_PERCENTAGE),
        (resource::GPU_CORES, knob::GPU_CORES),
    ] {
        let Some((key, value)) = limits.get_key_value(name) else {
            continue;
        };
        let is_memory = matches!(knob, knob::GPU_MEMORY | knob::GPU_MEMORY_PERCENTAGE);
        let zero = quantity::count(value) == Ok(0);
        if settings.contains_key(knob)
            || (is_memory && (memory_set || memory_from_resource))
            || zero
        {
            continue;
        }
        memory_from_resource |= is_memory;
        settings.insert(
            knob,
            Setting {
                origin: Origin::Resource,
                key,
                value,
            },
        );
    }
}

/// The effective settings of one container.
struct Settings<'a>(BTreeMap<&'static str, Setting<'a>>);

impl Settings<'_> {
    fn get(&self, knob: &str) -> Option<&Setting<'_>> {
        self.0.get(knob)
    }

    fn key(&self, knob: &str) -> String {
        self.get(knob)
            .map_or_else(|| pod_key(knob), |s| s.key.to_owned())
    }

    fn request(&self) -> Result<ContainerRequest, RequestError> {
        let memory_bytes = self
            .get(knob::GPU_MEMORY)
            .map(|s| {
                quantity::gpu_memory_bytes(s.value)
                    .map_err(|e| invalid(s, memory_reason(&e), ACCEPT_MEMORY))
            })
            .transpose()?;
        let memory_percent = self
            .get(knob::GPU_MEMORY_PERCENTAGE)
            .map(|s| percent(s, ACCEPT_PERCENT))
            .transpose()?;
        let memory = match (memory_bytes, memory_percent) {
            (Some(_), Some(_)) => {
                return Err(RequestError::Contradiction {
                    first: self.key(knob::GPU_MEMORY),
                    second: self.key(knob::GPU_MEMORY_PERCENTAGE),
                    reason: "set either an amount or a percentage of device memory, not both"
                        .into(),
                });
            }
            (Some(bytes), None) => Some(MemoryRequest::Bytes(bytes)),
            (None, Some(percent)) => Some(MemoryRequest::Percent(percent)),
            (None, None) => None,
        };
        let compute_percent = self
            .get(knob::GPU_CORES)
            .map(|s| percent(s, ACCEPT_CORES))
            .transpose()?;
        let policy = self
            .get(knob::COMPUTE_POLICY)
            .map(|s| {
                knobs::compute_policy(s.value)
                    .ok_or_else(|| invalid(s, "unknown policy".into(), knobs::ACCEPTED_POLICIES))
            })
            .transpose()?
            .unwrap_or_default();
        let priority = self
            .get(knob::PRIORITY)
            .map(|s| {
                knobs::priority(s.value).ok_or_else(|| {
                    invalid(s, "unknown priority".into(), knobs::ACCEPTED_PRIORITIES)
                })
            })
            .transpose()?
            .unwrap_or_default();
        let placement = self
            .get(knob::PLACEMENT_POLICY)
            .map(|s| {
                knobs::placement_policy(s.value).ok_or_else(|| {
                    invalid(
                        s,
                        "unknown policy".into(),
                        knobs::ACCEPTED_PLACEMENT_POLICIES,
                    )
                })
            })
            .transpose()?;
        let device_count = self
            .get(knob::GPU_COUNT)
            .map(|s| match quantity::count(s.value) {
                Ok(n) if (1..=u64::from(MAX_DEVICES_PER_CONTAINER)).contains(&n) => Ok(n as u32),
                _ => Err(invalid(s, "not a device count".into(), ACCEPT_COUNT)),
            })
            .transpose()?;

        let list = |knob: &str| self.get(knob).map(list).transpose();
        let selection = DeviceSelection {
            use_types: list(knob::USE_TYPE)?.unwrap_or_default(),
            nouse_types: list(knob::NOUSE_TYPE)?.unwrap_or_default(),
            use_uuids: list(knob::USE_UUID)?.unwrap_or_default(),
            nouse_uuids: list(knob::NOUSE_UUID)?.unwrap_or_default(),
        };
        self.disjoint(
            knob::USE_UUID,
            knob::NOUSE_UUID,
            &selection.use_uuids,
            &selection.nouse_uuids,
        )?;
        self.disjoint(
            knob::USE_TYPE,
            knob::NOUSE_TYPE,
            &selection.use_types,
            &selection.nouse_types,
        )?;

        let assigned_devices = list(knob::ASSIGNED_DEVICES)?;
        if let Some(assigned) = &assigned_devices {
            self.check_assigned(assigned, device_count, &selection)?;
        }
        let device_count =
            device_count.unwrap_or_else(|| assigned_devices.as_ref().map_or(1, |a| a.len() as u32));
        Ok(ContainerRequest {
            memory,
            compute_percent,
            policy,
            priority,
            device_count,
            selection,
            placement,
            assigned_devices,
        })
    }

    fn check_assigned(
        &self,
        assigned: &[String],
        device_count: Option<u32>,
        selection: &DeviceSelection,
    ) -> Result<(), RequestError> {
        if assigned.iter().collect::<BTreeSet<_>>().len() != assigned.len()
            && let Some(setting) = self.get(knob::ASSIGNED_DEVICES)
        {
            return Err(invalid(
                setting,
                "a device is listed twice".into(),
                ACCEPT_LIST,
            ));
        }
        if let Some(count) = device_count
            && count as usize != assigned.len()
        {
            return Err(RequestError::Contradiction {
                first: self.key(knob::ASSIGNED_DEVICES),
                second: self.key(knob::GPU_COUNT),
                reason: format!("{} devices assigned but {count} requested", assigned.len()),
            });
        }
        if let Some(excluded) = assigned.iter().find(|u| selection.nouse_uuids.contains(u)) {
            return Err(RequestError::Contradiction {
                first: self.key(knob::ASSIGNED_DEVICES),
                second: self.key(knob::NOUSE_UUID),
                reason: format!("device {excluded} is both assigned and excluded"),
            });
        }
        Ok(())
    }

    fn disjoint(
        &self,
        use_knob: &str,
        nouse_knob: &str,
        used: &[String],
        unused: &[String],
    ) -> Result<(), RequestError> {
        match used
            .iter()
            .find(|u| unused.iter().any(|n| n.eq_ignore_ascii_case(u)))
        {
            Some(both) => Err(RequestError::Contradiction {
                first: self.key(use_knob),
                second: self.key(nouse_knob),
                reason: format!("{both} is both included and excluded"),
            }),
            None => Ok(()),
        }
    }
}

/// Why a memory value was refused, without the grammar the error's `accepted` part gives.
fn memory_reason(error: &QuantityError) -> String {
    match error {
        QuantityError::Malformed { .. } => "not a Kubernetes quantity".into(),
        other => other.to_string(),
    }
}

fn invalid(setting: &Setting<'_>, reason: String, accepted: &'static str) -> RequestError {
    RequestError::Invalid {
        origin: setting.origin,
        key: setting.key.to_owned(),
        value: setting.value.to_owned(),
        reason,
        accepted,
    }
}

/// A percentage from 1 to 100: a whole number, `%` allowed after it.
fn percent(setting: &Setting<'_>, accepted: &'static str) -> Result<u32, RequestError> {
    let text = setting.value.trim();
    match quantity::count(text.strip_suffix('%').unwrap_or(text)) {
        Ok(p) if (1..=100).contains(&p) => Ok(p as u32),
        Ok(_) => Err(invalid(setting, "out of range".into(), accepted)),
        Err(_) => Err(invalid(setting, "not a whole number".into(), accepted)),
    }
}

fn list(setting: &Setting<'_>) -> Result<Vec<String>, RequestError> {
    let items: Vec<String> = setting
        .value
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    if items.iter().any(String::is_empty) {
        return Err(invalid(setting, "empty item".into(), ACCEPT_LIST));
    }
    Ok(items)
}

#[cfg(test)]
mod tests;
