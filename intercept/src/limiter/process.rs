//! The limiter's per-process state: which devices are capped, at what share, under which
//! policy, and where their budgets live. Built once, lazily, at the first launch.
//!
//! Sources, in this order (the environment is read once, here, never on a launch):
//! 1. The container's ledger entry (`HAMI_LEDGER_LIMITS` + `HAMI_LEDGER_USAGE`, and
//!    `HAMI_LEDGER_NODE` for the node's contention view): `compute_percent`, `policy` and
//!    `priority` per device, budgets in the usage part's compute cells, shared by every
//!    process of the container.
//! 2. Standalone: HAMi's `CUDA_DEVICE_SM_LIMIT[_i]` (percent; `_i` is the CUDA ordinal, the
//!    suffix-less one applies to every device; 0 or ≥ 100 means no cap), policy `hard`. The
//!    budgets live in the usage file named by `HAMI_LEDGER_USAGE` (or the library's default
//!    usage file) when it exists, so all of the user's processes share the cap; otherwise in
//!    this process's memory. `GPU_CORE_UTILIZATION_POLICY=disable` turns the limiter off, as in
//!    HAMi.
//!
//! A value that does not parse is reported once on stderr and every kernel launch is then
//! refused (`CUDA_ERROR_NOT_PERMITTED`), as a memory cap that cannot be read refuses every
//! allocation: a cap that cannot be read never becomes no cap.

use std::sync::atomic::AtomicU64;

use hami_ledger::compute::{
    Budget, COMPUTE_WORDS, Contention, ContentionWords, NodeContentionWords,
};
use hami_ledger::{ComputePolicy, NodeLedger, Priority, UsageLedger, limits};

use super::busy::DeviceKey;
use super::gate::{DeviceGate, GateConfig, percent_to_ppm};
use crate::config::confinement::Confinement;
use crate::hami_log;
use crate::log::Level;

pub use crate::config::vars;

/// Devices addressable in standalone mode (`_0` … `_15`).
const ENV_DEVICES: usize = hami_ledger::MAX_DEVICES;

/// One capped device of this process.
pub struct CappedDevice {
    pub gate: DeviceGate<'static>,
    pub key: DeviceKey,
}

/// Which PID namespace this process's PIDs are in, against NVML's (the host's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PidNamespace {
    /// The host's, as under `hami run`: a slot's PID is the one NVML reports.
    Host,
    /// A container's of its own: NVML's PIDs are the host PIDs the shim's publisher writes
    /// next to the slots (the PID map).
    Container,
}

/// The container's processes, as NVML names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NvmlPids {
    /// Every live process of the container, by the PID NVML reports.
    Known(Vec<u32>),
    /// Some live process's host PID is not known (yet, or no publisher writes the map): NVML's
    /// busy time cannot be told apart, and the measurer counts all of it as the container's.
    Unmapped,
}

/// Everything the limiter knows in this process; leaked once built (it lives as long as the
/// mappings it points into, i.e. the process).
pub struct ProcessLimiter {
    /// Index: container device (ledger mode) or CUDA ordinal (standalone).
    pub devices: Vec<Option<CappedDevice>>,
    /// The usage part, when budgets live there (for the container's process list).
    pub usage: Option<&'static UsageLedger>,
    /// Devices are CUDA ordinals (standalone caps), not container device indices.
    pub by_ordinal: bool,
    /// Whether NVML's PIDs are the slots' own or come from the PID map.
    pub namespace: PidNamespace,
}

/// The limiter's configuration cannot be used as written.
#[derive(Debug, thiserror::Error)]
pub enum LimiterConfigError {
    #[error("{var}={value:?} is not a whole percentage")]
    Percent { var: String, value: String },
    #[error(transparent)]
    Limits(#[from] limits::LimitsError),
    #[error(transparent)]
    Usage(#[from] hami_ledger::UsageError),
    #[error("{var} is set but {missing} is not; the shim and `hami run` set both")]
    HalfLedger {
        var: &'static str,
        missing: &'static str,
    },
}

/// A per-device cap read from the environment or the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCap {
    pub percent: u32,
    pub policy: ComputePolicy,
    pub priority: Priority,
    pub key: DeviceKey,
}

/// Parses one `CUDA_DEVICE_SM_LIMIT` value: `None` = no cap (0, ≥ 100).
pub fn parse_percent(var: &str, value: &str) -> Result<Option<u32>, LimiterConfigError> {
    let percent: u32 =
        value
            .trim()
            .trim_end_matches('%')
            .parse()
            .map_err(|_| LimiterConfigError::Percent {
                var: var.to_owned(),
                value: value.to_owned(),
            })?;
    Ok((1..100).contains(&percent).then_some(percent))
}

/// The standalone caps, per CUDA ordinal, read through `lookup`.
pub fn env_caps(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<Option<DeviceCap>>, LimiterConfigError> {
    let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    if set(vars::UTILIZATION_POLICY).is_some_and(|p| p.trim().eq_ignore_ascii_case("disable")) {
        return Ok(vec![None; ENV_DEVICES]);
    }
    let default = match set(vars::SM_LIMIT) {
        Some(value) => parse_percent(vars::SM_LIMIT, &value)?,
        None => None,
    };
    (0..ENV_DEVICES)
        .map(|ordinal| {
            let var = format!("{}_{ordinal}", vars::SM_LIMIT);
            let percent = match set(&var) {
                Some(value) => parse_percent(&var, &value)?,
                None => default,
            };
            Ok(percent.map(|percent| DeviceCap {
                percent,
                policy: ComputePolicy::Hard,
                priority: Priority::Normal,
                key: DeviceKey::Index(u32::try_from(ordinal).unwrap_or(0)),
            }))
        })
        .collect()
}

/// Leaks `value` for the life of the process (mappings the gates point into).
fn forever<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

/// A budget cell in this process's memory (standalone mode without a usage file).
fn private_cell() -> &'static [AtomicU64; COMPUTE_WORDS] {
    forever(std::array::from_fn(|_| AtomicU64::new(0)))
}

impl ProcessLimiter {
    /// Reads the configuration from the process environment: `Ok(None)` when nothing is
    /// capped; an error (said once on stderr) when a cap is set but cannot be read, which the
    /// caller turns into refused launches, as a memory cap that cannot be read refuses
    /// allocations.
    pub fn from_env() -> Result<Option<&'static ProcessLimiter>, LimiterConfigError> {
        let confinement = Confinement::current();
        let env = |name: &str| std::env::var(name).ok();
        let namespace = match confinement {
            Confinement::Host => PidNamespace::Host,
            Confinement::Container | Confinement::LedgerMissing => PidNamespace::Container,
        };
        match Self::build(&confinement.lookup(&env), namespace) {
            Ok(limiter) => Ok(limiter),
            Err(err) => {
                hami_log!(
                    Level::Error,
                    "compute caps cannot be applied ({err}); kernel launches are refused"
                );
                Err(err)
            }
        }
    }

    /// Builds the limiter from the configuration `lookup` yields.
    pub fn build(
        lookup: &impl Fn(&str) -> Option<String>,
        namespace: PidNamespace,
    ) -> Result<Option<&'static ProcessLimiter>, LimiterConfigError> {
        let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let usage_path = set(vars::LEDGER_USAGE);
        let node: Option<&'static NodeLedger> =
            set(vars::LEDGER_NODE).and_then(|path| match NodeLedger::open(&path) {
                Ok(node) => Some(forever(node)),
                Err(err) => {
                    hami_log!(
                        Level::Warn,
                        "no contention view (burst and priority off): {err}"
                    );
                    None
                }
            });
        let by_ordinal = set(vars::LEDGER_LIMITS).is_none();
        let (caps, usage) = match (set(vars::LEDGER_LIMITS), usage_path.clone()) {
            (Some(limits_path), Some(usage_path)) => {
                let container = limits::read(&limits_path)?;
                let caps: Vec<Option<DeviceCap>> = container
                    .devices
                    .iter()
                    .map(|d| {
                        let percent = d.compute_percent.filter(|p| (1..100).contains(p));
                        // With a node view, an uncapped device is still gated (at 100 %, which
                        // only marks demand) so burst and low-priority neighbours see it.
                        Some(DeviceCap {
                            percent: percent.unwrap_or(100),
                            policy: d.policy,
                            priority: d.priority,
                            key: DeviceKey::Uuid(d.uuid.clone()),
                        })
                        .filter(|_| percent.is_some() || node.is_some())
                    })
                    .collect();
                (caps, Some(forever(UsageLedger::attach(&usage_path)?)))
            }
            (Some(_), None) => {
                return Err(LimiterConfigError::HalfLedger {
                    var: vars::LEDGER_LIMITS,
                    missing: vars::LEDGER_USAGE,
                });
            }
            (None, _) => {
                let caps = env_caps(lookup)?;
                let usage_path = usage_path
                    .map(std::path::PathBuf::from)
                    .unwrap_or_else(crate::config::default_usage_path);
                let usage = caps
                    .iter()
                    .any(Option::is_some)
                    .then(|| UsageLedger::attach(&usage_path).ok().map(forever))
                    .flatten();
                (caps, usage)
            }
        };
        if caps.iter().all(Option::is_none) {
            return Ok(None);
        }
        let devices = caps
            .into_iter()
            .enumerate()
            .map(|(index, cap)| {
                let cap = cap?;
                let words = usage
                    .and_then(|u| u.compute_cell(index))
                    .map_or_else(private_cell, |cell| &cell.words);
                let contention = node.and_then(|node| {
                    let DeviceKey::Uuid(uuid) = &cap.key else {
                        return None;
                    };
                    let dev = node.device_by_uuid(uuid)?;
                    let words: &'static dyn ContentionWords =
                        forever(NodeContentionWords::new(node, dev));
                    Some(Contention::new(words))
                });
                let config = GateConfig {
                    cap_ppm: percent_to_ppm(cap.percent),
                    burst: cap.policy == ComputePolicy::Burst,
                    high_priority: cap.priority == Priority::High,
                };
                Some(CappedDevice {
                    gate: DeviceGate::new(Budget::new(words), contention, config),
                    key: cap.key,
                })
            })
            .collect();
        Ok(Some(forever(ProcessLimiter {
            devices,
            usage,
            by_ordinal,
            namespace,
        })))
    }

    /// The gate of device `index`, if it is capped.
    #[inline]
    pub fn device(&self, index: usize) -> Option<&CappedDevice> {
        self.devices.get(index).and_then(Option::as_ref)
    }

    /// The processes sharing the budgets (the container's live slots, and this one), by the
    /// PIDs NVML reports for them.
    pub fn nvml_pids(&self) -> NvmlPids {
        let live: Vec<hami_ledger::SlotSnapshot> = self.usage.map_or_else(Vec::new, |usage| {
            usage
                .snapshot()
                .slots
                .into_iter()
                .filter(|s| s.state == hami_ledger::SlotState::Live && s.alive != Some(false))
                .collect()
        });
        container_pids(&live, std::process::id(), self.namespace)
    }
}

/// The PIDs NVML reports for the processes of `live` slots and this one (`own`).
fn container_pids(
    live: &[hami_ledger::SlotSnapshot],
    own: u32,
    namespace: PidNamespace,
) -> NvmlPids {
    match namespace {
        PidNamespace::Host => {
            let mut pids: Vec<u32> = live.iter().map(|s| s.pid).collect();
            if !pids.contains(&own) {
                pids.push(own);
            }
            NvmlPids::Known(pids)
        }
        PidNamespace::Container => {
            // This process launches too: without its own slot it would count as a stranger.
            let own_listed = live.iter().any(|s| s.pid == own);
            let mapped: Option<Vec<u32>> = live.iter().map(|s| s.host_pid).collect();
            match mapped {
                Some(pids) if own_listed => NvmlPids::Known(pids),
                _ => NvmlPids::Unmapped,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn caps(pairs: &[(&str, &str)]) -> Result<Vec<Option<DeviceCap>>, LimiterConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env_caps(&|name| map.get(name).cloned())
    }

    #[test]
    fn hami_sm_limit_applies_to_every_device_unless_overridden() {
        let caps = caps(&[
            ("CUDA_DEVICE_SM_LIMIT", "30"),
            ("CUDA_DEVICE_SM_LIMIT_1", "60"),
        ])
        .expect("valid caps");
        assert_eq!(caps[0].as_ref().map(|c| c.percent), Some(30));
        assert_eq!(caps[1].as_ref().map(|c| c.percent), Some(60));
        assert_eq!(caps[2].as_ref().map(|c| c.percent), Some(30));
    }

    #[test]
    fn zero_and_full_mean_no_cap_as_in_hami() {
        for value in ["0", "100", "150"] {
            let caps = caps(&[("CUDA_DEVICE_SM_LIMIT", value)]).expect("valid caps");
            assert!(caps.iter().all(Option::is_none), "{value} must not cap");
        }
    }

    #[test]
    fn a_bad_percentage_is_an_error_naming_the_variable() {
        let err = caps(&[("CUDA_DEVICE_SM_LIMIT_2", "half")]).expect_err("must refuse");
        assert_eq!(
            err.to_string(),
            "CUDA_DEVICE_SM_LIMIT_2=\"half\" is not a whole percentage"
        );
    }

    #[test]
    fn disable_policy_turns_the_limiter_off() {
        let caps = caps(&[
            ("CUDA_DEVICE_SM_LIMIT", "30"),
            ("GPU_CORE_UTILIZATION_POLICY", "disable"),
        ])
        .expect("valid caps");
        assert!(caps.iter().all(Option::is_none));
    }

    #[test]
    fn ledger_mode_caps_the_devices_of_the_limits_file() {
        use hami_ledger::{ContainerLimits, DeviceLimit};
        let dir = std::env::temp_dir().join(format!("hami-limiter-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test directory");
        let limits_path = dir.join("limits.ledger");
        let usage_path = dir.join("usage.ledger");
        let device = |uuid: &str, percent| DeviceLimit {
            uuid: uuid.into(),
            memory_limit: None,
            compute_percent: percent,
            policy: ComputePolicy::Burst,
            priority: Priority::Normal,
        };
        limits::write(
            &limits_path,
            &ContainerLimits {
                container_id: "c1".into(),
                devices: vec![device("GPU-a", None), device("GPU-b", Some(40))],
            },
        )
        .expect("limits");
        UsageLedger::create(&usage_path, 2).expect("usage");
        let map: HashMap<&str, String> = HashMap::from([
            (vars::LEDGER_LIMITS, limits_path.display().to_string()),
            (vars::LEDGER_USAGE, usage_path.display().to_string()),
        ]);
        let limiter = ProcessLimiter::build(&|name| map.get(name).cloned(), PidNamespace::Host)
            .expect("builds")
            .expect("something is capped");
        assert!(limiter.device(0).is_none());
        let capped = limiter.device(1).expect("device 1 capped");
        assert_eq!(capped.gate.config().cap_ppm, 400_000);
        assert!(capped.gate.config().burst);
        assert_eq!(capped.key, DeviceKey::Uuid("GPU-b".into()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn slot(pid: u32, host_pid: Option<u32>) -> hami_ledger::SlotSnapshot {
        hami_ledger::SlotSnapshot {
            index: 0,
            pid,
            host_pid,
            generation: 0,
            state: hami_ledger::SlotState::Live,
            alive: Some(true),
            used: vec![0],
        }
    }

    #[test]
    fn on_the_host_slots_are_named_by_their_own_pids() {
        let pids = container_pids(&[slot(10, None)], 11, PidNamespace::Host);
        assert_eq!(pids, NvmlPids::Known(vec![10, 11]));
    }

    #[test]
    fn in_a_container_slots_are_named_by_their_host_pids_once_all_are_known() {
        let all = [slot(1, Some(4001)), slot(7, Some(4007))];
        assert_eq!(
            container_pids(&all, 7, PidNamespace::Container),
            NvmlPids::Known(vec![4001, 4007])
        );
        let one_missing = [slot(1, Some(4001)), slot(7, None)];
        assert_eq!(
            container_pids(&one_missing, 7, PidNamespace::Container),
            NvmlPids::Unmapped,
            "a process NVML cannot be matched to would count as another tenant"
        );
        assert_eq!(
            container_pids(&all[..1], 7, PidNamespace::Container),
            NvmlPids::Unmapped,
            "this process has no slot yet"
        );
    }
}
