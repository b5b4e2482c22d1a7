//! The word layout of the two kinds of compute cell: a container's budget on a device (usage
//! part) and a device's contention view (node part).

/// Words per compute cell (both kinds), fixed by the ledger layout.
pub const COMPUTE_WORDS: usize = 16;

const _: () = assert!(size_of::<crate::ComputeCell>() == COMPUTE_WORDS * 8);
const _: () = assert!(size_of::<crate::DeviceContention>() == COMPUTE_WORDS * 8);

/// Parts per million of wall time: the unit of rates (`1_000_000` = the whole device).
pub const PPM: u64 = 1_000_000;

/// Default bound on how far the budget may run ahead of use: enough device time to make up
/// for a waiter that a loaded CPU woke late, small next to the second-scale windows a cap is
/// judged on (at most 10 points of one half-second window).
pub const DEFAULT_DEPTH_NS: u64 = 50_000_000;

/// Names of the usage-part words (indices into the cell).
pub mod usage_word {
    /// Cumulative device-ns credited to the budget (time refills and over-estimate credits).
    pub const REFILLED: usize = 0;
    /// Cumulative device-ns claimed by launches and by under-estimate corrections.
    pub const DEBITED: usize = 1;
    /// Monotonic ns of the last refill.
    pub const REFILL_AT: usize = 2;
    /// Current refill rate in ppm of wall time; 0 = not set yet (each process uses its cap).
    pub const RATE_PPM: usize = 3;
    /// Futex word (low 32 bits): bumped whenever budget appears other than by time passing.
    pub const WAKE_SEQ: usize = 4;
    /// Threads of the container sleeping on `WAKE_SEQ` (wakers skip the syscall at zero).
    pub const WAITERS: usize = 5;
    /// Monotonic ns of the container's last launch attempt: its demand signal.
    pub const LAST_DEMAND_NS: usize = 6;
    /// Cumulative device-ns debited by corrections (measured above estimated).
    pub const CORRECTION_DEBITED: usize = 7;
    /// Cumulative device-ns credited by corrections (measured below estimated).
    pub const CORRECTION_CREDITED: usize = 8;
    /// Cumulative measured busy device-ns of the container, written by its measurer.
    pub const MEASURED_NS: usize = 9;
    /// Pid of the process that measures for the container.
    pub const MEASURER_PID: usize = 10;
    /// Monotonic ns until which the measurer's lease holds.
    pub const MEASURER_LEASE_NS: usize = 11;
    /// Learned estimate of one launch's device time, ns (0 = nothing learned yet).
    pub const LAUNCH_ESTIMATE_NS: usize = 12;
    /// Cumulative launches admitted.
    pub const LAUNCHES: usize = 13;
    /// Cumulative ns launches spent waiting for budget or yielding to priority.
    pub const THROTTLED_NS: usize = 14;
    /// The container's contention slot on this device plus one (0 = none), set by the host.
    pub const CONTENTION_SLOT: usize = 15;
}

/// Names of the node-part words (indices into the cell).
pub mod contention_word {
    /// Bitmap of claimed slots (bit i = slot i).
    pub const CLAIMED: usize = 0;
    /// Bitmap of slots held by high-priority containers (bit i), and of those among them that
    /// have a compute cap (bit 32 + i).
    pub const HIGH: usize = 1;
    /// Last demand of containers that found no free slot (max over them).
    pub const OVERFLOW_DEMAND_NS: usize = 2;
    /// Last demand of high-priority containers that found no free slot (max over them).
    pub const HIGH_DEMAND_NS: usize = 3;
    /// First word of the per-slot last-demand times.
    pub const SLOT_BASE: usize = 4;
}

/// Containers per device that get a contention slot of their own.
pub const CONTENTION_SLOTS: usize = COMPUTE_WORDS - contention_word::SLOT_BASE;
/// The bits of a slot bitmap that name slots.
pub(super) const SLOT_BITS: u64 = (1 << CONTENTION_SLOTS) - 1;
