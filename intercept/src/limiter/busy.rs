//! Where the measurer learns how busy the container really kept a device: NVML's per-process
//! utilization, summed over the container's processes.
//!
//! `nvmlDeviceGetProcessUtilization(device, samples, count, since)` returns, per process, the
//! samples newer than `since` (µs, realtime), each with the percentage of its sample period the
//! process kept the SMs busy; a sample covers the time since that process's previous sample in
//! the answer, and never reaches back before `since`. This is the one measure that exists on a
//! real GPU and on the simulated device alike, that counts every kernel whatever launched it
//! (graphs, cooperative, other libraries' streams), and that attributes time-slicing between
//! containers correctly.
//!
//! A kernel still running at the moment of a query is not (fully) in that answer yet, so
//! chaining answers end to end would lose, at every boundary, the part of the running kernel
//! before it: with 20 ms kernels and 25 ms periods, most of the busy time. The measurer
//! therefore only counts *settled* time: each period it asks twice, from the previous settled
//! point `s₀` and from the new one `s₁ = now − lag`, and takes the difference — the busy time in
//! `[s₀, s₁)`, which every kernel that ran then has finished reporting as long as `lag` exceeds
//! a kernel's length. The lag (at least [`MIN_LAG_US`], else three learned kernel lengths)
//! delays the feedback by that much, which the controller's gradual true-up absorbs. The
//! virtualized NVML of this library is never consulted: NVML is reached through the real
//! `dlsym`.

use std::collections::HashMap;
use std::ffi::{CString, c_uint, c_ulonglong};

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
    /// Busy ns of the container's processes (may be slightly negative from rounding).
    pub own_ns: i64,
    /// Busy ns of every other process on the device.
    pub others_ns: i64,
    /// Length of the settled period, ns (0 on the first call).
    pub period_ns: u64,
    /// Busy ns of the other processes in the recent, not yet settled stretch: a prompt (if
    /// partial) sign that someone else uses the device.
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

/// Busy time in one NVML answer for samples since `since_us`: `(of pids, of the others)`.
pub fn busy_in_answer(
    samples: &[nvmlProcessUtilizationSample_t],
    pids: &[u32],
    since_us: u64,
) -> (i64, i64) {
    let mut ordered: Vec<&nvmlProcessUtilizationSample_t> =
        samples.iter().filter(|s| s.timeStamp > since_us).collect();
    ordered.sort_by_key(|s| s.timeStamp);
    let mut previous: HashMap<u32, u64> = HashMap::new();
    let (mut own, mut others) = (0i64, 0i64);
    for sample in ordered {
        let from = previous
            .insert(sample.pid, sample.timeStamp)
            .unwrap_or(since_us)
            .max(since_us);
        let period_ns = sample.timeStamp.saturating_sub(from).saturating_mul(1_000);
        let busy =
            i64::try_from(period_ns / 100 * u64::from(sample.smUtil.min(100))).unwrap_or(i64::MAX);
        if pids.contains(&sample.pid) {
            own = own.saturating_add(busy);
        } else {
            others = others.saturating_add(busy);
        }
    }
    (own, others)
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

    /// Busy ns (of `pids`, of the others) on the device `handle` in samples since `since_us`;
    /// `None` when NVML cannot answer (as opposed to having nothing to report).
    fn busy_since(&mut self, handle: usize, pids: &[u32], since_us: u64) -> Option<(i64, i64)> {
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
            NVML_SUCCESS => {}
            // Nothing ran since `since_us`.
            NVML_ERROR_NOT_FOUND | NVML_ERROR_NO_DATA => return Some((0, 0)),
            // Not supported, no permission, GPU lost…: a measurement of zero would hand the
            // whole budget back, so there is no measurement.
            _ => return None,
        }
        let n = usize::try_from(count).unwrap_or(0).min(MAX_SAMPLES);
        Some(busy_in_answer(&self.samples[..n], pids, since_us))
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
        let settled_now = realtime_us().saturating_sub(settle_lag_us(kernel_ns));
        if settled_before == 0 || settled_now <= settled_before {
            if let Some(cursor) = self.cursors.get_mut(device) {
                cursor.settled_us = cursor.settled_us.max(settled_now);
            }
            return Some(SettledBusy::default());
        }
        // Both answers end now; their difference is the busy time in [before, now − lag).
        let from_before = self.busy_since(handle, pids, settled_before)?;
        let from_now = self.busy_since(handle, pids, settled_now)?;
        if let Some(cursor) = self.cursors.get_mut(device) {
            cursor.settled_us = settled_now;
        }
        Some(SettledBusy {
            own_ns: from_before.0 - from_now.0,
            others_ns: from_before.1 - from_now.1,
            period_ns: settled_now.saturating_sub(settled_before) * 1_000,
            others_recent_ns: from_now.1,
            recent_ns: settle_lag_us(kernel_ns) * 1_000,
        })
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
    fn an_answer_counts_its_window_for_the_container_only() {
        // One sample per process covering the whole window, as the simulated device answers.
        let samples = [sample(7, 1_100_000, 40), sample(8, 1_100_000, 50)];
        assert_eq!(
            busy_in_answer(&samples, &[7], 1_000_000),
            (40_000_000, 50_000_000)
        );
        assert_eq!(
            busy_in_answer(&samples, &[7, 8], 1_000_000),
            (90_000_000, 0)
        );
    }

    #[test]
    fn periodic_samples_each_cover_the_time_since_the_previous_one() {
        // A real driver samples every ~1/6 s; each sample covers the gap to the previous one.
        let samples = [sample(7, 1_200_000, 50), sample(7, 1_100_000, 100)];
        assert_eq!(busy_in_answer(&samples, &[7], 1_000_000).0, 150_000_000);
        assert_eq!(
            busy_in_answer(&samples, &[7], 1_100_000).0,
            50_000_000,
            "older ones skipped"
        );
    }

    #[test]
    fn the_settled_point_trails_the_longest_kernels() {
        assert_eq!(settle_lag_us(1_000_000), MIN_LAG_US);
        assert_eq!(settle_lag_us(100_000_000), 300_000);
        assert_eq!(settle_lag_us(u64::MAX), MAX_LAG_US);
    }
}
