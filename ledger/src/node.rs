//! The node part: the devices of the node and per-device contention cells.
//!
//! Written only by host components; containers get it mounted read-only. Device records are
//! immutable after creation (checksummed); the contention cells are live words that the compute
//! limiter defines and host tools update through a writable mapping.

use std::fs::OpenOptions;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use thiserror::Error;

use crate::bytes::{get_u32, get_u64, put_u32, put_u64};
use crate::error::FileError;
use crate::file::{self, Mapping};
use crate::header::{self, Header, LayoutError, PartKind, PartSpec};
use crate::model::{self, DeviceInfo, InputError, Vendor};
use crate::{MAX_DEVICES, UUID_LEN, text};

/// One device of the node.
#[repr(C)]
pub struct DeviceRecord {
    /// NUL-padded ASCII UUID.
    pub uuid: [AtomicU64; UUID_LEN / 8],
    pub index: AtomicU32,
    pub vendor: AtomicU32,
    pub compute_units: AtomicU32,
    pub reserved0: AtomicU32,
    pub total_memory: AtomicU64,
    pub reserved: [AtomicU64; 5],
}

/// Per-device contention and priority state of the compute limiter: the ledger only stores
/// these words, the limiter defines them.
#[repr(C)]
pub struct DeviceContention {
    pub words: [AtomicU64; 16],
}

/// The node part as it lies in the file.
#[repr(C)]
pub struct NodeLayout {
    pub header: Header,
    pub devices: [DeviceRecord; MAX_DEVICES],
    pub contention: [DeviceContention; MAX_DEVICES],
}

const _: () = assert!(size_of::<DeviceRecord>() == 128);
const _: () = assert!(offset_of!(DeviceRecord, index) == 64);
const _: () = assert!(offset_of!(DeviceRecord, vendor) == 68);
const _: () = assert!(offset_of!(DeviceRecord, compute_units) == 72);
const _: () = assert!(offset_of!(DeviceRecord, total_memory) == 80);
const _: () = assert!(size_of::<DeviceContention>() == 128);
const _: () = assert!(offset_of!(NodeLayout, devices) == 64);
const _: () = assert!(offset_of!(NodeLayout, contention) == 64 + 16 * 128);
const _: () = assert!(size_of::<NodeLayout>() == 4160);

const SPEC: PartSpec = PartSpec {
    kind: PartKind::Node,
    size: size_of::<NodeLayout>(),
    immutable_prefix: offset_of!(NodeLayout, contention),
};

/// Permission bits of the node part: host writes, everyone reads.
const NODE_MODE: u32 = 0o644;

/// The node part cannot be created, opened or used as asked.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("cannot describe the node's devices: {0}")]
    Input(#[from] InputError),
    #[error("{path} is open read-only; contention cells are written by host tools only")]
    ReadOnly { path: PathBuf },
}

/// An open node part.
pub struct NodeLedger {
    path: PathBuf,
    devices: Vec<DeviceInfo>,
    map: Mapping,
    writable: bool,
}

impl NodeLedger {
    /// Creates the node part at `path`, or atomically replaces it, and opens it writable.
    ///
    /// Processes that mapped the old file keep the old contents; host components create the
    /// node part once per boot, before any container starts.
    pub fn create(path: impl AsRef<Path>, devices: &[DeviceInfo]) -> Result<Self, NodeError> {
        let path = path.as_ref();
        let image = encode(devices)?;
        file::write_atomically(path, &image, NODE_MODE)?;
        Self::open_mode(path, true)
    }

    /// Opens the node part read-only, after validating it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NodeError> {
        Self::open_mode(path.as_ref(), false)
    }

    /// Opens the node part read-write (host tools: the limiter's contention cells).
    pub fn open_writable(path: impl AsRef<Path>) -> Result<Self, NodeError> {
        Self::open_mode(path.as_ref(), true)
    }

    fn open_mode(path: &Path, writable: bool) -> Result<Self, NodeError> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|err| FileError::io("open", path, err))?;
        let image = file::read_checked(&file, path, &SPEC, SPEC.size)?;
        let devices = decode(&image).map_err(|problem| FileError::Invalid {
            path: path.to_owned(),
            kind: PartKind::Node,
            problem,
        })?;
        let map = Mapping::new(&file, path, SPEC.size, writable)?;
        Ok(Self {
            path: path.to_owned(),
            devices,
            map,
            writable,
        })
    }

    /// The devices, in the order they were recorded.
    pub fn devices(&self) -> Vec<DeviceInfo> {
        self.devices.clone()
    }

    /// Position of the device with `uuid` in [`Self::devices`].
    pub fn device_by_uuid(&self, uuid: &str) -> Option<usize> {
        self.devices.iter().position(|d| d.uuid == uuid)
    }

    /// Word `word` of device `dev`'s contention cell (`None` when out of range).
    pub fn contention_word(&self, dev: usize, word: usize) -> Option<u64> {
        if dev >= self.devices.len() {
            return None;
        }
        let cell = &self.layout().contention[dev];
        cell.words.get(word).map(|w| w.load(Ordering::Acquire))
    }

    /// Device `dev`'s contention cell for writing; only on a part opened writable.
    pub fn contention_cell(&self, dev: usize) -> Result<Option<&DeviceContention>, NodeError> {
        if !self.writable {
            return Err(NodeError::ReadOnly {
                path: self.path.clone(),
            });
        }
        Ok(self.layout().contention[..self.devices.len()].get(dev))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn layout(&self) -> &NodeLayout {
        // SAFETY: the mapping is exactly `size_of::<NodeLayout>()` bytes (checked before
        // mapping), page-aligned (stricter than the layout's 8-byte alignment), lives as long
        // as `self`, and `NodeLayout` holds only atomics, for which every bit pattern is valid
        // and shared mutation is allowed. On a read-only mapping only loads are issued
        // (`contention_cell` refuses read-only parts).
        unsafe { self.map.base().cast::<NodeLayout>().as_ref() }
    }
}

fn record_offset(dev: usize) -> usize {
    offset_of!(NodeLayout, devices) + dev * size_of::<DeviceRecord>()
}

fn encode(devices: &[DeviceInfo]) -> Result<Vec<u8>, InputError> {
    if devices.len() > MAX_DEVICES {
        return Err(InputError::TooManyDevices {
            count: devices.len(),
            max: MAX_DEVICES,
        });
    }
    model::check_unique(devices.iter().map(|d| d.uuid.as_str()))?;
    let mut image = vec![0u8; SPEC.size];
    // Bounded by MAX_DEVICES above.
    header::encode(&mut image, &SPEC, devices.len() as u32);
    for (dev, info) in devices.iter().enumerate() {
        let at = record_offset(dev);
        text::encode(&info.uuid, &mut image[at..at + UUID_LEN]).map_err(|problem| {
            InputError::BadUuid {
                uuid: info.uuid.clone(),
                problem,
            }
        })?;
        put_u32(&mut image, at + offset_of!(DeviceRecord, index), info.index);
        put_u32(
            &mut image,
            at + offset_of!(DeviceRecord, vendor),
            info.vendor.code(),
        );
        put_u32(
            &mut image,
            at + offset_of!(DeviceRecord, compute_units),
            info.compute_units,
        );
        put_u64(
            &mut image,
            at + offset_of!(DeviceRecord, total_memory),
            info.total_memory,
        );
    }
    header::seal(&mut image, &SPEC);
    Ok(image)
}

fn decode(image: &[u8]) -> Result<Vec<DeviceInfo>, LayoutError> {
    let entries = header::check_fields(image, &SPEC)? as usize;
    let devices = (0..entries)
        .map(|dev| {
            let at = record_offset(dev);
            let bad = |field| LayoutError::BadRecord { record: dev, field };
            let uuid = text::decode(&image[at..at + UUID_LEN]).map_err(|_| bad("uuid"))?;
            let vendor = Vendor::from_code(get_u32(image, at + offset_of!(DeviceRecord, vendor)))
                .ok_or(bad("vendor"))?;
            Ok(DeviceInfo {
                uuid,
                index: get_u32(image, at + offset_of!(DeviceRecord, index)),
                vendor,
                total_memory: get_u64(image, at + offset_of!(DeviceRecord, total_memory)),
                compute_units: get_u32(image, at + offset_of!(DeviceRecord, compute_units)),
            })
        })
        .collect::<Result<Vec<_>, LayoutError>>()?;
    if let Some(record) = model::first_duplicate(devices.iter().map(|d| d.uuid.as_str())) {
        return Err(LayoutError::BadRecord {
            record,
            field: "uuid (duplicate)",
        });
    }
    Ok(devices)
}
