//! Busy time: how long each device executed kernels, in total and per process, kept in
//! 10 ms buckets so that utilisation over a recent window can be read by anyone.
//!
//! Only the holder of a device's execution lock writes that device's buckets, so each
//! bucket has a single writer at a time; readers may see a bucket mid-update and are off by
//! at most one kernel.

use std::sync::atomic::Ordering;

use super::SharedState;
use super::layout::{BUCKET_NS, BUCKETS, Bucket};

/// One process's share of one device over a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessUsage {
    pub pid: u32,
    /// Device memory the process holds, contexts included.
    pub memory: u64,
    /// Live contexts of the process on the device.
    pub contexts: u32,
    /// Busy nanoseconds within the window.
    pub busy_ns: u64,
    /// Busy nanoseconds since the process attached.
    pub busy_total_ns: u64,
}

impl SharedState {
    /// Records that the process in `slot` kept `device` busy from `start_ns` to `end_ns`.
    pub fn record_busy(&self, slot: usize, device: usize, start_ns: u64, end_ns: u64) {
        if end_ns <= start_ns || device >= self.device_count() as usize {
            return;
        }
        let record = &self.state.devices[device];
        let usage = &self.state.processes[slot].devices[device];
        record
            .busy_total_ns
            .fetch_add(end_ns - start_ns, Ordering::Relaxed);
        usage
            .busy_total_ns
            .fetch_add(end_ns - start_ns, Ordering::Relaxed);
        add_interval(&record.busy, start_ns, end_ns);
        add_interval(
            &usage.busy,
            start_ns.max(usage.since_epoch.load(Ordering::Acquire) * BUCKET_NS),
            end_ns,
        );
    }

    /// Busy nanoseconds of `device` within `[from_ns, to_ns]`.
    pub fn device_busy_ns(&self, device: usize, from_ns: u64, to_ns: u64) -> u64 {
        match self.state.devices.get(device) {
            Some(record) => busy_between(&record.busy, from_ns, to_ns, 0),
            None => 0,
        }
    }

    /// Total busy nanoseconds of `device` since the state was created.
    pub fn device_busy_total_ns(&self, device: usize) -> u64 {
        self.state
            .devices
            .get(device)
            .map_or(0, |r| r.busy_total_ns.load(Ordering::Relaxed))
    }

    /// Every process that holds memory, a context or recent busy time on `device`.
    pub fn process_usage(&self, device: usize, from_ns: u64, to_ns: u64) -> Vec<ProcessUsage> {
        if device >= self.device_count() as usize {
            return Vec::new();
        }
        self.occupied_slots()
            .into_iter()
            .map(|(index, pid)| {
                let usage = &self.state.processes[index].devices[device];
                ProcessUsage {
                    pid,
                    memory: usage.memory.load(Ordering::Acquire),
                    contexts: usage.contexts.load(Ordering::Acquire),
                    busy_ns: busy_between(
                        &usage.busy,
                        from_ns,
                        to_ns,
                        usage.since_epoch.load(Ordering::Acquire),
                    ),
                    busy_total_ns: usage.busy_total_ns.load(Ordering::Relaxed),
                }
            })
            .filter(|u| u.memory > 0 || u.contexts > 0 || u.busy_total_ns > 0)
            .collect()
    }

    /// Adds one to the live-context count of the process in `slot`; returns the new count.
    pub fn context_opened(&self, slot: usize, device: usize) -> u32 {
        self.state.processes[slot].devices[device]
            .contexts
            .fetch_add(1, Ordering::AcqRel)
            + 1
    }

    /// Removes one from the live-context count; returns the new count.
    pub fn context_closed(&self, slot: usize, device: usize) -> u32 {
        let counter = &self.state.processes[slot].devices[device].contexts;
        let previous = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
            Some(c.saturating_sub(1))
        });
        previous.unwrap_or(0).saturating_sub(1)
    }
}

fn add_interval(buckets: &[Bucket; BUCKETS], start_ns: u64, end_ns: u64) {
    let mut at = start_ns;
    while at < end_ns {
        let epoch = at / BUCKET_NS;
        let until = end_ns.min((epoch + 1) * BUCKET_NS);
        let bucket = &buckets[bucket_index(epoch)];
        if bucket.epoch.load(Ordering::Acquire) != epoch {
            bucket.busy_ns.store(0, Ordering::Relaxed);
            bucket.epoch.store(epoch, Ordering::Release);
        }
        bucket.busy_ns.fetch_add(until - at, Ordering::Relaxed);
        at = until;
    }
}

fn bucket_index(epoch: u64) -> usize {
    usize::try_from(epoch % BUCKETS as u64).unwrap_or(0)
}

/// Busy time inside `[from_ns, to_ns]`, ignoring buckets before `since_epoch`; the first
/// bucket counts pro rata to its overlap.
fn busy_between(buckets: &[Bucket; BUCKETS], from_ns: u64, to_ns: u64, since_epoch: u64) -> u64 {
    if to_ns <= from_ns {
        return 0;
    }
    let oldest = (to_ns / BUCKET_NS).saturating_sub(BUCKETS as u64 - 1);
    let first = (from_ns / BUCKET_NS).max(oldest).max(since_epoch);
    let mut busy = 0u64;
    for epoch in first..=to_ns / BUCKET_NS {
        let bucket = &buckets[bucket_index(epoch)];
        if bucket.epoch.load(Ordering::Acquire) != epoch {
            continue;
        }
        let in_bucket = bucket.busy_ns.load(Ordering::Relaxed);
        let bucket_start = epoch * BUCKET_NS;
        let covered_from = from_ns.max(bucket_start);
        let covered = (bucket_start + BUCKET_NS).saturating_sub(covered_from);
        busy += u64::try_from(u128::from(in_bucket) * u128::from(covered) / u128::from(BUCKET_NS))
            .unwrap_or(u64::MAX);
    }
    busy.min(to_ns - from_ns)
}

#[cfg(test)]
mod tests {
    use super::super::tests::config;
    use super::*;
    use crate::clock::monotonic_ns;

    /// A bucket boundary after every slot's `since_epoch`, so recorded time counts.
    fn future_bucket_start() -> u64 {
        (monotonic_ns() / BUCKET_NS + 10) * BUCKET_NS
    }

    #[test]
    fn busy_time_is_attributed_per_process_and_windowed() {
        let dir = tempfile::tempdir().unwrap();
        let state = SharedState::attach(&config(dir.path(), 64 << 20)).unwrap();
        let a = state.claim_slot(10).unwrap();
        let b = state.claim_slot(11).unwrap();
        let base = future_bucket_start();
        // a: 30 ms spanning bucket boundaries, b: 10 ms.
        state.record_busy(a.index(), 0, base + 5_000_000, base + 35_000_000);
        state.record_busy(b.index(), 0, base + 40_000_000, base + 50_000_000);
        assert_eq!(state.device_busy_ns(0, base, base + 50_000_000), 40_000_000);
        let usage = state.process_usage(0, base, base + 50_000_000);
        let of = |pid| usage.iter().find(|u| u.pid == pid).unwrap().busy_ns;
        assert_eq!(of(10), 30_000_000);
        assert_eq!(of(11), 10_000_000);
        // A window that starts after a's work sees only b.
        assert_eq!(
            state.device_busy_ns(0, base + 40_000_000, base + 50_000_000),
            10_000_000
        );
        // Other devices are untouched.
        assert_eq!(state.device_busy_ns(1, base, base + 50_000_000), 0);
    }

    #[test]
    fn history_older_than_the_ring_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let state = SharedState::attach(&config(dir.path(), 64 << 20)).unwrap();
        let a = state.claim_slot(10).unwrap();
        let base = future_bucket_start();
        state.record_busy(a.index(), 0, base, base + BUCKET_NS);
        let later = base + (BUCKETS as u64 + 5) * BUCKET_NS;
        assert_eq!(state.device_busy_ns(0, base, later), 0);
        assert_eq!(state.device_busy_total_ns(0), BUCKET_NS);
    }
}
