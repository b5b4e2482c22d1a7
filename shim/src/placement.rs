//! Node-local placement: which device(s) a container gets when the scheduler did not decide.
//!
//! Pure policy: the caller passes the devices with what is already committed on them (read from
//! the ledger under the node's placement lock) and gets the chosen devices or a reason per device.

use std::fmt;

use thiserror::Error;

use hami_request::knobs::PlacementPolicy;
use hami_request::{ContainerRequest, DeviceSelection, MemoryRequest};

/// One device as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceState {
    pub uuid: String,
    pub index: u32,
    /// Names a `use-gputype` selection matches against: vendor, and model when known.
    pub type_names: Vec<String>,
    pub total_memory: u64,
    /// Memory already promised to other containers.
    pub committed_memory: u64,
    /// Compute percent already promised to other containers.
    pub committed_compute: u32,
}

/// The devices a container may see, from its `NVIDIA_VISIBLE_DEVICES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    All,
    None,
    /// Indices or UUIDs.
    Listed(Vec<String>),
}

impl Visibility {
    /// Reads an `NVIDIA_VISIBLE_DEVICES` value (`None`: the variable is not set).
    pub fn from_env_value(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            None | Some("all") => Self::All,
            Some("" | "none" | "void") => Self::None,
            Some(list) => Self::Listed(list.split(',').map(|s| s.trim().to_owned()).collect()),
        }
    }

    fn allows(&self, device: &DeviceState) -> bool {
        match self {
            Self::All => true,
            Self::None => false,
            Self::Listed(items) => items
                .iter()
                .any(|item| *item == device.uuid || item.parse::<u32>() == Ok(device.index)),
        }
    }
}

/// A device given to the container, with what it commits there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedDevice {
    pub uuid: String,
    /// The memory cap; `None` when the container asked for no cap (it then commits the device).
    pub memory_limit: Option<u64>,
    pub committed_memory: u64,
}

/// Why a device was not chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    NotVisible,
    NotSelected(&'static str),
    NotEnoughMemory { needed: u64, free: u64 },
    NotEnoughCompute { needed: u32, free: u32 },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotVisible => write!(f, "not in NVIDIA_VISIBLE_DEVICES"),
            Self::NotSelected(knob) => write!(f, "excluded by hami.io/{knob}"),
            Self::NotEnoughMemory { needed, free } => {
                write!(
                    f,
                    "needs {} MiB of memory, {} MiB uncommitted",
                    needed >> 20,
                    free >> 20
                )
            }
            Self::NotEnoughCompute { needed, free } => {
                write!(f, "needs {needed}% of compute, {free}% uncommitted")
            }
        }
    }
}

/// Why no placement exists.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error("no GPU on this node (no node ledger and no device found)")]
    NoDevices,
    #[error("{wanted} device(s) requested, {fitting} fit: {}", describe(.rejections))]
    NoFit {
        wanted: u32,
        fitting: usize,
        rejections: Vec<(String, Rejection)>,
    },
    #[error("hami.io/assigned-devices names {0}, which is not a device of this node")]
    UnknownAssigned(String),
}

fn describe(rejections: &[(String, Rejection)]) -> String {
    if rejections.is_empty() {
        return "no device is left".to_owned();
    }
    rejections
        .iter()
        .map(|(uuid, why)| format!("{uuid} {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Chooses the container's devices (the scheduler's, when it assigned them).
pub fn place(
    devices: &[DeviceState],
    visibility: &Visibility,
    request: &ContainerRequest,
) -> Result<Vec<PlacedDevice>, PlacementError> {
    if devices.is_empty() {
        return Err(PlacementError::NoDevices);
    }
    let mut rejections = Vec::new();
    let mut fitting: Vec<(&DeviceState, PlacedDevice)> = Vec::new();
    let candidates: Vec<&DeviceState> = match &request.assigned_devices {
        Some(assigned) => assigned
            .iter()
            .map(|uuid| {
                devices
                    .iter()
                    .find(|d| d.uuid == *uuid)
                    .ok_or_else(|| PlacementError::UnknownAssigned(uuid.clone()))
            })
            .collect::<Result<_, _>>()?,
        None => devices.iter().collect(),
    };
    for device in candidates {
        let checked = if request.assigned_devices.is_some() {
            Ok(())
        } else {
            eligible(device, visibility, &request.selection)
        };
        match checked.and_then(|()| fit(device, request)) {
            Ok(placed) => fitting.push((device, placed)),
            Err(why) => rejections.push((device.uuid.clone(), why)),
        }
    }
    let wanted = request.device_count as usize;
    if fitting.len() < wanted || (request.assigned_devices.is_some() && !rejections.is_empty()) {
        return Err(PlacementError::NoFit {
            wanted: request.device_count,
            fitting: fitting.len(),
            rejections,
        });
    }
    let free_after = |(d, p): &(&DeviceState, PlacedDevice)| {
        d.total_memory
            .saturating_sub(d.committed_memory)
            .saturating_sub(p.committed_memory)
    };
    if request.assigned_devices.is_none() {
        match request.placement.unwrap_or_default() {
            PlacementPolicy::Binpack => fitting.sort_by_key(|c| (free_after(c), c.0.index)),
            PlacementPolicy::Spread => {
                fitting.sort_by_key(|c| (std::cmp::Reverse(free_after(c)), c.0.index));
            }
        }
    }
    Ok(fitting
        .into_iter()
        .take(wanted)
        .map(|(_, placed)| placed)
        .collect())
}

fn eligible(
    device: &DeviceState,
    visibility: &Visibility,
    selection: &DeviceSelection,
) -> Result<(), Rejection> {
    if !visibility.allows(device) {
        return Err(Rejection::NotVisible);
    }
    selection
        .accepts_uuid(&device.uuid)
        .and_then(|()| selection.accepts_type(&device.type_names))
        .map_err(|excluded| Rejection::NotSelected(excluded.0))
}

fn fit(device: &DeviceState, request: &ContainerRequest) -> Result<PlacedDevice, Rejection> {
    let (memory_limit, needed) = match request.memory {
        Some(MemoryRequest::Bytes(bytes)) => (Some(bytes), bytes),
        Some(MemoryRequest::Percent(percent)) => {
            let bytes = u64::try_from(u128::from(device.total_memory) * u128::from(percent) / 100)
                .unwrap_or(u64::MAX);
            (Some(bytes), bytes)
        }
        None => (None, device.total_memory),
    };
    let free = device.total_memory.saturating_sub(device.committed_memory);
    if needed > free {
        return Err(Rejection::NotEnoughMemory { needed, free });
    }
    if let Some(compute) = request.compute_percent {
        let free = 100u32.saturating_sub(device.committed_compute);
        if compute > free {
            return Err(Rejection::NotEnoughCompute {
                needed: compute,
                free,
            });
        }
    }
    Ok(PlacedDevice {
        uuid: device.uuid.clone(),
        memory_limit,
        committed_memory: needed,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const GIB: u64 = 1 << 30;

    fn device(index: u32, total_gib: u64, committed_gib: u64) -> DeviceState {
        DeviceState {
            uuid: format!("GPU-{index}"),
            index,
            type_names: vec![
                "NVIDIA".into(),
                if index == 0 {
                    "Tesla T4".into()
                } else {
                    "NVIDIA A100".into()
                },
            ],
            total_memory: total_gib * GIB,
            committed_memory: committed_gib * GIB,
            committed_compute: 0,
        }
    }

    fn request(pairs: &[(&str, &str)]) -> ContainerRequest {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ContainerRequest::from_annotations(&map, "main")
            .unwrap()
            .unwrap()
    }

    fn uuids(placed: &[PlacedDevice]) -> Vec<&str> {
        placed.iter().map(|p| p.uuid.as_str()).collect()
    }

    #[test]
    fn binpack_fills_the_most_committed_device_that_fits() {
        let devices = [device(0, 16, 2), device(1, 16, 10), device(2, 16, 15)];
        let placed = place(
            &devices,
            &Visibility::All,
            &request(&[("hami.io/gpu-memory", "4Gi")]),
        )
        .unwrap();
        assert_eq!(uuids(&placed), ["GPU-1"]);
        assert_eq!(placed[0].memory_limit, Some(4 * GIB));
    }

    #[test]
    fn spread_takes_the_least_committed_device() {
        let devices = [device(0, 16, 2), device(1, 16, 10), device(2, 16, 0)];
        let req = request(&[
            ("hami.io/gpu-memory", "4Gi"),
            ("hami.io/gpu-scheduler-policy", "spread"),
        ]);
        assert_eq!(
            uuids(&place(&devices, &Visibility::All, &req).unwrap()),
            ["GPU-2"]
        );
    }

    #[test]
    fn percentage_is_of_each_device_and_no_memory_commits_the_whole_device() {
        let devices = [device(0, 16, 0)];
        let placed = place(
            &devices,
            &Visibility::All,
            &request(&[("hami.io/gpu-memory-percentage", "25")]),
        )
        .unwrap();
        assert_eq!(placed[0].memory_limit, Some(4 * GIB));
        let placed = place(
            &devices,
            &Visibility::All,
            &request(&[("hami.io/gpu-cores", "30")]),
        )
        .unwrap();
        assert_eq!(placed[0].memory_limit, None);
        assert_eq!(placed[0].committed_memory, 16 * GIB);
    }

    #[test]
    fn the_last_slice_is_not_given_twice() {
        let devices = [device(0, 8, 6)];
        let err = place(
            &devices,
            &Visibility::All,
            &request(&[("hami.io/gpu-memory", "4Gi")]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("GPU-0 needs 4096 MiB of memory, 2048 MiB uncommitted"),
            "{text}"
        );
    }

    #[test]
    fn compute_commitments_cap_at_one_hundred_percent() {
        let mut busy = device(0, 16, 0);
        busy.committed_compute = 80;
        let err = place(
            &[busy],
            &Visibility::All,
            &request(&[("hami.io/gpu-cores", "30"), ("hami.io/gpu-memory", "1")]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("needs 30% of compute, 20% uncommitted"),
            "{err}"
        );
    }

    #[test]
    fn visibility_and_selection_restrict_candidates() {
        let devices = [device(0, 16, 0), device(1, 16, 0), device(2, 16, 0)];
        let req = request(&[("hami.io/gpu-memory", "1Gi")]);
        let visible = Visibility::from_env_value(Some("2"));
        assert_eq!(uuids(&place(&devices, &visible, &req).unwrap()), ["GPU-2"]);
        let visible = Visibility::from_env_value(Some("GPU-1,GPU-2"));
        let req = request(&[
            ("hami.io/gpu-memory", "1Gi"),
            ("hami.io/nouse-gpuuuid", "GPU-1"),
        ]);
        assert_eq!(uuids(&place(&devices, &visible, &req).unwrap()), ["GPU-2"]);
        let req = request(&[("hami.io/gpu-memory", "1Gi"), ("hami.io/use-gputype", "t4")]);
        assert_eq!(
            uuids(&place(&devices, &Visibility::All, &req).unwrap()),
            ["GPU-0"]
        );
        let req = request(&[
            ("hami.io/gpu-memory", "1Gi"),
            ("hami.io/nouse-gputype", "a100"),
        ]);
        assert_eq!(
            uuids(&place(&devices, &Visibility::All, &req).unwrap()),
            ["GPU-0"]
        );
        let err = place(&devices, &Visibility::from_env_value(Some("none")), &req).unwrap_err();
        assert!(
            err.to_string().contains("not in NVIDIA_VISIBLE_DEVICES"),
            "{err}"
        );
        assert_eq!(Visibility::from_env_value(None), Visibility::All);
    }

    #[test]
    fn several_devices_are_all_placed_or_none() {
        let devices = [device(0, 16, 0), device(1, 16, 14), device(2, 16, 0)];
        let req = request(&[("hami.io/gpu-memory", "4Gi"), ("hami.io/gpu-count", "2")]);
        assert_eq!(
            uuids(&place(&devices, &Visibility::All, &req).unwrap()),
            ["GPU-0", "GPU-2"]
        );
        let req = request(&[("hami.io/gpu-memory", "4Gi"), ("hami.io/gpu-count", "3")]);
        let err = place(&devices, &Visibility::All, &req).unwrap_err();
        assert!(
            matches!(
                err,
                PlacementError::NoFit {
                    wanted: 3,
                    fitting: 2,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn scheduler_assignment_is_kept_but_still_checked() {
        let devices = [device(0, 16, 0), device(1, 16, 14)];
        let req = request(&[
            ("hami.io/gpu-memory", "1Gi"),
            ("hami.io/assigned-devices", "GPU-1"),
        ]);
        assert_eq!(
            uuids(&place(&devices, &Visibility::All, &req).unwrap()),
            ["GPU-1"]
        );
        let req = request(&[
            ("hami.io/gpu-memory", "4Gi"),
            ("hami.io/assigned-devices", "GPU-1"),
        ]);
        assert!(matches!(
            place(&devices, &Visibility::All, &req),
            Err(PlacementError::NoFit { .. })
        ));
        let req = request(&[
            ("hami.io/gpu-memory", "1Gi"),
            ("hami.io/assigned-devices", "GPU-9"),
        ]);
        assert_eq!(
            place(&devices, &Visibility::All, &req),
            Err(PlacementError::UnknownAssigned("GPU-9".into()))
        );
        assert_eq!(
            place(&[], &Visibility::All, &req),
            Err(PlacementError::NoDevices)
        );
    }
}
