//! The usage part: a container's per-device totals and process slots, mapped `MAP_SHARED`
//! read-write by every process of the container.
//!
//! [`UsageLedger::reserve`]/[`UsageLedger::release`] are the hot path (no syscall, lock or
//! allocation); [`UsageLedger::register`] claims a slot whose liveness is an OFD lock;
//! [`UsageLedger::reclaim_dead`] returns dead processes' bytes exactly once.

pub mod copy;
mod host_pids;
mod layout;
mod reclaim;
mod reserve;
mod slot;
mod snapshot;
#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

pub use self::host_pids::LiveSlot;
pub use self::layout::{
    ComputeCell, DeviceUsage, ReclaimControl, SlotRecord, SlotState, UsageLayout,
};
pub use self::reclaim::{ReclaimError, ReclaimReport};
pub use self::reserve::OverCap;
pub use self::slot::{ProcessSlot, RegisterError};
pub use self::snapshot::{SlotSnapshot, UsageSnapshot};
use crate::MAX_DEVICES;
use crate::error::FileError;
use crate::file::{self, Mapping};
use crate::header::{self, PartKind};
use crate::model::InputError;

/// Permission bits of the usage part: the container's processes (any uid) write it.
const USAGE_MODE: u32 = 0o666;

/// The usage part cannot be created or attached.
#[derive(Debug, Error)]
pub enum UsageError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("cannot create a usage ledger: {0}")]
    Input(#[from] InputError),
}

/// An attached usage part.
pub struct UsageLedger {
    path: PathBuf,
    /// The attach descriptor. It never holds a lock: slots and reclaim passes lock through
    /// descriptions of their own, so a forked child sharing this one changes nothing.
    file: File,
    map: Mapping,
    n_devices: usize,
}

impl UsageLedger {
    /// Creates a zeroed usage part for `n_devices` devices at `path` (atomically replacing any
    /// previous file). Host side, before the container starts.
    pub fn create(path: impl AsRef<Path>, n_devices: usize) -> Result<(), UsageError> {
        if !(1..=MAX_DEVICES).contains(&n_devices) {
            return Err(InputError::DeviceCountOutOfRange {
                count: n_devices,
                max: MAX_DEVICES,
            }
            .into());
        }
        let mut image = vec![0u8; layout::SPEC.size];
        // Bounded by MAX_DEVICES above.
        header::encode(&mut image, &layout::SPEC, n_devices as u32);
        header::seal(&mut image, &layout::SPEC);
        file::write_atomically(path.as_ref(), &image, USAGE_MODE)?;
        Ok(())
    }

    /// Maps the usage part at `path` read-write after validating its header and size.
    pub fn attach(path: impl AsRef<Path>) -> Result<Self, UsageError> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|err| FileError::io("open", path, err))?;
        let spec = &layout::SPEC;
        let prefix = file::read_checked(&file, path, spec, spec.immutable_prefix)?;
        let entries =
            header::check_fields(&prefix, spec).map_err(|problem| FileError::Invalid {
                path: path.to_owned(),
                kind: PartKind::Usage,
                problem,
            })?;
        if entries == 0 {
            return Err(FileError::Invalid {
                path: path.to_owned(),
                kind: PartKind::Usage,
                problem: header::LayoutError::BadRecord {
                    record: 0,
                    field: "device count",
                },
            }
            .into());
        }
        let map = Mapping::new(&file, path, spec.size, true)?;
        Ok(Self {
            path: path.to_owned(),
            file,
            map,
            n_devices: entries as usize,
        })
    }

    /// Devices this container's usage covers.
    pub fn n_devices(&self) -> usize {
        self.n_devices
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The container's total on device `dev` (0 for a device outside the ledger).
    pub fn used(&self, dev: usize) -> u64 {
        self.layout()
            .devices
            .get(dev)
            .filter(|_| dev < self.n_devices)
            .map_or(0, |d| d.used.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Device `dev`'s compute-limiter words (`None` for a device outside the ledger).
    pub fn compute_cell(&self, dev: usize) -> Option<&ComputeCell> {
        self.layout().compute[..self.n_devices].get(dev)
    }

    fn layout(&self) -> &UsageLayout {
        // SAFETY: the mapping is exactly `size_of::<UsageLayout>()` bytes (file length checked
        // before mapping), page-aligned (stricter than the layout's 8-byte alignment), mapped
        // read-write, and lives as long as `self`. `UsageLayout` holds only atomics: every bit
        // pattern is valid and concurrent mutation by other processes is what they are for.
        unsafe { self.map.base().cast::<UsageLayout>().as_ref() }
    }
}
