//! Where the measurer learns how busy the container really kept a device: NVML's per-process
//! utilization samples, summed over the container's processes.
//!
//! `nvmlDeviceGetProcessUtilization(device, samples, count, last_seen)` returns, per process,
//! the samples newer than `last_seen` (µs), each carrying the percentage of its sample period
//! the process kept the SMs busy. A sample's period runs from that process's previous sample,
//! but not from before `last_seen` (a process missing from a query was idle during it), so
//! busy time is `smUtil% × period`. This is
//! the one measure that exists on a real GPU and on the simulated device alike, that counts
//! every kernel whatever launched it (graphs, cooperative, other libraries' streams), and that
//! attributes time-slicing with other containers correctly; its cost is latency (1/6–1 s sample
//! periods on real GPUs), which the controller absorbs by applying corrections gradually while
//! per-launch estimates carry the short term.
//!
//! The real NVML is reached through the real `dlsym` (never this library's own wrappers), so a
//! virtualized view can never feed back into the limiter.

use std::collections::HashMap;
use std::ffi::{CString, c_uint, c_ulonglong};

use hami_hooks::nvml::{NVML_SUCCESS, nvmlDevice_t, nvmlProcessUtilizationSample_t, nvmlReturn_t};

use crate::resolve::library::{DriverLibrary, lookup};

/// Samples fetched per query: far more processes than one device serves.
const MAX_SAMPLES: usize = 512;

type InitFn = unsafe extern "C" fn() -> nvmlReturn_t;
type HandleByUuidFn =
    unsafe extern "C" fn(*const std::ffi::c_char, *mut nvmlDevice_t) -> nvmlReturn_t;
type HandleByIndexFn = unsafe extern "C" fn(c_uint, *mut nvmlDevice_t) -> nvmlReturn_t;
type ProcessUtilizationFn = unsafe extern "C" fn(
    nvmlDevice_t,
    *mut nvmlProcessUtilizationSample_t,
    *mut c_uint,
    c_ulonglong,
) -> nvmlReturn_t;

static NVML: DriverLibrary = DriverLibrary::new(c"libnvidia-ml.so.1");

/// How a device is found in NVML.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceKey {
    /// By UUID (`GPU-...`), as the ledger names devices.
    Uuid(String),
    /// By NVML index (environment mode, where only CUDA ordinals are known).
    Index(u32),
}

/// A source of a container's cumulative busy time per device.
pub trait BusySource: Send {
    /// Busy ns the processes `pids` added on `device` since the previous call for it
    /// (`None` when the device cannot be measured; the first call returns `Some(0)`).
    fn busy_since_last(&mut self, device: &DeviceKey, pids: &[u32]) -> Option<u64>;
}

/// Per-device memory of the NVML reader.
#[derive(Default)]
struct DeviceCursor {
    handle: Option<usize>,
    last_seen_us: u64,
    last_sample_us: HashMap<u32, u64>,
}

/// Busy time from NVML per-process utilization.
pub struct NvmlBusy {
    utilization: ProcessUtilizationFn,
    handle_by_uuid: Option<HandleByUuidFn>,
    handle_by_index: Option<HandleByIndexFn>,
    cursors: HashMap<DeviceKey, DeviceCursor>,
    samples: Vec<nvmlProcessUtilizationSample_t>,
}

// SAFETY: the struct holds plain function pointers into NVML (thread-safe entry points) and
// device handles stored as integers; nothing in it is tied to a thread.
unsafe impl Send for NvmlBusy {}

impl NvmlBusy {
    /// Loads NVML and initializes it; `None` when there is no NVML to ask.
    pub fn open() -> Option<Self> {
        let handle = NVML.handle();
        let symbol = |name: &std::ffi::CStr| {
            let address = lookup(handle, name);
            (!address.is_null()).then_some(address)
        };
        let init = symbol(c"nvmlInit_v2").or_else(|| symbol(c"nvmlInit"))?;
        let utilization = symbol(c"nvmlDeviceGetProcessUtilization")?;
        // SAFETY: the addresses were found under these names in NVML, whose ABI for them is
        // the one spelled by the function types (hooks/src/nvml/table.rs).
        let (init, utilization, by_uuid, by_index) = unsafe {
            (
                std::mem::transmute::<*mut std::ffi::c_void, InitFn>(init),
                std::mem::transmute::<*mut std::ffi::c_void, ProcessUtilizationFn>(utilization),
                symbol(c"nvmlDeviceGetHandleByUUID")
                    .map(|a| std::mem::transmute::<*mut std::ffi::c_void, HandleByUuidFn>(a)),
                symbol(c"nvmlDeviceGetHandleByIndex_v2")
                    .or_else(|| symbol(c"nvmlDeviceGetHandleByIndex"))
                    .map(|a| std::mem::transmute::<*mut std::ffi::c_void, HandleByIndexFn>(a)),
            )
        };
        // SAFETY: nvmlInit takes no arguments; calling it again is allowed (reference counted).
        if unsafe { init() } != NVML_SUCCESS {
            return None;
        }
        Some(Self {
            utilization,
            handle_by_uuid: by_uuid,
            handle_by_index: by_index,
            cursors: HashMap::new(),
            samples: vec![nvmlProcessUtilizationSample_t::default(); MAX_SAMPLES],
        })
    }

    fn device_handle(&self, key: &DeviceKey) -> Option<usize> {
        let mut device: nvmlDevice_t = std::ptr::null_mut();
        let status = match key {
            DeviceKey::Uuid(uuid) => {
                let uuid = CString::new(uuid.as_str()).ok()?;
                let find = self.handle_by_uuid?;
                // SAFETY: `uuid` is a NUL-terminated string and `device` a valid out pointer.
                unsafe { find(uuid.as_ptr(), &mut device) }
            }
            DeviceKey::Index(index) => {
                let find = self.handle_by_index?;
                // SAFETY: `device` is a valid out pointer.
                unsafe { find(*index, &mut device) }
            }
        };
        (status == NVML_SUCCESS && !device.is_null()).then_some(device as usize)
    }
}

impl BusySource for NvmlBusy {
    fn busy_since_last(&mut self, device: &DeviceKey, pids: &[u32]) -> Option<u64> {
        let handle = match self.cursors.get(device).and_then(|c| c.handle) {
            Some(handle) => handle,
            None => {
                let handle = self.device_handle(device)?;
                self.cursors.entry(device.clone()).or_default().handle = Some(handle);
                handle
            }
        };
        let cursor = self.cursors.get_mut(device)?;
        let mut count = c_uint::try_from(self.samples.len()).unwrap_or(c_uint::MAX);
        // SAFETY: `handle` came from NVML for this device; the buffer holds `count` samples and
        // `count` is a valid in/out pointer.
        let status = unsafe {
            (self.utilization)(
                handle as nvmlDevice_t,
                self.samples.as_mut_ptr(),
                &mut count,
                cursor.last_seen_us,
            )
        };
        if status != NVML_SUCCESS {
            // NO_DATA / NOT_FOUND: nobody ran since `last_seen`; keep the cursor.
            return Some(0);
        }
        let samples = &self.samples[..usize::try_from(count).unwrap_or(0).min(MAX_SAMPLES)];
        Some(cursor.absorb(samples, pids))
    }
}

impl DeviceCursor {
    /// Adds up the busy time of `pids` in `samples` and moves the cursor past them.
    fn absorb(&mut self, samples: &[nvmlProcessUtilizationSample_t], pids: &[u32]) -> u64 {
        let first_call = self.last_seen_us == 0;
        let mut busy_ns = 0u64;
        let mut newest = self.last_seen_us;
        let mut ordered: Vec<&nvmlProcessUtilizationSample_t> = samples.iter().collect();
        ordered.sort_by_key(|s| s.timeStamp);
        for sample in ordered {
            if sample.timeStamp <= self.last_seen_us {
                continue;
            }
            newest = newest.max(sample.timeStamp);
            // A sample covers the time since this process's previous sample, but never more
            // than since the previous query: a process absent from a query was idle in it.
            let since = self
                .last_sample_us
                .insert(sample.pid, sample.timeStamp)
                .unwrap_or(0)
                .max(self.last_seen_us);
            if first_call || !pids.contains(&sample.pid) {
                continue;
            }
            let period_us = sample.timeStamp.saturating_sub(since);
            busy_ns += period_us * 1_000 * u64::from(sample.smUtil.min(100)) / 100;
        }
        self.last_seen_us = newest;
        busy_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pid: u32, at_us: u64, percent: u32) -> nvmlProcessUtilizationSample_t {
        nvmlProcessUtilizationSample_t {
            pid,
            timeStamp: at_us,
            smUtil: percent,
            ..Default::default()
        }
    }

    #[test]
    fn busy_is_percent_of_the_time_since_the_previous_query() {
        let mut cursor = DeviceCursor::default();
        // The first answer only positions the cursor: its window is unknown.
        assert_eq!(cursor.absorb(&[sample(7, 1_000_000, 90)], &[7]), 0);
        let busy = cursor.absorb(&[sample(7, 1_025_000, 40), sample(8, 1_025_000, 50)], &[7]);
        assert_eq!(busy, 10_000_000, "40 % of 25 ms, and pid 8 is not ours");
    }

    #[test]
    fn a_process_idle_for_a_while_is_not_charged_for_its_idle_time() {
        let mut cursor = DeviceCursor::default();
        cursor.absorb(&[sample(7, 1_000_000, 10)], &[7]);
        cursor.absorb(&[sample(8, 2_000_000, 10)], &[7, 8]);
        let busy = cursor.absorb(&[sample(7, 2_100_000, 50)], &[7, 8]);
        assert_eq!(
            busy, 50_000_000,
            "50 % of the 100 ms since the last query, not of 1.1 s"
        );
    }

    #[test]
    fn samples_already_seen_are_not_counted_twice() {
        let mut cursor = DeviceCursor::default();
        cursor.absorb(&[sample(7, 1_000_000, 10)], &[7]);
        assert_eq!(
            cursor.absorb(&[sample(7, 1_100_000, 100)], &[7]),
            100_000_000
        );
        assert_eq!(cursor.absorb(&[sample(7, 1_100_000, 100)], &[7]), 0);
    }
}
