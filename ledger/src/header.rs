//! The header every ledger file starts with, and what can be wrong with a file.
//!
//! `magic` tells a ledger file from anything else, `layout_version` from an older or newer
//! build, `part_kind` a node file from a limits or usage file, `total_size` the layout the
//! writer used. `checksum` covers the immutable bytes of the part (the whole header, plus the
//! records of node and limits parts), so a flipped byte is refused rather than believed.

use std::fmt;
use std::mem::{offset_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64};

use thiserror::Error;

use crate::bytes::{checksum, get_u32, get_u64, put_u32, put_u64};

/// `b"HAMILDGR"` read as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"HAMILDGR");
/// Bumped on any change of any part's layout; readers accept only their own version.
pub const LAYOUT_VERSION: u32 = 1;
/// Bytes of [`Header`].
pub const HEADER_SIZE: usize = size_of::<Header>();

/// The first 64 bytes of every part.
#[repr(C)]
pub struct Header {
    pub magic: AtomicU64,
    pub layout_version: AtomicU32,
    pub part_kind: AtomicU32,
    pub total_size: AtomicU64,
    /// Devices described by the part (node and limits: records in use; usage: devices counted).
    pub entries: AtomicU32,
    pub flags: AtomicU32,
    pub checksum: AtomicU64,
    pub reserved: [AtomicU64; 3],
}

const _: () = assert!(size_of::<Header>() == 64);
const _: () = assert!(offset_of!(Header, magic) == 0);
const _: () = assert!(offset_of!(Header, layout_version) == 8);
const _: () = assert!(offset_of!(Header, part_kind) == 12);
const _: () = assert!(offset_of!(Header, total_size) == 16);
const _: () = assert!(offset_of!(Header, entries) == 24);
const _: () = assert!(offset_of!(Header, flags) == 28);
const _: () = assert!(offset_of!(Header, checksum) == 32);

/// Which part a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum PartKind {
    Node = 1,
    Limits = 2,
    Usage = 3,
}

impl PartKind {
    fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(Self::Node),
            2 => Some(Self::Limits),
            3 => Some(Self::Usage),
            _ => None,
        }
    }
}

impl fmt::Display for PartKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Node => "node",
            Self::Limits => "limits",
            Self::Usage => "usage",
        })
    }
}

/// What a part's file must look like: its kind, its exact size, and how many leading bytes
/// never change after creation (the checksummed prefix).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PartSpec {
    pub kind: PartKind,
    pub size: usize,
    pub immutable_prefix: usize,
}

/// Why a file is not a valid part of the expected kind.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LayoutError {
    #[error("file is {found} bytes, shorter than the {expected}-byte layout (truncated)")]
    Truncated { found: u64, expected: u64 },
    #[error("file is {found} bytes, longer than the {expected}-byte layout")]
    Oversized { found: u64, expected: u64 },
    #[error("bad magic {found:#018x} (not a hami ledger file)")]
    BadMagic { found: u64 },
    #[error("layout version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("part kind code {found} where a {expected} part was expected")]
    WrongKind { found: u32, expected: PartKind },
    #[error("header records a {found}-byte layout, this build's {kind} layout is {expected} bytes")]
    SizeMismatch {
        found: u64,
        expected: u64,
        kind: PartKind,
    },
    #[error("checksum mismatch: stored {stored:#018x}, computed {computed:#018x} (corrupt file)")]
    ChecksumMismatch { stored: u64, computed: u64 },
    #[error("header counts {found} devices, at most {max} fit")]
    TooManyEntries { found: u32, max: usize },
    #[error("record {record}: invalid {field}")]
    BadRecord { record: usize, field: &'static str },
}

/// Writes a complete header for `spec` into the start of `image` (checksum left zero).
pub(crate) fn encode(image: &mut [u8], spec: &PartSpec, entries: u32) {
    put_u64(image, offset_of!(Header, magic), MAGIC);
    put_u32(image, offset_of!(Header, layout_version), LAYOUT_VERSION);
    put_u32(image, offset_of!(Header, part_kind), spec.kind as u32);
    put_u64(image, offset_of!(Header, total_size), spec.size as u64);
    put_u32(image, offset_of!(Header, entries), entries);
}

/// Stores the checksum of the immutable prefix of a fully built `image`.
pub(crate) fn seal(image: &mut [u8], spec: &PartSpec) {
    let sum = checksum(
        &image[..spec.immutable_prefix],
        offset_of!(Header, checksum),
    );
    put_u64(image, offset_of!(Header, checksum), sum);
}

/// Checks the header fields of `prefix` (at least [`HEADER_SIZE`] bytes of the file).
/// Returns the entry count.
pub(crate) fn check_fields(prefix: &[u8], spec: &PartSpec) -> Result<u32, LayoutError> {
    let magic = get_u64(prefix, offset_of!(Header, magic));
    if magic != MAGIC {
        return Err(LayoutError::BadMagic { found: magic });
    }
    let version = get_u32(prefix, offset_of!(Header, layout_version));
    if version != LAYOUT_VERSION {
        return Err(LayoutError::UnsupportedVersion {
            found: version,
            supported: LAYOUT_VERSION,
        });
    }
    let kind = get_u32(prefix, offset_of!(Header, part_kind));
    if PartKind::from_code(kind) != Some(spec.kind) {
        return Err(LayoutError::WrongKind {
            found: kind,
            expected: spec.kind,
        });
    }
    let size = get_u64(prefix, offset_of!(Header, total_size));
    if size != spec.size as u64 {
        return Err(LayoutError::SizeMismatch {
            found: size,
            expected: spec.size as u64,
            kind: spec.kind,
        });
    }
    let entries = get_u32(prefix, offset_of!(Header, entries));
    if entries as usize > crate::MAX_DEVICES {
        return Err(LayoutError::TooManyEntries {
            found: entries,
            max: crate::MAX_DEVICES,
        });
    }
    Ok(entries)
}

/// Checks the checksum of the immutable prefix of `image` (at least `spec.immutable_prefix`
/// bytes).
pub(crate) fn check_sum(image: &[u8], spec: &PartSpec) -> Result<(), LayoutError> {
    let stored = get_u64(image, offset_of!(Header, checksum));
    let computed = checksum(
        &image[..spec.immutable_prefix],
        offset_of!(Header, checksum),
    );
    if stored == computed {
        Ok(())
    } else {
        Err(LayoutError::ChecksumMismatch { stored, computed })
    }
}
