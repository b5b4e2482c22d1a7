//! Process slots: claiming one for this process, and what a claimed slot is.
//!
//! A slot is owned while its owner holds the OFD lock on the slot's byte, on a description
//! opened for that slot alone. The lock is taken before the state word changes, so a slot is
//! never `Live` without a lock except after its owner died.

use std::fs::File;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

use thiserror::Error;

use super::UsageLedger;
use super::layout::{SlotState, SlotWord, slot_lock_byte};
use crate::error::FileError;
use crate::{MAX_PROCESSES, liveness};

/// No slot could be claimed.
#[derive(Debug, Error)]
pub enum RegisterError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("all {slots} process slots of {path} are owned by live processes")]
    NoFreeSlot {
        path: std::path::PathBuf,
        slots: usize,
    },
}

/// This process's slot. Dropping it (or the process dying) ends its liveness; the next
/// reclaim pass then returns the bytes it still holds.
///
/// After `fork`, the child must not use the parent's slot: it drops its inherited copy (which
/// only closes the child's descriptor; the parent's lock stays) and registers its own.
#[derive(Debug)]
pub struct ProcessSlot {
    index: usize,
    generation: u64,
    /// Holds the slot's lock byte; closing the last copy releases it.
    #[expect(dead_code, reason = "owned for its lock, never read")]
    lock: File,
}

impl ProcessSlot {
    /// Position of the slot in the usage part.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Generation of the slot when this process claimed it.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl UsageLedger {
    /// Claims a free slot for this process (once per process). Runs a reclaim pass first, so
    /// slots of dead processes are free for reuse.
    pub fn register(&self) -> Result<ProcessSlot, RegisterError> {
        // Best effort: a failed or busy pass leaves dead slots for a later one.
        let _ = self.reclaim_dead();
        if let Some(slot) = self.claim_free_slot()? {
            return Ok(slot);
        }
        let _ = self.reclaim_dead();
        self.claim_free_slot()?
            .ok_or_else(|| RegisterError::NoFreeSlot {
                path: self.path.clone(),
                slots: MAX_PROCESSES,
            })
    }

    fn claim_free_slot(&self) -> Result<Option<ProcessSlot>, FileError> {
        let lock = crate::file::reopen(self.file.as_fd(), &self.path)?;
        let slots = &self.layout().slots;
        for (index, record) in slots.iter().enumerate() {
            if SlotWord::decode(record.state.load(Ordering::Acquire)).state != SlotState::Free {
                continue;
            }
            let byte = slot_lock_byte(index);
            let locked = liveness::try_lock(lock.as_fd(), byte)
                .map_err(|err| FileError::io("lock a slot of", &self.path, err))?;
            if !locked {
                continue;
            }
            // Under the lock nobody else can claim or reclaim this slot; re-check it is free.
            let word = record.state.load(Ordering::Acquire);
            let seen = SlotWord::decode(word);
            if seen.state == SlotState::Free {
                let live = SlotWord::encode(seen.generation, SlotState::Live);
                if record
                    .state
                    .compare_exchange(word, live, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    record.pid.store(std::process::id(), Ordering::Relaxed);
                    return Ok(Some(ProcessSlot {
                        index,
                        generation: seen.generation,
                        lock,
                    }));
                }
            }
            liveness::unlock(lock.as_fd(), byte)
                .map_err(|err| FileError::io("unlock a slot of", &self.path, err))?;
        }
        Ok(None)
    }
}
