//! The hot path: reserving and releasing device memory against the container's cap.
//!
//! A reservation is one compare-and-swap on the container's per-device total, so concurrent
//! processes can never overshoot the cap. Around it the slot's `inflight` count tells a reclaim
//! pass that an operation is between the total and the slot's attribution; the pass's
//! `reclaiming` flag is checked after publishing it (Dekker-style, all `SeqCst`), so either the
//! pass waits for the operation or the operation waits for the pass. No syscall, lock or
//! allocation unless a pass is running.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::UsageLedger;
use super::layout::{SlotRecord, UsageLayout};
use super::slot::ProcessSlot;

/// How long an operation waits for a reclaim pass before going ahead (and making that pass
/// give up instead of committing).
const PASS_WAIT: Duration = Duration::from_millis(20);
/// After this much waiting, check whether the pass's owner is still alive.
const STALE_CHECK_AFTER: Duration = Duration::from_millis(1);

/// A reservation was refused: it would take the container above its cap.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error(
    "reserving {requested} bytes on device {device} would exceed the cap: {used} of {limit} bytes in use"
)]
pub struct OverCap {
    pub device: usize,
    pub requested: u64,
    pub used: u64,
    pub limit: u64,
}

impl UsageLedger {
    /// Reserves `bytes` on device `dev` for `slot`, if the container's total stays within
    /// `limit`. Exact under any concurrency. When the cap is hit, dead processes' bytes are
    /// reclaimed and the reservation is tried once more. A device outside the ledger has no
    /// capacity. A device without a cap passes `u64::MAX` as `limit`.
    #[inline]
    pub fn reserve(
        &self,
        slot: &ProcessSlot,
        dev: usize,
        bytes: u64,
        limit: u64,
    ) -> Result<(), OverCap> {
        match self.try_reserve(slot, dev, bytes, limit) {
            Ok(()) => Ok(()),
            Err(over) => self.reserve_after_reclaim(slot, dev, bytes, limit, over),
        }
    }

    /// [`Self::reserve`] without the reclaim-and-retry on refusal.
    #[inline]
    pub fn try_reserve(
        &self,
        slot: &ProcessSlot,
        dev: usize,
        bytes: u64,
        limit: u64,
    ) -> Result<(), OverCap> {
        if bytes == 0 {
            return Ok(());
        }
        let layout = self.layout();
        let (Some(record), Some(total)) = (
            layout.slots.get(slot.index()),
            layout.devices[..self.n_devices].get(dev),
        ) else {
            return Err(OverCap {
                device: dev,
                requested: bytes,
                used: 0,
                limit: 0,
            });
        };
        self.begin(layout, record, dev);
        let mut current = total.used.load(Ordering::Relaxed);
        loop {
            let next = match current.checked_add(bytes) {
                Some(next) if next <= limit => next,
                _ => {
                    record.inflight[dev].fetch_sub(1, Ordering::Release);
                    return Err(OverCap {
                        device: dev,
                        requested: bytes,
                        used: current,
                        limit,
                    });
                }
            };
            match total.used.compare_exchange_weak(
                current,
                next,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        record.used[dev].fetch_add(bytes, Ordering::Relaxed);
        // Release: a pass that sees the count drop also sees the total and the attribution.
        record.inflight[dev].fetch_sub(1, Ordering::Release);
        Ok(())
    }

    /// Returns `bytes` on device `dev` reserved by `slot`. Never underflows: releasing more
    /// than the slot holds releases what it holds and counts a bug in the ledger.
    #[inline]
    pub fn release(&self, slot: &ProcessSlot, dev: usize, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let layout = self.layout();
        let (Some(record), Some(total)) = (
            layout.slots.get(slot.index()),
            layout.devices[..self.n_devices].get(dev),
        ) else {
            layout.control.underflows.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.begin(layout, record, dev);
        let held = saturating_sub(&record.used[dev], bytes);
        let dropped = saturating_sub(&total.used, held);
        if held < bytes || dropped < held {
            layout.control.underflows.fetch_add(1, Ordering::Relaxed);
        }
        record.inflight[dev].fetch_sub(1, Ordering::Release);
    }

    /// Publishes an operation on `dev` and makes sure no reclaim pass is between its quiesce
    /// and commit steps.
    #[inline]
    fn begin(&self, layout: &UsageLayout, record: &SlotRecord, dev: usize) {
        record.inflight[dev].fetch_add(1, Ordering::SeqCst);
        if layout.control.reclaiming.load(Ordering::SeqCst) != 0 {
            self.wait_for_pass(layout, record, dev);
        }
    }

    #[cold]
    #[inline(never)]
    fn wait_for_pass(&self, layout: &UsageLayout, record: &SlotRecord, dev: usize) {
        let control = &layout.control;
        let start = Instant::now();
        let mut checked_stale = false;
        loop {
            // Withdraw while waiting, so the pass can see this slot quiet.
            record.inflight[dev].fetch_sub(1, Ordering::SeqCst);
            let mut spins = 0u32;
            while control.reclaiming.load(Ordering::SeqCst) != 0 && start.elapsed() < PASS_WAIT {
                if !checked_stale && start.elapsed() >= STALE_CHECK_AFTER {
                    checked_stale = true;
                    self.clear_stale_pass();
                }
                if spins < 64 {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::sleep(Duration::from_micros(20));
                }
            }
            record.inflight[dev].fetch_add(1, Ordering::SeqCst);
            if control.reclaiming.load(Ordering::SeqCst) == 0 {
                return;
            }
            if start.elapsed() >= PASS_WAIT {
                // Go ahead; the pass sees the counter move and gives up instead of committing.
                control.bypasses.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }

    /// Clears the `reclaiming` flag of a pass whose owner died (its lock byte is free).
    fn clear_stale_pass(&self) {
        use std::os::fd::AsFd;
        let control = &self.layout().control;
        let token = control.reclaiming.load(Ordering::SeqCst);
        if token == 0 {
            return;
        }
        let lock_byte = super::layout::RECLAIM_LOCK_BYTE;
        // The token identifies the dead pass: a new pass stores its own token.
        if let Ok(false) = crate::liveness::held_by_other(self.file.as_fd(), lock_byte) {
            let _ =
                control
                    .reclaiming
                    .compare_exchange(token, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    #[cold]
    #[inline(never)]
    fn reserve_after_reclaim(
        &self,
        slot: &ProcessSlot,
        dev: usize,
        bytes: u64,
        limit: u64,
        over: OverCap,
    ) -> Result<(), OverCap> {
        if dev >= self.n_devices {
            return Err(over);
        }
        match self.reclaim_dead() {
            Ok(report) if report.freed_slots > 0 || report.busy => {
                self.try_reserve(slot, dev, bytes, limit)
            }
            Ok(_) | Err(_) => Err(over),
        }
    }
}

/// Subtracts up to `bytes` from `counter` without going below zero; returns what was taken.
fn saturating_sub(counter: &AtomicU64, bytes: u64) -> u64 {
    let mut current = counter.load(Ordering::Relaxed);
    loop {
        let taken = current.min(bytes);
        match counter.compare_exchange_weak(
            current,
            current - taken,
            Ordering::SeqCst,
            Ordering::Relaxed,
        ) {
            Ok(_) => return taken,
            Err(actual) => current = actual,
        }
    }
}
