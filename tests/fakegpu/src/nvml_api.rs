//! The `extern "C"` NVML API, derived from the shared device state: memory, compute
//! processes (those holding a context) and utilisation (busy share over a window).

use std::ffi::{CStr, c_char, c_uint, c_ulonglong};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU32, Ordering};

use hami_hooks::nvml::samples::SAMPLER_PERIOD_US;
use hami_hooks::nvml::*;

use crate::clock::{monotonic_ns, realtime_us};
use crate::config::{format_uuid, parse_uuid};
use crate::cuda_api::{DEVICE_NAME, write_c_string};
use crate::driver::{Driver, attach};

/// Window of `nvmlDeviceGetUtilizationRates` and of a first `GetProcessUtilization` call.
pub const UTILIZATION_WINDOW_NS: u64 = 1_000_000_000;
/// The driver version NVML reports.
pub const DRIVER_VERSION: &str = "570.124.06";

static INIT_COUNT: AtomicU32 = AtomicU32::new(0);

fn guard(body: impl FnOnce() -> Result<(), nvmlReturn_t>) -> nvmlReturn_t {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => NVML_SUCCESS,
        Ok(Err(code)) => code,
        Err(_) => NVML_ERROR_UNKNOWN,
    }
}

/// # Safety
/// `pointer` must be null or writable.
unsafe fn out<T>(pointer: *mut T, value: T) -> Result<(), nvmlReturn_t> {
    if pointer.is_null() {
        return Err(NVML_ERROR_INVALID_ARGUMENT);
    }
    // SAFETY: non-null and writable by the caller's contract.
    unsafe { pointer.write(value) };
    Ok(())
}

fn driver() -> Result<&'static Driver, nvmlReturn_t> {
    if INIT_COUNT.load(Ordering::Acquire) == 0 {
        return Err(NVML_ERROR_UNINITIALIZED);
    }
    attach().map_err(|_| NVML_ERROR_DRIVER_NOT_LOADED)
}

fn device_index(device: nvmlDevice_t) -> Result<(&'static Driver, usize), nvmlReturn_t> {
    let driver = driver()?;
    let index = (device as usize)
        .checked_sub(1)
        .ok_or(NVML_ERROR_INVALID_ARGUMENT)?;
    if index >= driver.device_count() {
        return Err(NVML_ERROR_INVALID_ARGUMENT);
    }
    lost_check(driver, index)?;
    Ok((driver, index))
}

/// A lost device answers every handle call as the driver does for a GPU that fell off the bus.
fn lost_check(driver: &Driver, index: usize) -> Result<(), nvmlReturn_t> {
    if driver.state.is_lost(index) {
        return Err(NVML_ERROR_GPU_IS_LOST);
    }
    Ok(())
}

fn handle_of(index: usize) -> nvmlDevice_t {
    (index + 1) as nvmlDevice_t
}

fn init() -> Result<(), nvmlReturn_t> {
    attach().map_err(|_| NVML_ERROR_DRIVER_NOT_LOADED)?;
    INIT_COUNT.fetch_add(1, Ordering::AcqRel);
    Ok(())
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit() -> nvmlReturn_t {
    guard(init)
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit_v2() -> nvmlReturn_t {
    guard(init)
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> nvmlReturn_t {
    guard(init)
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlShutdown() -> nvmlReturn_t {
    guard(|| {
        INIT_COUNT
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .map(|_| ())
            .map_err(|_| NVML_ERROR_UNINITIALIZED)
    })
}

fn error_text(result: nvmlReturn_t) -> &'static CStr {
    match result {
        NVML_SUCCESS => c"Success",
        NVML_ERROR_UNINITIALIZED => c"Uninitialized",
        NVML_ERROR_INVALID_ARGUMENT => c"Invalid Argument",
        NVML_ERROR_NOT_SUPPORTED => c"Not Supported",
        NVML_ERROR_NO_PERMISSION => c"Insufficient Permissions",
        NVML_ERROR_NOT_FOUND => c"Not Found",
        NVML_ERROR_INSUFFICIENT_SIZE => c"Insufficient Size",
        NVML_ERROR_DRIVER_NOT_LOADED => c"Driver Not Loaded",
        NVML_ERROR_FUNCTION_NOT_FOUND => c"Function Not Found",
        NVML_ERROR_GPU_IS_LOST => c"GPU is lost",
        NVML_ERROR_MEMORY => c"Insufficient Memory",
        NVML_ERROR_NO_DATA => c"No data",
        NVML_ERROR_ARGUMENT_VERSION_MISMATCH => c"Argument version mismatch",
        _ => c"Unknown Error",
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlErrorString(result: nvmlReturn_t) -> *const c_char {
    error_text(result).as_ptr()
}

/// # Safety
/// `buffer` must be writable for `length` bytes.
unsafe fn write_string(
    buffer: *mut c_char,
    length: c_uint,
    text: &str,
) -> Result<(), nvmlReturn_t> {
    if buffer.is_null() {
        return Err(NVML_ERROR_INVALID_ARGUMENT);
    }
    if (length as usize) < text.len() + 1 {
        return Err(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    // SAFETY: `buffer` holds `length > text.len()` bytes by the caller's contract.
    unsafe { write_c_string(buffer, length as usize, text) };
    Ok(())
}

/// # Safety
/// `version` must be writable for `length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(
    version: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    guard(|| {
        driver()?;
        // SAFETY: forwarded caller contract.
        unsafe { write_string(version, length, DRIVER_VERSION) }
    })
}

fn count(device_count: *mut c_uint) -> Result<(), nvmlReturn_t> {
    let driver = driver()?;
    // SAFETY: writable by the caller's contract (null refused by `out`).
    unsafe { out(device_count, driver.device_count() as c_uint) }
}

/// # Safety
/// `device_count` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount(device_count: *mut c_uint) -> nvmlReturn_t {
    guard(|| count(device_count))
}

/// # Safety
/// `device_count` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(device_count: *mut c_uint) -> nvmlReturn_t {
    guard(|| count(device_count))
}

fn by_index(index: c_uint, device: *mut nvmlDevice_t) -> Result<(), nvmlReturn_t> {
    let driver = driver()?;
    if index as usize >= driver.device_count() {
        return Err(NVML_ERROR_INVALID_ARGUMENT);
    }
    lost_check(driver, index as usize)?;
    // SAFETY: writable by the caller's contract (null refused by `out`).
    unsafe { out(device, handle_of(index as usize)) }
}

/// # Safety
/// `device` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex(
    index: c_uint,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    guard(|| by_index(index, device))
}

/// # Safety
/// `device` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    guard(|| by_index(index, device))
}

/// # Safety
/// `uuid` must be a C string, `device` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(
    uuid: *const c_char,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    guard(|| {
        let driver = driver()?;
        if uuid.is_null() {
            return Err(NVML_ERROR_INVALID_ARGUMENT);
        }
        // SAFETY: a NUL-terminated string by the caller's contract.
        let text = unsafe { CStr::from_ptr(uuid) }
            .to_str()
            .map_err(|_| NVML_ERROR_INVALID_ARGUMENT)?;
        let wanted = parse_uuid(text).ok_or(NVML_ERROR_INVALID_ARGUMENT)?;
        let index = (0..driver.device_count())
            .find(|i| driver.state.device(*i).is_some_and(|d| d.uuid == wanted))
            .ok_or(NVML_ERROR_NOT_FOUND)?;
        lost_check(driver, index)?;
        // SAFETY: writable by the caller's contract (null refused by `out`).
        unsafe { out(device, handle_of(index)) }
    })
}

/// # Safety
/// `index` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetIndex(
    device: nvmlDevice_t,
    index: *mut c_uint,
) -> nvmlReturn_t {
    guard(|| {
        let (_, position) = device_index(device)?;
        // SAFETY: forwarded caller contract.
        unsafe { out(index, position as c_uint) }
    })
}

/// # Safety
/// `uuid` must be writable for `length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    device: nvmlDevice_t,
    uuid: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    guard(|| {
        let (driver, index) = device_index(device)?;
        let info = driver
            .state
            .device(index)
            .ok_or(NVML_ERROR_INVALID_ARGUMENT)?;
        // SAFETY: forwarded caller contract.
        unsafe { write_string(uuid, length, &format_uuid(&info.uuid)) }
    })
}

/// # Safety
/// `name` must be writable for `length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetName(
    device: nvmlDevice_t,
    name: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    guard(|| {
        device_index(device)?;
        // SAFETY: forwarded caller contract.
        unsafe { write_string(name, length, DEVICE_NAME) }
    })
}

fn memory(device: nvmlDevice_t) -> Result<(u64, u64), nvmlReturn_t> {
    let (driver, index) = device_index(device)?;
    driver.state.reclaim_dead(None);
    let info = driver
        .state
        .device(index)
        .ok_or(NVML_ERROR_INVALID_ARGUMENT)?;
    Ok((info.total_memory, info.used_memory.min(info.total_memory)))
}

/// # Safety
/// `memory` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_t,
) -> nvmlReturn_t {
    guard(|| {
        let (total, used) = self::memory(device)?;
        // SAFETY: forwarded caller contract.
        unsafe {
            out(
                memory,
                nvmlMemory_t {
                    total,
                    free: total - used,
                    used,
                },
            )
        }
    })
}

/// # Safety
/// `memory` must be null or a writable `nvmlMemory_v2_t` with `version` set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_v2_t,
) -> nvmlReturn_t {
    guard(|| {
        let (total, used) = self::memory(device)?;
        if memory.is_null() {
            return Err(NVML_ERROR_INVALID_ARGUMENT);
        }
        // SAFETY: non-null and readable by the caller's contract.
        let version = unsafe { (*memory).version };
        if version != NVML_MEMORY_V2 {
            return Err(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
        }
        let value = nvmlMemory_v2_t {
            version,
            total,
            reserved: 0,
            free: total - used,
            used,
        };
        // SAFETY: as above, writable.
        unsafe { out(memory, value) }
    })
}

fn percent(busy_ns: u64, window_ns: u64) -> c_uint {
    if window_ns == 0 {
        return 0;
    }
    ((busy_ns.min(window_ns) * 100 + window_ns / 2) / window_ns) as c_uint
}

/// # Safety
/// `utilization` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(
    device: nvmlDevice_t,
    utilization: *mut nvmlUtilization_t,
) -> nvmlReturn_t {
    guard(|| {
        let (driver, index) = device_index(device)?;
        let now = monotonic_ns();
        let busy =
            driver
                .state
                .device_busy_ns(index, now.saturating_sub(UTILIZATION_WINDOW_NS), now);
        // SAFETY: forwarded caller contract.
        unsafe {
            out(
                utilization,
                nvmlUtilization_t {
                    gpu: percent(busy, UTILIZATION_WINDOW_NS),
                    memory: 0,
                },
            )
        }
    })
}

/// The samples of device `index` newer than `last_seen_us`, as the H200's driver answers
/// (`hami_hooks::nvml::samples`): processes are sampled at each instant of a fixed realtime grid
/// ([`SAMPLER_PERIOD_US`]), a sample gives the share of the period before it that the process
/// kept the device busy, and the answer holds each process's newest sample only, from the
/// history the state keeps; `last_seen_us = 0` looks back one second. Processes with a context
/// get samples while idle too (at 0 %).
fn newest_samples(
    driver: &Driver,
    index: usize,
    now_us: u64,
    now_ns: u64,
    last_seen_us: u64,
) -> Vec<nvmlProcessUtilizationSample_t> {
    let history_us = crate::state::layout::BUCKET_NS * crate::state::layout::BUCKETS as u64 / 1_000;
    let oldest_us = match last_seen_us {
        0 => now_us.saturating_sub(UTILIZATION_WINDOW_NS / 1_000),
        seen => seen,
    }
    // The first instant's period must lie inside the history too.
    .max(now_us.saturating_sub(history_us) + SAMPLER_PERIOD_US);
    let (first, last) = (
        oldest_us / SAMPLER_PERIOD_US + 1,
        now_us / SAMPLER_PERIOD_US,
    );
    let period_ns = SAMPLER_PERIOD_US * 1_000;
    let mut samples: Vec<nvmlProcessUtilizationSample_t> = Vec::new();
    for instant in (first..=last).rev() {
        let at_us = instant * SAMPLER_PERIOD_US;
        let to_ns = now_ns.saturating_sub((now_us - at_us).saturating_mul(1_000));
        for usage in driver
            .state
            .process_usage(index, to_ns.saturating_sub(period_ns), to_ns)
        {
            let sampled = usage.busy_ns > 0 || usage.contexts > 0;
            if sampled && !samples.iter().any(|s| s.pid == usage.pid) {
                samples.push(nvmlProcessUtilizationSample_t {
                    pid: usage.pid,
                    timeStamp: at_us,
                    smUtil: percent(usage.busy_ns, period_ns),
                    memUtil: 0,
                    encUtil: 0,
                    decUtil: 0,
                });
            }
        }
    }
    samples
}

/// # Safety
/// `utilization` must be null or writable for `*process_samples_count` samples.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetProcessUtilization(
    device: nvmlDevice_t,
    utilization: *mut nvmlProcessUtilizationSample_t,
    process_samples_count: *mut c_uint,
    last_seen_time_stamp: c_ulonglong,
) -> nvmlReturn_t {
    guard(|| {
        let (driver, index) = device_index(device)?;
        if process_samples_count.is_null() {
            return Err(NVML_ERROR_INVALID_ARGUMENT);
        }
        let (now_us, now_ns) = (realtime_us(), monotonic_ns());
        let samples = newest_samples(driver, index, now_us, now_ns, last_seen_time_stamp);
        if samples.is_empty() {
            return Err(NVML_ERROR_NOT_FOUND);
        }
        // SAFETY: non-null, readable and writable by the caller's contract.
        let capacity = unsafe { *process_samples_count } as usize;
        // SAFETY: as above.
        unsafe { *process_samples_count = samples.len() as c_uint };
        if utilization.is_null() || capacity < samples.len() {
            return Err(NVML_ERROR_INSUFFICIENT_SIZE);
        }
        // SAFETY: the caller's buffer holds `capacity >= samples.len()` samples.
        unsafe { std::ptr::copy_nonoverlapping(samples.as_ptr(), utilization, samples.len()) };
        Ok(())
    })
}

/// # Safety
/// `info_count` must be readable and writable, `infos` writable for `*info_count` entries.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_t,
) -> nvmlReturn_t {
    guard(|| {
        let (driver, index) = device_index(device)?;
        if info_count.is_null() {
            return Err(NVML_ERROR_INVALID_ARGUMENT);
        }
        driver.state.reclaim_dead(None);
        let now = monotonic_ns();
        let processes: Vec<nvmlProcessInfo_t> = driver
            .state
            .process_usage(index, now, now)
            .into_iter()
            .filter(|usage| usage.contexts > 0)
            .map(|usage| nvmlProcessInfo_t {
                pid: usage.pid,
                usedGpuMemory: usage.memory,
                gpuInstanceId: u32::MAX,
                computeInstanceId: u32::MAX,
            })
            .collect();
        // SAFETY: non-null, readable and writable by the caller's contract.
        let capacity = unsafe { *info_count } as usize;
        // SAFETY: as above.
        unsafe { *info_count = processes.len() as c_uint };
        if capacity < processes.len() {
            return Err(NVML_ERROR_INSUFFICIENT_SIZE);
        }
        if !processes.is_empty() {
            if infos.is_null() {
                return Err(NVML_ERROR_INVALID_ARGUMENT);
            }
            // SAFETY: the caller's buffer holds `capacity >= processes.len()` entries.
            unsafe { std::ptr::copy_nonoverlapping(processes.as_ptr(), infos, processes.len()) };
        }
        Ok(())
    })
}

macro_rules! check_exports {
    ($(
        $symbol:ident { base: $base:ident, kind: $kind:ident }
            extern "C" fn($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty;
    )*) => {
        $(const _: hami_hooks::nvml::pfn::$symbol = $symbol;)*
    };
}

hami_hooks::nvml_entry_points!(check_exports);
