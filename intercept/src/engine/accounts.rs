//! Where the container's per-device totals live: the seam between the accounting engine and
//! the shared ledger, so the engine's rules are unit-tested against an in-memory double.

use hami_ledger::{OverCap, ProcessSlot, UsageLedger};

/// The container-wide counters the engine charges.
pub trait Accounts: Send + Sync {
    /// Adds `bytes` to device `device` if the container's total stays within `limit`; exact
    /// under concurrency with every other process of the container.
    fn reserve(&self, device: usize, bytes: u64, limit: u64) -> Result<(), OverCap>;
    /// Gives back `bytes` previously reserved by this process.
    fn release(&self, device: usize, bytes: u64);
    /// The container's total on `device`.
    fn used(&self, device: usize) -> u64;
}

/// The container's usage part, charged through this process's slot.
pub struct LedgerAccounts {
    pub usage: UsageLedger,
    pub slot: ProcessSlot,
}

impl Accounts for LedgerAccounts {
    #[inline]
    fn reserve(&self, device: usize, bytes: u64, limit: u64) -> Result<(), OverCap> {
        self.usage.reserve(&self.slot, device, bytes, limit)
    }

    #[inline]
    fn release(&self, device: usize, bytes: u64) {
        self.usage.release(&self.slot, device, bytes);
    }

    #[inline]
    fn used(&self, device: usize) -> u64 {
        self.usage.used(device)
    }
}
