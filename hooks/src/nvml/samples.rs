//! What an answer of `nvmlDeviceGetProcessUtilization` means, in busy time.
//!
//! Measured on an H200 with driver 580 (`bench/gpu/limiter-diagnose.sh`, 2026-12-04): the
//! driver samples each process on a device every 200 ms (198-201 ms apart, reported about 5 ms
//! later), and a call returns, per process, only its **newest** sample newer than
//! `lastSeenTimeStamp` (realtime µs), or `NVML_ERROR_NOT_FOUND` when there is none: asked with
//! `lastSeenTimeStamp = 0` after a 3 s run, it returned one sample, not fifteen. A sample's
//! `smUtil` is the share of its period the process kept the SMs busy.
//!
//! So busy time can only be read incrementally: ask at least once per sampler period for what
//! is newer than the newest sample already read ([`SampleCursor`]), count each new sample over
//! its period, and count nothing after the newest sample: that time is not in any answer yet.
//! A reader that counted it as idle lost it for good (the limiter did, and let 1 ms kernels
//! capped at 50 % run at 87 % on the H200); a reader that asked for older samples got none.
//!
//! One definition, used by the limiter's measurer (`libhami.so`), the harness's judge and the
//! simulated device's status display.

use super::nvmlProcessUtilizationSample_t;

/// The sampler's period measured on an H200 with driver 580: the simulated device samples at
/// this period, and a sample is read as covering this much time before it unless the answer
/// shows a shorter gap between two samples of one process.
pub const SAMPLER_PERIOD_US: u64 = 200_000;

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
/// `lastSeenTimeStamp = since_us`: the busy time it reports and the time it covers.
///
/// A sample covers the time since the same process's previous sample in the answer, else one
/// sampler period (the shortest gap in the answer, else [`SAMPLER_PERIOD_US`]); never before
/// `since_us`. The slice is sorted in place (by pid, then time); nothing is allocated.
pub fn for_each_busy(
    samples: &mut [nvmlProcessUtilizationSample_t],
    since_us: u64,
    mut visit: impl FnMut(u32, u64, u64),
) {
    samples.sort_unstable_by_key(|s| (s.pid, s.timeStamp));
    let period = period_us(samples).unwrap_or(SAMPLER_PERIOD_US);
    let mut previous: Option<(u32, u64)> = None;
    for sample in samples.iter().filter(|s| s.timeStamp > since_us) {
        let start = match previous {
            Some((pid, at)) if pid == sample.pid => at,
            _ => sample.timeStamp.saturating_sub(period),
        }
        .max(since_us);
        previous = Some((sample.pid, sample.timeStamp));
        let covered_ns = sample.timeStamp.saturating_sub(start).saturating_mul(1_000);
        let busy_ns = covered_ns / 100 * u64::from(sample.smUtil.min(100));
        visit(sample.pid, busy_ns, covered_ns);
    }
}

/// Where a reader of one device's samples stands: the newest sample instant it has counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleCursor {
    seen_us: u64,
}

/// What one answer added, read through a [`SampleCursor`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NewBusy {
    /// Busy ns of the processes asked about.
    pub own_ns: u64,
    /// Busy ns of every other process.
    pub others_ns: u64,
    /// The newest sample instant (realtime µs): busy time is known up to here. `None` when the
    /// answer held nothing new.
    pub settled_us: Option<u64>,
}

impl SampleCursor {
    /// A cursor that counts the samples taken after `now_us`.
    pub fn starting_at(now_us: u64) -> Self {
        Self { seen_us: now_us }
    }

    /// The `lastSeenTimeStamp` to ask with.
    pub fn since_us(&self) -> u64 {
        self.seen_us
    }

    /// Counts an answer asked for with [`Self::since_us`], split between `pids` and the others,
    /// and moves past it.
    pub fn read(&mut self, samples: &mut [nvmlProcessUtilizationSample_t], pids: &[u32]) -> NewBusy {
        let mut new = NewBusy::default();
        for_each_busy(samples, self.seen_us, |pid, busy, _| {
            if pids.contains(&pid) {
                new.own_ns = new.own_ns.saturating_add(busy);
            } else {
                new.others_ns = new.others_ns.saturating_add(busy);
            }
        });
        new.settled_us = newest_us(samples).filter(|&newest| newest > self.seen_us);
        if let Some(newest) = new.settled_us {
            self.seen_us = newest;
        }
        new
    }

    /// Moves past a stretch with no samples at all (an idle device), up to `now_us`.
    pub fn skip_to(&mut self, now_us: u64) {
        self.seen_us = self.seen_us.max(now_us);
    }
}

/// Each process's utilization (percent, rounded) over the time the answer covers for it,
/// ordered by pid: what a status display shows.
pub fn utilization_by_pid(
    samples: &mut [nvmlProcessUtilizationSample_t],
    since_us: u64,
) -> Vec<(u32, u32)> {
    let mut shares: Vec<(u32, u64, u64)> = Vec::new();
    for_each_busy(samples, since_us, |pid, busy, covered| {
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

    fn read(cursor: &mut SampleCursor, answer: &mut [nvmlProcessUtilizationSample_t]) -> NewBusy {
        cursor.read(answer, &[7])
    }

    #[test]
    fn a_cursor_counts_each_newest_sample_over_its_period() {
        // What the H200 answers when asked every 25 ms: one newest sample per process.
        let mut cursor = SampleCursor::starting_at(1_000_000);
        assert_eq!(cursor.since_us(), 1_000_000);
        let first = read(
            &mut cursor,
            &mut [sample(7, 1_200_000, 50), sample(8, 1_200_000, 10)],
        );
        assert_eq!(
            first,
            NewBusy {
                own_ns: 100_000_000,
                others_ns: 20_000_000,
                settled_us: Some(1_200_000)
            }
        );
        assert_eq!(cursor.since_us(), 1_200_000);
        // Nothing new yet: nothing counted, nothing settled.
        assert_eq!(read(&mut cursor, &mut []), NewBusy::default());
        let next = read(&mut cursor, &mut [sample(7, 1_400_000, 100)]);
        assert_eq!((next.own_ns, next.settled_us), (200_000_000, Some(1_400_000)));
    }

    #[test]
    fn a_sample_never_reaches_back_before_what_was_read() {
        // The first sample after the cursor started covers only the time since.
        let mut cursor = SampleCursor::starting_at(1_150_000);
        let new = read(&mut cursor, &mut [sample(7, 1_200_000, 100)]);
        assert_eq!(new.own_ns, 50_000_000);
        // After a long quiet stretch a sample still covers one period, not the whole stretch.
        cursor.skip_to(5_000_000);
        let new = read(&mut cursor, &mut [sample(7, 9_000_000, 100)]);
        assert_eq!(new.own_ns, 200_000_000);
    }

    #[test]
    fn several_samples_of_a_process_chain_and_show_the_period() {
        // A driver that returns every sample since: each covers the gap to the previous one.
        let mut answer = [
            sample(7, 1_400_000, 50),
            sample(7, 1_300_000, 100),
            sample(9, 1_400_000, 100),
        ];
        let new = SampleCursor::starting_at(1_000_000).read(&mut answer, &[7]);
        // pid 7: (1.2, 1.3] at 100 % and (1.3, 1.4] at 50 %, the first one period (100 ms) back.
        assert_eq!(new.own_ns, 150_000_000);
        assert_eq!(new.others_ns, 100_000_000);
    }

    #[test]
    fn samples_not_newer_than_since_are_ignored() {
        let mut cursor = SampleCursor::starting_at(1_200_000);
        let new = read(
            &mut cursor,
            &mut [sample(7, 1_200_000, 100), sample(7, 1_300_000, 30)],
        );
        assert_eq!(new.own_ns, 30_000_000);
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
