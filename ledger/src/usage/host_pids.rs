//! Host PIDs of a container's processes, for the compute limiter's NVML reading.
//!
//! NVML reports processes under their PIDs in the host's namespace; a process in a container
//! knows only its PID in the container's namespace (the slot's `pid`). The host side (the
//! shim's per-container publisher, which sees the container's cgroup) writes each live slot's
//! host PID next to it. The word is tagged with the slot's generation, so a host PID written
//! for a process that has since exited, and whose slot another process claimed, is never
//! read as the new owner's: a slot's generation moves on every free.

use std::sync::atomic::Ordering;

use super::UsageLedger;
use super::layout::{SlotState, SlotWord};

/// A slot owned by a process (as the state word says; liveness is not checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveSlot {
    pub index: usize,
    /// PID in the owner's own namespace.
    pub pid: u32,
    pub generation: u64,
    /// PID in the host's namespace, once the host side wrote it for this owner.
    pub host_pid: Option<u32>,
}

fn encode(generation: u64, host_pid: u32) -> u64 {
    ((generation & 0xffff_ffff) << 32) | u64::from(host_pid)
}

/// The host PID in `word` if it was written for the owner of `generation`.
pub(crate) fn decode(word: u64, generation: u64) -> Option<u32> {
    let pid = (word & 0xffff_ffff) as u32;
    (pid != 0 && word >> 32 == generation & 0xffff_ffff).then_some(pid)
}

impl UsageLedger {
    /// Slots whose state word says `Live`, with their host PIDs where known. Reads only the
    /// mapping: no syscall.
    pub fn live_slots(&self) -> Vec<LiveSlot> {
        self.layout()
            .slots
            .iter()
            .enumerate()
            .filter_map(|(index, record)| {
                let word = SlotWord::decode(record.state.load(Ordering::Acquire));
                if word.state != SlotState::Live {
                    return None;
                }
                let pid = record.pid.load(Ordering::Relaxed);
                let host_pid = decode(record.host_pid.load(Ordering::Acquire), word.generation);
                Some(LiveSlot {
                    index,
                    pid,
                    generation: word.generation,
                    host_pid,
                })
            })
            .collect()
    }

    /// Host side: records that the owner of slot `index` at `generation` is `host_pid` on the
    /// host. Nothing is written when the slot has moved on to another owner since.
    pub fn set_host_pid(&self, index: usize, generation: u64, host_pid: u32) {
        let Some(record) = self.layout().slots.get(index) else {
            return;
        };
        let word = encode(generation, host_pid);
        if record.host_pid.load(Ordering::Relaxed) == word {
            return;
        }
        record.host_pid.store(word, Ordering::Release);
        // The owner may have exited between the caller's read and the store: a slot freed since
        // has a newer generation, and the tag already makes the word stale for it.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_pid_belongs_to_one_generation_of_a_slot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.ledger");
        UsageLedger::create(&path, 1).unwrap();
        let usage = UsageLedger::attach(&path).unwrap();
        let slot = usage.register().unwrap();
        let live = usage.live_slots();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].pid, std::process::id());
        assert_eq!(
            live[0].host_pid, None,
            "nothing is known before the host side writes"
        );

        usage.set_host_pid(slot.index(), slot.generation(), 4242);
        assert_eq!(usage.live_slots()[0].host_pid, Some(4242));

        // The owner goes; the next owner of the same slot is not mistaken for it.
        let index = slot.index();
        drop(slot);
        usage.reclaim_dead().unwrap();
        let next = usage.register().unwrap();
        assert_eq!(next.index(), index, "the freed slot is reused");
        assert_eq!(usage.live_slots()[0].host_pid, None);
    }

    #[test]
    fn a_tag_from_another_generation_reads_as_unknown() {
        assert_eq!(decode(encode(7, 99), 7), Some(99));
        assert_eq!(decode(encode(7, 99), 8), None);
        assert_eq!(decode(encode(7, 0), 7), None);
        assert_eq!(decode(encode((1 << 32) + 7, 99), 7), Some(99));
    }
}
