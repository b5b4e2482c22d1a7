//! What an answer of `nvmlDeviceGetProcessUtilization` means, in busy time.
//!
//! The driver samples every process on a device at fixed instants (every 200 ms on an H200
//! with driver 580, measured by `bench/gpu/limiter-diagnose.sh`) and keeps a few seconds of
//! samples. A call returns the samples newer than its `lastSeenTimeStamp` (realtime µs), or
//! `NVML_ERROR_NOT_FOUND` when there are none yet; each sample gives the share of the time
//! since that process's previous sample that it kept the SMs busy. Time after the newest
//! sample is not in any answer yet: a reader that counts it as idle loses it for good (the
//! limiter did, and let 1 ms kernels capped at 50 % run at 87 % on the H200).
//!
//! One definition, used by the limiter's measurer (`libhami.so`), the harness's judge and the
//! simulated device's status: samples are read as intervals, and busy time is counted in a
//! window only where a sample covers it.

use super::nvmlProcessUtilizationSample_t;

/// How far before a window's start to ask for samples, so that the sample covering the start
/// comes with its predecessor: longer than the sampler's period (200 ms measured; the driver
/// leaves up to 800 ms between two samples at times).
pub const LOOKBACK_US: u64 = 1_000_000;

/// The sampler's period measured on an H200 with driver 580 (samples 198-201 ms apart): the
/// simulated device samples at this period, and an answer that does not show its own period
/// (each process has one sample) is read with it.
pub const SAMPLER_PERIOD_US: u64 = 200_000;

/// A stretch of NVML's clock, realtime µs, `[from_us, to_us)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from_us: u64,
    pub to_us: u64,
}

/// The newest sample instant in an answer: no answer yet covers anything after it.
pub fn newest_us(samples: &[nvmlProcessUtilizationSample_t]) -> Option<u64> {
    samples.iter().map(|s| s.timeStamp).max()
}

/// The sampler's period as the answer shows it: the shortest gap between two samples of one
/// process. `None` when no process has two samples in the answer.
fn period_us(samples: &[nvmlProcessUtilizationSample_t]) -> Option<u64> {
    samples
        .windows(2)
        .filter(|pair| pair[0].pid == pair[1].pid)
        .map(|pair| pair[1].timeStamp.saturating_sub(pair[0].timeStamp))
        .filter(|&gap| gap > 0)
        .min()
}

/// Calls `visit(pid, busy_ns, covered_ns)` for each sample of an answer asked for with
/// `lastSeenTimeStamp = since_us` that covers part of `window`: the busy time and the length of
/// the covered part, at the sample's utilization spread evenly over its interval.
///
/// A sample covers the time since the same process's previous sample. The first sample of a
/// process in the answer covers one sampler period back (the shortest gap in the answer, else
/// [`SAMPLER_PERIOD_US`]); never before `since_us`. The slice is
/// sorted in place (by pid, then time); nothing is allocated.
pub fn for_each_busy(
    samples: &mut [nvmlProcessUtilizationSample_t],
    since_us: u64,
    window: Window,
    mut visit: impl FnMut(u32, u64, u64),
) {
    samples.sort_unstable_by_key(|s| (s.pid, s.timeStamp));
    let period = period_us(samples);
    let mut previous: Option<(u32, u64)> = None;
    for sample in samples.iter().filter(|s| s.timeStamp > since_us) {
        let start = match previous {
            Some((pid, at)) if pid == sample.pid => at,
            _ => sample
                .timeStamp
                .saturating_sub(period.unwrap_or(SAMPLER_PERIOD_US)),
        }
        .max(since_us);
        previous = Some((sample.pid, sample.timeStamp));
        let from = start.max(window.from_us);
        let to = sample.timeStamp.min(window.to_us);
        if to <= from {
            continue;
        }
        let covered_ns = (to - from).saturating_mul(1_000);
        let busy_ns = covered_ns / 100 * u64::from(sample.smUtil.min(100));
        visit(sample.pid, busy_ns, covered_ns);
    }
}

/// Busy ns in `window` of the processes `pids` and of all the others.
pub fn split_busy(
    samples: &mut [nvmlProcessUtilizationSample_t],
    since_us: u64,
    window: Window,
    pids: &[u32],
) -> (u64, u64) {
    let (mut own, mut others) = (0u64, 0u64);
    for_each_busy(samples, since_us, window, |pid, busy, _| {
        if pids.contains(&pid) {
            own = own.saturating_add(busy);
        } else {
            others = others.saturating_add(busy);
        }
    });
    (own, others)
}

/// Each process's utilization (percent, rounded) over the time the answer covers for it,
/// ordered by pid: what a status display shows.
pub fn utilization_by_pid(
    samples: &mut [nvmlProcessUtilizationSample_t],
    since_us: u64,
) -> Vec<(u32, u32)> {
    let window = Window {
        from_us: since_us,
        to_us: u64::MAX,
    };
    let mut shares: Vec<(u32, u64, u64)> = Vec::new();
    for_each_busy(samples, since_us, window, |pid, busy, covered| {
        match shares.last_mut() {
            Some((last, b, c)) if *last == pid => {
                *b += busy;
                *c += covered;
            }
            _ => shares.push((pid, busy, covered)),
        }
    });
    shares
        .into_iter()
        .map(|(pid, busy, covered)| {
            let percent = (busy.saturating_mul(100) + covered / 2) / covered.max(1);
            (pid, u32::try_from(percent).unwrap_or(100))
        })
        .collect()
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

    fn window(from_us: u64, to_us: u64) -> Window {
        Window { from_us, to_us }
    }

    #[test]
    fn periodic_samples_each_cover_the_time_since_the_previous_one() {
        // Every 200 ms, as the H200 answers; out of order, as NVML does not promise an order.
        let mut answer = [
            sample(7, 1_400_000, 50),
            sample(7, 1_200_000, 100),
            sample(7, 1_600_000, 0),
        ];
        // [1.2 s, 1.6 s): 200 ms at 50 % then 200 ms at 0 %.
        let (own, others) = split_busy(&mut answer, 1_000_000, window(1_200_000, 1_600_000), &[7]);
        assert_eq!((own, others), (100_000_000, 0));
        // Half of the 50 % sample's interval.
        let (own, _) = split_busy(&mut answer, 1_000_000, window(1_300_000, 1_400_000), &[7]);
        assert_eq!(own, 50_000_000);
    }

    #[test]
    fn time_after_the_newest_sample_is_not_counted() {
        let mut answer = [sample(7, 1_200_000, 100), sample(7, 1_400_000, 100)];
        assert_eq!(newest_us(&answer), Some(1_400_000));
        let (own, _) = split_busy(&mut answer, 1_000_000, window(1_300_000, 1_500_000), &[7]);
        assert_eq!(own, 100_000_000, "only up to 1.4 s is known");
    }

    #[test]
    fn a_first_sample_covers_one_period_never_before_since() {
        // pid 8 appears at 1.4 s; pid 7's samples show a 200 ms period.
        let mut answer = [
            sample(7, 1_200_000, 100),
            sample(7, 1_400_000, 100),
            sample(8, 1_400_000, 100),
        ];
        let (own, others) = split_busy(&mut answer, 1_000_000, window(1_000_000, 1_400_000), &[8]);
        assert_eq!(own, 200_000_000, "(1.2 s, 1.4 s], not since 1.0 s");
        // pid 7's first sample reaches back one period: (1.0 s, 1.2 s].
        assert_eq!(others, 400_000_000);
        // With no period to go by, a lone sample covers the default period, never before
        // `since`.
        let mut lone = [sample(8, 1_100_000, 40)];
        assert_eq!(
            split_busy(&mut lone, 1_000_000, window(0, u64::MAX), &[8]),
            (40_000_000, 0)
        );
        assert_eq!(
            split_busy(&mut lone, 0, window(0, u64::MAX), &[8]),
            (80_000_000, 0)
        );
    }

    #[test]
    fn samples_not_newer_than_since_are_ignored() {
        let mut answer = [sample(7, 1_000_000, 100), sample(7, 1_200_000, 25)];
        let (own, _) = split_busy(&mut answer, 1_000_000, window(0, u64::MAX), &[7]);
        assert_eq!(own, 50_000_000);
    }

    #[test]
    fn utilization_by_pid_averages_over_what_is_covered() {
        let mut answer = [
            sample(7, 1_200_000, 40),
            sample(7, 1_400_000, 60),
            sample(9, 1_400_000, 10),
        ];
        assert_eq!(
            utilization_by_pid(&mut answer, 1_000_000),
            vec![(7, 50), (9, 10)]
        );
    }
}
