//! The execution lock of a device: one kernel at a time across all processes, like a
//! time-sliced GPU without MPS.
//!
//! A ticket lock in the shared file gives FIFO order, so two processes launching back to
//! back alternate and each gets half of the device. Waiters sleep on a futex. A process
//! that dies holding the lock, or holding a ticket it never used, is detected through its
//! slot's `flock` and skipped, so the device never stays locked by the dead.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::layout::{DeviceRecord, TICKET_RING};
use super::{SharedState, Slot, futex};

/// How long a waiter sleeps before it looks at whether the queue is stuck.
const WAIT_SLICE: Duration = Duration::from_millis(20);
/// How long the queue may not move before the current ticket's owner is checked.
const STALL_CHECK_AFTER: Duration = Duration::from_millis(50);
/// How long a ticket whose owner never recorded itself is waited for.
const UNOWNED_TICKET_GRACE: Duration = Duration::from_millis(500);

/// Exclusive use of a device; released on drop.
pub struct DeviceGuard<'a> {
    record: &'a DeviceRecord,
}

impl SharedState {
    /// Waits for the device, in FIFO order with every other process.
    pub fn lock_device(&self, slot: &Slot, device: usize) -> Option<DeviceGuard<'_>> {
        let record = self.device_record(device)?;
        let ticket = record.next_ticket.fetch_add(1, Ordering::AcqRel);
        record.ticket_owner[ring_index(ticket)].store(
            owner_word(ticket, slot.generation(), slot.index()),
            Ordering::Release,
        );
        let mut seen = record.serving.load(Ordering::Acquire);
        let mut seen_since = Instant::now();
        while seen != ticket {
            record.waiters.fetch_add(1, Ordering::AcqRel);
            futex::wait(&record.serving, seen, WAIT_SLICE);
            record.waiters.fetch_sub(1, Ordering::AcqRel);
            let now_serving = record.serving.load(Ordering::Acquire);
            if now_serving != seen {
                seen = now_serving;
                seen_since = Instant::now();
            } else if seen_since.elapsed() >= STALL_CHECK_AFTER {
                self.skip_dead_ticket(record, seen, seen_since.elapsed(), slot);
            }
        }
        record
            .holder
            .store(slot.index() as u32 + 1, Ordering::Release);
        Some(DeviceGuard { record })
    }

    /// Moves the queue past `ticket` if whoever owns it is dead.
    fn skip_dead_ticket(&self, record: &DeviceRecord, ticket: u32, stalled: Duration, own: &Slot) {
        let owner = record.ticket_owner[ring_index(ticket)].load(Ordering::Acquire);
        let dead = if (owner >> 32) as u32 == ticket {
            let slot_index = (owner & 0xff) as usize - 1;
            let generation = ((owner >> 8) & 0xff_ffff) as u32;
            // A slot claimed again since the ticket was taken means its taker is gone.
            self.slot_generation(slot_index) != generation
                || !self.slot_alive(slot_index, Some(own))
        } else {
            // The owner died between taking the ticket and recording itself.
            stalled >= UNOWNED_TICKET_GRACE
        };
        if dead
            && record
                .serving
                .compare_exchange(
                    ticket,
                    ticket.wrapping_add(1),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            record.holder.store(0, Ordering::Release);
            futex::wake_all(&record.serving);
        }
    }
}

impl Drop for DeviceGuard<'_> {
    fn drop(&mut self) {
        self.record.holder.store(0, Ordering::Release);
        self.record.serving.fetch_add(1, Ordering::AcqRel);
        if self.record.waiters.load(Ordering::Acquire) > 0 {
            futex::wake_all(&self.record.serving);
        }
    }
}

fn owner_word(ticket: u32, generation: u32, slot: usize) -> u64 {
    u64::from(ticket) << 32 | u64::from(generation & 0xff_ffff) << 8 | (slot as u64 + 1)
}

fn ring_index(ticket: u32) -> usize {
    ticket as usize % TICKET_RING
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    use super::super::tests::config;
    use super::*;

    #[test]
    fn holders_never_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(SharedState::attach(&config(dir.path(), 64 << 20)).unwrap());
        let inside = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|n| {
                let state = state.clone();
                let inside = inside.clone();
                std::thread::spawn(move || {
                    let slot = state.claim_slot(100 + n).unwrap();
                    for _ in 0..200 {
                        let _guard = state.lock_device(&slot, 0).unwrap();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        std::hint::spin_loop();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }

    #[test]
    fn a_dead_holder_does_not_block_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let state = SharedState::attach(&config(dir.path(), 64 << 20)).unwrap();
        let dead = state.claim_slot(7).unwrap();
        let guard = state.lock_device(&dead, 0).unwrap();
        // The holder "dies": its guard is never dropped and its slot lock goes away.
        std::mem::forget(guard);
        drop(dead);
        let alive = state.claim_slot(8).unwrap();
        let started = Instant::now();
        let guard = state.lock_device(&alive, 0);
        assert!(guard.is_some());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
