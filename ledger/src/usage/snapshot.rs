//! A point-in-time copy of a usage part, for `hami top` and tests.
//!
//! Fields are read one by one while processes keep running, so a snapshot is not atomic
//! across fields; each value is one that the file held. Liveness costs one `fcntl` per slot
//! shown, so this is for tools and tests, not hot paths.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

use super::UsageLedger;
use super::layout::{SlotState, SlotWord, slot_lock_byte};
use crate::liveness;

/// One slot that has ever been used (never-used free slots are left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotSnapshot {
    pub index: usize,
    pub pid: u32,
    /// PID on the host, when the host side wrote it for this owner.
    pub host_pid: Option<u32>,
    pub generation: u64,
    pub state: SlotState,
    /// Whether a process holds the slot's lock (`None`: the check failed). A `Live` slot
    /// that is not alive is waiting for the next reclaim pass.
    pub alive: Option<bool>,
    /// Bytes held per device.
    pub used: Vec<u64>,
}

/// The container's usage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageSnapshot {
    /// Container total per device.
    pub devices: Vec<u64>,
    pub slots: Vec<SlotSnapshot>,
    /// Dead slots freed over the life of the file.
    pub reclaimed_slots: u64,
    /// Releases of more than a slot held (caller bugs), clamped.
    pub underflows: u64,
    /// Operations that stopped waiting for a slow reclaim pass (each made that pass give up).
    pub bypasses: u64,
}

impl UsageLedger {
    pub fn snapshot(&self) -> UsageSnapshot {
        let layout = self.layout();
        let devices = (0..self.n_devices).map(|dev| self.used(dev)).collect();
        let slots = layout
            .slots
            .iter()
            .enumerate()
            .filter_map(|(index, record)| {
                let word = SlotWord::decode(record.state.load(Ordering::Acquire));
                let used: Vec<u64> = record.used[..self.n_devices]
                    .iter()
                    .map(|b| b.load(Ordering::Relaxed))
                    .collect();
                let never_used = word.state == SlotState::Free
                    && word.generation == 0
                    && used.iter().all(|&b| b == 0);
                (!never_used).then(|| SlotSnapshot {
                    index,
                    pid: record.pid.load(Ordering::Relaxed),
                    host_pid: super::host_pids::decode(
                        record.host_pid.load(Ordering::Acquire),
                        word.generation,
                    ),
                    generation: word.generation,
                    state: word.state,
                    alive: liveness::held_by_other(self.file.as_fd(), slot_lock_byte(index)).ok(),
                    used,
                })
            })
            .collect();
        let control = &layout.control;
        UsageSnapshot {
            devices,
            slots,
            reclaimed_slots: control.reclaimed_slots.load(Ordering::Relaxed),
            underflows: control.underflows.load(Ordering::Relaxed),
            bypasses: control.bypasses.load(Ordering::Relaxed),
        }
    }
}
