//! The work a stream carries out in order: kernels, copies, memsets, event records and
//! waits, stream-ordered frees. Kernels hold the device's execution lock for their whole
//! duration and record their busy time; copies use the (unlimited) copy engines.

use std::sync::Arc;
use std::time::Duration;

use super::event::Event;
use super::{initialised, memory, pool};
use crate::clock::monotonic_ns;

/// One unit of stream work. Addresses were validated when the work was queued.
#[derive(Clone)]
pub enum Op {
    /// `hami_spin`: occupy the device for `ns`.
    Spin { device: usize, ns: u64 },
    /// `hami_fill`: write `count` copies of `value` at `address`.
    Fill {
        device: usize,
        address: u64,
        value: u32,
        count: u64,
    },
    /// Device-to-device or device-to-host copy between raw addresses.
    Copy { dst: u64, src: u64, len: u64 },
    /// Host-to-device copy of bytes staged when the copy was queued.
    Upload { dst: u64, bytes: Arc<Vec<u8>> },
    /// `cuMemsetD8`.
    Set8 { dst: u64, value: u8, count: u64 },
    /// `cuMemsetD32`.
    Set32 { dst: u64, value: u32, count: u64 },
    /// The stream reached an event record.
    Record { event: Arc<Event>, sequence: u64 },
    /// Wait for an event record issued on another stream.
    Wait { event: Arc<Event>, sequence: u64 },
    /// `cuMemFreeAsync`.
    Free { address: u64 },
}

impl Op {
    /// Work that needs the device's execution lock (and so may wait for other processes).
    pub fn needs_device(&self) -> bool {
        matches!(self, Op::Spin { ns, .. } if *ns > 0) || matches!(self, Op::Fill { .. })
    }

    /// Work that may have to block on something outside the stream.
    pub fn may_block(&self) -> bool {
        self.needs_device()
            || matches!(self, Op::Wait { event, sequence } if !event.is_complete(Some(*sequence)))
    }

    /// Carries the work out on the calling thread.
    pub fn execute(&self) {
        match self {
            // An empty kernel never gets to hold the device: nothing to wait for.
            Op::Spin { ns: 0, .. } => {}
            Op::Spin { device, ns } => occupy(*device, || wait_for(*ns)),
            Op::Fill {
                device,
                address,
                value,
                count,
            } => occupy(*device, || {
                let words = *count as usize;
                let dst = *address as usize as *mut u32;
                for index in 0..words {
                    // SAFETY: `[address, address + 4 * count)` was checked to lie inside one
                    // live allocation when the launch was queued; unaligned writes are allowed.
                    unsafe { dst.add(index).write_unaligned(*value) };
                }
            }),
            Op::Copy { dst, src, len } => {
                // SAFETY: both ranges were validated (device ranges against the region table,
                // host ranges are the caller's contract, as with the real driver).
                unsafe {
                    memory::copy_bytes(
                        *dst as usize as *mut u8,
                        *src as usize as *const u8,
                        *len as usize,
                    )
                }
            }
            Op::Upload { dst, bytes } => {
                // SAFETY: the destination was validated for `bytes.len()` bytes.
                unsafe { memory::copy_bytes(*dst as usize as *mut u8, bytes.as_ptr(), bytes.len()) }
            }
            Op::Set8 { dst, value, count } => {
                // SAFETY: `[dst, dst + count)` was validated.
                unsafe { std::ptr::write_bytes(*dst as usize as *mut u8, *value, *count as usize) }
            }
            Op::Set32 { dst, value, count } => {
                let dst = *dst as usize as *mut u32;
                for index in 0..*count as usize {
                    // SAFETY: `[dst, dst + 4 * count)` was validated.
                    unsafe { dst.add(index).write_unaligned(*value) };
                }
            }
            Op::Record { event, sequence } => event.complete(*sequence),
            Op::Wait { event, sequence } => event.wait(Some(*sequence)),
            Op::Free { address } => {
                if let Ok(driver) = initialised()
                    && let Ok(region) = memory::free(driver, *address)
                    && let memory::Origin::Pool(handle) = region.origin
                {
                    pool::freed(handle, region.charged);
                }
            }
        }
    }
}

/// Runs `work` while holding the device, and records the time it held it.
fn occupy(device: usize, work: impl FnOnce()) {
    let Ok(driver) = initialised() else {
        return work();
    };
    let Ok(slot) = driver.slot() else {
        return work();
    };
    let Some(guard) = driver.state.lock_device(slot, device) else {
        return work();
    };
    let start = monotonic_ns();
    work();
    let end = monotonic_ns();
    driver.state.record_busy(slot.index(), device, start, end);
    drop(guard);
}

/// Waits `ns` nanoseconds: sleeps for the bulk, spins the last stretch for precision.
fn wait_for(ns: u64) {
    let deadline = monotonic_ns().saturating_add(ns);
    loop {
        let now = monotonic_ns();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > 200_000 {
            std::thread::sleep(Duration::from_nanos(left - 100_000));
        } else {
            std::hint::spin_loop();
        }
    }
}
