//! A host-side copy of a container's usage part, for tools that must survive a hostile
//! container (the node agent's metrics, `hami top`).
//!
//! [`UsageLedger::attach`] maps the file, so a container that truncates its usage part while a
//! host tool reads it would make that tool fault (`SIGBUS`). This reader never maps: it opens
//! without following links and without blocking (a FIFO or a device is refused before any read
//! can wait), reads the bytes once into memory, checks the header the way every part is checked,
//! and decodes the same facts [`UsageLedger::snapshot`] gives from the copy. A truncation is an
//! error; garbage counters are only numbers (every access is bounds-checked, nothing is trusted
//! for a size or an offset). Liveness is the slot lock query on the open descriptor, as in the
//! snapshot: the kernel answers it, the file's contents cannot fake it.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::mem::{offset_of, size_of};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use thiserror::Error;

use super::host_pids;
use super::layout::{
    ComputeCell, ReclaimControl, SPEC, SlotRecord, SlotState, SlotWord, UsageLayout, slot_lock_byte,
};
use super::snapshot::{SlotSnapshot, UsageSnapshot};
use crate::compute::usage_word;
use crate::error::FileError;
use crate::header::{self, HEADER_SIZE, LayoutError, PartKind};
use crate::{MAX_PROCESSES, liveness};

/// A usage part could not be copied.
#[derive(Debug, Error)]
pub enum CopyError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path} is a {found}, not a regular file (refused without reading)")]
    NotARegularFile { path: PathBuf, found: &'static str },
}

/// The compute limiter's counters of one container on one device (`compute::usage_word`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ComputeCounters {
    /// Cumulative busy device time the container's measurer recorded, ns.
    pub measured_ns: u64,
    /// Cumulative time launches waited for budget or yielded to priority, ns.
    pub throttled_ns: u64,
    /// Launches admitted.
    pub launches: u64,
    /// Refill rate in force, parts per million of the device; 0 while none is published.
    pub rate_ppm: u64,
}

/// A copy of a container's usage part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageCopy {
    /// What [`UsageLedger::snapshot`] would say of the same bytes.
    ///
    /// [`UsageLedger::snapshot`]: super::UsageLedger::snapshot
    pub snapshot: UsageSnapshot,
    /// Per device of the container (same order as `snapshot.devices`).
    pub compute: Vec<ComputeCounters>,
}

impl UsageCopy {
    /// Copies and decodes the usage part at `path`. Never maps, never blocks on the file,
    /// never panics on its contents.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, CopyError> {
        let path = path.as_ref();
        let file = open_regular(path)?;
        let image = read_bounded(&file, path)?;
        let n_devices = check_image(&image, path)?;
        Ok(decode(&image, n_devices, &file))
    }
}

/// Opens `path` read-only if it is a regular file, refusing anything else before it is opened
/// (a device's open can have effects) and again on the descriptor (the path may have changed).
fn open_regular(path: &Path) -> Result<File, CopyError> {
    let refuse = |file_type: std::fs::FileType| CopyError::NotARegularFile {
        path: path.to_owned(),
        found: describe(file_type),
    };
    let before = std::fs::symlink_metadata(path).map_err(|err| FileError::io("stat", path, err))?;
    if !before.file_type().is_file() {
        return Err(refuse(before.file_type()));
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|err| FileError::io("open", path, err))?;
    let opened = file
        .metadata()
        .map_err(|err| FileError::io("stat", path, err))?;
    if !opened.file_type().is_file() {
        return Err(refuse(opened.file_type()));
    }
    Ok(file)
}

fn describe(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_symlink() {
        "symbolic link"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

/// Reads at most one byte more than the layout, so a grown file is seen without reading it
/// whole. A regular file's read never blocks; a concurrent truncation only shortens it.
fn read_bounded(file: &File, path: &Path) -> Result<Vec<u8>, CopyError> {
    let mut image = Vec::with_capacity(SPEC.size + 1);
    let limit = (SPEC.size + 1) as u64;
    file.take(limit)
        .read_to_end(&mut image)
        .map_err(|err| FileError::io("read", path, err))?;
    Ok(image)
}

/// Checks the copy like every part is checked (header fields, length, header checksum) and
/// returns the device count.
fn check_image(image: &[u8], path: &Path) -> Result<usize, CopyError> {
    let invalid = |problem| FileError::Invalid {
        path: path.to_owned(),
        kind: PartKind::Usage,
        problem,
    };
    let entries = if image.len() >= HEADER_SIZE {
        Some(header::check_fields(image, &SPEC).map_err(invalid)?)
    } else {
        None
    };
    let found = image.len() as u64;
    let expected = SPEC.size as u64;
    if found < expected {
        return Err(invalid(LayoutError::Truncated { found, expected }).into());
    }
    if found > expected {
        return Err(invalid(LayoutError::Oversized { found, expected }).into());
    }
    header::check_sum(image, &SPEC).map_err(invalid)?;
    match entries {
        Some(count) if count > 0 => Ok(count as usize),
        _ => Err(invalid(LayoutError::BadRecord {
            record: 0,
            field: "device count",
        })
        .into()),
    }
}

/// The `u64` at `offset` of the copy; 0 past its end (never after `check_image`, but a copy is
/// never indexed unchecked).
fn word(image: &[u8], offset: usize) -> u64 {
    image
        .get(offset..offset.saturating_add(8))
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map_or(0, u64::from_ne_bytes)
}

/// The `u32` at `offset` of the copy; 0 past its end.
fn half_word(image: &[u8], offset: usize) -> u32 {
    image
        .get(offset..offset.saturating_add(4))
        .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
        .map_or(0, u32::from_ne_bytes)
}

const WORD: usize = size_of::<AtomicU64>();

fn device_total_at(dev: usize) -> usize {
    offset_of!(UsageLayout, devices) + dev * size_of::<super::DeviceUsage>()
}

fn slot_at(index: usize) -> usize {
    offset_of!(UsageLayout, slots) + index * size_of::<SlotRecord>()
}

fn compute_word_at(dev: usize, name: usize) -> usize {
    offset_of!(UsageLayout, compute)
        + dev * size_of::<ComputeCell>()
        + offset_of!(ComputeCell, words)
        + name * WORD
}

fn control_at(field: usize) -> usize {
    offset_of!(UsageLayout, control) + field
}

fn decode(image: &[u8], n_devices: usize, file: &File) -> UsageCopy {
    let devices = (0..n_devices)
        .map(|dev| {
            word(
                image,
                device_total_at(dev) + offset_of!(super::DeviceUsage, used),
            )
        })
        .collect();
    let slots = (0..MAX_PROCESSES)
        .filter_map(|index| decode_slot(image, n_devices, index, file))
        .collect();
    let compute = (0..n_devices)
        .map(|dev| ComputeCounters {
            measured_ns: word(image, compute_word_at(dev, usage_word::MEASURED_NS)),
            throttled_ns: word(image, compute_word_at(dev, usage_word::THROTTLED_NS)),
            launches: word(image, compute_word_at(dev, usage_word::LAUNCHES)),
            rate_ppm: word(image, compute_word_at(dev, usage_word::RATE_PPM)),
        })
        .collect();
    UsageCopy {
        snapshot: UsageSnapshot {
            devices,
            slots,
            reclaimed_slots: word(
                image,
                control_at(offset_of!(ReclaimControl, reclaimed_slots)),
            ),
            underflows: word(image, control_at(offset_of!(ReclaimControl, underflows))),
            bypasses: word(image, control_at(offset_of!(ReclaimControl, bypasses))),
        },
        compute,
    }
}

/// One slot, left out when it was never used (as in the snapshot).
fn decode_slot(image: &[u8], n_devices: usize, index: usize, file: &File) -> Option<SlotSnapshot> {
    let at = slot_at(index);
    let state = SlotWord::decode(word(image, at + offset_of!(SlotRecord, state)));
    let used: Vec<u64> = (0..n_devices)
        .map(|dev| word(image, at + offset_of!(SlotRecord, used) + dev * WORD))
        .collect();
    let never_used =
        state.state == SlotState::Free && state.generation == 0 && used.iter().all(|&b| b == 0);
    if never_used {
        return None;
    }
    Some(SlotSnapshot {
        index,
        pid: half_word(image, at + offset_of!(SlotRecord, pid)),
        host_pid: host_pids::decode(
            word(image, at + offset_of!(SlotRecord, host_pid)),
            state.generation,
        ),
        generation: state.generation,
        state: state.state,
        alive: liveness::held_by_other(file.as_fd(), slot_lock_byte(index)).ok(),
        used,
    })
}

#[cfg(test)]
mod tests;
