//! Process slots: one record per process that holds a context, and the liveness of its owner.
//!
//! A slot is owned by whoever holds the `flock` on `slot-NN.lock` in the state directory.
//! The kernel drops that lock when the owner dies, however it dies (SIGKILL included), and
//! `flock` works across PID namespaces, so a process in another container can tell that a
//! slot's owner is gone and give its memory back.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::layout::{BUCKET_NS, MAX_PROCESSES, ProcessRecord};
use super::{SharedState, StateError, saturating_sub};
use crate::clock::monotonic_ns;

/// The lock file of slot `index` in the state directory `dir`.
pub(super) fn slot_path(dir: &std::path::Path, index: usize) -> PathBuf {
    dir.join(format!("slot-{index:02}.lock"))
}

/// This process's slot; the lock file stays open (and locked) as long as the slot lives.
pub struct Slot {
    index: usize,
    generation: u32,
    /// `getpid()` of the claiming process (the slot records its host PID), so a forked
    /// child can tell that the slot it inherited is not its own.
    claimed_by: u32,
    _lock: File,
}

impl Slot {
    /// The claim generation of the slot (24 bits).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Index of the slot in the state file.
    pub fn index(&self) -> usize {
        self.index
    }

    /// `getpid()` of the process that claimed the slot.
    pub fn claimed_by(&self) -> u32 {
        self.claimed_by
    }
}

impl SharedState {
    fn slot_path(&self, index: usize) -> PathBuf {
        slot_path(&self.dir, index)
    }

    fn try_lock_slot(&self, index: usize) -> Option<File> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o666)
            .open(self.slot_path(index))
            .ok()?;
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o666));
        // SAFETY: flock on a descriptor owned by `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        (rc == 0).then_some(file)
    }

    /// Claims a free slot (or one whose owner died) for this process, known to NVML as `pid`
    /// (its PID on the host).
    pub fn claim_slot(&self, pid: u32) -> Result<Slot, StateError> {
        // Never-used slots first, so the busy history of exited processes lasts.
        let (fresh, used): (Vec<usize>, Vec<usize>) = (0..MAX_PROCESSES)
            .partition(|i| self.state.processes[*i].pid.load(Ordering::Acquire) == 0);
        for index in fresh.into_iter().chain(used) {
            if let Some(lock) = self.try_lock_slot(index) {
                self.clear_record(index);
                let record = &self.state.processes[index];
                // A new owner starts with no busy history: older buckets become stale.
                let first_epoch = monotonic_ns() / BUCKET_NS + 1;
                for usage in &record.devices {
                    usage.busy_total_ns.store(0, Ordering::Relaxed);
                    usage.since_epoch.store(first_epoch, Ordering::Release);
                }
                record.exited.store(0, Ordering::Release);
                let generation = record
                    .generation
                    .fetch_add(1, Ordering::AcqRel)
                    .wrapping_add(1)
                    & 0xff_ffff;
                record.pid.store(pid, Ordering::Release);
                return Ok(Slot {
                    index,
                    generation,
                    claimed_by: std::process::id(),
                    _lock: lock,
                });
            }
        }
        Err(StateError::NoFreeSlot(MAX_PROCESSES))
    }

    /// Whether the owner of slot `index` is alive; a dead owner's record is cleared.
    pub fn slot_alive(&self, index: usize, own: Option<&Slot>) -> bool {
        if own.is_some_and(|slot| slot.index == index) {
            return true;
        }
        let record = &self.state.processes[index];
        if record.pid.load(Ordering::Acquire) == 0 || record.exited.load(Ordering::Acquire) != 0 {
            return false;
        }
        match self.try_lock_slot(index) {
            Some(_lock) => {
                self.clear_record(index);
                false
            }
            None => true,
        }
    }

    /// Gives back everything held by processes that died; returns how many were found.
    pub fn reclaim_dead(&self, own: Option<&Slot>) -> usize {
        (0..MAX_PROCESSES)
            .filter(|index| {
                let record = &self.state.processes[*index];
                record.pid.load(Ordering::Acquire) != 0
                    && record.exited.load(Ordering::Acquire) == 0
            })
            .filter(|index| !self.slot_alive(*index, own))
            .count()
    }

    /// Gives back everything this process's slot holds (its memory and contexts).
    pub fn release_slot(&self, slot: &Slot) {
        self.clear_record(slot.index);
    }

    /// The pid recorded in slot `index` (0 when free).
    pub fn slot_pid(&self, index: usize) -> u32 {
        self.state.processes[index].pid.load(Ordering::Acquire)
    }

    /// The current claim generation of slot `index`.
    pub fn slot_generation(&self, index: usize) -> u32 {
        self.state.processes[index]
            .generation
            .load(Ordering::Acquire)
            & 0xff_ffff
    }

    /// Pids of slots ever claimed with their index: live owners, and gone ones whose busy
    /// history is still kept.
    pub fn occupied_slots(&self) -> Vec<(usize, u32)> {
        self.state
            .processes
            .iter()
            .enumerate()
            .map(|(index, record)| (index, record.pid.load(Ordering::Acquire)))
            .filter(|(_, pid)| *pid != 0)
            .collect()
    }

    /// Called with the slot's lock held: returns its memory to the devices and marks the
    /// owner gone (its busy history stays until the slot is claimed again).
    fn clear_record(&self, index: usize) {
        let record: &ProcessRecord = &self.state.processes[index];
        for (device, usage) in self.state.devices.iter().zip(&record.devices) {
            let held = usage.memory.swap(0, Ordering::AcqRel);
            saturating_sub(&device.used_memory, held);
            usage.contexts.store(0, Ordering::Release);
        }
        record.exited.store(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::config;
    use super::*;

    #[test]
    fn a_released_slot_returns_its_memory() {
        let dir = tempfile::tempdir().unwrap();
        let state = SharedState::attach(&config(dir.path(), 64 << 20)).unwrap();
        let other = SharedState::attach(&config(dir.path(), 64 << 20)).unwrap();
        let slot = state.claim_slot(4242).unwrap();
        assert!(state.reserve(&slot, 0, 48 << 20));
        let index = slot.index();
        assert!(other.slot_alive(index, None));
        assert_eq!(other.reclaim_dead(None), 0);
        drop(slot);
        assert_eq!(other.reclaim_dead(None), 1);
        assert_eq!(other.device(0).unwrap().used_memory, 0);
        assert!(other.process_usage(0, 0, 0).is_empty());
    }

    #[test]
    fn live_slots_are_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let state = SharedState::attach(&config(dir.path(), 64 << 20)).unwrap();
        let a = state.claim_slot(1).unwrap();
        let b = state.claim_slot(2).unwrap();
        assert_ne!(a.index(), b.index());
        assert_eq!(state.occupied_slots().len(), 2);
    }
}
