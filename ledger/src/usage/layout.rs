//! The usage part as it lies in the file, and the encoding of a slot's state word.

use std::mem::{offset_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::header::{Header, PartKind, PartSpec};
use crate::{MAX_DEVICES, MAX_PROCESSES};

/// Coordination of reclaim passes with the hot path (see `docs/ledger.md`).
#[repr(C)]
pub struct ReclaimControl {
    /// Token of the reclaim pass in progress; 0 when none. Set only by the holder of the
    /// reclaim lock byte.
    pub reclaiming: AtomicU64,
    /// Source of pass tokens; counts started passes that had dead slots to reclaim.
    pub pass_seq: AtomicU64,
    /// Dead slots freed, over the life of the file.
    pub reclaimed_slots: AtomicU64,
    /// Operations that stopped waiting for a slow reclaim pass and went ahead; a pass that sees
    /// this move gives up instead of committing.
    pub bypasses: AtomicU64,
    /// Releases of more bytes than the slot held (a caller bug); clamped, never wrapped.
    pub underflows: AtomicU64,
    pub reserved: [AtomicU64; 3],
}

/// One device's container-wide total: the admission authority. A cache line of its own.
#[repr(C)]
pub struct DeviceUsage {
    pub used: AtomicU64,
    pub reserved: [AtomicU64; 7],
}

/// Per-device words of the compute limiter: the ledger only stores them.
#[repr(C)]
pub struct ComputeCell {
    pub words: [AtomicU64; 16],
}

/// One process's slot. Slots never move; `state` carries a generation bumped on every free.
#[repr(C)]
pub struct SlotRecord {
    /// `generation << 8 | state` (see [`SlotWord`]).
    pub state: AtomicU64,
    /// Pid of the owner in its own namespace, for display only (liveness is the lock byte).
    pub pid: AtomicU32,
    pub reserved0: AtomicU32,
    /// `generation << 32 | pid` of the owner in the host's PID namespace (the PID NVML
    /// reports), written by the host side; only valid while `generation` (low 32 bits) is
    /// the slot's. See `host_pids.rs`.
    pub host_pid: AtomicU64,
    pub reserved: [AtomicU64; 5],
    /// Bytes this process holds, per device.
    pub used: [AtomicU64; MAX_DEVICES],
    /// Reservations or releases of this process in progress, per device (a count).
    pub inflight: [AtomicU64; MAX_DEVICES],
}

/// The usage part.
#[repr(C)]
pub struct UsageLayout {
    pub header: Header,
    pub control: ReclaimControl,
    pub devices: [DeviceUsage; MAX_DEVICES],
    pub compute: [ComputeCell; MAX_DEVICES],
    pub slots: [SlotRecord; MAX_PROCESSES],
}

const _: () = assert!(size_of::<ReclaimControl>() == 64);
const _: () = assert!(size_of::<DeviceUsage>() == 64);
const _: () = assert!(size_of::<ComputeCell>() == 128);
const _: () = assert!(size_of::<SlotRecord>() == 320);
const _: () = assert!(offset_of!(SlotRecord, pid) == 8);
const _: () = assert!(offset_of!(SlotRecord, host_pid) == 16);
const _: () = assert!(offset_of!(SlotRecord, used) == 64);
const _: () = assert!(offset_of!(SlotRecord, inflight) == 192);
const _: () = assert!(offset_of!(UsageLayout, control) == 64);
const _: () = assert!(offset_of!(UsageLayout, devices) == 128);
const _: () = assert!(offset_of!(UsageLayout, compute) == 128 + 16 * 64);
const _: () = assert!(offset_of!(UsageLayout, slots) == 128 + 16 * 64 + 16 * 128);
const _: () = assert!(size_of::<UsageLayout>() == 3200 + 256 * 320);

pub(crate) const SPEC: PartSpec = PartSpec {
    kind: PartKind::Usage,
    size: size_of::<UsageLayout>(),
    immutable_prefix: size_of::<Header>(),
};

/// The byte whose OFD lock marks the reclaim pass in progress.
pub(crate) const RECLAIM_LOCK_BYTE: u64 = offset_of!(UsageLayout, control) as u64;

/// The byte whose OFD lock marks slot `index` as owned by a live process.
pub(crate) fn slot_lock_byte(index: usize) -> u64 {
    (offset_of!(UsageLayout, slots) + index * size_of::<SlotRecord>()) as u64
}

/// What a slot is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Unowned; counters are zero.
    Free,
    /// Owned by a process (alive while its lock byte is held).
    Live,
    /// Its owner died and a reclaim pass claimed it.
    Reclaiming,
    /// A state code this build does not know (a damaged file); left alone.
    Corrupt(u8),
}

/// Decoded state word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotWord {
    pub generation: u64,
    pub state: SlotState,
}

const FREE: u64 = 0;
const LIVE: u64 = 1;
const RECLAIMING: u64 = 2;

impl SlotWord {
    pub(crate) fn decode(word: u64) -> Self {
        let state = match word & 0xff {
            FREE => SlotState::Free,
            LIVE => SlotState::Live,
            RECLAIMING => SlotState::Reclaiming,
            // Masked to one byte above.
            other => SlotState::Corrupt(other as u8),
        };
        Self {
            generation: word >> 8,
            state,
        }
    }

    pub(crate) fn encode(generation: u64, state: SlotState) -> u64 {
        let code = match state {
            SlotState::Free => FREE,
            SlotState::Live => LIVE,
            SlotState::Reclaiming => RECLAIMING,
            SlotState::Corrupt(code) => u64::from(code),
        };
        (generation << 8) | code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_word_round_trips() {
        for state in [SlotState::Free, SlotState::Live, SlotState::Reclaiming] {
            let word = SlotWord::encode(41, state);
            assert_eq!(
                SlotWord::decode(word),
                SlotWord {
                    generation: 41,
                    state
                }
            );
        }
        assert_eq!(SlotWord::decode(7).state, SlotState::Corrupt(7));
    }

    #[test]
    fn lock_bytes_are_distinct_and_inside_the_file() {
        let mut bytes: Vec<u64> = (0..MAX_PROCESSES).map(slot_lock_byte).collect();
        bytes.push(RECLAIM_LOCK_BYTE);
        let count = bytes.len();
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), count);
        assert!(bytes.iter().all(|&b| b < SPEC.size as u64));
    }
}
