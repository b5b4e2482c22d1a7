//! The vendor-neutral accounting engine: reserve before the driver call, roll back when the
//! driver fails, record what each live allocation charged, release exactly that on free.
//!
//! HAMi-core checked then allocated (a race between processes: 8 processes under a 1 GiB cap
//! ended one step over it) and charged requested sizes. Here the container-wide reservation
//! (a CAS in the shared ledger) happens before the driver sees the request, so no interleaving
//! of processes can overshoot; the charge is the size the driver really takes (granularity,
//! pitch, array footprint), computed by the vendor layer.

pub mod accounts;
pub mod table;
pub mod view;

use std::sync::atomic::{AtomicBool, Ordering};

use hami_ledger::{MAX_DEVICES, OverCap};

use self::accounts::Accounts;
use self::table::{AllocationTable, Charge, KeyKind, TableFull, key};

/// Why an accounted allocation did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AllocError<E> {
    #[error("over the cap: {0}")]
    OverCap(OverCap),
    #[error("{0}")]
    TableFull(TableFull),
    #[error("the driver refused the allocation")]
    Driver(E),
}

/// One device of the container as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePolicy {
    /// The device's UUID, when devices are identified by UUID (ledger mode).
    pub uuid: Option<String>,
    /// Cap in bytes (`u64::MAX`: accounted but uncapped).
    pub limit: u64,
}

/// The accounting engine of one process.
pub struct Engine<A: Accounts> {
    accounts: A,
    devices: Vec<DevicePolicy>,
    table: AllocationTable,
    context_overhead: u64,
    context_charged: [AtomicBool; MAX_DEVICES],
}

impl<A: Accounts> Engine<A> {
    /// An engine over `accounts` for the container's `devices` (index = container device index).
    pub fn new(
        accounts: A,
        devices: Vec<DevicePolicy>,
        table_capacity: usize,
        context_overhead: u64,
    ) -> Engine<A> {
        Engine {
            accounts,
            devices,
            table: AllocationTable::with_capacity(table_capacity),
            context_overhead,
            context_charged: std::array::from_fn(|_| AtomicBool::new(false)),
        }
    }

    /// The container's devices.
    pub fn devices(&self) -> &[DevicePolicy] {
        &self.devices
    }

    /// The container device index of a UUID (case-insensitive, as UUIDs are hex).
    pub fn index_of_uuid(&self, uuid: &str) -> Option<usize> {
        self.devices.iter().position(|d| {
            d.uuid
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
        })
    }

    /// The cap of a device (`None`: not a device of the container).
    #[inline]
    pub fn limit(&self, device: usize) -> Option<u64> {
        self.devices.get(device).map(|d| d.limit)
    }

    /// The container's usage of a device.
    pub fn used(&self, device: usize) -> u64 {
        self.accounts.used(device)
    }

    /// The accounts, for tests and diagnostics.
    pub fn accounts(&self) -> &A {
        &self.accounts
    }

    /// Charges this process's context overhead on `device`, once per process and device. The
    /// charge lives as long as the process (a context's memory is returned at exit, when the
    /// ledger reclaims the slot).
    pub fn charge_context(&self, device: usize) -> Result<(), OverCap> {
        if self.context_overhead == 0 {
            return Ok(());
        }
        let Some(flag) = self.context_charged.get(device) else {
            return Err(OverCap {
                device,
                requested: 0,
                used: 0,
                limit: 0,
            });
        };
        if flag.load(Ordering::Acquire) {
            return Ok(());
        }
        if flag
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Ok(());
        }
        if let Err(over) = self.reserve(device, self.context_overhead) {
            flag.store(false, Ordering::Release);
            return Err(over);
        }
        Ok(())
    }

    /// Reserves `bytes` on `device` against its cap.
    #[inline]
    pub fn reserve(&self, device: usize, bytes: u64) -> Result<(), OverCap> {
        let Some(limit) = self.limit(device) else {
            return Err(OverCap {
                device,
                requested: bytes,
                used: 0,
                limit: 0,
            });
        };
        self.accounts
            .reserve(device, bytes, limit)
            .inspect_err(|over| {
                crate::hami_log!(crate::log::Level::Debug, "refused: {over}");
            })
    }

    /// Runs `call` (the driver's allocation, returning the new pointer or handle) inside a
    /// reservation of `bytes`: nothing reaches the driver over the cap, a driver failure rolls
    /// the reservation back, and a success is recorded so its free releases exactly `bytes`.
    /// `undo` frees the new object if it cannot be recorded.
    #[inline]
    pub fn allocate<E>(
        &self,
        device: usize,
        kind: KeyKind,
        bytes: u64,
        call: impl FnOnce() -> Result<u64, E>,
        undo: impl FnOnce(u64),
    ) -> Result<u64, AllocError<E>> {
        self.charge_context(device).map_err(AllocError::OverCap)?;
        self.reserve(device, bytes).map_err(AllocError::OverCap)?;
        let raw = match call() {
            Ok(raw) => raw,
            Err(err) => {
                self.accounts.release(device, bytes);
                return Err(AllocError::Driver(err));
            }
        };
        self.record(device, kind, raw, bytes, undo)?;
        Ok(raw)
    }

    /// Like [`Self::allocate`] for calls whose real size is only known afterwards (pitch):
    /// `estimate` must be an upper bound; the call returns the object and its real size, and
    /// the reservation is adjusted to it (a real size above the estimate is reserved too, and
    /// the object freed with `undo` if that fails).
    pub fn allocate_adjusted<E>(
        &self,
        device: usize,
        kind: KeyKind,
        estimate: u64,
        call: impl FnOnce() -> Result<(u64, u64), E>,
        undo: impl FnOnce(u64),
    ) -> Result<u64, AllocError<E>> {
        self.charge_context(device).map_err(AllocError::OverCap)?;
        self.reserve(device, estimate)
            .map_err(AllocError::OverCap)?;
        let (raw, actual) = match call() {
            Ok(done) => done,
            Err(err) => {
                self.accounts.release(device, estimate);
                return Err(AllocError::Driver(err));
            }
        };
        if actual < estimate {
            self.accounts.release(device, estimate - actual);
        } else if actual > estimate
            && let Err(over) = self.reserve(device, actual - estimate)
        {
            undo(raw);
            self.accounts.release(device, estimate);
            return Err(AllocError::OverCap(over));
        }
        self.record(device, kind, raw, actual, undo)?;
        Ok(raw)
    }

    fn record<E>(
        &self,
        device: usize,
        kind: KeyKind,
        raw: u64,
        bytes: u64,
        undo: impl FnOnce(u64),
    ) -> Result<(), AllocError<E>> {
        if let Err(full) = self.table.insert(key(kind, raw), Charge { device, bytes }) {
            crate::hami_log!(crate::log::Level::Error, "{full}; allocation refused");
            undo(raw);
            self.accounts.release(device, bytes);
            return Err(AllocError::TableFull(full));
        }
        Ok(())
    }

    /// Runs `call` (the driver's free; always forwarded, tracked or not) and releases what the
    /// object charged once the driver confirms. If the driver refuses, the record is kept.
    #[inline]
    pub fn free<E>(
        &self,
        kind: KeyKind,
        raw: u64,
        call: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        let k = key(kind, raw);
        // Taken before the driver call: once freed, the driver may hand the same address to
        // another thread, whose record must not be confused with this one.
        let charge = self.table.take(k);
        match call() {
            Ok(()) => {
                if let Some(charge) = charge {
                    self.accounts.release(charge.device, charge.bytes);
                }
                Ok(())
            }
            Err(err) => {
                if let Some(charge) = charge
                    && self.table.insert(k, charge).is_err()
                {
                    self.accounts.release(charge.device, charge.bytes);
                }
                Err(err)
            }
        }
    }

    /// Bytes recorded as live in this process on `device` (a full scan; tests, diagnostics).
    pub fn live_bytes(&self, device: usize) -> u64 {
        self.table.live_bytes(device)
    }
}

#[cfg(test)]
mod tests;
