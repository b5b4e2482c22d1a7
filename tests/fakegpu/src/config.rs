//! The simulated device's configuration, read once from the environment.
//!
//! Only the first process to create the state file decides the configuration; later
//! processes attach and use what the file says, so a mismatching environment cannot give
//! two processes two different views of one device.

use std::path::PathBuf;

use hami_request::{SizeError, parse_size};
use thiserror::Error;

/// Most devices one state file can describe.
pub const MAX_DEVICES: usize = 8;

/// Environment variable: directory of the shared state file (required).
pub const ENV_DIR: &str = "HAMI_FAKEGPU_DIR";
/// Environment variable: number of devices (default 1).
pub const ENV_DEVICES: &str = "HAMI_FAKEGPU_DEVICES";
/// Environment variable: memory per device, e.g. `16Gi` (default 16 GiB).
pub const ENV_MEMORY: &str = "HAMI_FAKEGPU_MEMORY";
/// Environment variable: streaming multiprocessors per device (default 132, an H100/H200).
pub const ENV_SMS: &str = "HAMI_FAKEGPU_SMS";
/// Environment variable: comma-separated UUIDs (`GPU-…`), one per device (optional).
pub const ENV_UUIDS: &str = "HAMI_FAKEGPU_UUIDS";
/// Environment variable: device memory a context costs (default 0).
pub const ENV_CONTEXT_MEMORY: &str = "HAMI_FAKEGPU_CONTEXT_MEMORY";

const GIB: u64 = 1 << 30;

/// Why the environment does not describe a usable device.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{ENV_DIR} is not set: point it at a directory for the shared device state")]
    MissingDir,
    #[error("{var}={value:?} is not a valid {what}")]
    Invalid {
        var: &'static str,
        value: String,
        what: &'static str,
    },
    #[error("{ENV_DEVICES}={0} is out of range 1..={MAX_DEVICES}")]
    DeviceCount(u32),
    #[error("{ENV_UUIDS} lists {given} uuids for {devices} devices")]
    UuidCount { given: usize, devices: u32 },
}

/// What a simulated machine looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Directory holding the state file and the per-process lock files.
    pub dir: PathBuf,
    /// Number of devices.
    pub devices: u32,
    /// Memory per device in bytes.
    pub memory: u64,
    /// Streaming multiprocessors per device.
    pub sms: u32,
    /// Raw 16-byte UUIDs, one per device.
    pub uuids: Vec<[u8; 16]>,
    /// Device memory each context costs, in bytes.
    pub context_memory: u64,
}

impl Config {
    /// Reads the configuration through `lookup` (the process environment in production).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let dir = lookup(ENV_DIR)
            .filter(|d| !d.is_empty())
            .ok_or(ConfigError::MissingDir)?;
        let devices = match lookup(ENV_DEVICES) {
            Some(value) => value
                .trim()
                .parse::<u32>()
                .map_err(|_| ConfigError::Invalid {
                    var: ENV_DEVICES,
                    value,
                    what: "device count",
                })?,
            None => 1,
        };
        if devices == 0 || devices as usize > MAX_DEVICES {
            return Err(ConfigError::DeviceCount(devices));
        }
        let memory = match lookup(ENV_MEMORY) {
            Some(value) => parse_size(&value).map_err(|_| ConfigError::Invalid {
                var: ENV_MEMORY,
                value,
                what: "memory size",
            })?,
            None => 16 * GIB,
        };
        let sms =
            match lookup(ENV_SMS) {
                Some(value) => value.trim().parse::<u32>().ok().filter(|n| *n > 0).ok_or(
                    ConfigError::Invalid {
                        var: ENV_SMS,
                        value,
                        what: "multiprocessor count",
                    },
                )?,
                None => 132,
            };
        let context_memory = match lookup(ENV_CONTEXT_MEMORY) {
            Some(value) => match parse_size(&value) {
                Ok(bytes) => bytes,
                Err(SizeError::Zero(_)) => 0,
                Err(_) => {
                    return Err(ConfigError::Invalid {
                        var: ENV_CONTEXT_MEMORY,
                        value,
                        what: "memory size",
                    });
                }
            },
            None => 0,
        };
        let uuids = match lookup(ENV_UUIDS).filter(|u| !u.trim().is_empty()) {
            Some(list) => {
                let parsed = list
                    .split(',')
                    .map(|item| {
                        parse_uuid(item.trim()).ok_or_else(|| ConfigError::Invalid {
                            var: ENV_UUIDS,
                            value: item.to_string(),
                            what: "uuid",
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if parsed.len() != devices as usize {
                    return Err(ConfigError::UuidCount {
                        given: parsed.len(),
                        devices,
                    });
                }
                parsed
            }
            None => (0..devices).map(default_uuid).collect(),
        };
        Ok(Config {
            dir: PathBuf::from(dir),
            devices,
            memory,
            sms,
            uuids,
            context_memory,
        })
    }

    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }
}

/// Parses `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (prefix optional) into 16 bytes.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: String = text
        .strip_prefix("GPU-")
        .unwrap_or(text)
        .chars()
        .filter(|c| *c != '-')
        .collect();
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(bytes)
}

/// Formats 16 bytes the way NVML prints a GPU UUID.
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        hex[0..4].concat(),
        hex[4..6].concat(),
        hex[6..8].concat(),
        hex[8..10].concat(),
        hex[10..16].concat()
    )
}

/// A stable, recognisable UUID per device index (`GPU-fa4e0000-…-0000000000NN`).
fn default_uuid(index: u32) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[0] = 0xfa;
    bytes[1] = 0x4e;
    bytes[12..16].copy_from_slice(&index.to_be_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_are_one_h200_like_device() {
        let config = config(&[(ENV_DIR, "/tmp/x")]).unwrap();
        assert_eq!(config.devices, 1);
        assert_eq!(config.memory, 16 * GIB);
        assert_eq!(config.sms, 132);
        assert_eq!(config.context_memory, 0);
        assert_eq!(config.uuids.len(), 1);
    }

    #[test]
    fn sizes_are_byte_sizes_of_environment_variables() {
        let memory = |value: &str| config(&[(ENV_DIR, "/tmp/x"), (ENV_MEMORY, value)]);
        assert_eq!(memory("16Gi").unwrap().memory, 16 * GIB);
        assert_eq!(
            memory("4096").unwrap().memory,
            4096,
            "a variable's bare number is bytes"
        );
        assert_eq!(memory("1.5Gi").unwrap().memory, GIB + GIB / 2);
        for bad in ["-1", "Gi", "0", "12XB"] {
            assert!(memory(bad).is_err(), "{bad}");
        }
        let context = config(&[(ENV_DIR, "/tmp/x"), (ENV_CONTEXT_MEMORY, "0")]).unwrap();
        assert_eq!(context.context_memory, 0);
    }

    #[test]
    fn bad_input_is_refused_with_the_variable_named() {
        assert_eq!(config(&[]), Err(ConfigError::MissingDir));
        let err = config(&[(ENV_DIR, "/d"), (ENV_MEMORY, "lots")]).unwrap_err();
        assert!(err.to_string().contains(ENV_MEMORY));
        assert_eq!(
            config(&[(ENV_DIR, "/d"), (ENV_DEVICES, "9")]),
            Err(ConfigError::DeviceCount(9))
        );
        assert!(
            config(&[
                (ENV_DIR, "/d"),
                (ENV_DEVICES, "2"),
                (ENV_UUIDS, "GPU-00000000-0000-0000-0000-000000000001")
            ])
            .is_err()
        );
    }

    #[test]
    fn uuids_round_trip() {
        let text = "GPU-12345678-9abc-def0-1234-56789abcdef0";
        let bytes = parse_uuid(text).unwrap();
        assert_eq!(format_uuid(&bytes), text);
        let config = config(&[(ENV_DIR, "/d"), (ENV_UUIDS, text)]).unwrap();
        assert_eq!(config.uuids, vec![bytes]);
    }
}
