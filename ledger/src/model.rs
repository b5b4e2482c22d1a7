//! The values the ledger stores: devices of a node and limits of a container.

use thiserror::Error;

use crate::text::TextError;

/// Device maker; decides which interception path applies to a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Vendor {
    Nvidia,
    Ascend,
    Cambricon,
}

impl Vendor {
    pub(crate) fn code(self) -> u32 {
        match self {
            Self::Nvidia => 1,
            Self::Ascend => 2,
            Self::Cambricon => 3,
        }
    }

    pub(crate) fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(Self::Nvidia),
            2 => Some(Self::Ascend),
            3 => Some(Self::Cambricon),
            _ => None,
        }
    }
}

/// One device of the node, as discovered by the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub uuid: String,
    pub index: u32,
    pub vendor: Vendor,
    pub total_memory: u64,
    pub compute_units: u32,
}

/// How a compute cap applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ComputePolicy {
    /// Never above the cap.
    #[default]
    Hard,
    /// Above the cap while nobody else on the device wants the capacity.
    Burst,
}

impl ComputePolicy {
    pub(crate) fn code(self) -> u32 {
        match self {
            Self::Hard => 1,
            Self::Burst => 2,
        }
    }

    pub(crate) fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(Self::Hard),
            2 => Some(Self::Burst),
            _ => None,
        }
    }
}

/// Scheduling priority of a container on a shared device ("low" in annotations is `Normal`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Priority {
    High,
    #[default]
    Normal,
}

impl Priority {
    pub(crate) fn code(self) -> u32 {
        match self {
            Self::High => 1,
            Self::Normal => 2,
        }
    }

    pub(crate) fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(Self::High),
            2 => Some(Self::Normal),
            _ => None,
        }
    }
}

/// The slice of one device a container may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceLimit {
    pub uuid: String,
    /// Bytes; `None` means no cap.
    pub memory_limit: Option<u64>,
    /// 1..=100; `None` means no cap.
    pub compute_percent: Option<u32>,
    pub policy: ComputePolicy,
    pub priority: Priority,
}

/// A container's limits; the order of `devices` is the container's device index order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerLimits {
    pub container_id: String,
    pub devices: Vec<DeviceLimit>,
}

/// A value handed to a writer cannot be stored.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum InputError {
    #[error("device uuid {uuid:?} {problem}")]
    BadUuid { uuid: String, problem: TextError },
    #[error("container id {id:?} {problem}")]
    BadContainerId { id: String, problem: TextError },
    #[error("container id {id:?} cannot name a directory")]
    ContainerIdNotAPathComponent { id: String },
    #[error("{count} devices given, at most {max} fit")]
    TooManyDevices { count: usize, max: usize },
    #[error("device uuid {uuid:?} appears twice")]
    DuplicateUuid { uuid: String },
    #[error("compute percent {value} for device {uuid:?} is outside 1..=100")]
    ComputePercentOutOfRange { uuid: String, value: u32 },
    #[error("a usage ledger needs 1..={max} devices, {count} given")]
    DeviceCountOutOfRange { count: usize, max: usize },
}

/// Position of the first UUID that repeats an earlier one.
pub(crate) fn first_duplicate<'a>(uuids: impl Iterator<Item = &'a str>) -> Option<usize> {
    let mut seen: Vec<&str> = Vec::new();
    for (at, uuid) in uuids.enumerate() {
        if seen.contains(&uuid) {
            return Some(at);
        }
        seen.push(uuid);
    }
    None
}

/// Refuses duplicate UUIDs: a UUID is how every component tells whose cap is whose.
pub(crate) fn check_unique<'a>(
    uuids: impl Iterator<Item = &'a str> + Clone,
) -> Result<(), InputError> {
    match first_duplicate(uuids.clone()) {
        Some(at) => Err(InputError::DuplicateUuid {
            uuid: uuids.clone().nth(at).unwrap_or_default().to_owned(),
        }),
        None => Ok(()),
    }
}
