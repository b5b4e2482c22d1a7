//! The `hami.io/*` annotations a container is created with, turned into a [`GpuRequest`].
//!
//! Every knob can be set for the whole pod (`hami.io/gpu-memory`) or for one container
//! (`hami.io/gpu-memory.<container-name>`); the container-specific key wins. Anything under
//! `hami.io/` that is neither a knob nor a known bookkeeping key of the scheduler is an error, so a
//! misspelt knob fails the container instead of leaving it uncapped.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use hami_request::keys::{BOOKKEEPING_PREFIXES, PREFIX, knob, pod_key};
use hami_request::{QuantityError, gpu_memory_bytes, knobs};

/// Most devices one container may ask for (the ledger's per-container device count).
pub const MAX_DEVICES_PER_CONTAINER: u32 = 16;

/// How much device memory the container may use on each of its devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryRequest {
    Bytes(u64),
    /// A percentage (1..=100) of each chosen device's total memory.
    Percent(u32),
}

pub use hami_request::knobs::{ComputePolicy, Priority};

/// How node-local placement picks among devices that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlacementPolicy {
    /// Fill the most committed device first, keeping whole devices free.
    #[default]
    Binpack,
    /// Use the least committed device first.
    Spread,
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

/// Everything the annotations ask for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuRequest {
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

/// A `hami.io/*` annotation that cannot be honoured.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AnnotationError {
    #[error("annotation {key}={value:?} is invalid: {reason}; accepted: {accepted}")]
    Invalid {
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

/// The annotation that set a knob: its full key and value.
struct Setting<'a> {
    key: &'a str,
    value: &'a str,
}

/// Reads the request of container `container_name` from the spec's annotations.
///
/// Returns `Ok(None)` when no knob applies to this container: it then runs exactly as with runc.
pub fn parse_request(
    annotations: &BTreeMap<String, String>,
    container_name: &str,
) -> Result<Option<GpuRequest>, AnnotationError> {
    let knobs = effective_knobs(annotations, container_name)?;
    if knobs.is_empty() {
        return Ok(None);
    }
    let get = |knob: &str| knobs.get(knob);

    let memory_bytes = get(knob::GPU_MEMORY)
        .map(|s| {
            gpu_memory_bytes(s.value).map_err(|e| invalid(s, memory_reason(&e), ACCEPT_MEMORY))
        })
        .transpose()?;
    let memory_percent = get(knob::GPU_MEMORY_PERCENTAGE)
        .map(|s| parse_percent(s, ACCEPT_PERCENT))
        .transpose()?;
    let memory = match (memory_bytes, memory_percent) {
        (Some(_), Some(_)) => {
            return Err(AnnotationError::Contradiction {
                first: knob_key(&knobs, knob::GPU_MEMORY),
                second: knob_key(&knobs, knob::GPU_MEMORY_PERCENTAGE),
                reason: "set either an amount or a percentage of device memory, not both".into(),
            });
        }
        (Some(bytes), None) => Some(MemoryRequest::Bytes(bytes)),
        (None, Some(percent)) => Some(MemoryRequest::Percent(percent)),
        (None, None) => None,
    };
    let compute_percent = get(knob::GPU_CORES)
        .map(|s| parse_percent(s, ACCEPT_CORES))
        .transpose()?;
    let policy = get(knob::COMPUTE_POLICY)
        .map(|s| {
            knobs::compute_policy(s.value)
                .ok_or_else(|| invalid(s, "unknown policy".into(), knobs::ACCEPTED_POLICIES))
        })
        .transpose()?
        .unwrap_or_default();
    let priority = get(knob::PRIORITY)
        .map(|s| {
            knobs::priority(s.value)
                .ok_or_else(|| invalid(s, "unknown priority".into(), knobs::ACCEPTED_PRIORITIES))
        })
        .transpose()?
        .unwrap_or_default();
    let placement = get(knob::PLACEMENT_POLICY)
        .map(|s| match s.value.trim().to_ascii_lowercase().as_str() {
            "binpack" => Ok(PlacementPolicy::Binpack),
            "spread" => Ok(PlacementPolicy::Spread),
            _ => Err(invalid(s, "unknown policy".into(), "binpack, spread")),
        })
        .transpose()?;
    let count_setting = get(knob::GPU_COUNT);
    let device_count = count_setting
        .map(|s| match s.value.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_DEVICES_PER_CONTAINER).contains(&n) => Ok(n),
            _ => Err(invalid(
                s,
                "not a device count".into(),
                "a whole number from 1 to 16",
            )),
        })
        .transpose()?;

    let list = |knob: &str| get(knob).map(|s| parse_list(s)).transpose();
    let selection = DeviceSelection {
        use_types: list(knob::USE_TYPE)?.unwrap_or_default(),
        nouse_types: list(knob::NOUSE_TYPE)?.unwrap_or_default(),
        use_uuids: list(knob::USE_UUID)?.unwrap_or_default(),
        nouse_uuids: list(knob::NOUSE_UUID)?.unwrap_or_default(),
    };
    check_disjoint(
        &knobs,
        knob::USE_UUID,
        knob::NOUSE_UUID,
        &selection.use_uuids,
        &selection.nouse_uuids,
    )?;
    check_disjoint(
        &knobs,
        knob::USE_TYPE,
        knob::NOUSE_TYPE,
        &selection.use_types,
        &selection.nouse_types,
    )?;

    let assigned_devices = list(knob::ASSIGNED_DEVICES)?;
    if let Some(assigned) = &assigned_devices {
        if assigned.iter().collect::<BTreeSet<_>>().len() != assigned.len() {
            let setting =
                get(knob::ASSIGNED_DEVICES).expect("assigned devices were parsed from it");
            return Err(invalid(
                setting,
                "a device is listed twice".into(),
                ACCEPT_LIST,
            ));
        }
        if let Some(count) = device_count
            && count as usize != assigned.len()
        {
            return Err(AnnotationError::Contradiction {
                first: knob_key(&knobs, knob::ASSIGNED_DEVICES),
                second: knob_key(&knobs, knob::GPU_COUNT),
                reason: format!("{} devices assigned but {count} requested", assigned.len()),
            });
        }
        if let Some(excluded) = assigned.iter().find(|u| selection.nouse_uuids.contains(u)) {
            return Err(AnnotationError::Contradiction {
                first: knob_key(&knobs, knob::ASSIGNED_DEVICES),
                second: knob_key(&knobs, knob::NOUSE_UUID),
                reason: format!("device {excluded} is both assigned and excluded"),
            });
        }
    }
    let device_count =
        device_count.unwrap_or_else(|| assigned_devices.as_ref().map_or(1, |a| a.len() as u32));

    Ok(Some(GpuRequest {
        memory,
        compute_percent,
        policy,
        priority,
        device_count,
        selection,
        placement,
        assigned_devices,
    }))
}

/// Why a memory value was refused, without the grammar the error's `accepted` part gives.
fn memory_reason(error: &QuantityError) -> String {
    match error {
        QuantityError::Malformed { .. } => "not a Kubernetes quantity".into(),
        other => other.to_string(),
    }
}

const ACCEPT_MEMORY: &str =
    "a Kubernetes quantity such as 3000 (a bare number is MiB), 1.5Gi, 1536Mi, 500M, 1e9";
const ACCEPT_PERCENT: &str = "a whole number from 1 to 100";
const ACCEPT_CORES: &str = "a whole number from 1 to 100 (percent of the device's compute)";
const ACCEPT_LIST: &str = "a comma-separated list of distinct, non-empty names";

/// Picks, for every knob, the container-specific annotation if present, else the pod-wide one.
fn effective_knobs<'a>(
    annotations: &'a BTreeMap<String, String>,
    container_name: &str,
) -> Result<BTreeMap<&'static str, Setting<'a>>, AnnotationError> {
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
            return Err(AnnotationError::UnknownKey { key: key.clone() });
        };
        let setting = Setting { key, value };
        match container {
            None => {
                pod_wide.insert(knob, setting);
            }
            Some(c) if c == container_name => {
                specific.insert(knob, setting);
            }
            Some("") => return Err(AnnotationError::UnknownKey { key: key.clone() }),
            Some(_) => {}
        }
    }
    // Memory is one setting written two ways: a container-specific form of either one replaces both
    // pod-wide forms, so a container can switch from a percentage to an amount.
    if specific.contains_key(knob::GPU_MEMORY) || specific.contains_key(knob::GPU_MEMORY_PERCENTAGE)
    {
        pod_wide.remove(knob::GPU_MEMORY);
        pod_wide.remove(knob::GPU_MEMORY_PERCENTAGE);
    }
    pod_wide.extend(specific);
    Ok(pod_wide)
}

fn knob_key(knobs: &BTreeMap<&'static str, Setting<'_>>, knob: &str) -> String {
    knobs
        .get(knob)
        .map_or_else(|| pod_key(knob), |s| s.key.to_owned())
}

fn invalid(setting: &Setting<'_>, reason: String, accepted: &'static str) -> AnnotationError {
    AnnotationError::Invalid {
        key: setting.key.to_owned(),
        value: setting.value.to_owned(),
        reason,
        accepted,
    }
}

fn parse_percent(setting: &Setting<'_>, accepted: &'static str) -> Result<u32, AnnotationError> {
    match setting.value.trim().trim_end_matches('%').parse::<u32>() {
        Ok(p) if (1..=100).contains(&p) => Ok(p),
        Ok(_) => Err(invalid(setting, "out of range".into(), accepted)),
        Err(_) => Err(invalid(setting, "not a whole number".into(), accepted)),
    }
}

fn parse_list(setting: &Setting<'_>) -> Result<Vec<String>, AnnotationError> {
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

fn check_disjoint(
    knobs: &BTreeMap<&'static str, Setting<'_>>,
    use_knob: &str,
    nouse_knob: &str,
    used: &[String],
    unused: &[String],
) -> Result<(), AnnotationError> {
    match used
        .iter()
        .find(|u| unused.iter().any(|n| n.eq_ignore_ascii_case(u)))
    {
        Some(both) => Err(AnnotationError::Contradiction {
            first: knob_key(knobs, use_knob),
            second: knob_key(knobs, nouse_knob),
            reason: format!("{both} is both included and excluded"),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn request(pairs: &[(&str, &str)]) -> Result<Option<GpuRequest>, AnnotationError> {
        parse_request(&annotations(pairs), "main")
    }

    #[test]
    fn no_hami_annotation_means_plain_runc() {
        assert_eq!(
            request(&[("io.kubernetes.cri.container-type", "container")]),
            Ok(None)
        );
        assert_eq!(request(&[("hami.io/bind-phase", "success")]), Ok(None));
    }

    #[test]
    fn full_request_is_parsed() {
        let got = request(&[
            ("hami.io/gpu-memory", "4Gi"),
            ("hami.io/gpu-cores", "30"),
            ("hami.io/gpu-compute-policy", "Burst"),
            ("hami.io/gpu-priority", "high"),
            ("hami.io/gpu-count", "2"),
            ("hami.io/use-gputype", "A100, H100"),
            ("hami.io/nouse-gpuuuid", "GPU-bad"),
            ("hami.io/gpu-scheduler-policy", "spread"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(got.memory, Some(MemoryRequest::Bytes(4 << 30)));
        assert_eq!(got.compute_percent, Some(30));
        assert_eq!(got.policy, ComputePolicy::Burst);
        assert_eq!(got.priority, Priority::High);
        assert_eq!(got.device_count, 2);
        assert_eq!(got.selection.use_types, vec!["A100", "H100"]);
        assert_eq!(got.selection.nouse_uuids, vec!["GPU-bad"]);
        assert_eq!(got.placement, Some(PlacementPolicy::Spread));
        assert_eq!(got.assigned_devices, None);
    }

    #[test]
    fn defaults_are_one_device_hard_normal_node_policy() {
        let got = request(&[("hami.io/gpu-memory", "512")]).unwrap().unwrap();
        assert_eq!(got.memory, Some(MemoryRequest::Bytes(512 << 20)));
        assert_eq!(got.compute_percent, None);
        assert_eq!(got.device_count, 1);
        assert_eq!(got.policy, ComputePolicy::Hard);
        assert_eq!(got.priority, Priority::Normal);
        assert_eq!(got.placement, None);
    }

    #[test]
    fn low_priority_is_normal() {
        let got = request(&[("hami.io/gpu-priority", "low")])
            .unwrap()
            .unwrap();
        assert_eq!(got.priority, Priority::Normal);
    }

    #[test]
    fn container_specific_annotation_overrides_the_pod_wide_one() {
        let pairs = [
            ("hami.io/gpu-memory", "1Gi"),
            ("hami.io/gpu-memory-percentage.main", "25"),
            ("hami.io/gpu-cores", "50"),
            ("hami.io/gpu-cores.sidecar", "10"),
        ];
        let main = parse_request(&annotations(&pairs), "main")
            .unwrap()
            .unwrap();
        assert_eq!(main.memory, Some(MemoryRequest::Percent(25)));
        assert_eq!(main.compute_percent, Some(50));
        let sidecar = parse_request(&annotations(&pairs), "sidecar")
            .unwrap()
            .unwrap();
        assert_eq!(sidecar.memory, Some(MemoryRequest::Bytes(1 << 30)));
        assert_eq!(sidecar.compute_percent, Some(10));
    }

    #[test]
    fn knob_for_another_container_only_leaves_this_one_alone() {
        assert_eq!(request(&[("hami.io/gpu-memory.other", "1Gi")]), Ok(None));
    }

    #[test]
    fn malformed_value_names_the_annotation_and_the_accepted_forms() {
        let err = request(&[("hami.io/gpu-memory", "lots")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("hami.io/gpu-memory"), "{text}");
        assert!(text.contains("\"lots\""), "{text}");
        assert!(text.contains("1.5Gi"), "{text}");

        let text = request(&[("hami.io/gpu-cores.main", "150")])
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("hami.io/gpu-cores.main") && text.contains("1 to 100"),
            "{text}"
        );

        let text = request(&[("hami.io/gpu-compute-policy", "soft")])
            .unwrap_err()
            .to_string();
        assert!(text.contains("hard, burst"), "{text}");

        let text = request(&[("hami.io/gpu-count", "0")])
            .unwrap_err()
            .to_string();
        assert!(text.contains("hami.io/gpu-count"), "{text}");

        let text = request(&[("hami.io/use-gpuuuid", "GPU-a,,GPU-b")])
            .unwrap_err()
            .to_string();
        assert!(text.contains("empty item"), "{text}");
    }

    #[test]
    fn misspelt_knob_is_an_error_not_ignored() {
        let err = request(&[("hami.io/gpu-memroy", "1Gi")]).unwrap_err();
        assert_eq!(
            err,
            AnnotationError::UnknownKey {
                key: "hami.io/gpu-memroy".into()
            }
        );
        assert!(err.to_string().contains("gpu-memory-percentage"));
        let err = request(&[("hami.io/gpu-memory.", "1Gi")]).unwrap_err();
        assert!(matches!(err, AnnotationError::UnknownKey { .. }));
    }

    #[test]
    fn amount_and_percentage_at_the_same_level_contradict() {
        let err = request(&[
            ("hami.io/gpu-memory", "1Gi"),
            ("hami.io/gpu-memory-percentage", "50"),
        ])
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("hami.io/gpu-memory ") && text.contains("gpu-memory-percentage"),
            "{text}"
        );
    }

    #[test]
    fn included_and_excluded_device_contradict() {
        let err = request(&[
            ("hami.io/use-gpuuuid", "GPU-1,GPU-2"),
            ("hami.io/nouse-gpuuuid", "GPU-2"),
        ])
        .unwrap_err();
        assert!(
            matches!(err, AnnotationError::Contradiction { .. }),
            "{err}"
        );
    }

    #[test]
    fn assigned_devices_set_the_count_and_must_agree_with_it() {
        let got = request(&[("hami.io/assigned-devices", "GPU-1,GPU-2")])
            .unwrap()
            .unwrap();
        assert_eq!(got.device_count, 2);
        assert_eq!(
            got.assigned_devices,
            Some(vec!["GPU-1".to_owned(), "GPU-2".to_owned()])
        );
        let err = request(&[
            ("hami.io/assigned-devices", "GPU-1"),
            ("hami.io/gpu-count", "2"),
        ])
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("1 devices assigned but 2 requested"),
            "{err}"
        );
        let err = request(&[("hami.io/assigned-devices", "GPU-1,GPU-1")]).unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
    }
}
