//! Node-side pieces of HAMi-rs shared by the host tools (`hami run`, the shim, the node agent):
//! finding the node's devices and recording them in the node part of the ledger.

pub mod agent;
pub mod backstop;
pub mod device_plugin;
pub mod discovery;
pub mod janitor;
pub mod metrics;
pub mod nvml_processes;
pub mod processes;
pub mod reclaimer;
pub mod view;

pub use discovery::{DiscoveredDevice, DiscoveryError, discover_nvidia, ensure_node_ledger};
