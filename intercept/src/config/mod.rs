//! The library's configuration, read from the environment once, at initialization.
//!
//! Two sources of limits, in this order:
//! 1. The container's ledger entry (`HAMI_LEDGER_LIMITS` + `HAMI_LEDGER_USAGE`), written by the
//!    shim or `hami run`; devices are identified by UUID.
//! 2. Without a shim: `HAMI_MEMORY_LIMIT[_i]` or HAMi's `CUDA_DEVICE_MEMORY_LIMIT[_i]` (`_i` is
//!    the CUDA device ordinal; the suffix-less one applies to every device), with the usage
//!    shared through the file at `HAMI_LEDGER_USAGE`, else [`default_usage_path`].
//!
//! With neither, nothing is capped and every call passes through. A limit that does not parse
//! is an error: the library then fails closed (see `runtime`), never "no limit".

pub mod confinement;

use std::path::PathBuf;

pub use hami_request::byte_size::{SizeError, parse_size};

use crate::log::Level;

/// Environment variables the library reads (memory here, compute in `limiter::process`):
/// every name once.
pub mod vars {
    pub use hami_ledger::paths::{
        ENV_LIMITS as LEDGER_LIMITS, ENV_NODE as LEDGER_NODE, ENV_USAGE as LEDGER_USAGE,
    };
    pub const LOG: &str = "HAMI_LOG";
    pub const MEMORY_LIMIT: &str = "HAMI_MEMORY_LIMIT";
    pub const CUDA_MEMORY_LIMIT: &str = "CUDA_DEVICE_MEMORY_LIMIT";
    pub const CONTEXT_OVERHEAD: &str = "HAMI_CONTEXT_OVERHEAD";
    pub const MAX_ALLOCATIONS: &str = "HAMI_MAX_ALLOCATIONS";
    /// HAMi's compute cap, percent (`_i` per CUDA ordinal).
    pub const SM_LIMIT: &str = "CUDA_DEVICE_SM_LIMIT";
    /// HAMi's switch: `disable` turns the compute limiter off.
    pub const UTILIZATION_POLICY: &str = "GPU_CORE_UTILIZATION_POLICY";
}

/// Devices addressable by per-device environment limits (`_0` … `_15`).
pub const ENV_DEVICES: usize = hami_ledger::MAX_DEVICES;

/// Live allocations one process can hold by default (16 bytes of address space each).
pub const DEFAULT_MAX_ALLOCATIONS: usize = 1 << 20;

/// The configuration cannot be enforced as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: {source}")]
    Size { var: String, source: SizeError },
    #[error("{var}={value:?} is not a positive whole number")]
    Count { var: &'static str, value: String },
    #[error("{var} is set but {missing} is not; the shim sets both")]
    HalfLedger {
        var: &'static str,
        missing: &'static str,
    },
}

/// Per-device caps from the environment (index = CUDA device ordinal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvLimits {
    pub per_device: [Option<u64>; ENV_DEVICES],
}

/// Where the caps come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitSource {
    /// No cap configured: pass everything through.
    Unlimited,
    /// The container's ledger entry.
    Ledger { limits: PathBuf, usage: PathBuf },
    /// Environment caps, usage shared through `usage`.
    Environment {
        limits: Box<EnvLimits>,
        usage: PathBuf,
    },
}

/// Everything the library reads from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub log: Level,
    pub source: LimitSource,
    /// Device memory charged once per process and device for its context.
    pub context_overhead: u64,
    pub max_allocations: usize,
}

/// The usage file of environment mode when `HAMI_LEDGER_USAGE` is unset: one per user, so
/// all of a user's processes share the cap, as HAMi-core's `/tmp/cudevshr.cache` did.
pub fn default_usage_path() -> PathBuf {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/hami-usage-{uid}.ledger"))
}

impl Settings {
    /// Reads the process environment, as far as `confinement` lets it configure the library.
    pub fn from_env(confinement: confinement::Confinement) -> Result<Settings, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        Settings::from_lookup(confinement.lookup(&env))
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let log = lookup(vars::LOG)
            .and_then(|v| Level::parse(&v))
            .unwrap_or(Level::Error);
        let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let context_overhead = match set(vars::CONTEXT_OVERHEAD) {
            Some(value) if value.trim() == "0" => 0,
            Some(value) => parse_size(&value).map_err(|source| ConfigError::Size {
                var: vars::CONTEXT_OVERHEAD.to_owned(),
                source,
            })?,
            None => 0,
        };
        let max_allocations = match set(vars::MAX_ALLOCATIONS) {
            Some(value) => value
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(ConfigError::Count {
                    var: vars::MAX_ALLOCATIONS,
                    value,
                })?,
            None => DEFAULT_MAX_ALLOCATIONS,
        };
        let usage = set(vars::LEDGER_USAGE).map(PathBuf::from);
        let source = match (set(vars::LEDGER_LIMITS), usage) {
            (Some(limits), Some(usage)) => LimitSource::Ledger {
                limits: PathBuf::from(limits),
                usage,
            },
            (Some(_), None) => {
                return Err(ConfigError::HalfLedger {
                    var: vars::LEDGER_LIMITS,
                    missing: vars::LEDGER_USAGE,
                });
            }
            (None, usage) => match env_limits(&set)? {
                Some(limits) => LimitSource::Environment {
                    limits: Box::new(limits),
                    usage: usage.unwrap_or_else(default_usage_path),
                },
                None => LimitSource::Unlimited,
            },
        };
        Ok(Settings {
            log,
            source,
            context_overhead,
            max_allocations,
        })
    }
}

/// Per-device caps: `HAMI_MEMORY_LIMIT_i` over `CUDA_DEVICE_MEMORY_LIMIT_i` over the
/// suffix-less forms (HAMI_ first). `None` when no variable is set.
fn env_limits(set: &impl Fn(&str) -> Option<String>) -> Result<Option<EnvLimits>, ConfigError> {
    let parse = |var: String| -> Result<Option<u64>, ConfigError> {
        match set(&var) {
            Some(value) => parse_size(&value)
                .map(Some)
                .map_err(|source| ConfigError::Size { var, source }),
            None => Ok(None),
        }
    };
    let default = match parse(vars::MEMORY_LIMIT.to_owned())? {
        Some(limit) => Some(limit),
        None => parse(vars::CUDA_MEMORY_LIMIT.to_owned())?,
    };
    let mut per_device = [None; ENV_DEVICES];
    let mut any = default.is_some();
    for (index, slot) in per_device.iter_mut().enumerate() {
        let own = match parse(format!("{}_{index}", vars::MEMORY_LIMIT))? {
            Some(limit) => Some(limit),
            None => parse(format!("{}_{index}", vars::CUDA_MEMORY_LIMIT))?,
        };
        any |= own.is_some();
        *slot = own.or(default);
    }
    Ok(any.then_some(EnvLimits { per_device }))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const GIB: u64 = 1 << 30;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn nothing_set_means_unlimited_and_silent() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.source, LimitSource::Unlimited);
        assert_eq!(s.log, Level::Error);
        assert_eq!(s.max_allocations, DEFAULT_MAX_ALLOCATIONS);
    }

    #[test]
    fn the_ledger_wins_over_environment_limits() {
        let s = settings(&[
            ("HAMI_LEDGER_LIMITS", "/run/hami/limits.ledger"),
            ("HAMI_LEDGER_USAGE", "/run/hami/usage.ledger"),
            ("CUDA_DEVICE_MEMORY_LIMIT", "1g"),
        ])
        .unwrap();
        assert!(matches!(s.source, LimitSource::Ledger { .. }));
    }

    #[test]
    fn a_limits_file_without_usage_is_an_error() {
        assert!(matches!(
            settings(&[("HAMI_LEDGER_LIMITS", "/x")]),
            Err(ConfigError::HalfLedger { .. })
        ));
    }

    #[test]
    fn per_device_limits_override_the_default_and_hami_overrides_cuda() {
        let s = settings(&[
            ("CUDA_DEVICE_MEMORY_LIMIT", "8Gi"),
            ("CUDA_DEVICE_MEMORY_LIMIT_1", "2048m"),
            ("HAMI_MEMORY_LIMIT_2", "1g"),
            ("CUDA_DEVICE_MEMORY_LIMIT_2", "3g"),
            ("HAMI_LEDGER_USAGE", "/tmp/u"),
        ])
        .unwrap();
        let LimitSource::Environment { limits, usage } = s.source else {
            panic!("env mode")
        };
        assert_eq!(usage, PathBuf::from("/tmp/u"));
        assert_eq!(limits.per_device[0], Some(8 * GIB));
        assert_eq!(limits.per_device[1], Some(2 * GIB));
        assert_eq!(limits.per_device[2], Some(GIB));
        assert_eq!(limits.per_device[15], Some(8 * GIB));
    }

    #[test]
    fn only_one_device_limited_leaves_the_others_uncapped() {
        let s = settings(&[("CUDA_DEVICE_MEMORY_LIMIT_0", "1Gi")]).unwrap();
        let LimitSource::Environment { limits, usage } = s.source else {
            panic!("env mode")
        };
        assert_eq!(limits.per_device[0], Some(GIB));
        assert_eq!(limits.per_device[1], None);
        assert_eq!(usage, default_usage_path());
    }

    #[test]
    fn garbage_limits_are_errors_naming_the_variable() {
        let err = settings(&[("CUDA_DEVICE_MEMORY_LIMIT", "lots")]).unwrap_err();
        assert!(
            err.to_string().starts_with("CUDA_DEVICE_MEMORY_LIMIT: "),
            "{err}"
        );
        let err = settings(&[("HAMI_MEMORY_LIMIT_3", "8Gx")]).unwrap_err();
        assert!(err.to_string().contains("HAMI_MEMORY_LIMIT_3"), "{err}");
        assert!(settings(&[("HAMI_MAX_ALLOCATIONS", "-4")]).is_err());
        assert!(settings(&[("HAMI_CONTEXT_OVERHEAD", "big")]).is_err());
    }

    #[test]
    fn knobs_parse() {
        let s = settings(&[
            ("HAMI_LOG", "debug"),
            ("HAMI_CONTEXT_OVERHEAD", "300Mi"),
            ("HAMI_MAX_ALLOCATIONS", "4096"),
        ])
        .unwrap();
        assert_eq!(s.log, Level::Debug);
        assert_eq!(s.context_overhead, 300 << 20);
        assert_eq!(s.max_allocations, 4096);
    }
}
