//! The typed entry-point tables of every vendor driver API the project hooks or simulates.
//!
//! Each vendor module holds the ABI types and result codes of the real headers and one
//! callback macro that lists every entry point once, with its exact `extern "C"` signature.
//! The interception library generates its wrappers from that list and the simulated devices
//! check each of their exports against it, so one table is the single source of truth
//! (HAMi-core keeps four hand-synchronised lists instead).

pub mod cuda;
pub mod nvml;
mod proc_address;

pub use proc_address::{ProcStatus, resolve};
