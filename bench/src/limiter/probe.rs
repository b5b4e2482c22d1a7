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

/// Per-pid accumulation of utilization samples into busy time.
#[derive(Debug, Default)]
pub struct BusyAccumulator {
    last_seen_us: u64,
    last_sample_us: HashMap<u32, u64>,
    busy_ns: HashMap<u32, u64>,
}

impl BusyAccumulator {
    /// Adds `samples` (one NVML answer): a sample covers its process's time since that
    /// process's previous sample, but not from before the previous answer (a process missing
    /// from an answer was idle). The first answer only positions the cursor.
    pub fn absorb(&mut self, samples: &[nvmlProcessUtilizationSample_t]) {
        let first = self.last_seen_us == 0;
        let mut newest = self.last_seen_us;
        let mut ordered: Vec<&nvmlProcessUtilizationSample_t> = samples.iter().collect();
        ordered.sort_by_key(|s| s.timeStamp);
        for sample in ordered {
            if sample.timeStamp <= self.last_seen_us {
                continue;
            }
            newest = newest.max(sample.timeStamp);
            let since = self
                .last_sample_us
                .insert(sample.pid, sample.timeStamp)
                .unwrap_or(0)
                .max(self.last_seen_us);
            let total = self.busy_ns.entry(sample.pid).or_insert(0);
            if !first {
                *total += sample.timeStamp.saturating_sub(since)
                    * 1_000
                    * u64::from(sample.smUtil.min(100))
                    / 100;
            }
        }
        self.last_seen_us = newest;
    }

    /// Cumulative busy ns per pid.
    pub fn busy_ns(&self) -> &HashMap<u32, u64> {
        &self.busy_ns
    }
}

/// Samples device `index` every `interval` until stdout closes, one JSON line per sample.
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
    let mut accumulator = BusyAccumulator::default();
    let mut out = std::io::stdout().lock();
    loop {
        let mut count = c_uint::try_from(buffer.len()).unwrap_or(0);
        let at_ns = monotonic_ns();
        // SAFETY: `device` came from NVML; the buffer holds `count` samples.
        let code = unsafe {
            utilization(
                device,
                buffer.as_mut_ptr(),
                &mut count,
                accumulator.last_seen_us,
            )
        };
        if code == NVML_SUCCESS {
            let n = usize::try_from(count).unwrap_or(0).min(buffer.len());
            accumulator.absorb(&buffer[..n]);
        }
        let sample = ProbeSample {
            at_ns,
            busy_ns: accumulator.busy_ns().clone(),
        };
        let line = serde_json::to_string(&sample).unwrap_or_default();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(()); // the harness stopped listening: done
        }
        std::thread::sleep(interval);
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
    fn busy_accumulates_per_process_over_consecutive_answers() {
        let mut acc = BusyAccumulator::default();
        acc.absorb(&[sample(1, 1_000_000, 99)]);
        acc.absorb(&[sample(1, 1_200_000, 30), sample(2, 1_200_000, 70)]);
        acc.absorb(&[sample(2, 1_400_000, 50)]);
        assert_eq!(acc.busy_ns()[&1], 60_000_000);
        assert_eq!(acc.busy_ns()[&2], 140_000_000 + 100_000_000);
    }
}
