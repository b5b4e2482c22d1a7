//! The kubelet device plugin (API v1beta1 over unix sockets): advertises every device of the
//! node as `shares_per_device` shares of `nvidia.com/gpu` (`<uuid>::<n>`), reports device health
//! as NVML sees it, prefers shares of distinct devices, and answers `Allocate` with the shares
//! kubelet chose (the real device decision reaches the shim through pod annotations).
//! Re-registers after a kubelet restart. User documentation: `docs/device-plugin.md`.
//!
//! ```no_run
//! # async fn agent(devices: Vec<hami_ledger::DeviceInfo>) -> Result<(), Box<dyn std::error::Error>> {
//! use hami_node::device_plugin::{self, DevicePluginConfig, NvmlProbe};
//!
//! let config = DevicePluginConfig::default();
//! let (sender, health) = device_plugin::health::channel();
//! let probe = NvmlProbe::open(hami_node::discovery::NVML_LIBRARY.as_ref())?;
//! let uuids = devices.iter().map(|d| d.uuid.clone()).collect();
//! device_plugin::health::spawn_poller(probe, uuids, device_plugin::health::DEFAULT_POLL_INTERVAL, sender)?;
//! let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! device_plugin::run(config, devices, health, async { let _ = stopped.await; }).await?;
//! # Ok(()) }
//! ```

mod allocate;
pub mod api;
mod config;
pub mod health;
mod lifecycle;
mod nvml_probe;
mod preferred;
mod registration;
mod service;
mod shares;
pub mod socket;
pub mod topology;

pub use allocate::{AllocateError, SHARES_ENV};
pub use config::{
    ConfigError, DEFAULT_ENDPOINT, DEFAULT_PLUGIN_DIR, DEFAULT_SHARES_PER_DEVICE,
    DevicePluginConfig, MAX_SHARES_PER_DEVICE,
};
pub use health::{HealthProbe, HealthReport};
pub use lifecycle::{DevicePluginError, WATCH_INTERVAL, run};
pub use nvml_probe::{NvmlProbe, NvmlProbeError};
pub use registration::RegistrationError;
pub use shares::{InventoryError, MAX_DEVICE_ID_LEN, SHARE_SEPARATOR};
