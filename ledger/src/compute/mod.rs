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
//!
//! Files by idea: [`words`] (the cells' word layout), [`budget`] (the token bucket of one
//! container on one device), [`contention`] (the node view: slots, burst and priority),
//! [`publisher`] (the host side that copies demand into the node view) and [`futex`] (the
//! clock and the sleeping and waking the budget needs).

mod budget;
mod contention;
pub mod futex;
mod publisher;
mod words;

pub use budget::{Admission, Budget};
pub use contention::{
    Contention, ContentionCell, ContentionSlot, ContentionWords, NodeContentionWords, SlotClass,
};
pub use publisher::{ContentionPublisher, PUBLISH_PERIOD, PublishError, publish_contention};
pub use words::{
    COMPUTE_WORDS, CONTENTION_SLOTS, DEFAULT_DEPTH_NS, PPM, contention_word, usage_word,
};

#[cfg(test)]
mod tests;
