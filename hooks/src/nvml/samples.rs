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
    walk(
        samples,
        |_| (since_us, since_us),
        |pid, _, busy, covered| visit(pid, busy, covered),
    );
}

/// The walk behind [`for_each_busy`] and [`SampleCursor::read`]: `bounds(pid)` gives, for a
/// process, the instant through which its samples are already counted (skipped) and the
/// instant its first sample here reaches back no further than; `visit(pid, at_us, busy_ns,
/// covered_ns)` gets each sample counted.
fn walk(
    samples: &mut [nvmlProcessUtilizationSample_t],
    bounds: impl Fn(u32) -> (u64, u64),
    mut visit: impl FnMut(u32, u64, u64, u64),
) {
    samples.sort_unstable_by_key(|s| (s.pid, s.timeStamp));
    let period = period_us(samples).unwrap_or(SAMPLER_PERIOD_US);
    let mut previous: Option<(u32, u64)> = None;
    for sample in samples.iter() {
        let at = sample.timeStamp;
        let start = match previous {
            Some((pid, before)) if pid == sample.pid => before,
            _ => {
                let (counted_through, not_before) = bounds(sample.pid);
                if at <= counted_through {
                    continue;
                }
                at.saturating_sub(period).max(not_before)
            }
        };
        previous = Some((sample.pid, at));
        let covered_ns = at.saturating_sub(start).saturating_mul(1_000);
        let busy_ns = covered_ns / 100 * u64::from(sample.smUtil.min(100));
        visit(sample.pid, at, busy_ns, covered_ns);
    }
}

/// Where a reader of one device's samples stands: per process, the newest sample it has
/// counted. Per process, because one process's sample can be reported after another's later
/// one: a single device-wide mark would pass over it and lose it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SampleCursor {
    /// No sample covers time before this (realtime µs).
    start_us: u64,
    /// The newest sample instant counted, of any process: busy time is known up to here.
    newest_us: u64,
    /// (pid, newest sample instant counted) of the processes seen lately.
    processes: Vec<(u32, u64)>,
}

/// A process not sampled for this long is forgotten (it exited, or idles without a context).
const FORGET_AFTER_US: u64 = 2_000_000;

impl SampleCursor {
    /// A cursor that counts the time after `now_us`.
    pub fn starting_at(now_us: u64) -> Self {
        Self {
            start_us: now_us,
            newest_us: now_us,
            processes: Vec::new(),
        }
    }

    /// The `lastSeenTimeStamp` to ask with: one sampler period before the newest sample
    /// counted, so that a sample reported late still comes.
    pub fn since_us(&self) -> u64 {
        self.newest_us
            .saturating_sub(SAMPLER_PERIOD_US)
            .max(self.start_us)
    }

    /// Counts an answer asked for with [`Self::since_us`]: calls `visit(pid, busy_ns)` for the
    /// busy time of each sample not counted before, and returns the newest sample instant when
    /// it moved (busy time is known up to there), `None` when the answer held nothing new.
    pub fn read(
        &mut self,
        samples: &mut [nvmlProcessUtilizationSample_t],
        mut visit: impl FnMut(u32, u64),
    ) -> Option<u64> {
        let since = self.since_us();
        let before = self.newest_us;
        // Both closures need the per-process marks: one reads, the other writes.
        let processes = std::cell::RefCell::new(std::mem::take(&mut self.processes));
        let mut newest = self.newest_us;
        walk(
            samples,
            |pid| {
                let seen = processes
                    .borrow()
                    .iter()
                    .find(|(p, _)| *p == pid)
                    .map(|&(_, seen)| seen);
                // A process counted before reaches back to its last sample; a new one no
                // further than where counting started.
                seen.map_or((since, self.start_us), |seen| (seen, seen))
            },
            |pid, at, busy, _| {
                visit(pid, busy);
                let mut processes = processes.borrow_mut();
                match processes.iter_mut().find(|(p, _)| *p == pid) {
                    Some(entry) => entry.1 = entry.1.max(at),
                    None => processes.push((pid, at)),
                }
                newest = newest.max(at);
            },
        );
        self.processes = processes.into_inner();
        self.newest_us = newest;
        self.processes
            .retain(|&(_, seen)| newest.saturating_sub(seen) < FORGET_AFTER_US);
        (newest > before).then_some(newest)
    }

    /// Moves past a stretch with no samples at all (an idle device), up to `now_us`.
    pub fn skip_to(&mut self, now_us: u64) {
        self.newest_us = self.newest_us.max(now_us);
        self.start_us = self.start_us.max(now_us);
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

    /// Reads an answer: (busy ns of pid 7, of the others, the newest instant when it moved).
    fn read(
        cursor: &mut SampleCursor,
        answer: &mut [nvmlProcessUtilizationSample_t],
    ) -> (u64, u64, Option<u64>) {
        let (mut own, mut others) = (0, 0);
        let settled = cursor.read(answer, |pid, busy| {
            if pid == 7 {
                own += busy;
            } else {
                others += busy;
            }
        });
        (own, others, settled)
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
        assert_eq!(first, (100_000_000, 20_000_000, Some(1_200_000)));
        // The same samples again (asked one period back): nothing new.
        assert_eq!(cursor.since_us(), 1_000_000);
        assert_eq!(
            read(
                &mut cursor,
                &mut [sample(7, 1_200_000, 50), sample(8, 1_200_000, 10)]
            ),
            (0, 0, None)
        );
        assert_eq!(read(&mut cursor, &mut []), (0, 0, None));
        let next = read(&mut cursor, &mut [sample(7, 1_400_000, 100)]);
        assert_eq!(next, (200_000_000, 0, Some(1_400_000)));
    }

    #[test]
    fn a_sample_reported_after_a_later_one_of_another_process_still_counts() {
        let mut cursor = SampleCursor::starting_at(1_000_000);
        read(
            &mut cursor,
            &mut [sample(7, 1_200_000, 100), sample(8, 1_205_000, 100)],
        );
        // pid 8's next sample arrives first; pid 7's, taken 5 ms earlier, only in the next answer.
        let first = read(&mut cursor, &mut [sample(8, 1_405_000, 100)]);
        assert_eq!(first, (0, 200_000_000, Some(1_405_000)));
        assert!(cursor.since_us() < 1_400_000, "still asks for it");
        let late = read(
            &mut cursor,
            &mut [sample(7, 1_400_000, 100), sample(8, 1_405_000, 100)],
        );
        assert_eq!(late, (200_000_000, 0, None));
    }

    #[test]
    fn a_sample_never_reaches_back_before_what_was_read() {
        // The first sample after the cursor started covers only the time since.
        let mut cursor = SampleCursor::starting_at(1_150_000);
        assert_eq!(
            read(&mut cursor, &mut [sample(7, 1_200_000, 100)]).0,
            50_000_000
        );
        // After a long quiet stretch a sample still covers one period, not the whole stretch.
        cursor.skip_to(5_000_000);
        assert_eq!(
            read(&mut cursor, &mut [sample(7, 9_000_000, 100)]).0,
            200_000_000
        );
    }

    #[test]
    fn several_samples_of_a_process_chain_and_show_the_period() {
        // A driver that returns every sample since: each covers the gap to the previous one.
        let mut answer = [
            sample(7, 1_400_000, 50),
            sample(7, 1_300_000, 100),
            sample(9, 1_400_000, 100),
        ];
        let mut cursor = SampleCursor::starting_at(1_000_000);
        // pid 7: (1.2, 1.3] at 100 % and (1.3, 1.4] at 50 %, the first one period (100 ms) back.
        assert_eq!(
            read(&mut cursor, &mut answer),
            (150_000_000, 100_000_000, Some(1_400_000))
        );
    }

    #[test]
    fn samples_not_newer_than_since_are_ignored() {
        let mut answer = [sample(7, 1_200_000, 100), sample(7, 1_300_000, 30)];
        let mut busy = 0;
        for_each_busy(&mut answer, 1_200_000, |_, b, _| busy += b);
        assert_eq!(busy, 30_000_000);
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
