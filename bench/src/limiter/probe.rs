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

use hami_hooks::nvml::{NVML_SUCCESS, nvmlDevice_t, nvmlProcessUtilizationSample_t, pfn};
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

/// How far behind now the probe counts time as settled: longer than any kernel the harness
/// runs, so a kernel still running at a query has finished reporting before it is counted.
pub const SETTLE_LAG_NS: u64 = 300_000_000;

/// Busy ns per pid in one NVML answer for samples since `since_us`: each sample covers the
/// time since its process's previous sample in the answer, never before `since_us`.
pub fn busy_by_pid(samples: &[nvmlProcessUtilizationSample_t], since_us: u64) -> HashMap<u32, i64> {
    let mut ordered: Vec<&nvmlProcessUtilizationSample_t> =
        samples.iter().filter(|s| s.timeStamp > since_us).collect();
    ordered.sort_by_key(|s| s.timeStamp);
    let mut previous: HashMap<u32, u64> = HashMap::new();
    let mut busy: HashMap<u32, i64> = HashMap::new();
    for sample in ordered {
        let from = previous
            .insert(sample.pid, sample.timeStamp)
            .unwrap_or(since_us)
            .max(since_us);
        let ns = sample.timeStamp.saturating_sub(from).saturating_mul(1_000) / 100
            * u64::from(sample.smUtil.min(100));
        *busy.entry(sample.pid).or_insert(0) += i64::try_from(ns).unwrap_or(i64::MAX);
    }
    busy
}

/// Adds the settled busy time between two answers that end at the same instant and start at
/// `before` and `now` (the earlier and the later settled point) to the per-pid totals.
pub fn add_settled(
    totals: &mut HashMap<u32, u64>,
    from_before: &HashMap<u32, i64>,
    from_now: &HashMap<u32, i64>,
) {
    for (pid, busy) in from_before {
        let settled = busy - from_now.get(pid).copied().unwrap_or(0);
        let total = totals.entry(*pid).or_insert(0);
        *total = total.saturating_add_signed(settled);
    }
}

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
    let mut query = |since_us: u64| -> HashMap<u32, i64> {
        let mut count = c_uint::try_from(buffer.len()).unwrap_or(0);
        // SAFETY: `device` came from NVML; the buffer holds `count` samples.
        let code = unsafe { utilization(device, buffer.as_mut_ptr(), &mut count, since_us) };
        if code != NVML_SUCCESS {
            return HashMap::new();
        }
        let n = usize::try_from(count).unwrap_or(0).min(buffer.len());
        busy_by_pid(&buffer[..n], since_us)
    };
    let lag_us = SETTLE_LAG_NS / 1_000;
    let mut settled_us = realtime_us().saturating_sub(lag_us);
    let mut totals: HashMap<u32, u64> = HashMap::new();
    let mut out = std::io::stdout().lock();
    loop {
        std::thread::sleep(interval);
        let now_ns = monotonic_ns();
        let next_us = realtime_us().saturating_sub(lag_us);
        let from_before = query(settled_us);
        let from_now = query(next_us);
        add_settled(&mut totals, &from_before, &from_now);
        settled_us = next_us;
        let sample = ProbeSample {
            at_ns: now_ns.saturating_sub(SETTLE_LAG_NS),
            busy_ns: totals.clone(),
        };
        let line = serde_json::to_string(&sample).unwrap_or_default();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(()); // the harness stopped listening: done
        }
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
    fn settled_time_is_the_difference_of_two_answers_ending_now() {
        // Since 1.0 s: pid 1 busy 30 % of 0.5 s; since 1.3 s: 10 % of 0.2 s.
        let before = busy_by_pid(
            &[sample(1, 1_500_000, 30), sample(2, 1_500_000, 20)],
            1_000_000,
        );
        let now = busy_by_pid(&[sample(1, 1_500_000, 10)], 1_300_000);
        let mut totals = HashMap::from([(1, 5_000_000u64)]);
        add_settled(&mut totals, &before, &now);
        assert_eq!(totals[&1], 5_000_000 + 150_000_000 - 20_000_000);
        assert_eq!(
            totals[&2], 100_000_000,
            "idle since the later point: all of it settled"
        );
    }
}
