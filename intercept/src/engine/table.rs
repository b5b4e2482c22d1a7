//! The pointer/handle → (device, charged bytes) table of the live allocations of this process.
//!
//! HAMi-core keeps a linked list under a mutex and refuses to free pointers it does not know
//! (#93). This table is a fixed-capacity open-addressing hash allocated once at initialization:
//! insert, take and lookup are a few atomic operations with no lock, syscall or allocation,
//! so the alloc/free hot path stays in the tens of nanoseconds. Memory cost is 16 bytes per
//! slot of virtual memory, paid in physical pages only as slots get used.
//!
//! Keys are unique among live entries (the driver never hands out one live pointer twice), so
//! no two live entries can collide on a key; `take` happens-after the `insert` of the same key
//! because the application can only free what an allocation call already returned.

use std::sync::atomic::{AtomicU64, Ordering};

const EMPTY: u64 = 0;
const TOMBSTONE: u64 = u64::MAX;
/// A slot whose entry is being taken: inserts may not reuse it yet, lookups probe past it.
const BUSY: u64 = u64::MAX - 1;

/// What one allocation charged: device (the container's device index) and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    pub device: usize,
    pub bytes: u64,
}

impl Charge {
    /// Packs into one word (device in the top byte, bytes below: 2^56 bytes is 64 PiB).
    fn pack(self) -> u64 {
        debug_assert!(self.device < 256 && self.bytes < (1 << 56));
        ((self.device as u64) << 56) | (self.bytes & ((1 << 56) - 1))
    }

    fn unpack(word: u64) -> Charge {
        Charge {
            device: (word >> 56) as usize,
            bytes: word & ((1 << 56) - 1),
        }
    }
}

/// Which namespace a key lives in: device pointers, VMM handles and arrays are distinct
/// driver objects whose raw values could coincide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum KeyKind {
    DevicePointer = 1,
    MemHandle = 2,
    Array = 3,
}

/// Builds a table key from a raw driver value.
pub fn key(kind: KeyKind, raw: u64) -> u64 {
    (raw & 0x0FFF_FFFF_FFFF_FFFF) | ((kind as u64) << 60)
}

struct Slot {
    key: AtomicU64,
    charge: AtomicU64,
}

/// The table could not take one more live allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("allocation table full ({capacity} live allocations)")]
pub struct TableFull {
    pub capacity: usize,
}

/// `size` empty slots from zeroed memory: the allocator hands large zeroed blocks out as fresh
/// pages, so a million-slot table costs address space, not 16 MiB of resident memory or the
/// time to write it, until slots are used.
fn zeroed_slots(size: usize) -> Box<[Slot]> {
    let layout = std::alloc::Layout::array::<Slot>(size).expect("table size fits in memory");
    // SAFETY: the layout has a non-zero size (size >= 16 and Slot is 16 bytes).
    let memory = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Slot>();
    if memory.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `memory` is a live, zeroed allocation of exactly `size` Slots with the global
    // allocator's layout for `[Slot]`, and an all-zero Slot is valid (two AtomicU64 of 0, EMPTY),
    // so it may be owned as a boxed slice.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(memory, size)) }
}

/// A fixed-capacity lock-free map of live allocations.
pub struct AllocationTable {
    slots: Box<[Slot]>,
    mask: usize,
}

impl AllocationTable {
    /// A table holding up to `capacity` (rounded up to a power of two) live allocations.
    pub fn with_capacity(capacity: usize) -> AllocationTable {
        let size = capacity.max(16).next_power_of_two();
        AllocationTable {
            slots: zeroed_slots(size),
            mask: size - 1,
        }
    }

    fn start(&self, key: u64) -> usize {
        // Fibonacci hashing spreads aligned pointers (low bits all zero) over the table.
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) as usize & self.mask
    }

    /// Records a live allocation.
    pub fn insert(&self, key: u64, charge: Charge) -> Result<(), TableFull> {
        debug_assert!(key != EMPTY && key != TOMBSTONE && key != BUSY);
        let mut index = self.start(key);
        for _ in 0..self.slots.len() {
            let slot = &self.slots[index];
            let current = slot.key.load(Ordering::Acquire);
            if (current == EMPTY || current == TOMBSTONE)
                && slot
                    .key
                    .compare_exchange(current, key, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                slot.charge.store(charge.pack(), Ordering::Release);
                return Ok(());
            }
            index = (index + 1) & self.mask;
        }
        Err(TableFull {
            capacity: self.slots.len(),
        })
    }

    /// Removes a live allocation and returns what it charged; `None` for unknown keys
    /// (pointers allocated before the library was active, or double frees).
    pub fn take(&self, key: u64) -> Option<Charge> {
        let mut index = self.start(key);
        for _ in 0..self.slots.len() {
            let slot = &self.slots[index];
            match slot.key.load(Ordering::Acquire) {
                EMPTY => return None,
                k if k == key => {
                    // Claiming the key first decides which of two racing frees owns the charge;
                    // BUSY keeps an insert from reusing the slot before the charge is read.
                    if slot
                        .key
                        .compare_exchange(key, BUSY, Ordering::AcqRel, Ordering::Acquire)
                        .is_err()
                    {
                        return None;
                    }
                    let word = slot.charge.swap(0, Ordering::AcqRel);
                    slot.key.store(TOMBSTONE, Ordering::Release);
                    return Some(Charge::unpack(word));
                }
                _ => index = (index + 1) & self.mask,
            }
        }
        None
    }

    /// Sum of the bytes recorded for `device` (slow: a full scan; for tests and diagnostics).
    pub fn live_bytes(&self, device: usize) -> u64 {
        self.slots
            .iter()
            .filter(|s| !matches!(s.key.load(Ordering::Acquire), EMPTY | TOMBSTONE | BUSY))
            .map(|s| Charge::unpack(s.charge.load(Ordering::Acquire)))
            .filter(|c| c.device == device)
            .map(|c| c.bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn insert_then_take_returns_the_charge_once() {
        let table = AllocationTable::with_capacity(64);
        let k = key(KeyKind::DevicePointer, 0x7f00_0020_0000);
        table
            .insert(
                k,
                Charge {
                    device: 3,
                    bytes: 2 << 20,
                },
            )
            .unwrap();
        assert_eq!(
            table.take(k),
            Some(Charge {
                device: 3,
                bytes: 2 << 20
            })
        );
        assert_eq!(table.take(k), None);
    }

    #[test]
    fn namespaces_do_not_collide() {
        let table = AllocationTable::with_capacity(64);
        table
            .insert(
                key(KeyKind::DevicePointer, 42),
                Charge {
                    device: 0,
                    bytes: 1,
                },
            )
            .unwrap();
        table
            .insert(
                key(KeyKind::MemHandle, 42),
                Charge {
                    device: 1,
                    bytes: 2,
                },
            )
            .unwrap();
        assert_eq!(
            table.take(key(KeyKind::MemHandle, 42)).map(|c| c.bytes),
            Some(2)
        );
        assert_eq!(
            table.take(key(KeyKind::DevicePointer, 42)).map(|c| c.bytes),
            Some(1)
        );
    }

    #[test]
    fn a_full_table_refuses_instead_of_losing_records() {
        let table = AllocationTable::with_capacity(16);
        for raw in 1..=16u64 {
            table
                .insert(
                    key(KeyKind::Array, raw),
                    Charge {
                        device: 0,
                        bytes: raw,
                    },
                )
                .unwrap();
        }
        assert_eq!(
            table.insert(
                key(KeyKind::Array, 99),
                Charge {
                    device: 0,
                    bytes: 1
                }
            ),
            Err(TableFull { capacity: 16 })
        );
        assert_eq!(table.take(key(KeyKind::Array, 7)).map(|c| c.bytes), Some(7));
        table
            .insert(
                key(KeyKind::Array, 99),
                Charge {
                    device: 0,
                    bytes: 1,
                },
            )
            .unwrap();
    }

    #[test]
    fn concurrent_inserts_and_takes_keep_every_byte() {
        let table = Arc::new(AllocationTable::with_capacity(1 << 12));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let table = Arc::clone(&table);
                std::thread::spawn(move || {
                    let mut taken = 0u64;
                    for round in 0..20_000u64 {
                        let raw = (t << 32) | (round % 500 + 1) << 12;
                        let k = key(KeyKind::DevicePointer, raw);
                        if round % 1000 < 500 {
                            table
                                .insert(
                                    k,
                                    Charge {
                                        device: 1,
                                        bytes: 4096,
                                    },
                                )
                                .unwrap();
                        } else {
                            taken += table.take(k).map_or(0, |c| c.bytes);
                        }
                    }
                    taken
                })
            })
            .collect();
        let taken: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(taken, 4 * 20 * 500 * 4096);
        assert_eq!(table.live_bytes(1), 0);
    }

    proptest! {
        #[test]
        fn behaves_like_a_map(ops in prop::collection::vec((any::<bool>(), 1u64..64, 1u64..1000), 1..400)) {
            let table = AllocationTable::with_capacity(128);
            let mut model: HashMap<u64, u64> = HashMap::new();
            for (insert, raw, bytes) in ops {
                let k = key(KeyKind::DevicePointer, raw);
                if insert && !model.contains_key(&raw) {
                    table.insert(k, Charge { device: 2, bytes }).unwrap();
                    model.insert(raw, bytes);
                } else {
                    prop_assert_eq!(table.take(k).map(|c| c.bytes), model.remove(&raw));
                }
            }
            prop_assert_eq!(table.live_bytes(2), model.values().sum::<u64>());
        }
    }
}
