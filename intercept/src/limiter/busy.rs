//! Where the measurer learns how busy the container really kept a device: NVML's per-process
//! utilization, summed over the container's processes.
//!
//! NVML samples each process every 200 ms on an H200 and answers, per process, only its newest
//! sample newer than what the caller has seen (`hami_hooks::nvml::samples` says how an answer
//! reads). The measurer therefore reads incrementally through a `SampleCursor` per device:
//! every period (25 ms, well inside the sampler's period) it asks for what is newer than the
//! newest sample counted, and adds each new sample's busy time. Busy time is known up to the
//! newest sample; the controller compares it with what was charged up to that same instant,
//! so a settled point that moves in steps of the sampler's period only delays the true-up.
//! While no new sample has come, nothing moves: time past the newest sample is unknown, not
//! idle. This is the one measure that exists on a real GPU and on the simulated device alike,
//! that counts every kernel whatever launched it (graphs, cooperative, other libraries'
//! streams), and that attributes time-slicing between containers correctly. The virtualized
//! NVML of this library is never consulted: NVML is reached through the real `dlsym`.

use std::collections::HashMap;
use std::ffi::{CString, c_uint, c_ulonglong};

use hami_hooks::nvml::samples::SampleCursor;
use hami_hooks::nvml::{
    NVML_ERROR_NO_DATA, NVML_ERROR_NOT_FOUND, NVML_SUCCESS, nvmlDevice_t,
    nvmlProcessUtilizationSample_t, nvmlReturn_t,
};

use crate::resolve::library::{DriverLibrary, lookup};

/// Samples fetched per query: far more processes than one device serves.
const MAX_SAMPLES: usize = 512;
/// With no sample at all for this long, the device is idle and the cursor moves on.
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
    pub own_ns: u64,
    /// Busy ns of every other process on the device.
    pub others_ns: u64,
    /// Length of the newly settled stretch, ns (0 on the first call and while no new sample
    /// came).
    pub period_ns: u64,
    /// How far behind now the settled point is, ns: busy time is known up to there.
    pub lag_ns: u64,
}

impl SettledBusy {
    /// The same stretch with every process's busy time counted as the container's.
    pub fn all_as_own(self) -> SettledBusy {
        SettledBusy {
            own_ns: self.own_ns.saturating_add(self.others_ns),
            others_ns: 0,
            ..self
        }
    }
}

/// A source of a container's busy time per device.
pub trait BusySource: Send {
    /// Settled busy time since the previous call for `device`, split between the processes
    /// `pids` and the others (`None`: the device cannot be measured; the first call positions
    /// the cursor and returns zeros).
    fn busy_since_last(&mut self, device: &DeviceKey, pids: &[u32]) -> Option<SettledBusy>;
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
    /// `None` until the first call positions it.
    samples: Option<SampleCursor>,
    /// Realtime µs up to which busy time is known.
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
    fn busy_since_last(&mut self, device: &DeviceKey, pids: &[u32]) -> Option<SettledBusy> {
        let handle = match self.cursors.get(device).and_then(|c| c.handle) {
            Some(handle) => handle,
            None => {
                let handle = self.device_handle(device)?;
                self.cursors.entry(device.clone()).or_default().handle = Some(handle);
                handle
            }
        };
        let now = realtime_us();
        let cursor = self.cursors.get_mut(device)?;
        let Some(mut samples) = cursor.samples.take() else {
            let cursor = self.cursors.get_mut(device)?;
            cursor.samples = Some(SampleCursor::starting_at(now));
            cursor.settled_us = now;
            return Some(SettledBusy::default());
        };
        let settled_before = cursor.settled_us;
        let answered = self.answer(handle, samples.since_us());
        let (mut own, mut others) = (0u64, 0u64);
        let newest = answered.and_then(|count| {
            samples.read(&mut self.samples[..count], |pid, busy| {
                if pids.contains(&pid) {
                    own = own.saturating_add(busy);
                } else {
                    others = others.saturating_add(busy);
                }
            })
        });
        let settled_now = match (answered, newest) {
            (_, Some(newest)) => newest.max(settled_before),
            // Nothing sampled for over a second: the device is idle, nothing to wait for.
            (Some(0), None) if now.saturating_sub(settled_before) >= IDLE_AFTER_US => {
                samples.skip_to(now);
                now
            }
            _ => settled_before,
        };
        let cursor = self.cursors.get_mut(device)?;
        cursor.samples = Some(samples);
        cursor.settled_us = settled_now;
        answered?;
        Some(SettledBusy {
            own_ns: own,
            others_ns: others,
            period_ns: (settled_now - settled_before).saturating_mul(1_000),
            lag_ns: now.saturating_sub(settled_now).saturating_mul(1_000),
        })
    }
}
