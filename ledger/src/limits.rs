//! The limits part: what one container may use, written once by the shim (or `hami run`)
//! before the container starts and mounted read-only into it.
//!
//! Small and immutable, so it is published with write-then-rename and read with one `read`;
//! the checksum covers the whole file.

use std::mem::{offset_of, size_of};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64};

use thiserror::Error;

use crate::bytes::{get_u32, get_u64, put_u32, put_u64};
use crate::error::FileError;
use crate::file;
use crate::header::{self, Header, LayoutError, PartKind, PartSpec};
use crate::model::{self, ComputePolicy, ContainerLimits, DeviceLimit, InputError, Priority};
use crate::{CONTAINER_ID_LEN, MAX_DEVICES, UUID_LEN, text};

/// `LimitRecord::flags` bit: `memory_limit` holds a cap.
const HAS_MEMORY_LIMIT: u32 = 1;

/// One device's limits.
#[repr(C)]
pub struct LimitRecord {
    pub uuid: [AtomicU64; UUID_LEN / 8],
    pub memory_limit: AtomicU64,
    /// 0 means no cap.
    pub compute_percent: AtomicU32,
    pub policy: AtomicU32,
    pub priority: AtomicU32,
    pub flags: AtomicU32,
    pub reserved: [AtomicU64; 5],
}

/// The limits part as it lies in the file.
#[repr(C)]
pub struct LimitsLayout {
    pub header: Header,
    pub container_id: [AtomicU64; CONTAINER_ID_LEN / 8],
    pub devices: [LimitRecord; MAX_DEVICES],
}

const _: () = assert!(size_of::<LimitRecord>() == 128);
const _: () = assert!(offset_of!(LimitRecord, memory_limit) == 64);
const _: () = assert!(offset_of!(LimitRecord, compute_percent) == 72);
const _: () = assert!(offset_of!(LimitRecord, policy) == 76);
const _: () = assert!(offset_of!(LimitRecord, priority) == 80);
const _: () = assert!(offset_of!(LimitRecord, flags) == 84);
const _: () = assert!(offset_of!(LimitsLayout, container_id) == 64);
const _: () = assert!(offset_of!(LimitsLayout, devices) == 192);
const _: () = assert!(size_of::<LimitsLayout>() == 2240);

const SPEC: PartSpec = PartSpec {
    kind: PartKind::Limits,
    size: size_of::<LimitsLayout>(),
    immutable_prefix: size_of::<LimitsLayout>(),
};

/// Permission bits of the limits part: host writes, the container reads.
const LIMITS_MODE: u32 = 0o644;

/// The limits part cannot be written or read.
#[derive(Debug, Error)]
pub enum LimitsError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("cannot record the container's limits: {0}")]
    Input(#[from] InputError),
}

/// Publishes `limits` at `path` (atomically replacing any previous file).
pub fn write(path: impl AsRef<Path>, limits: &ContainerLimits) -> Result<(), LimitsError> {
    let image = encode(limits)?;
    file::write_atomically(path.as_ref(), &image, LIMITS_MODE)?;
    Ok(())
}

/// Reads and validates the limits part at `path`; device order is the container's device
/// index order.
pub fn read(path: impl AsRef<Path>) -> Result<ContainerLimits, LimitsError> {
    let path = path.as_ref();
    let image = file::read_image(path, &SPEC)?;
    let limits = decode(&image).map_err(|problem| FileError::Invalid {
        path: path.to_owned(),
        kind: PartKind::Limits,
        problem,
    })?;
    Ok(limits)
}

fn record_offset(dev: usize) -> usize {
    offset_of!(LimitsLayout, devices) + dev * size_of::<LimitRecord>()
}

fn encode(limits: &ContainerLimits) -> Result<Vec<u8>, InputError> {
    if limits.devices.len() > MAX_DEVICES {
        return Err(InputError::TooManyDevices {
            count: limits.devices.len(),
            max: MAX_DEVICES,
        });
    }
    model::check_unique(limits.devices.iter().map(|d| d.uuid.as_str()))?;
    let mut image = vec![0u8; SPEC.size];
    // Bounded by MAX_DEVICES above.
    header::encode(&mut image, &SPEC, limits.devices.len() as u32);
    let id_at = offset_of!(LimitsLayout, container_id);
    text::encode(
        &limits.container_id,
        &mut image[id_at..id_at + CONTAINER_ID_LEN],
    )
    .map_err(|problem| InputError::BadContainerId {
        id: limits.container_id.clone(),
        problem,
    })?;
    for (dev, limit) in limits.devices.iter().enumerate() {
        let at = record_offset(dev);
        text::encode(&limit.uuid, &mut image[at..at + UUID_LEN]).map_err(|problem| {
            InputError::BadUuid {
                uuid: limit.uuid.clone(),
                problem,
            }
        })?;
        if let Some(bytes) = limit.memory_limit {
            put_u64(
                &mut image,
                at + offset_of!(LimitRecord, memory_limit),
                bytes,
            );
            put_u32(
                &mut image,
                at + offset_of!(LimitRecord, flags),
                HAS_MEMORY_LIMIT,
            );
        }
        if let Some(percent) = limit.compute_percent {
            if !(1..=100).contains(&percent) {
                return Err(InputError::ComputePercentOutOfRange {
                    uuid: limit.uuid.clone(),
                    value: percent,
                });
            }
            put_u32(
                &mut image,
                at + offset_of!(LimitRecord, compute_percent),
                percent,
            );
        }
        put_u32(
            &mut image,
            at + offset_of!(LimitRecord, policy),
            limit.policy.code(),
        );
        put_u32(
            &mut image,
            at + offset_of!(LimitRecord, priority),
            limit.priority.code(),
        );
    }
    header::seal(&mut image, &SPEC);
    Ok(image)
}

fn decode(image: &[u8]) -> Result<ContainerLimits, LayoutError> {
    let entries = header::check_fields(image, &SPEC)? as usize;
    let id_at = offset_of!(LimitsLayout, container_id);
    let container_id = text::decode(&image[id_at..id_at + CONTAINER_ID_LEN]).map_err(|_| {
        LayoutError::BadRecord {
            record: 0,
            field: "container id",
        }
    })?;
    let devices = (0..entries)
        .map(|dev| {
            let at = record_offset(dev);
            let bad = |field| LayoutError::BadRecord { record: dev, field };
            let uuid = text::decode(&image[at..at + UUID_LEN]).map_err(|_| bad("uuid"))?;
            let flags = get_u32(image, at + offset_of!(LimitRecord, flags));
            if flags & !HAS_MEMORY_LIMIT != 0 {
                return Err(bad("flags"));
            }
            let memory = get_u64(image, at + offset_of!(LimitRecord, memory_limit));
            let memory_limit = match flags & HAS_MEMORY_LIMIT {
                0 if memory != 0 => return Err(bad("memory limit")),
                0 => None,
                _ => Some(memory),
            };
            let compute_percent =
                match get_u32(image, at + offset_of!(LimitRecord, compute_percent)) {
                    0 => None,
                    p @ 1..=100 => Some(p),
                    _ => return Err(bad("compute percent")),
                };
            let policy =
                ComputePolicy::from_code(get_u32(image, at + offset_of!(LimitRecord, policy)))
                    .ok_or(bad("compute policy"))?;
            let priority =
                Priority::from_code(get_u32(image, at + offset_of!(LimitRecord, priority)))
                    .ok_or(bad("priority"))?;
            Ok(DeviceLimit {
                uuid,
                memory_limit,
                compute_percent,
                policy,
                priority,
            })
        })
        .collect::<Result<Vec<_>, LayoutError>>()?;
    if let Some(record) = model::first_duplicate(devices.iter().map(|d| d.uuid.as_str())) {
        return Err(LayoutError::BadRecord {
            record,
            field: "uuid (duplicate)",
        });
    }
    Ok(ContainerLimits {
        container_id,
        devices,
    })
}
