//! Returning dead processes' bytes, exactly once, by whoever notices.
//!
//! One pass at a time: the pass holds the OFD lock on the reclaim byte. It claims each dead
//! slot (a `Live` slot whose lock byte it can take) with a CAS `Live(g) -> Reclaiming(g)`, then
//! raises the `reclaiming` flag, waits (bounded) until no other slot has an operation in
//! flight, and sets each device total to the sum of what the other slots hold. That sum is
//! exact whatever instruction the dead processes died at, and setting it is idempotent, so a
//! pass that dies half-way is simply redone. Finally each claimed slot is zeroed and freed as
//! `Free(g + 1)`.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::UsageLedger;
use super::layout::{RECLAIM_LOCK_BYTE, SlotState, SlotWord, UsageLayout, slot_lock_byte};
use crate::error::FileError;
use crate::{MAX_DEVICES, liveness};

/// How long a pass waits for operations in flight to finish before giving up.
const QUIESCE_WAIT: Duration = Duration::from_millis(10);

/// A reclaim pass could not run.
#[derive(Debug, Error)]
pub enum ReclaimError {
    #[error(transparent)]
    File(#[from] FileError),
}

/// What one reclaim pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    /// Another pass was running; this one did nothing.
    pub busy: bool,
    /// Dead slots found (claimed by this pass, or left by a pass that died).
    pub dead_slots: usize,
    /// Slots freed by this pass.
    pub freed_slots: usize,
    /// Pids recorded in the freed slots.
    pub freed_pids: Vec<u32>,
    /// Bytes removed from each device total.
    pub reclaimed_bytes: Vec<u64>,
    /// Operations stayed in flight (or went ahead) past the bounded wait; the dead slots are
    /// left for a later pass.
    pub gave_up: bool,
}

pub(super) struct DeadSlot {
    pub(super) index: usize,
    pub(super) generation: u64,
}

impl UsageLedger {
    /// Runs one reclaim pass. Cheap when nobody died: one lock attempt per live slot.
    pub fn reclaim_dead(&self) -> Result<ReclaimReport, ReclaimError> {
        let io = |op| move |err| FileError::io(op, &self.path, err);
        // A description of its own: its locks are this pass's alone, even after a fork.
        let pass = crate::file::reopen(self.file.as_fd(), &self.path)?;
        // The container may shrink its own file; refuse rather than touch pages past its end
        // (host tools run this on files the container can write).
        let found = pass.metadata().map_err(io("stat"))?.len();
        if found < self.map.len() as u64 {
            return Err(FileError::Invalid {
                path: self.path.clone(),
                kind: crate::header::PartKind::Usage,
                problem: crate::header::LayoutError::Truncated {
                    found,
                    expected: self.map.len() as u64,
                },
            }
            .into());
        }
        let mut report = ReclaimReport {
            reclaimed_bytes: vec![0; self.n_devices],
            ..ReclaimReport::default()
        };
        if !liveness::try_lock(pass.as_fd(), RECLAIM_LOCK_BYTE).map_err(io("lock"))? {
            report.busy = true;
            return Ok(report);
        }
        let layout = self.layout();
        let dead = self.claim_dead_slots(layout, &pass)?;
        report.dead_slots = dead.len();
        if dead.is_empty() {
            return Ok(report);
        }
        let control = &layout.control;
        let token = control
            .pass_seq
            .fetch_add(1, Ordering::SeqCst)
            .wrapping_add(1)
            .max(1);
        control.reclaiming.store(token, Ordering::SeqCst);
        let bypasses = control.bypasses.load(Ordering::SeqCst);
        let committed = self.wait_quiet(layout, &dead)
            && self.commit_totals(layout, &dead, bypasses, &mut report.reclaimed_bytes);
        let _ = control
            .reclaiming
            .compare_exchange(token, 0, Ordering::SeqCst, Ordering::SeqCst);
        if !committed {
            report.gave_up = true;
            return Ok(report);
        }
        for slot in &dead {
            let record = &layout.slots[slot.index];
            for dev in 0..MAX_DEVICES {
                record.used[dev].store(0, Ordering::Relaxed);
                record.inflight[dev].store(0, Ordering::Relaxed);
            }
            let pid = record.pid.swap(0, Ordering::Relaxed);
            let claimed = SlotWord::encode(slot.generation, SlotState::Reclaiming);
            let free = SlotWord::encode(slot.generation.wrapping_add(1), SlotState::Free);
            // Release: whoever claims the free slot sees it zeroed.
            if record
                .state
                .compare_exchange(claimed, free, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                report.freed_slots += 1;
                report.freed_pids.push(pid);
                control.reclaimed_slots.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Dropping `pass` closes its description and releases every lock it took.
        Ok(report)
    }

    /// Claims every slot whose owner is gone: `Live` slots whose lock byte can be taken, and
    /// `Reclaiming` slots of a pass that died.
    fn claim_dead_slots(
        &self,
        layout: &UsageLayout,
        pass: &std::fs::File,
    ) -> Result<Vec<DeadSlot>, FileError> {
        let mut dead = Vec::new();
        for (index, record) in layout.slots.iter().enumerate() {
            let before = SlotWord::decode(record.state.load(Ordering::Acquire)).state;
            if !matches!(before, SlotState::Live | SlotState::Reclaiming) {
                continue;
            }
            let byte = slot_lock_byte(index);
            let locked = liveness::try_lock(pass.as_fd(), byte)
                .map_err(|err| FileError::io("lock a slot of", &self.path, err))?;
            if !locked {
                continue;
            }
            let word = record.state.load(Ordering::Acquire);
            let seen = SlotWord::decode(word);
            let claimed = match seen.state {
                SlotState::Live => record
                    .state
                    .compare_exchange(
                        word,
                        SlotWord::encode(seen.generation, SlotState::Reclaiming),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok(),
                SlotState::Reclaiming => true,
                SlotState::Free | SlotState::Corrupt(_) => false,
            };
            if claimed {
                dead.push(DeadSlot {
                    index,
                    generation: seen.generation,
                });
            } else {
                liveness::unlock(pass.as_fd(), byte)
                    .map_err(|err| FileError::io("unlock a slot of", &self.path, err))?;
            }
        }
        Ok(dead)
    }

    /// Waits until no slot but the dead ones has an operation in flight.
    fn wait_quiet(&self, layout: &UsageLayout, dead: &[DeadSlot]) -> bool {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let busy = layout.slots.iter().enumerate().any(|(index, record)| {
                !dead.iter().any(|d| d.index == index)
                    && record.inflight[..self.n_devices]
                        .iter()
                        .any(|count| count.load(Ordering::SeqCst) != 0)
            });
            if !busy {
                return true;
            }
            if start.elapsed() >= QUIESCE_WAIT {
                return false;
            }
            if spins < 64 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }

    /// Sets each device total to what the surviving slots hold. Refuses (and the pass gives
    /// up) when an operation went ahead during the pass or a total moved under it.
    pub(super) fn commit_totals(
        &self,
        layout: &UsageLayout,
        dead: &[DeadSlot],
        bypasses: u64,
        reclaimed: &mut [u64],
    ) -> bool {
        for (dev, total) in layout.devices[..self.n_devices].iter().enumerate() {
            let before = total.used.load(Ordering::SeqCst);
            let survivors = layout
                .slots
                .iter()
                .enumerate()
                .filter(|(index, _)| !dead.iter().any(|d| d.index == *index))
                .fold(0u64, |sum, (_, record)| {
                    sum.saturating_add(record.used[dev].load(Ordering::SeqCst))
                });
            if layout.control.bypasses.load(Ordering::SeqCst) != bypasses {
                return false;
            }
            if total
                .used
                .compare_exchange(before, survivors, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                return false;
            }
            reclaimed[dev] = before.saturating_sub(survivors);
        }
        true
    }
}
