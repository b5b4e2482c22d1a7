//! What a task asks for: devices (count and a share of each, or whole devices), CPU,
//! memory, and which device models and UUIDs it accepts.

use crate::cluster::{FULL_DEVICE_MILLI, TagCounts};
use crate::model::ModelSet;

/// Index of a task class (tasks of one class score alike, so scores are cached per class).
pub type ClassId = u32;

/// One task's demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Devices wanted (0 for a CPU-only task).
    pub device_count: u32,
    /// Compute per device in milli-device; [`FULL_DEVICE_MILLI`] means whole, idle devices.
    pub milli_per_device: u32,
    /// Device memory per device, MiB (ignored for whole devices, which take all of it).
    pub memory_per_device_mib: u64,
    pub cpu_milli: u64,
    pub memory_mib: u64,
    /// Device models accepted.
    pub models: ModelSet,
    /// When non-empty, only these device UUIDs are accepted.
    pub uuid_include: Vec<String>,
    /// Device UUIDs never accepted.
    pub uuid_exclude: Vec<String>,
    /// Class for score caching; `None` disables caching for this request.
    pub class: Option<ClassId>,
}

impl Request {
    /// A CPU-only task.
    pub fn cpu_only(cpu_milli: u64, memory_mib: u64) -> Self {
        Request {
            device_count: 0,
            milli_per_device: 0,
            memory_per_device_mib: 0,
            cpu_milli,
            memory_mib,
            models: ModelSet::ANY,
            uuid_include: Vec::new(),
            uuid_exclude: Vec::new(),
            class: None,
        }
    }

    /// A task sharing one device: `milli` of its compute and `device_memory_mib` of its memory.
    pub fn share(cpu_milli: u64, memory_mib: u64, milli: u32, device_memory_mib: u64) -> Self {
        Request {
            device_count: 1,
            milli_per_device: milli.min(FULL_DEVICE_MILLI),
            memory_per_device_mib: device_memory_mib,
            ..Request::cpu_only(cpu_milli, memory_mib)
        }
    }

    /// A task taking `count` whole, idle devices.
    pub fn whole(cpu_milli: u64, memory_mib: u64, count: u32) -> Self {
        Request {
            device_count: count,
            milli_per_device: FULL_DEVICE_MILLI,
            ..Request::cpu_only(cpu_milli, memory_mib)
        }
    }

    /// Whether the task wants whole, idle devices.
    pub fn is_whole_device(&self) -> bool {
        self.device_count > 0 && self.milli_per_device >= FULL_DEVICE_MILLI
    }

    /// Whether the task uses no device.
    pub fn is_cpu_only(&self) -> bool {
        self.device_count == 0
    }

    /// Total device compute asked, milli-device.
    pub fn device_milli_total(&self) -> u64 {
        u64::from(self.device_count) * u64::from(self.milli_per_device)
    }

    /// Shape tag for GPU Clustering: sharing, or the whole-device count; `None` if CPU-only.
    pub fn tag(&self) -> Option<u32> {
        if self.is_cpu_only() {
            None
        } else if self.is_whole_device() {
            Some(self.device_count)
        } else {
            Some(TagCounts::SHARE)
        }
    }

    /// Whether the device with this UUID may be used.
    pub fn accepts_uuid(&self, uuid: &str) -> bool {
        (self.uuid_include.is_empty() || self.uuid_include.iter().any(|u| u == uuid))
            && !self.uuid_exclude.iter().any(|u| u == uuid)
    }

    /// Whether any UUID filter is set (device eligibility then needs the UUIDs).
    pub fn has_uuid_filter(&self) -> bool {
        !self.uuid_include.is_empty() || !self.uuid_exclude.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_classified_by_what_they_take() {
        assert_eq!(Request::cpu_only(1000, 0).tag(), None);
        assert_eq!(
            Request::share(1000, 0, 500, 0).tag(),
            Some(TagCounts::SHARE)
        );
        assert_eq!(Request::whole(1000, 0, 4).tag(), Some(4));
        assert_eq!(Request::whole(1000, 0, 4).device_milli_total(), 4000);
        assert!(Request::share(1000, 0, 5000, 0).is_whole_device());
    }

    #[test]
    fn uuid_filters_include_then_exclude() {
        let mut r = Request::share(1, 0, 100, 0);
        assert!(r.accepts_uuid("GPU-a"));
        r.uuid_include = vec!["GPU-a".into(), "GPU-b".into()];
        r.uuid_exclude = vec!["GPU-b".into()];
        assert!(r.accepts_uuid("GPU-a"));
        assert!(!r.accepts_uuid("GPU-b"));
        assert!(!r.accepts_uuid("GPU-c"));
    }
}
