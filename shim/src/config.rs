//! The shim's node configuration, `/etc/hami/shim.toml`.
//!
//! Every key is optional; a missing file means all defaults. An unreadable or malformed file is an
//! error at container creation, never silently replaced by defaults.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use hami_request::knobs::PlacementPolicy;

/// Where the configuration is read from unless `HAMI_SHIM_CONFIG` names another file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/hami/shim.toml";
/// Environment variable (of containerd, inherited by the shim) that overrides the config path.
pub const CONFIG_PATH_ENV: &str = "HAMI_SHIM_CONFIG";

/// The shim's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShimConfig {
    /// Host directory of the ledger (`node.ledger`, `containers/<id>/...`).
    pub ledger_dir: PathBuf,
    /// Host path of `libhami.so`, bind-mounted read-only into capped containers.
    pub library_path: PathBuf,
    /// The stock shim the proxy drives.
    pub backend_shim: PathBuf,
    /// OCI runtime the backend shim runs (`runc`, or `nvidia-container-runtime` on GPU nodes).
    pub runtime_binary: String,
    /// Use the systemd cgroup driver (nodes whose kubelet uses `cgroupDriver: systemd`).
    pub systemd_cgroup: bool,
    /// `error`, `warn`, `info`, `debug` or `trace`; goes to containerd's log.
    pub log_level: String,
    /// Node-local placement when the scheduler did not decide: `binpack` or `spread`.
    pub placement_policy: PlacementPolicyName,
}

/// The placement policy as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlacementPolicyName {
    #[default]
    Binpack,
    Spread,
}

impl From<PlacementPolicyName> for PlacementPolicy {
    fn from(name: PlacementPolicyName) -> Self {
        match name {
            PlacementPolicyName::Binpack => PlacementPolicy::Binpack,
            PlacementPolicyName::Spread => PlacementPolicy::Spread,
        }
    }
}

impl Default for ShimConfig {
    fn default() -> Self {
        Self {
            ledger_dir: PathBuf::from("/run/hami"),
            library_path: PathBuf::from("/usr/local/lib/hami/libhami.so"),
            backend_shim: PathBuf::from("/usr/bin/containerd-shim-runc-v2"),
            runtime_binary: "runc".to_owned(),
            systemd_cgroup: false,
            log_level: "info".to_owned(),
            placement_policy: PlacementPolicyName::Binpack,
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read shim config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid shim config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error(
        "invalid shim config {path}: log_level {level:?} is not one of error, warn, info, debug, trace"
    )]
    LogLevel { path: PathBuf, level: String },
}

impl ShimConfig {
    /// Loads the configuration from `HAMI_SHIM_CONFIG` or the default path.
    pub fn load() -> Result<Self, ConfigError> {
        let path = std::env::var_os(CONFIG_PATH_ENV)
            .map_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH), PathBuf::from);
        Self::load_from(&path)
    }

    /// Loads the configuration from `path`; a missing file gives the defaults.
    pub fn load_from(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let config: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        if config.log_level.parse::<log::LevelFilter>().is_err() {
            return Err(ConfigError::LogLevel {
                path: path.to_owned(),
                level: config.log_level,
            });
        }
        Ok(config)
    }

    /// The log level as a filter.
    pub fn log_filter(&self) -> log::LevelFilter {
        self.log_level.parse().unwrap_or(log::LevelFilter::Info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<ShimConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shim.toml");
        std::fs::write(&path, text).unwrap();
        ShimConfig::load_from(&path)
    }

    #[test]
    fn missing_file_gives_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let config = ShimConfig::load_from(&dir.path().join("absent.toml")).unwrap();
        assert_eq!(config, ShimConfig::default());
        assert_eq!(config.ledger_dir, PathBuf::from("/run/hami"));
        assert_eq!(config.runtime_binary, "runc");
    }

    #[test]
    fn every_key_is_read() {
        let config = load(
            r#"
            ledger_dir = "/var/run/hami"
            library_path = "/opt/hami/libhami.so"
            backend_shim = "/usr/local/bin/containerd-shim-runc-v2"
            runtime_binary = "nvidia-container-runtime"
            systemd_cgroup = true
            log_level = "debug"
            placement_policy = "spread"
            "#,
        )
        .unwrap();
        assert_eq!(config.ledger_dir, PathBuf::from("/var/run/hami"));
        assert_eq!(config.library_path, PathBuf::from("/opt/hami/libhami.so"));
        assert_eq!(
            config.backend_shim,
            PathBuf::from("/usr/local/bin/containerd-shim-runc-v2")
        );
        assert_eq!(config.runtime_binary, "nvidia-container-runtime");
        assert!(config.systemd_cgroup);
        assert_eq!(config.log_filter(), log::LevelFilter::Debug);
        assert_eq!(
            PlacementPolicy::from(config.placement_policy),
            PlacementPolicy::Spread
        );
    }

    #[test]
    fn malformed_file_is_an_error_naming_the_file() {
        let err = load("ledger_dir = 3").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
        assert!(err.to_string().contains("shim.toml"), "{err}");
        let err = load("ledgerdir = \"/x\"").unwrap_err();
        assert!(err.to_string().contains("ledgerdir"), "{err}");
        let err = load("placement_policy = \"random\"").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        let err = load("log_level = \"loud\"").unwrap_err();
        assert!(matches!(err, ConfigError::LogLevel { .. }), "{err}");
    }
}
