//! The per-node shared-memory ledger of HAMi-rs.
//!
//! Three kinds of file ("parts") live under one host directory (see [`paths`]):
//! the node part ([`NodeLedger`]: devices and per-device contention cells, written by host
//! components only), and per container a limits part ([`limits`], written once by the shim)
//! and a usage part ([`UsageLedger`], written by the container's processes through a shared
//! mapping). Every part starts with a versioned [`header`] and is refused with a typed error
//! naming the file when it is truncated, corrupt or of another version or kind.
//!
//! The usage part is the admission authority for device memory: [`UsageLedger::reserve`] is a
//! lock-free compare-and-swap on the container's per-device total, and dead processes' bytes
//! are returned by [`UsageLedger::reclaim_dead`]. `docs/ledger.md` gives the protocol and the
//! crash-safety argument.

mod bytes;
pub mod compute;
mod error;
mod file;
pub mod header;
pub mod limits;
mod liveness;
mod model;
pub mod node;
pub mod owner;
pub mod paths;
mod text;
pub mod usage;

pub use error::FileError;
pub use model::{
    ComputePolicy, ContainerLimits, DeviceInfo, DeviceLimit, InputError, Priority, Vendor,
};
pub use node::{DeviceContention, NodeError, NodeLedger};
pub use usage::copy::{ComputeCounters, CopyError, UsageCopy};
pub use usage::{
    ComputeCell, LiveSlot, OverCap, ProcessSlot, ReclaimError, ReclaimReport, RegisterError,
    SlotSnapshot, SlotState, UsageError, UsageLedger, UsageSnapshot,
};

/// Devices one node part (and one container) can describe.
pub const MAX_DEVICES: usize = 16;
/// Process slots in one container's usage part.
pub const MAX_PROCESSES: usize = 256;
/// Bytes of a device UUID field: ASCII, NUL-padded (e.g. `GPU-8f2c...`).
pub const UUID_LEN: usize = 64;
/// Bytes of a container id field: ASCII, NUL-padded.
pub const CONTAINER_ID_LEN: usize = 128;
