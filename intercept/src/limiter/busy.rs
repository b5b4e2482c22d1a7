//! Where the measurer learns how busy the container really kept a device: NVML's per-process
//! utilization, summed over the container's processes.
//!
//! NVML samples each process at fixed instants (every 200 ms on an H200) and answers only up to
//! its newest sample (`hami_hooks::nvml::samples` says how an answer reads). The measurer
//! therefore counts *settled* time only: each period it asks for the samples since a little
//! before the previous settled point `s₀`, and counts the busy time in `[s₀, s₁)`, where `s₁` is
//! the newest sample instant, and at most `now − lag` so that a kernel still running at a
//! sample has finished reporting (the lag is at least [`MIN_LAG_US`], else three learned kernel
//! lengths). While no new sample has come, the settled point stays: time past the newest sample
//! is unknown, not idle. The controller compares the measured time with what was charged up to
//! the same instant, so a settled point that moves in steps of the sampler's period only delays
//! the true-up. This is the one measure that exists on a real GPU and on the simulated device
//! alike, that counts every kernel whatever launched it (graphs, cooperative, other libraries'
//! streams), and that attributes time-slicing between containers correctly. The virtualized
//! NVML of this library is never consulted: NVML is reached through the real `dlsym`.

use std::collections::HashMap;
use std::ffi::{CString, c_uint, c_ulonglong};

use hami_hooks::nvml::samples::{LOOKBACK_US, Window, newest_us, split_busy};
use hami_hooks::nvml::{
    NVML_ERROR_NO_DATA, NVML_ERROR_NOT_FOUND, NVML_SUCCESS, nvmlDevice_t,
    nvmlProcessUtilizationSample_t, nvmlReturn_t,
};

use crate::resolve::library::{DriverLibrary, lookup};

/// Samples fetched per query: far more processes than one device serves.
const MAX_SAMPLES: usize = 512;
/// Shortest lag between now and the settled point, µs.
pub const MIN_LAG_US: u64 = 100_000;
/// Longest lag: NVML keeps a few seconds of history at most.
const MAX_LAG_US: u64 = 2_000_000;
/// With no sample at all for this long, the device is idle and the settled point moves on.
const IDLE_AFTER_US: u64 = 1_000_000;

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
    /// By NVML index (standalone mode, where only CUDA ordinals are known).
    Index(u32),
}

/// Settled busy time on a device over one period: the container's and everyone else's.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SettledBusy {
    /// Busy ns of the container's processes.
    pub own_ns: i64,
    /// Busy ns of every other process on the device.
    pub others_ns: i64,
    /// Length of the settled period, ns (0 on the first call and while no new sample came).
    pub period_ns: u64,
    /// How far behind now the settled point is, ns: measured time is known up to there.
    pub lag_ns: u64,
    /// Busy ns of the other processes from the previous settled point to now, as far as the
    /// samples tell: a prompt (if partial) sign that someone else uses the device.
    pub others_recent_ns: i64,
    /// Length of that stretch, ns.
    pub recent_ns: u64,
}

/// A source of a container's busy time per device.
pub trait BusySource: Send {
    /// Settled busy time since the previous call for `device`, split between the processes
    /// `pids` and the others (`None`: the device cannot be measured; the first call positions
    /// the cursor and returns zeros). `kernel_ns` is the current estimate of one kernel's
    /// length, which sets how far behind now time counts as settled.
    fn busy_since_last(
        &mut self,
        device: &DeviceKey,
        pids: &[u32],
        kernel_ns: u64,
    ) -> Option<SettledBusy>;
}

/// The lag behind now that counts as settled for kernels of `kernel_ns`.
pub fn settle_lag_us(kernel_ns: u64) -> u64 {
    (kernel_ns.saturating_mul(3) / 1_000).clamp(MIN_LAG_US, MAX_LAG_US)
}

/// Microseconds of `CLOCK_REALTIME`, the clock of NVML's sample timestamps.
fn realtime_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000
        + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000
}

/// Per-device state of the NVML reader.
#[derive(Default)]
struct DeviceCursor {
    handle: Option<usize>,
    /// Realtime µs up to which busy time has been counted.
    settled_us: u64,
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

    /// The samples on the device `handle` newer than `since_us` (empty when there are none);
    /// `None` when NVML cannot answer.
    fn answer(&mut self, handle: usize, since_us: u64) -> Option<usize> {
        let mut count = c_uint::try_from(self.samples.len()).unwrap_or(c_uint::MAX);
        // SAFETY: `handle` came from NVML for this device; the buffer holds `count` samples and
        // `count` is a valid in/out pointer.
        let status = unsafe {
            (self.utilization)(
                handle as nvmlDevice_t,
                self.samples.as_mut_ptr(),
                &mut count,
                since_us,
            )
        };
        match status {
            NVML_SUCCESS => Some(usize::try_from(count).unwrap_or(0).min(MAX_SAMPLES)),
            // No sample since `since_us`.
            NVML_ERROR_NOT_FOUND | NVML_ERROR_NO_DATA => Some(0),
            // Not supported, no permission, GPU lost, more processes than the buffer…: a
            // measurement of zero would hand the whole budget back, so there is none.
            _ => None,
        }
    }
}

impl BusySource for NvmlBusy {
    fn busy_since_last(
        &mut self,
        device: &DeviceKey,
        pids: &[u32],
        kernel_ns: u64,
    ) -> Option<SettledBusy> {
        let handle = match self.cursors.get(device).and_then(|c| c.handle) {
            Some(handle) => handle,
            None => {
                let handle = self.device_handle(device)?;
                self.cursors.entry(device.clone()).or_default().handle = Some(handle);
                handle
            }
        };
        let settled_before = self.cursors.get(device)?.settled_us;
        let now = realtime_us();
        let lag_us = settle_lag_us(kernel_ns);
        let target = now.saturating_sub(lag_us);
        if settled_before == 0 {
            if let Some(cursor) = self.cursors.get_mut(device) {
                cursor.settled_us = target;
            }
            return Some(SettledBusy {
                lag_ns: lag_us.saturating_mul(1_000),
                ..SettledBusy::default()
            });
        }
        let since = settled_before.saturating_sub(LOOKBACK_US);
        let count = self.answer(handle, since)?;
        let samples = &mut self.samples[..count];
        let settled_now = match newest_us(samples) {
            Some(newest) => newest.min(target),
            // Nothing sampled for over a second: the device is idle, nothing to wait for.
            None if target.saturating_sub(settled_before) >= IDLE_AFTER_US => target,
            None => settled_before,
        }
        .max(settled_before);
        let (own, others) = split_busy(
            samples,
            since,
            Window {
                from_us: settled_before,
                to_us: settled_now,
            },
            pids,
        );
        let (_, others_recent) = split_busy(
            samples,
            since,
            Window {
                from_us: settled_before,
                to_us: now,
            },
            pids,
        );
        if let Some(cursor) = self.cursors.get_mut(device) {
            cursor.settled_us = settled_now;
        }
        let signed = |ns: u64| i64::try_from(ns).unwrap_or(i64::MAX);
        Some(SettledBusy {
            own_ns: signed(own),
            others_ns: signed(others),
            period_ns: (settled_now - settled_before).saturating_mul(1_000),
            lag_ns: now.saturating_sub(settled_now).saturating_mul(1_000),
            others_recent_ns: signed(others_recent),
            recent_ns: now.saturating_sub(settled_before).saturating_mul(1_000),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settled_point_trails_the_longest_kernels() {
        assert_eq!(settle_lag_us(1_000_000), MIN_LAG_US);
        assert_eq!(settle_lag_us(100_000_000), 300_000);
        assert_eq!(settle_lag_us(u64::MAX), MAX_LAG_US);
    }
}
