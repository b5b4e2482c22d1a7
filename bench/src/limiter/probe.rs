//! The harness's source of truth: how long each process really kept the device busy, as the
//! device reports it through NVML (`nvmlDeviceGetProcessUtilization`), never as the limiter
//! believes. On the simulated device NVML reads the device's own busy record; on a real GPU it
//! is the driver's per-process SM utilization.
//!
//! The probe runs as its own process (`hami bench limiter probe`) in the device's environment
//! and prints one JSON line per sample with each process's cumulative busy nanoseconds and the
//! `CLOCK_MONOTONIC` instant, which the harness shares.

use std::collections::HashMap;
use std::ffi::c_uint;
use std::io::Write;
use std::time::Duration;

use hami_hooks::nvml::samples::SampleCursor;
use hami_hooks::nvml::{
    NVML_ERROR_NOT_FOUND, NVML_SUCCESS, nvmlDevice_t, nvmlProcessUtilizationSample_t, pfn,
};
use libloading::Library;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One sample: cumulative busy ns per pid at a monotonic instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSample {
    pub at_ns: u64,
    pub busy_ns: HashMap<u32, u64>,
}

/// The probe cannot read the device.
#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("cannot load libnvidia-ml.so.1: {0}")]
    Load(#[from] libloading::Error),
    #[error("{call} failed with NVML error {code}")]
    Nvml { call: &'static str, code: i32 },
    #[error("writing a sample: {0}")]
    Write(#[from] std::io::Error),
}

/// `CLOCK_MONOTONIC` in ns: the clock the probe and the harness agree on.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// How far behind now the probe's figures may be: NVML's sampler period (200 ms) and the
/// delay before a sample is reported, with margin. Samples are read as
/// `hami_hooks::nvml::samples` says, so the probe must ask more often than once a period.
pub const SETTLE_LAG_NS: u64 = 300_000_000;

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

/// Samples device `index` every `interval` until stdout closes, one JSON line per sample: the
/// cumulative settled busy time per pid, stamped with the monotonic instant it is settled to.
pub fn run_probe(index: u32, interval: Duration) -> Result<(), ProbeError> {
    // SAFETY: loading NVML runs its initializers, which have no preconditions.
    let library = unsafe { Library::new("libnvidia-ml.so.1") }?;
    // SAFETY: the symbols are NVML entry points of exactly the types the hooks table spells.
    let (init, handle_by_index, utilization) = unsafe {
        (
            *library.get::<pfn::nvmlInit_v2>(b"nvmlInit_v2\0")?,
            *library
                .get::<pfn::nvmlDeviceGetHandleByIndex_v2>(b"nvmlDeviceGetHandleByIndex_v2\0")?,
            *library.get::<pfn::nvmlDeviceGetProcessUtilization>(
                b"nvmlDeviceGetProcessUtilization\0",
            )?,
        )
    };
    let nvml = |call, code| {
        if code == NVML_SUCCESS {
            Ok(())
        } else {
            Err(ProbeError::Nvml { call, code })
        }
    };
    // SAFETY: no arguments.
    nvml("nvmlInit_v2", unsafe { init() })?;
    let mut device: nvmlDevice_t = std::ptr::null_mut();
    // SAFETY: a valid out-pointer.
    nvml("nvmlDeviceGetHandleByIndex_v2", unsafe {
        handle_by_index(index, &mut device)
    })?;
    let mut buffer = vec![nvmlProcessUtilizationSample_t::default(); 512];
    // How many samples newer than `since_us` the buffer holds; `None` when NVML cannot answer.
    let query = |buffer: &mut [nvmlProcessUtilizationSample_t], since_us: u64| {
        let mut count = c_uint::try_from(buffer.len()).unwrap_or(0);
        // SAFETY: `device` came from NVML; the buffer holds `count` samples.
        let code = unsafe { utilization(device, buffer.as_mut_ptr(), &mut count, since_us) };
        match code {
            NVML_SUCCESS => Some(usize::try_from(count).unwrap_or(0).min(buffer.len())),
            NVML_ERROR_NOT_FOUND => Some(0),
            _ => None,
        }
    };
    let mut cursor = SampleCursor::starting_at(realtime_us());
    let mut totals: HashMap<u32, u64> = HashMap::new();
    let mut out = std::io::stdout().lock();
    loop {
        std::thread::sleep(interval);
        let (now_ns, now_us) = (monotonic_ns(), realtime_us());
        let Some(count) = query(&mut buffer, cursor.since_us()) else {
            continue;
        };
        // Busy time is known up to the newest sample; later time is in no answer yet.
        let newest = cursor.read(&mut buffer[..count], |pid, busy| {
            let total = totals.entry(pid).or_insert(0);
            *total = total.saturating_add(busy);
        });
        let Some(settled_us) = newest else {
            continue;
        };
        let sample = ProbeSample {
            at_ns: now_ns.saturating_sub(now_us.saturating_sub(settled_us).saturating_mul(1_000)),
            busy_ns: totals.clone(),
        };
        let line = serde_json::to_string(&sample).unwrap_or_default();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(()); // the harness stopped listening: done
        }
    }
}
