//! A machine (simulated, or the real GPUs of this host) and containers on it: ledger entries
//! written the way the shim writes them, and the environment a process inside the container
//! gets.

use std::path::PathBuf;
use std::process::Command;

use hami_ledger::{ComputePolicy, ContainerLimits, DeviceLimit, Priority, UsageLedger, limits};

use crate::artifacts;

/// Bytes in a MiB.
pub const MIB: u64 = 1 << 20;

/// One machine: simulated (device state in a private directory) or this host's real GPUs.
pub struct Machine {
    pub dir: tempfile::TempDir,
    pub devices: u32,
    pub memory: u64,
    /// UUIDs of the real GPUs, when this is the host's real driver.
    real_uuids: Option<Vec<String>>,
}

impl Machine {
    /// A machine with `devices` simulated devices of `memory` bytes each.
    pub fn new(devices: u32, memory: u64) -> Machine {
        Machine {
            dir: tempfile::tempdir().expect("temp dir"),
            devices,
            memory,
            real_uuids: None,
        }
    }

    /// This host's real GPUs and driver (as `nvidia-smi` lists them).
    pub fn real_gpus() -> Machine {
        let output = Command::new("nvidia-smi")
            .args([
                "--query-gpu=uuid,memory.total",
                "--format=csv,noheader,nounits",
            ])
            .output()
            .expect("nvidia-smi is needed for the real-GPU checks");
        assert!(output.status.success(), "nvidia-smi failed: {output:?}");
        let rows: Vec<(String, u64)> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_once(','))
            .map(|(uuid, mib)| {
                (
                    uuid.trim().to_owned(),
                    mib.trim().parse::<u64>().unwrap_or(0),
                )
            })
            .collect();
        assert!(!rows.is_empty(), "nvidia-smi lists no GPU");
        Machine {
            dir: tempfile::tempdir().expect("temp dir"),
            devices: rows.len() as u32,
            memory: rows.iter().map(|(_, mib)| mib * MIB).min().unwrap_or(0),
            real_uuids: Some(rows.into_iter().map(|(uuid, _)| uuid).collect()),
        }
    }

    /// The UUID of device `index` (simulated devices get theirs from this harness).
    pub fn uuid(&self, index: u32) -> String {
        match &self.real_uuids {
            Some(uuids) => uuids[index as usize].clone(),
            None => format!("GPU-e2e0c0de-0000-4000-8000-{index:012x}"),
        }
    }

    /// A command that sees this machine's devices, without the library.
    pub fn command(&self, program: impl Into<PathBuf>) -> Command {
        let mut command = Command::new(program.into());
        command
            .env_remove("LD_PRELOAD")
            .env_remove("HAMI_LEDGER_LIMITS")
            .env_remove("HAMI_LEDGER_USAGE")
            .env_remove("CUDA_DEVICE_MEMORY_LIMIT")
            .env_remove("HAMI_MEMORY_LIMIT")
            .env_remove("HAMI_LOG");
        if self.real_uuids.is_some() {
            return command;
        }
        command
            .env("LD_LIBRARY_PATH", artifacts::driver_dir())
            .env("HAMI_FAKEGPU_DIR", self.dir.path())
            .env("HAMI_FAKEGPU_DEVICES", self.devices.to_string())
            .env("HAMI_FAKEGPU_MEMORY", self.memory.to_string())
            .env(
                "HAMI_FAKEGPU_UUIDS",
                (0..self.devices)
                    .map(|i| self.uuid(i))
                    .collect::<Vec<_>>()
                    .join(","),
            );
        command
    }
}

/// One container's ledger entry.
pub struct Container {
    pub dir: tempfile::TempDir,
    pub limits: PathBuf,
    pub usage: PathBuf,
}

impl Container {
    /// A container given `devices` (simulated device UUIDs) with a memory cap each.
    pub fn new(id: &str, devices: &[(String, Option<u64>)]) -> Container {
        let dir = tempfile::tempdir().expect("temp dir");
        let limits_path = dir.path().join("limits.ledger");
        let usage_path = dir.path().join("usage.ledger");
        let entry = ContainerLimits {
            container_id: id.to_owned(),
            devices: devices
                .iter()
                .map(|(uuid, memory_limit)| DeviceLimit {
                    uuid: uuid.clone(),
                    memory_limit: *memory_limit,
                    compute_percent: None,
                    policy: ComputePolicy::Hard,
                    priority: Priority::Normal,
                })
                .collect(),
        };
        limits::write(&limits_path, &entry).expect("write limits");
        UsageLedger::create(&usage_path, devices.len()).expect("create usage");
        Container {
            dir,
            limits: limits_path,
            usage: usage_path,
        }
    }

    /// A command running in this container on `machine`: preloaded, with the ledger env.
    pub fn command(&self, machine: &Machine, program: impl Into<PathBuf>) -> Command {
        let mut command = machine.command(program);
        command
            .env("LD_PRELOAD", artifacts::libhami())
            .env("HAMI_LEDGER_LIMITS", &self.limits)
            .env("HAMI_LEDGER_USAGE", &self.usage);
        command
    }

    /// The container's ledger, attached from the host side.
    pub fn ledger(&self) -> UsageLedger {
        UsageLedger::attach(&self.usage).expect("attach usage")
    }
}
