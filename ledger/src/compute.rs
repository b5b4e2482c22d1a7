//! What the compute cells of the ledger mean: a shared device-time budget per container and
//! device (`ComputeCell`, usage part) and the node's view of who wants each device
//! (`DeviceContention`, node part).
//!
//! The ledger only stores 16 `AtomicU64` words per cell; this module gives them names and the
//! protocols that read and write them, so the interception library, `hami run`, the shim and
//! `hami top` agree on one definition.
//!
//! # The budget (usage part, one cell per container and device)
//!
//! The budget is kept as two cumulative counters of device nanoseconds, `REFILLED` and
//! `DEBITED`, rather than one signed balance. A launch claims its place in line with one
//! `fetch_add` on `DEBITED` and may start once `REFILLED` has reached the end of its claim.
//! Waiters therefore queue in the order they claimed, each one knows exactly how long it has to
//! wait (`(claim end − refilled) / rate`), and nobody has to be woken to hand budget on: the
//! deadline is computed, not polled. Refill is lazy: whoever launches first after the clock moved
//! credits `elapsed × rate` (one CAS on `REFILL_AT` decides who). Time refills never take
//! `REFILLED` more than `depth` ahead of `DEBITED`, which bounds a burst after idleness.
//!
//! The charge made at launch is an estimate. The limiter's measurer later learns the real busy
//! time and trues the budget up (`debit_correction` / `credit_correction`), so over any long run
//! the budget is debited by exactly what the device measured: the long-run share equals the
//! refill rate whatever the estimates were.
//!
//! # Contention (node part, one cell per device)
//!
//! Host components (the publisher of `hami run`, the shim) copy each container's last demand
//! time into a slot of the device's contention cell. Up to [`CONTENTION_SLOTS`] containers get a
//! slot of their own; more share an overflow word. A `burst` container may exceed its cap only
//! while no other slot shows recent demand. A normal-priority container yields while a
//! high-priority slot it must yield to shows recent demand: every high slot, for a container
//! without a cap; for a capped one only high containers without a cap, because caps are
//! reservations (placement keeps their sum within the device) and a capped high container
//! already gets its share beside capped neighbours. Priority orders what no cap reserves.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use thiserror::Error;

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

/// Longest idle gap credited in one refill; beyond it the bucket is full anyway.
const MAX_REFILL_GAP_NS: u64 = 10_000_000_000;

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
const SLOT_BITS: u64 = (1 << CONTENTION_SLOTS) - 1;

/// What a launch must do after claiming its cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Budget covered the claim: launch now.
    Go,
    /// Wait until `REFILLED` reaches `claim_end` (device-ns, cumulative).
    Wait {
        /// The end of this launch's claim on the cumulative counter.
        claim_end: u64,
    },
}

/// A container's budget on one device: a view over the usage part's compute cell.
#[derive(Clone, Copy)]
pub struct Budget<'a> {
    words: &'a [AtomicU64; COMPUTE_WORDS],
    depth_ns: u64,
}

impl<'a> Budget<'a> {
    /// Views `words` (a usage-part compute cell) as a budget of [`DEFAULT_DEPTH_NS`] depth.
    pub fn new(words: &'a [AtomicU64; COMPUTE_WORDS]) -> Self {
        Self::with_depth(words, DEFAULT_DEPTH_NS)
    }

    /// Views `words` as a budget that keeps at most `depth_ns` of unused device time.
    pub fn with_depth(words: &'a [AtomicU64; COMPUTE_WORDS], depth_ns: u64) -> Self {
        Self { words, depth_ns }
    }

    fn word(&self, index: usize) -> &'a AtomicU64 {
        &self.words[index]
    }

    /// The raw words, for the futex and for displays.
    pub fn words(&self) -> &'a [AtomicU64; COMPUTE_WORDS] {
        self.words
    }

    /// The futex word: the low half of `WAKE_SEQ` (all supported targets are little-endian).
    pub fn wake_word(&self) -> &'a AtomicU64 {
        self.word(usage_word::WAKE_SEQ)
    }

    /// The refill rate in force: the cell's published rate, else `fallback_ppm`.
    pub fn rate_ppm(&self, fallback_ppm: u64) -> u64 {
        match self.word(usage_word::RATE_PPM).load(Ordering::Relaxed) {
            0 => fallback_ppm,
            rate => rate,
        }
    }

    /// Publishes a new refill rate; returns true when it changed (waiters should be woken).
    pub fn set_rate_ppm(&self, rate_ppm: u64) -> bool {
        let rate = rate_ppm.clamp(1, PPM);
        self.word(usage_word::RATE_PPM).swap(rate, Ordering::AcqRel) != rate
    }

    /// Bucket depth in ns.
    pub fn depth_ns(&self) -> u64 {
        self.depth_ns
    }

    /// The container's contention slot on this device, as recorded by the host publisher.
    pub fn contention_slot(&self) -> Option<ContentionSlot> {
        match self
            .word(usage_word::CONTENTION_SLOT)
            .load(Ordering::Acquire)
        {
            0 => None,
            n if n as usize > CONTENTION_SLOTS => Some(ContentionSlot::Overflow),
            n => Some(ContentionSlot::Own(n as usize - 1)),
        }
    }

    /// Records the container's contention slot (host publisher).
    pub fn set_contention_slot(&self, slot: ContentionSlot) {
        let value = match slot {
            ContentionSlot::Own(i) => i as u64 + 1,
            ContentionSlot::Overflow => CONTENTION_SLOTS as u64 + 1,
        };
        self.word(usage_word::CONTENTION_SLOT)
            .store(value, Ordering::Release);
    }

    /// Credits the time elapsed since the last refill at `rate_ppm`; one caller wins per instant.
    pub fn refill(&self, now_ns: u64, rate_ppm: u64) {
        let refill_at = self.word(usage_word::REFILL_AT);
        let last = refill_at.load(Ordering::Acquire);
        if now_ns <= last {
            return;
        }
        if refill_at
            .compare_exchange(last, now_ns, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return; // another thread credited this interval
        }
        let gap = (now_ns - last).min(MAX_REFILL_GAP_NS);
        let credit = u64::try_from(u128::from(gap) * u128::from(rate_ppm) / u128::from(PPM))
            .unwrap_or(u64::MAX);
        let refilled = self.word(usage_word::REFILLED);
        let before = refilled.fetch_add(credit, Ordering::AcqRel);
        let ceiling = self
            .word(usage_word::DEBITED)
            .load(Ordering::Acquire)
            .saturating_add(self.depth_ns());
        if before.saturating_add(credit) > ceiling {
            // Keep at most `depth` of unused budget; never take back what is already below it.
            refilled.fetch_min(ceiling.max(before), Ordering::AcqRel);
        }
    }

    /// Claims `cost_ns` for one launch at `now_ns` (refilling first) and says whether it may go.
    pub fn claim(&self, cost_ns: u64, now_ns: u64, rate_ppm: u64) -> Admission {
        self.refill(now_ns, rate_ppm);
        self.mark_demand(now_ns);
        let claim_end = self
            .word(usage_word::DEBITED)
            .fetch_add(cost_ns, Ordering::AcqRel)
            .saturating_add(cost_ns);
        self.word(usage_word::LAUNCHES)
            .fetch_add(1, Ordering::Relaxed);
        if self.word(usage_word::REFILLED).load(Ordering::Acquire) >= claim_end {
            Admission::Go
        } else {
            Admission::Wait { claim_end }
        }
    }

    /// True once the budget covers a claim ending at `claim_end`.
    pub fn covers(&self, claim_end: u64) -> bool {
        self.word(usage_word::REFILLED).load(Ordering::Acquire) >= claim_end
    }

    /// Monotonic ns at which, with no other credit, the budget will cover `claim_end`.
    pub fn ready_at(&self, claim_end: u64, rate_ppm: u64) -> u64 {
        let refilled = self.word(usage_word::REFILLED).load(Ordering::Acquire);
        let last = self.word(usage_word::REFILL_AT).load(Ordering::Acquire);
        let missing = claim_end.saturating_sub(refilled);
        let wait = u128::from(missing) * u128::from(PPM) / u128::from(rate_ppm.max(1));
        last.saturating_add(u64::try_from(wait).unwrap_or(u64::MAX))
    }

    /// Drops budget saved up beyond what is claimed (when a burst ends).
    pub fn forfeit_unused(&self) {
        let debited = self.word(usage_word::DEBITED).load(Ordering::Acquire);
        self.word(usage_word::REFILLED)
            .fetch_min(debited.max(1), Ordering::AcqRel);
    }

    /// Debits device time the estimates missed (measured above estimated).
    pub fn debit_correction(&self, ns: u64) {
        self.word(usage_word::DEBITED)
            .fetch_add(ns, Ordering::AcqRel);
        self.word(usage_word::CORRECTION_DEBITED)
            .fetch_add(ns, Ordering::Relaxed);
    }

    /// Credits device time the estimates over-charged; returns true (waiters should be woken).
    pub fn credit_correction(&self, ns: u64) -> bool {
        self.word(usage_word::REFILLED)
            .fetch_add(ns, Ordering::AcqRel);
        self.word(usage_word::CORRECTION_CREDITED)
            .fetch_add(ns, Ordering::Relaxed);
        ns > 0
    }

    /// Cumulative device-ns charged by launch estimates (corrections excluded).
    pub fn estimated_total_ns(&self) -> u64 {
        let debited = self.word(usage_word::DEBITED).load(Ordering::Acquire);
        debited.saturating_sub(
            self.word(usage_word::CORRECTION_DEBITED)
                .load(Ordering::Acquire),
        )
    }

    /// Net correction applied so far: debited minus credited corrections (signed ns).
    pub fn net_correction_ns(&self) -> i128 {
        i128::from(
            self.word(usage_word::CORRECTION_DEBITED)
                .load(Ordering::Acquire),
        ) - i128::from(
            self.word(usage_word::CORRECTION_CREDITED)
                .load(Ordering::Acquire),
        )
    }

    /// Cumulative measured busy ns (as last published by the measurer).
    pub fn measured_ns(&self) -> u64 {
        self.word(usage_word::MEASURED_NS).load(Ordering::Acquire)
    }

    /// Publishes the cumulative measured busy ns.
    pub fn set_measured_ns(&self, ns: u64) {
        self.word(usage_word::MEASURED_NS)
            .store(ns, Ordering::Release);
    }

    /// The learned per-launch estimate (0 = none yet).
    pub fn launch_estimate_ns(&self) -> u64 {
        self.word(usage_word::LAUNCH_ESTIMATE_NS)
            .load(Ordering::Relaxed)
    }

    /// Publishes the learned per-launch estimate.
    pub fn set_launch_estimate_ns(&self, ns: u64) {
        self.word(usage_word::LAUNCH_ESTIMATE_NS)
            .store(ns, Ordering::Relaxed);
    }

    /// Cumulative admitted launches.
    pub fn launches(&self) -> u64 {
        self.word(usage_word::LAUNCHES).load(Ordering::Relaxed)
    }

    /// Monotonic ns of the container's last launch attempt (0 = never).
    pub fn last_demand_ns(&self) -> u64 {
        self.word(usage_word::LAST_DEMAND_NS)
            .load(Ordering::Relaxed)
    }

    /// Marks that the container wants the device at `now_ns` (claims do it themselves).
    pub fn mark_demand(&self, now_ns: u64) {
        let demand = self.word(usage_word::LAST_DEMAND_NS);
        // Millisecond resolution is all the node view needs: skip the shared write otherwise.
        if now_ns.saturating_sub(demand.load(Ordering::Relaxed)) > 1_000_000 {
            demand.fetch_max(now_ns, Ordering::Relaxed);
        }
    }

    /// Adds to the cumulative throttled time.
    pub fn add_throttled_ns(&self, ns: u64) {
        self.word(usage_word::THROTTLED_NS)
            .fetch_add(ns, Ordering::Relaxed);
    }

    /// Cumulative ns spent throttled.
    pub fn throttled_ns(&self) -> u64 {
        self.word(usage_word::THROTTLED_NS).load(Ordering::Relaxed)
    }

    /// Counts a thread going to sleep on the wake word.
    pub fn waiter_enter(&self) {
        self.word(usage_word::WAITERS)
            .fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a thread leaving its sleep (saturating: a dead sleeper never underflows it).
    pub fn waiter_leave(&self) {
        let _ =
            self.word(usage_word::WAITERS)
                .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                });
    }

    /// Bumps the wake sequence; returns true when someone may be sleeping (then call FUTEX_WAKE).
    pub fn bump_wake_seq(&self) -> bool {
        self.wake_word().fetch_add(1, Ordering::SeqCst);
        self.word(usage_word::WAITERS).load(Ordering::SeqCst) > 0
    }

    /// Tries to become (or stay) the container's measurer until `now_ns + lease_ns`.
    ///
    /// A lease that expired (its holder died or stopped launching) is taken over by CAS, so
    /// exactly one live process measures at a time and a dead one is replaced within one lease.
    pub fn hold_measurer_lease(&self, pid: u32, now_ns: u64, lease_ns: u64) -> bool {
        let holder = self.word(usage_word::MEASURER_PID);
        let lease = self.word(usage_word::MEASURER_LEASE_NS);
        let current = holder.load(Ordering::Acquire);
        let until = lease.load(Ordering::Acquire);
        if current == u64::from(pid) {
            lease.fetch_max(now_ns + lease_ns, Ordering::AcqRel);
            return true;
        }
        if current != 0 && until > now_ns {
            return false;
        }
        if holder
            .compare_exchange(current, u64::from(pid), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            lease.store(now_ns + lease_ns, Ordering::Release);
            true
        } else {
            false
        }
    }
}

/// Bit of `contention_word::HIGH` that marks slot `i`'s high-priority container as capped.
const HIGH_CAPPED_SHIFT: usize = 32;
const _: () = assert!(CONTENTION_SLOTS <= HIGH_CAPPED_SHIFT);

/// What a container's slot asks of its neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotClass {
    /// Normal priority: nobody yields to it.
    Normal,
    /// High priority under a compute cap: its cap reserves its share, so only neighbours
    /// without a cap of their own yield to it.
    HighCapped,
    /// High priority without a cap: every normal-priority neighbour yields to it.
    High,
}

impl SlotClass {
    /// The class of a container of `priority` whose cap on the device is `compute_percent`.
    pub fn of(priority: crate::Priority, compute_percent: Option<u32>) -> Self {
        match (priority, compute_percent) {
            (crate::Priority::Normal, _) => Self::Normal,
            (crate::Priority::High, Some(percent)) if percent < 100 => Self::HighCapped,
            (crate::Priority::High, _) => Self::High,
        }
    }

    /// Whether neighbours may have to yield to it.
    pub fn is_high(self) -> bool {
        self != Self::Normal
    }
}

/// Which contention slot a container holds on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentionSlot {
    /// A slot of its own.
    Own(usize),
    /// All slots were taken: it shares the overflow word.
    Overflow,
}

/// Read access to a device's contention words: a writable cell on the host, or a read-only
/// node part inside a container (where no reference to the cell may be handed out, so that
/// nothing can ever store through the read-only mapping).
pub trait ContentionWords: Sync {
    /// The value of word `index` (0 when out of range).
    fn load(&self, index: usize) -> u64;
}

impl ContentionWords for [AtomicU64; COMPUTE_WORDS] {
    fn load(&self, index: usize) -> u64 {
        self.get(index).map_or(0, |w| w.load(Ordering::Acquire))
    }
}

impl ContentionWords for crate::DeviceContention {
    fn load(&self, index: usize) -> u64 {
        self.words.load(index)
    }
}

/// One device's contention words read through a (possibly read-only) node part.
pub struct NodeContentionWords<'a> {
    node: &'a crate::NodeLedger,
    dev: usize,
}

impl<'a> NodeContentionWords<'a> {
    /// Device `dev` of `node`.
    pub fn new(node: &'a crate::NodeLedger, dev: usize) -> Self {
        Self { node, dev }
    }
}

impl ContentionWords for NodeContentionWords<'_> {
    fn load(&self, index: usize) -> u64 {
        self.node.contention_word(self.dev, index).unwrap_or(0)
    }
}

/// A device's contention view, read side: what a container's limiter consults.
#[derive(Clone, Copy)]
pub struct Contention<'a> {
    words: &'a dyn ContentionWords,
}

impl<'a> Contention<'a> {
    /// Views `words` (a node-part contention cell, however it is mapped).
    pub fn new(words: &'a dyn ContentionWords) -> Self {
        Self { words }
    }

    /// True when a container other than the one in `own` showed demand within `window_ns`.
    ///
    /// Overflow demand always counts as someone else's, so a container without a slot of its
    /// own never bursts: the safe side.
    pub fn others_demand(&self, own: Option<ContentionSlot>, now_ns: u64, window_ns: u64) -> bool {
        let recent = |t: u64| t != 0 && now_ns.saturating_sub(t) <= window_ns;
        if recent(self.words.load(contention_word::OVERFLOW_DEMAND_NS)) {
            return true;
        }
        let claimed = self.words.load(contention_word::CLAIMED);
        (0..CONTENTION_SLOTS).any(|i| {
            own != Some(ContentionSlot::Own(i))
                && claimed & (1 << i) != 0
                && recent(self.words.load(contention_word::SLOT_BASE + i))
        })
    }

    /// Latest demand (monotonic ns, 0 = never) of a high-priority container other than `own`
    /// that a container must yield to: any, or for a `capped` one only uncapped ones.
    pub fn latest_high_demand(&self, own: Option<ContentionSlot>, capped: bool) -> u64 {
        let claimed = self.words.load(contention_word::CLAIMED);
        let high_word = self.words.load(contention_word::HIGH);
        let mut high = high_word & claimed;
        if capped {
            high &= !(high_word >> HIGH_CAPPED_SHIFT);
        }
        let from_slots = (0..CONTENTION_SLOTS)
            .filter(|&i| own != Some(ContentionSlot::Own(i)) && high & (1 << i) != 0)
            .map(|i| self.words.load(contention_word::SLOT_BASE + i))
            .max()
            .unwrap_or(0);
        // High containers without a slot are visible through the shared high word only, and
        // whether they are capped is not known: the safe side is to yield to them.
        from_slots.max(self.words.load(contention_word::HIGH_DEMAND_NS))
    }

    /// True when a high-priority container other than `own` holds a slot on the device, or
    /// one without a slot ever showed demand: only then can [`Self::latest_high_demand`] be
    /// non-zero, so a container that finds this false has nobody to yield to.
    pub fn high_priority_present(&self, own: Option<ContentionSlot>) -> bool {
        let claimed = self.words.load(contention_word::CLAIMED);
        let mut high = self.words.load(contention_word::HIGH) & claimed & SLOT_BITS;
        if let Some(ContentionSlot::Own(i)) = own {
            high &= !(1 << i);
        }
        high != 0 || self.words.load(contention_word::HIGH_DEMAND_NS) != 0
    }

    /// Number of containers holding a slot.
    pub fn claimed_slots(&self) -> u32 {
        self.words.load(contention_word::CLAIMED).count_ones()
    }
}

/// A device's contention cell, write side: host components only (the node part is read-only
/// inside containers).
#[derive(Clone, Copy)]
pub struct ContentionCell<'a> {
    words: &'a [AtomicU64; COMPUTE_WORDS],
}

impl<'a> ContentionCell<'a> {
    /// Over a writable contention cell.
    pub fn new(words: &'a [AtomicU64; COMPUTE_WORDS]) -> Self {
        Self { words }
    }

    /// The read side of the same cell.
    pub fn view(&self) -> Contention<'a> {
        Contention::new(self.words)
    }

    /// Claims a slot for a container of `class`.
    pub fn claim_slot(&self, class: SlotClass) -> ContentionSlot {
        let claimed = &self.words[contention_word::CLAIMED];
        let mut bits = claimed.load(Ordering::Acquire);
        loop {
            let Some(free) = (0..CONTENTION_SLOTS).find(|i| bits & (1 << i) == 0) else {
                return ContentionSlot::Overflow;
            };
            match claimed.compare_exchange(
                bits,
                bits | (1 << free),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.words[contention_word::SLOT_BASE + free].store(0, Ordering::Release);
                    let high_bits = &self.words[contention_word::HIGH];
                    let own_bits = (1u64 << free) | (1u64 << (free + HIGH_CAPPED_SHIFT));
                    let set = match class {
                        SlotClass::Normal => 0,
                        SlotClass::HighCapped => own_bits,
                        SlotClass::High => 1 << free,
                    };
                    high_bits.fetch_and(!own_bits, Ordering::AcqRel);
                    high_bits.fetch_or(set, Ordering::AcqRel);
                    return ContentionSlot::Own(free);
                }
                Err(now) => bits = now,
            }
        }
    }

    /// Gives a slot back, when the container ends.
    pub fn release_slot(&self, slot: ContentionSlot) {
        if let ContentionSlot::Own(i) = slot {
            self.words[contention_word::SLOT_BASE + i].store(0, Ordering::Release);
            let own_bits = (1u64 << i) | (1u64 << (i + HIGH_CAPPED_SHIFT));
            self.words[contention_word::HIGH].fetch_and(!own_bits, Ordering::AcqRel);
            self.words[contention_word::CLAIMED].fetch_and(!(1 << i), Ordering::AcqRel);
        }
    }

    /// Publishes a container's last demand time into its slot.
    pub fn publish_demand(&self, slot: ContentionSlot, high: bool, last_demand_ns: u64) {
        let word = match slot {
            ContentionSlot::Own(i) => contention_word::SLOT_BASE + i,
            ContentionSlot::Overflow => contention_word::OVERFLOW_DEMAND_NS,
        };
        self.words[word].fetch_max(last_demand_ns, Ordering::AcqRel);
        if high && slot == ContentionSlot::Overflow {
            self.words[contention_word::HIGH_DEMAND_NS].fetch_max(last_demand_ns, Ordering::AcqRel);
        }
    }
}

/// Period of the host publisher: demand reaches the node view this fast.
pub const PUBLISH_PERIOD: Duration = Duration::from_millis(2);

/// The host publisher cannot serve a container.
#[derive(Debug, Error)]
pub enum PublishError {
    #[error("node part {path}: {source}")]
    Node {
        path: PathBuf,
        #[source]
        source: crate::NodeError,
    },
    #[error("device {uuid} of container {container_id} is not in the node part {path}")]
    UnknownDevice {
        uuid: String,
        container_id: String,
        path: PathBuf,
    },
    #[error("usage part {path} has no compute cell for the container's device {dev}")]
    MissingCell { path: PathBuf, dev: usize },
}

/// Host side: copies one container's demand into the node part's contention cells, so that
/// `burst` neighbours fall back to their caps and normal-priority neighbours yield to it.
///
/// Slots are claimed on [`ContentionPublisher::new`] and given back on drop; the slot number
/// is also written into the container's compute cell so its limiter can tell itself apart.
pub struct ContentionPublisher<'a> {
    devices: Vec<PublishedDevice<'a>>,
}

struct PublishedDevice<'a> {
    cell: ContentionCell<'a>,
    budget: Budget<'a>,
    slot: ContentionSlot,
    high: bool,
}

impl<'a> ContentionPublisher<'a> {
    /// Claims a contention slot on every device of `limits` (node part opened writable).
    pub fn new(
        node: &'a crate::NodeLedger,
        usage: &'a crate::UsageLedger,
        limits: &crate::ContainerLimits,
    ) -> Result<Self, PublishError> {
        let mut devices = Vec::with_capacity(limits.devices.len());
        for (dev, limit) in limits.devices.iter().enumerate() {
            let node_dev =
                node.device_by_uuid(&limit.uuid)
                    .ok_or_else(|| PublishError::UnknownDevice {
                        uuid: limit.uuid.clone(),
                        container_id: limits.container_id.clone(),
                        path: node.path().to_owned(),
                    })?;
            let contention = node
                .contention_cell(node_dev)
                .map_err(|source| PublishError::Node {
                    path: node.path().to_owned(),
                    source,
                })?
                .ok_or_else(|| PublishError::UnknownDevice {
                    uuid: limit.uuid.clone(),
                    container_id: limits.container_id.clone(),
                    path: node.path().to_owned(),
                })?;
            let compute = usage
                .compute_cell(dev)
                .ok_or_else(|| PublishError::MissingCell {
                    path: usage.path().to_owned(),
                    dev,
                })?;
            let class = SlotClass::of(limit.priority, limit.compute_percent);
            let high = class.is_high();
            let cell = ContentionCell::new(&contention.words);
            let slot = cell.claim_slot(class);
            let budget = Budget::new(&compute.words);
            budget.set_contention_slot(slot);
            devices.push(PublishedDevice {
                cell,
                budget,
                slot,
                high,
            });
        }
        Ok(Self { devices })
    }

    /// Copies the container's current demand into the node view (a few atomics per device).
    pub fn publish_once(&self) {
        for d in &self.devices {
            let last = d.budget.last_demand_ns();
            if last != 0 {
                d.cell.publish_demand(d.slot, d.high, last);
            }
        }
    }

    /// Publishes every [`PUBLISH_PERIOD`] until `stop` is set (run it in a thread).
    pub fn run_until(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            self.publish_once();
            std::thread::sleep(PUBLISH_PERIOD);
        }
        self.publish_once();
    }
}

impl Drop for ContentionPublisher<'_> {
    fn drop(&mut self) {
        for d in &self.devices {
            d.cell.release_slot(d.slot);
        }
    }
}

/// Host side, one call: publishes `limits`' container's demand until `stop` is set, then gives
/// its slots back. What `hami run` and the shim run in a thread beside the container.
pub fn publish_contention(
    node: &crate::NodeLedger,
    usage: &crate::UsageLedger,
    limits: &crate::ContainerLimits,
    stop: &AtomicBool,
) -> Result<(), PublishError> {
    ContentionPublisher::new(node, usage, limits)?.run_until(stop);
    Ok(())
}

pub mod futex {
    //! Sleeping on a cell's wake word (`WAKE_SEQ`) until a deadline or a wake-up, and waking
    //! its sleepers: the waiting half of the budget protocol, shared by every process of a
    //! container.
    //!
    //! The word lives in a `MAP_SHARED` file mapping, so the futex is a shared (not
    //! `FUTEX_PRIVATE_FLAG`) one: a thread of any process of the container can wake it. The wait
    //! uses `FUTEX_WAIT_BITSET` with an absolute `CLOCK_MONOTONIC` deadline, so a wake-up that comes
    //! early and a wait that is retried never stretch the total wait. The default timer slack of a
    //! thread (50 µs) would add up to that much to every timed wake-up, so the waiting thread lowers
    //! its own slack to 1 µs for the wait and puts the caller's value back afterwards.

    use std::sync::atomic::AtomicU64;

    /// Timer slack used while a launch waits for budget.
    const WAIT_TIMER_SLACK_NS: libc::c_ulong = 1_000;

    /// Nanoseconds on `CLOCK_MONOTONIC` (a vDSO call, no syscall, on Linux).
    pub fn monotonic_ns() -> u64 {
        clock_ns(libc::CLOCK_MONOTONIC)
    }

    /// [`monotonic_ns`] as of the last timer tick (a few ms behind at most), at a fraction of
    /// the cost: enough for demand and activity windows of tens of milliseconds, never for
    /// the budget itself.
    pub fn coarse_monotonic_ns() -> u64 {
        clock_ns(libc::CLOCK_MONOTONIC_COARSE)
    }

    fn clock_ns(clock: libc::clockid_t) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; both monotonic clocks are always supported
        // on Linux and served by the vDSO without a syscall.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000
            + u64::try_from(ts.tv_nsec).unwrap_or(0)
    }

    // The futex is the low half of a 64-bit word, which is its first four bytes only on
    // little-endian targets.
    const _: () = assert!(cfg!(target_endian = "little"));

    /// The low 32 bits of `word`: what the kernel compares.
    fn futex_addr(word: &AtomicU64) -> *mut u32 {
        word.as_ptr().cast::<u32>()
    }

    /// Current value of the futex half of `word`.
    pub fn futex_value(word: &AtomicU64) -> u32 {
        // Truncation is the point: the kernel compares the low 32 bits.
        (word.load(std::sync::atomic::Ordering::SeqCst) & u64::from(u32::MAX)) as u32
    }

    /// Sleeps while `word`'s futex half equals `expected`, until `deadline_ns` (monotonic) at most.
    ///
    /// Returns on a wake-up, a changed value, a signal or the deadline; the caller re-checks.
    pub fn wait_until(word: &AtomicU64, expected: u32, deadline_ns: u64) {
        let ts = libc::timespec {
            tv_sec: libc::time_t::try_from(deadline_ns / 1_000_000_000)
                .unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::try_from(deadline_ns % 1_000_000_000).unwrap_or(0),
        };
        // SAFETY: the address is the first 4 bytes of a live, aligned AtomicU64 that outlives the
        // call; the kernel only reads it. `ts` is a valid timespec on the stack. FUTEX_WAIT_BITSET
        // without FUTEX_CLOCK_REALTIME takes an absolute CLOCK_MONOTONIC deadline.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                futex_addr(word),
                libc::FUTEX_WAIT_BITSET,
                expected,
                &ts as *const libc::timespec,
                std::ptr::null::<u32>(),
                libc::FUTEX_BITSET_MATCH_ANY,
            );
        }
    }

    /// Wakes every thread, in any process, sleeping on `word`.
    pub fn wake_all(word: &AtomicU64) {
        // SAFETY: the address is a live, aligned AtomicU64; FUTEX_WAKE does not dereference it
        // beyond hashing the mapping it belongs to.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                futex_addr(word),
                libc::FUTEX_WAKE,
                i32::MAX,
            );
        }
    }

    /// Lowers the calling thread's timer slack for the lifetime of the guard.
    pub struct TightTimerSlack {
        previous: libc::c_int,
    }

    impl TightTimerSlack {
        /// Sets the slack to 1 µs, remembering the previous value.
        pub fn engage() -> Self {
            // SAFETY: PR_GET_TIMERSLACK takes no pointer argument and only returns a value.
            let previous = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
            // SAFETY: PR_SET_TIMERSLACK takes a plain integer; it affects only the calling thread.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, WAIT_TIMER_SLACK_NS, 0, 0, 0) };
            Self { previous }
        }
    }

    impl Drop for TightTimerSlack {
        fn drop(&mut self) {
            if let Ok(previous) = libc::c_ulong::try_from(self.previous) {
                // SAFETY: as in `engage`: a plain integer argument, calling thread only.
                unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, previous, 0, 0, 0) };
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::sync::atomic::Ordering;

        #[test]
        fn timed_wait_ends_near_its_deadline() {
            let word = AtomicU64::new(7);
            let _slack = TightTimerSlack::engage();
            let mut late = Vec::new();
            for _ in 0..20 {
                let deadline = monotonic_ns() + 2_000_000;
                wait_until(&word, 7, deadline);
                late.push(monotonic_ns().saturating_sub(deadline));
            }
            late.sort_unstable();
            // The median lateness is what a throttled launch pays; a loaded CI box adds noise.
            assert!(late[10] < 1_000_000, "median lateness {} ns", late[10]);
        }

        #[test]
        fn wake_releases_a_sleeper_long_before_its_deadline() {
            let word = AtomicU64::new(0);
            std::thread::scope(|s| {
                let sleeper = s.spawn(|| {
                    let start = monotonic_ns();
                    while futex_value(&word) == 0 {
                        wait_until(&word, 0, start + 10_000_000_000);
                    }
                    monotonic_ns() - start
                });
                std::thread::sleep(std::time::Duration::from_millis(20));
                word.fetch_add(1, Ordering::SeqCst);
                wake_all(&word);
                let slept = sleeper.join().expect("sleeper thread");
                assert!(
                    slept < 5_000_000_000,
                    "slept {slept} ns despite the wake-up"
                );
            });
        }

        #[test]
        fn changed_value_returns_at_once() {
            let word = AtomicU64::new(1);
            let start = monotonic_ns();
            wait_until(&word, 0, start + 5_000_000_000);
            assert!(monotonic_ns() - start < 1_000_000_000);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell() -> [AtomicU64; COMPUTE_WORDS] {
        std::array::from_fn(|_| AtomicU64::new(0))
    }

    #[test]
    fn fresh_budget_starts_full_to_depth() {
        let words = cell();
        let budget = Budget::with_depth(&words, 1_000);
        assert_eq!(budget.claim(1_000, 5_000_000_000, PPM / 2), Admission::Go);
        assert!(matches!(
            budget.claim(1, 5_000_000_000, PPM / 2),
            Admission::Wait { .. }
        ));
    }

    #[test]
    fn waiter_knows_when_it_may_go() {
        let words = cell();
        let budget = Budget::with_depth(&words, 1);
        let now = 1_000_000_000;
        budget.refill(now, PPM / 4);
        let Admission::Wait { claim_end } = budget.claim(1_000_001, now, PPM / 4) else {
            panic!("an empty bucket must make a 1 ms launch wait");
        };
        // 1 ms of device time at a quarter of the device takes 4 ms of wall time.
        assert_eq!(budget.ready_at(claim_end, PPM / 4), now + 4_000_000);
        budget.refill(now + 3_999_000, PPM / 4);
        assert!(!budget.covers(claim_end));
        budget.refill(now + 4_000_000, PPM / 4);
        assert!(budget.covers(claim_end));
    }

    #[test]
    fn idle_time_is_credited_only_up_to_depth() {
        let words = cell();
        let budget = Budget::with_depth(&words, 2_000_000);
        budget.refill(1, PPM);
        budget.refill(60_000_000_000, PPM);
        assert_eq!(budget.claim(2_000_000, 60_000_000_000, PPM), Admission::Go);
        assert!(matches!(
            budget.claim(1_000, 60_000_000_000, PPM),
            Admission::Wait { .. }
        ));
    }

    #[test]
    fn a_forfeited_budget_makes_the_next_launch_wait() {
        let words = cell();
        let budget = Budget::with_depth(&words, 10_000_000);
        budget.refill(1, PPM);
        budget.refill(1_000_000_000, PPM);
        assert_eq!(budget.claim(1_000, 1_000_000_000, PPM), Admission::Go);
        budget.forfeit_unused();
        assert!(matches!(
            budget.claim(1_000, 1_000_000_000, PPM),
            Admission::Wait { .. }
        ));
    }

    #[test]
    fn corrections_make_debits_equal_measured_time() {
        let words = cell();
        let budget = Budget::new(&words);
        for _ in 0..10 {
            let _ = budget.claim(100, 1, PPM);
        }
        assert_eq!(budget.estimated_total_ns(), 1_000);
        budget.debit_correction(500);
        budget.credit_correction(200);
        assert_eq!(budget.estimated_total_ns(), 1_000);
        assert_eq!(budget.net_correction_ns(), 300);
    }

    #[test]
    fn measurer_lease_has_one_holder_and_expires() {
        let words = cell();
        let budget = Budget::new(&words);
        assert!(budget.hold_measurer_lease(10, 1_000, 500));
        assert!(!budget.hold_measurer_lease(11, 1_200, 500));
        assert!(budget.hold_measurer_lease(10, 1_400, 500));
        assert!(!budget.hold_measurer_lease(11, 1_800, 500));
        assert!(budget.hold_measurer_lease(11, 1_901, 500));
    }

    #[test]
    fn burst_sees_others_but_not_itself() {
        let words = cell();
        let cell = ContentionCell::new(&words);
        let me = cell.claim_slot(SlotClass::Normal);
        let other = cell.claim_slot(SlotClass::Normal);
        assert_ne!(me, other);
        cell.publish_demand(me, false, 1_000);
        assert!(!cell.view().others_demand(Some(me), 1_100, 500));
        cell.publish_demand(other, false, 1_050);
        assert!(cell.view().others_demand(Some(me), 1_100, 500));
        assert!(!cell.view().others_demand(Some(me), 2_000, 500));
        cell.release_slot(other);
        assert_eq!(cell.view().claimed_slots(), 1);
    }

    #[test]
    fn high_demand_is_seen_by_others_only() {
        let words = cell();
        let cell = ContentionCell::new(&words);
        let high = cell.claim_slot(SlotClass::High);
        let low = cell.claim_slot(SlotClass::Normal);
        cell.publish_demand(high, true, 500);
        cell.publish_demand(low, false, 900);
        assert_eq!(cell.view().latest_high_demand(Some(low), false), 500);
        assert_eq!(cell.view().latest_high_demand(Some(high), false), 0);
        cell.release_slot(high);
        assert_eq!(cell.view().latest_high_demand(Some(low), false), 0);
    }

    #[test]
    fn capped_neighbours_yield_only_to_uncapped_high_containers() {
        let words = cell();
        let cell = ContentionCell::new(&words);
        let high_capped = cell.claim_slot(SlotClass::HighCapped);
        let batch = cell.claim_slot(SlotClass::Normal);
        cell.publish_demand(high_capped, true, 500);
        assert_eq!(
            cell.view().latest_high_demand(Some(batch), true),
            0,
            "a capped container already leaves a capped high one its share"
        );
        assert_eq!(
            cell.view().latest_high_demand(Some(batch), false),
            500,
            "an uncapped container would take it"
        );
        let high = cell.claim_slot(SlotClass::High);
        cell.publish_demand(high, true, 700);
        assert_eq!(cell.view().latest_high_demand(Some(batch), true), 700);
        cell.release_slot(high);
        cell.release_slot(high_capped);
        let reused = cell.claim_slot(SlotClass::High);
        cell.publish_demand(reused, true, 900);
        assert_eq!(
            cell.view().latest_high_demand(Some(batch), true),
            900,
            "a released slot's capped mark does not outlive it"
        );
    }

    #[test]
    fn the_class_of_a_container_follows_its_priority_and_cap() {
        use crate::Priority;
        assert_eq!(SlotClass::of(Priority::Normal, Some(30)), SlotClass::Normal);
        assert_eq!(
            SlotClass::of(Priority::High, Some(30)),
            SlotClass::HighCapped
        );
        assert_eq!(SlotClass::of(Priority::High, Some(100)), SlotClass::High);
        assert_eq!(SlotClass::of(Priority::High, None), SlotClass::High);
    }

    #[test]
    fn high_presence_is_seen_by_others_before_their_first_launch() {
        let words = cell();
        let cell = ContentionCell::new(&words);
        let low = cell.claim_slot(SlotClass::Normal);
        assert!(!cell.view().high_priority_present(Some(low)));
        let high = cell.claim_slot(SlotClass::High);
        assert!(
            cell.view().high_priority_present(Some(low)),
            "a claimed high slot counts before it publishes any demand"
        );
        assert!(!cell.view().high_priority_present(Some(high)));
        cell.release_slot(high);
        assert!(!cell.view().high_priority_present(Some(low)));
        cell.publish_demand(ContentionSlot::Overflow, true, 7);
        assert!(cell.view().high_priority_present(Some(low)));
    }

    #[test]
    fn slots_run_out_into_overflow() {
        let words = cell();
        let cell = ContentionCell::new(&words);
        for _ in 0..CONTENTION_SLOTS {
            assert!(matches!(
                cell.claim_slot(SlotClass::Normal),
                ContentionSlot::Own(_)
            ));
        }
        assert_eq!(cell.claim_slot(SlotClass::High), ContentionSlot::Overflow);
        cell.publish_demand(ContentionSlot::Overflow, true, 7);
        assert_eq!(
            cell.view()
                .latest_high_demand(Some(ContentionSlot::Own(0)), false),
            7
        );
        assert!(
            cell.view()
                .others_demand(Some(ContentionSlot::Own(0)), 8, 10)
        );
    }

    #[test]
    fn concurrent_claims_are_served_in_full_and_in_order() {
        let words = cell();
        let budget = Budget::with_depth(&words, 1);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        let _ = budget.claim(3, 0, PPM);
                    }
                });
            }
        });
        assert_eq!(budget.estimated_total_ns(), 4 * 10_000 * 3);
        assert_eq!(budget.launches(), 40_000);
    }

    #[test]
    fn publisher_shows_a_container_to_its_neighbours_and_leaves_cleanly() {
        use crate::{ComputePolicy, ContainerLimits, DeviceInfo, DeviceLimit, Priority, Vendor};
        let dir = tempfile::tempdir().expect("tempdir");
        let device = DeviceInfo {
            uuid: "GPU-compute-test".into(),
            index: 0,
            vendor: Vendor::Nvidia,
            total_memory: 1 << 30,
            compute_units: 8,
        };
        let node_path = dir.path().join("node.ledger");
        let node = crate::NodeLedger::create(&node_path, &[device]).expect("node part");
        let limits = |id: &str, priority| ContainerLimits {
            container_id: id.into(),
            devices: vec![DeviceLimit {
                uuid: "GPU-compute-test".into(),
                memory_limit: None,
                compute_percent: Some(30),
                policy: ComputePolicy::Hard,
                priority,
            }],
        };
        let usage_of = |name: &str| {
            let path = dir.path().join(name);
            crate::UsageLedger::create(&path, 1).expect("usage part");
            crate::UsageLedger::attach(&path).expect("attach")
        };
        let (usage_a, usage_b) = (usage_of("a.usage"), usage_of("b.usage"));
        let reader = crate::NodeLedger::open(&node_path).expect("read-only node part");
        let view_words = NodeContentionWords::new(&reader, 0);
        let view = Contention::new(&view_words);
        {
            let high = ContentionPublisher::new(&node, &usage_a, &limits("a", Priority::High))
                .expect("publisher a");
            let low = ContentionPublisher::new(&node, &usage_b, &limits("b", Priority::Normal))
                .expect("publisher b");
            assert_eq!(view.claimed_slots(), 2);
            let budget_a = Budget::new(&usage_a.compute_cell(0).expect("cell").words);
            let budget_b = Budget::new(&usage_b.compute_cell(0).expect("cell").words);
            let _ = budget_a.claim(1, 5_000_000, PPM);
            high.publish_once();
            low.publish_once();
            let own_b = budget_b.contention_slot();
            assert_eq!(view.latest_high_demand(own_b, false), 5_000_000);
            assert!(view.others_demand(own_b, 5_000_001, 1_000));
            assert!(!view.others_demand(budget_a.contention_slot(), 5_000_001, 1_000));
        }
        assert_eq!(
            view.claimed_slots(),
            0,
            "dropped publishers give their slots back"
        );
    }

    proptest::proptest! {
        /// Whatever the order of refills, claims and corrections, the budget never credits more
        /// than `rate × elapsed + depth + credits`, and a claim is admitted only once covered.
        #[test]
        fn budget_never_exceeds_rate_plus_depth(
            steps in proptest::collection::vec((0u64..5_000_000, 0u64..3_000_000), 1..200),
            rate in 10_000u64..=PPM,
        ) {
            let words = cell();
            let budget = Budget::new(&words);
            let start = 1_000_000_000u64;
            budget.refill(start, rate);
            let base = budget.words()[usage_word::REFILLED].load(Ordering::Relaxed);
            let mut now = start;
            let mut admitted = 0u64;
            for (advance, cost) in steps {
                now += advance;
                if let Admission::Go = budget.claim(cost, now, rate) {
                    admitted += cost;
                }
                let refilled = budget.words()[usage_word::REFILLED].load(Ordering::Relaxed);
                let bound = base + u64::try_from(
                    u128::from(now - start) * u128::from(rate) / u128::from(PPM)
                ).unwrap() + 1;
                proptest::prop_assert!(refilled <= bound);
                proptest::prop_assert!(admitted <= refilled);
            }
        }
    }
}
