//! What the device plugin advertises and where it listens.

use std::collections::BTreeMap;
use std::path::PathBuf;

use thiserror::Error;

/// The plugin directory of kubelet on every node.
pub const DEFAULT_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";
/// The plugin's socket file name inside the plugin directory.
pub const DEFAULT_ENDPOINT: &str = "hami-nvidia.sock";
/// Shares each device is advertised as (HAMi's `deviceSplitCount`).
pub const DEFAULT_SHARES_PER_DEVICE: u32 = 10;
/// More shares than this would only slow kubelet down: nobody runs 1000 containers on one device.
pub const MAX_SHARES_PER_DEVICE: u32 = 1000;

/// Settings of the kubelet device plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevicePluginConfig {
    /// Kubelet's device plugin directory (holds `kubelet.sock` and our socket).
    pub plugin_dir: PathBuf,
    /// Our socket's file name inside `plugin_dir` (kubelet wants a bare file name).
    pub endpoint: String,
    /// How many containers may share one device: each device is listed as this many shares.
    pub shares_per_device: u32,
    /// The extended resource name pods ask for.
    pub resource_name: String,
    /// NUMA node of each device by UUID, where known (see [`super::topology`]).
    pub numa_nodes: BTreeMap<String, i64>,
}

impl Default for DevicePluginConfig {
    fn default() -> Self {
        Self {
            plugin_dir: PathBuf::from(DEFAULT_PLUGIN_DIR),
            endpoint: DEFAULT_ENDPOINT.to_string(),
            shares_per_device: DEFAULT_SHARES_PER_DEVICE,
            resource_name: hami_request::keys::resource::GPU.to_string(),
            numa_nodes: BTreeMap::new(),
        }
    }
}

/// A setting the plugin cannot run with.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "device plugin endpoint {0:?} is not a socket file name: use a bare name such as `{DEFAULT_ENDPOINT}` (no `/`, not `kubelet.sock`)"
    )]
    Endpoint(String),
    #[error("shares per device must be 1 to {MAX_SHARES_PER_DEVICE}, got {0}")]
    Shares(u32),
    #[error(
        "resource name {0:?} is not an extended resource name: use `<domain>/<name>` outside kubernetes.io, e.g. `nvidia.com/gpu`"
    )]
    ResourceName(String),
}

impl DevicePluginConfig {
    /// Checks the settings kubelet or the share IDs depend on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let endpoint = self.endpoint.as_str();
        if endpoint.is_empty()
            || endpoint.contains('/')
            || endpoint == "."
            || endpoint == ".."
            || endpoint == super::api::KUBELET_SOCKET
        {
            return Err(ConfigError::Endpoint(self.endpoint.clone()));
        }
        if !(1..=MAX_SHARES_PER_DEVICE).contains(&self.shares_per_device) {
            return Err(ConfigError::Shares(self.shares_per_device));
        }
        let extended = self
            .resource_name
            .split_once('/')
            .is_some_and(|(domain, name)| {
                !domain.is_empty()
                    && !name.is_empty()
                    && !name.contains('/')
                    && domain != "kubernetes.io"
                    && !domain.ends_with(".kubernetes.io")
            });
        if !extended {
            return Err(ConfigError::ResourceName(self.resource_name.clone()));
        }
        Ok(())
    }

    /// The plugin's socket path.
    pub fn socket_path(&self) -> PathBuf {
        self.plugin_dir.join(&self.endpoint)
    }

    /// Kubelet's registration socket path.
    pub fn kubelet_socket_path(&self) -> PathBuf {
        self.plugin_dir.join(super::api::KUBELET_SOCKET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_advertises_hami_gpu_shares_in_kubelets_directory() {
        let config = DevicePluginConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.resource_name, "nvidia.com/gpu");
        assert_eq!(
            config.socket_path(),
            PathBuf::from("/var/lib/kubelet/device-plugins/hami-nvidia.sock")
        );
        assert_eq!(
            config.kubelet_socket_path(),
            PathBuf::from("/var/lib/kubelet/device-plugins/kubelet.sock")
        );
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        for endpoint in ["", "a/b.sock", "kubelet.sock", ".."] {
            let config = DevicePluginConfig {
                endpoint: endpoint.to_string(),
                ..DevicePluginConfig::default()
            };
            assert_eq!(
                config.validate(),
                Err(ConfigError::Endpoint(endpoint.to_string()))
            );
        }
        for shares in [0, MAX_SHARES_PER_DEVICE + 1] {
            let config = DevicePluginConfig {
                shares_per_device: shares,
                ..DevicePluginConfig::default()
            };
            assert_eq!(config.validate(), Err(ConfigError::Shares(shares)));
        }
        for name in ["gpu", "kubernetes.io/gpu", "/gpu", "nvidia.com/", "a/b/c"] {
            let config = DevicePluginConfig {
                resource_name: name.to_string(),
                ..DevicePluginConfig::default()
            };
            assert_eq!(
                config.validate(),
                Err(ConfigError::ResourceName(name.to_string()))
            );
        }
    }
}
