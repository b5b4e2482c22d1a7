//! The on-disk layout of the shared device state: `#[repr(C)]` records of atomics, mapped
//! `MAP_SHARED` by every process that uses the simulated device.
//!
//! Sizes and offsets are checked at compile time; there is no `usize` and no libc type in
//! the layout, so every build of the library reads the same bytes the same way.

use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::config::MAX_DEVICES;

/// `b"HAMIFAKE"` read little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"HAMIFAKE");
/// Bumped on every incompatible change of the records below.
pub const LAYOUT_VERSION: u32 = 2;
/// Most processes attached with a context at the same time.
pub const MAX_PROCESSES: usize = 64;
/// Length of one busy-time bucket: a window of NVML utilisation is exact to 1 ms.
pub const BUCKET_NS: u64 = 1_000_000;
/// Buckets kept per device and per process: 4.096 s of history.
pub const BUCKETS: usize = 4096;
/// Tickets of the device lock whose owner is remembered (for dead-waiter recovery).
pub const TICKET_RING: usize = 256;

/// Busy nanoseconds accumulated during one bucket (`epoch` = start time / [`BUCKET_NS`]).
#[repr(C)]
pub struct Bucket {
    pub epoch: AtomicU64,
    pub busy_ns: AtomicU64,
}

/// The file header, written once by the creating process.
#[repr(C)]
pub struct Header {
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub device_count: AtomicU32,
    pub size: AtomicU64,
    pub context_memory: AtomicU64,
}

/// One device: its configuration, its memory in use, its execution lock and its busy history.
#[repr(C)]
pub struct DeviceRecord {
    pub total_memory: AtomicU64,
    pub used_memory: AtomicU64,
    pub sms: AtomicU32,
    /// Nonzero while the device is lost: NVML answers `NVML_ERROR_GPU_IS_LOST` for it. Was
    /// padding before, so a state file of an older build reads as every device healthy.
    pub lost: AtomicU32,
    pub uuid: [AtomicU32; 4],
    /// Ticket lock: the next ticket to hand out.
    pub next_ticket: AtomicU32,
    /// Ticket lock: the ticket allowed to run (futex word).
    pub serving: AtomicU32,
    /// Processes sleeping on `serving`.
    pub waiters: AtomicU32,
    /// Slot index + 1 of the process executing a kernel, 0 when idle.
    pub holder: AtomicU32,
    /// `ticket << 32 | generation << 8 | slot + 1` of recent tickets, so a stalled queue can find a dead owner.
    pub ticket_owner: [AtomicU64; TICKET_RING],
    /// Total busy nanoseconds since the state was created.
    pub busy_total_ns: AtomicU64,
    pub busy: [Bucket; BUCKETS],
}

/// One process's use of one device.
#[repr(C)]
pub struct ProcessDevice {
    /// Device memory this process holds, contexts included.
    pub memory: AtomicU64,
    /// Live contexts of this process on the device (it is a "compute process" while > 0).
    pub contexts: AtomicU32,
    pub _pad: u32,
    pub busy_total_ns: AtomicU64,
    /// Buckets older than this epoch belong to a previous owner of the slot.
    pub since_epoch: AtomicU64,
    pub busy: [Bucket; BUCKETS],
}

/// One process slot; `pid` 0 means free. Liveness is the `flock` on the slot's lock file.
#[repr(C)]
pub struct ProcessRecord {
    pub pid: AtomicU32,
    /// Bumped at every claim, so a ticket taken by a previous owner of the slot is told apart.
    pub generation: AtomicU32,
    /// 1 once the owner is gone and its memory given back; its busy history stays readable
    /// (NVML still reports recently exited processes) until the slot is claimed again.
    pub exited: AtomicU32,
    pub _pad: u32,
    pub devices: [ProcessDevice; MAX_DEVICES],
}

/// The whole file.
#[repr(C)]
pub struct StateFile {
    pub header: Header,
    pub devices: [DeviceRecord; MAX_DEVICES],
    pub processes: [ProcessRecord; MAX_PROCESSES],
}

/// Size of the state file in bytes.
pub const STATE_SIZE: usize = size_of::<StateFile>();

const _: () = {
    assert!(size_of::<Bucket>() == 16);
    assert!(size_of::<Header>() == 32);
    assert!(size_of::<DeviceRecord>() == 56 + 8 * TICKET_RING + 8 + 16 * BUCKETS);
    assert!(size_of::<ProcessDevice>() == 32 + 16 * BUCKETS);
    assert!(std::mem::offset_of!(StateFile, devices) == 32);
    assert!(std::mem::offset_of!(DeviceRecord, serving) == 44);
    assert!(std::mem::offset_of!(DeviceRecord, lost) == 20);
    assert!(std::mem::offset_of!(DeviceRecord, ticket_owner) == 56);
    assert!(STATE_SIZE.is_multiple_of(8));
};
