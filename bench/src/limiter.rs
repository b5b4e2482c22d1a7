//! The compute-limiter harness behind `hami bench limiter`: real processes under `hami run`
//! launching kernels as fast as they can, and the device's own record of how busy each one
//! kept it.
//!
//! For each [`scenarios::Scenario`] the harness creates a private ledger directory (shared by
//! the scenario's tenants, as containers on one node share it) and, on the simulated device, a
//! private device, starts the [`probe`] in the device's environment, starts every tenant as
//! `hami run --cores … -- hami bench limiter load …` (the [`worker`]) at its time, and turns
//! the probe's per-process busy time into shares, convergence and overshoot ([`metrics`]).
//! The limiter's own counters are never used: the truth is what the device measured.

pub mod metrics;
pub mod probe;
pub mod scenarios;
pub mod worker;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use metrics::{BusySeries, convergence_s, longest_overshoot_s};
use probe::{ProbeSample, monotonic_ns};
use scenarios::{Check, Scenario, TenantSpec};
use worker::WorkerReport;

/// Error tolerance the convergence time is measured against, percentage points.
pub const CONVERGED_WITHIN_PP: f64 = 3.0;
/// Overshoot margin: share above cap + this many points counts as overshoot.
pub const OVERSHOOT_MARGIN_PP: f64 = 10.0;
const SECOND: u64 = 1_000_000_000;

/// Where the tenants' kernels run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceKind {
    /// The simulated device, one private instance per scenario (`hami sim env`).
    Simulated,
    /// The machine's real GPU (device 0), with the real driver.
    Real,
}

/// How to run the harness.
#[derive(Debug, Clone)]
pub struct HarnessOptions {
    /// The `hami` executable (for `hami run`, `hami sim env`, the worker and the probe).
    pub hami: PathBuf,
    pub device: DeviceKind,
    /// Shorter scenarios (CI).
    pub quick: bool,
    /// Only scenarios whose name starts with one of these (all when empty).
    pub only: Vec<String>,
}

/// The harness could not run a scenario.
#[derive(Debug, Error)]
pub enum HarnessError {
    #[error("scenario {scenario}: starting {what}: {source}")]
    Spawn {
        scenario: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "scenario {scenario}: tenant {tenant} reported no process id (did `hami run` start it?): {stderr}"
    )]
    NoPid {
        scenario: String,
        tenant: String,
        stderr: String,
    },
    #[error("scenario {scenario}: tenant {tenant} failed ({status}): {stderr}")]
    TenantFailed {
        scenario: String,
        tenant: String,
        status: String,
        stderr: String,
    },
    #[error("scenario {scenario}: the probe saw no samples: {stderr}")]
    NoSamples { scenario: String, stderr: String },
    #[error("preparing the simulated device: {0}")]
    SimEnv(#[from] crate::sim_env::SimEnvError),
    #[error("creating a temporary directory: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("no scenario matches {0:?}")]
    NoScenario(Vec<String>),
}

/// One tenant's figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TenantResult {
    pub name: String,
    pub cap_percent: Option<u32>,
    pub policy: String,
    pub priority: String,
    pub launch: String,
    pub kernel_us: u64,
    /// Busy share of the device in the measurement window (0..=1).
    pub share: f64,
    /// |share − cap| in points, for capped tenants.
    pub error_pp: Option<f64>,
    /// Seconds from start until the 1-s share stays within ±3 points; `None`: never.
    pub convergence_s: Option<f64>,
    /// Longest stretch above cap + 10 points, s (250 ms windows).
    pub overshoot_s: f64,
    pub kernels: u64,
    pub seconds: f64,
}

/// One scenario's figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScenarioResult {
    pub name: String,
    pub tenants: Vec<TenantResult>,
    /// Burst: the burst tenant's share while alone.
    pub burst_alone_share: Option<f64>,
    /// Burst: seconds from the neighbour's start until the burst tenant is back at its cap.
    pub burst_fallback_s: Option<f64>,
    /// Priority: the high tenant's throughput beside the low one over its solo throughput.
    pub priority_throughput_ratio: Option<f64>,
}

/// Everything the harness measured, as `--json` prints it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LimiterReport {
    pub device: String,
    pub scenarios: Vec<ScenarioResult>,
    /// `scenario/tenant` → measured share, for every capped tenant.
    pub shares: BTreeMap<String, f64>,
    /// Largest |share − cap| over capped tenants of share scenarios, points.
    pub max_error_pp: f64,
    /// Largest convergence time over capped tenants (`None` if one never converged).
    pub convergence_s: Option<f64>,
    /// Longest overshoot above cap + 10 points over all capped tenants, s.
    pub max_overshoot_s: f64,
    pub priority_throughput_ratio: Option<f64>,
    pub burst_alone_share: Option<f64>,
    pub burst_fallback_s: Option<f64>,
}

/// Runs the selected scenarios and gathers the report.
pub fn run_harness(options: &HarnessOptions) -> Result<LimiterReport, HarnessError> {
    let selected: Vec<Scenario> = scenarios::all(options.quick)
        .into_iter()
        .filter(|s| options.only.is_empty() || options.only.iter().any(|o| s.name.starts_with(o)))
        .collect();
    if selected.is_empty() {
        return Err(HarnessError::NoScenario(options.only.clone()));
    }
    let mut results = Vec::new();
    for scenario in &selected {
        results.push(run_scenario(options, scenario)?);
    }
    Ok(summarize(options, results))
}

fn summarize(options: &HarnessOptions, scenarios: Vec<ScenarioResult>) -> LimiterReport {
    let mut shares = BTreeMap::new();
    let mut max_error_pp: f64 = 0.0;
    let mut convergence: Option<f64> = Some(0.0);
    let mut max_overshoot_s: f64 = 0.0;
    for scenario in &scenarios {
        for tenant in &scenario.tenants {
            if tenant.cap_percent.is_none() {
                continue;
            }
            shares.insert(format!("{}/{}", scenario.name, tenant.name), tenant.share);
            max_overshoot_s = max_overshoot_s.max(tenant.overshoot_s);
            if let Some(error) = tenant.error_pp {
                max_error_pp = max_error_pp.max(error);
                convergence = match (convergence, tenant.convergence_s) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
        }
    }
    let first = |f: fn(&ScenarioResult) -> Option<f64>| scenarios.iter().find_map(f);
    LimiterReport {
        device: match options.device {
            DeviceKind::Simulated => "simulated".into(),
            DeviceKind::Real => "real".into(),
        },
        shares,
        max_error_pp,
        convergence_s: convergence,
        max_overshoot_s,
        priority_throughput_ratio: first(|s| s.priority_throughput_ratio),
        burst_alone_share: first(|s| s.burst_alone_share),
        burst_fallback_s: first(|s| s.burst_fallback_s),
        scenarios,
    }
}

/// A tenant's process and what it printed.
struct RunningTenant {
    spec: TenantSpec,
    child: Child,
    pid: Arc<Mutex<Option<u32>>>,
    report: Arc<Mutex<Option<WorkerReport>>>,
    stderr: Arc<Mutex<String>>,
    started_ns: u64,
}

/// The environment of one scenario: device env, ledger directory.
struct Stage {
    _dirs: tempfile::TempDir,
    env: Vec<(String, String)>,
    ledger_dir: PathBuf,
}

fn stage(options: &HarnessOptions) -> Result<Stage, HarnessError> {
    let dirs = tempfile::Builder::new()
        .prefix("hami-bench-limiter-")
        .tempdir()
        .map_err(HarnessError::TempDir)?;
    let ledger_dir = dirs.path().join("ledger");
    std::fs::create_dir_all(&ledger_dir).map_err(HarnessError::TempDir)?;
    let env = match options.device {
        DeviceKind::Simulated => {
            let state = dirs.path().join("device");
            crate::sim_env::simulated_device_env(&options.hami, &state, &[])?
        }
        DeviceKind::Real => Vec::new(),
    };
    Ok(Stage {
        _dirs: dirs,
        env,
        ledger_dir,
    })
}

fn run_scenario(
    options: &HarnessOptions,
    scenario: &Scenario,
) -> Result<ScenarioResult, HarnessError> {
    match scenario.check {
        Check::Priority => run_priority(options, scenario),
        _ => {
            let (tenants, samples, origin) = execute(options, scenario, &scenario.tenants)?;
            Ok(evaluate(scenario, &tenants, &samples, origin))
        }
    }
}

/// Runs `tenants` of `scenario` to completion with the probe watching.
fn execute(
    options: &HarnessOptions,
    scenario: &Scenario,
    tenants: &[TenantSpec],
) -> Result<(Vec<FinishedTenant>, Vec<ProbeSample>, u64), HarnessError> {
    let stage = stage(options)?;
    let spawn_err = |what: &str| {
        let scenario = scenario.name.clone();
        let what = what.to_owned();
        move |source| HarnessError::Spawn {
            scenario,
            what,
            source,
        }
    };
    let mut probe = Command::new(&options.hami)
        .args(["bench", "limiter", "probe", "--interval-ms", "100"])
        .envs(stage.env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err("the probe"))?;
    let samples = Arc::new(Mutex::new(Vec::<ProbeSample>::new()));
    let probe_stderr = Arc::new(Mutex::new(String::new()));
    let probe_reader = probe.stdout.take().map(|out| {
        let samples = Arc::clone(&samples);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(sample) = serde_json::from_str::<ProbeSample>(&line) {
                    lock(&samples).push(sample);
                }
            }
        })
    });
    collect_text(probe.stderr.take(), Arc::clone(&probe_stderr));

    // Give the probe a moment to position its cursor before the first tenant starts.
    std::thread::sleep(Duration::from_millis(300));
    let origin = monotonic_ns();
    let mut order: Vec<&TenantSpec> = tenants.iter().collect();
    order.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    let mut running = Vec::new();
    for spec in order {
        let start_at = origin + (spec.start_s * 1e9) as u64;
        let now = monotonic_ns();
        if start_at > now {
            std::thread::sleep(Duration::from_nanos(start_at - now));
        }
        running.push(start_tenant(options, &stage, scenario, spec)?);
    }
    let mut finished = Vec::new();
    for tenant in running {
        finished.push(finish_tenant(scenario, tenant)?);
    }
    std::thread::sleep(Duration::from_millis(250));
    // The probe is ours; it stops when its stdout closes, kill it to be sure.
    let _ = probe.kill();
    let _ = probe.wait();
    if let Some(reader) = probe_reader {
        let _ = reader.join();
    }
    let samples = std::mem::take(&mut *lock(&samples));
    if samples.len() < 2 {
        return Err(HarnessError::NoSamples {
            scenario: scenario.name.clone(),
            stderr: lock(&probe_stderr).clone(),
        });
    }
    Ok((finished, samples, origin))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn collect_text(pipe: Option<impl std::io::Read + Send + 'static>, into: Arc<Mutex<String>>) {
    if let Some(pipe) = pipe {
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut text = lock(&into);
                if text.len() < 16_384 {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
        });
    }
}

fn worker_args(spec: &TenantSpec) -> Vec<String> {
    let w = &spec.worker;
    let mut args = vec![
        "bench".into(),
        "limiter".into(),
        "load".into(),
        "--device".into(),
        w.device.to_string(),
        "--kernel-us".into(),
        w.kernel_us.to_string(),
        "--seconds".into(),
        w.seconds.to_string(),
        "--launch".into(),
        w.launch.name().into(),
        "--graph-kernels".into(),
        w.graph_kernels.to_string(),
        "--depth".into(),
        w.depth.to_string(),
        "--memory-mib".into(),
        w.memory_mib.to_string(),
    ];
    if let Some(kernels) = w.kernels {
        args.extend(["--kernels".into(), kernels.to_string()]);
    }
    args
}

fn start_tenant(
    options: &HarnessOptions,
    stage: &Stage,
    scenario: &Scenario,
    spec: &TenantSpec,
) -> Result<RunningTenant, HarnessError> {
    let mut command = Command::new(&options.hami);
    command
        .arg("run")
        .args(["--policy", spec.policy, "--priority", spec.priority])
        .arg("--ledger-dir")
        .arg(&stage.ledger_dir)
        .args(["--container-id", &spec.name]);
    if let Some(cores) = spec.cores {
        command.args(["--cores", &cores.to_string()]);
    }
    command
        .arg("--")
        .arg(&options.hami)
        .args(worker_args(spec))
        .envs(stage.env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started_ns = monotonic_ns();
    let mut child = command.spawn().map_err(|source| HarnessError::Spawn {
        scenario: scenario.name.clone(),
        what: format!("tenant {}", spec.name),
        source,
    })?;
    let pid = Arc::new(Mutex::new(None));
    let report = Arc::new(Mutex::new(None));
    let stderr = Arc::new(Mutex::new(String::new()));
    if let Some(out) = child.stdout.take() {
        let (pid, report) = (Arc::clone(&pid), Arc::clone(&report));
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(started) = serde_json::from_str::<worker::WorkerStarted>(&line) {
                    *lock(&pid) = Some(started.pid);
                } else if let Ok(done) = serde_json::from_str::<WorkerReport>(&line) {
                    *lock(&report) = Some(done);
                }
            }
        });
    }
    collect_text(child.stderr.take(), Arc::clone(&stderr));
    Ok(RunningTenant {
        spec: spec.clone(),
        child,
        pid,
        report,
        stderr,
        started_ns,
    })
}

/// A tenant that ran to the end.
struct FinishedTenant {
    spec: TenantSpec,
    pid: u32,
    report: WorkerReport,
    started_ns: u64,
}

fn finish_tenant(
    scenario: &Scenario,
    mut tenant: RunningTenant,
) -> Result<FinishedTenant, HarnessError> {
    let status = tenant.child.wait().map_err(|source| HarnessError::Spawn {
        scenario: scenario.name.clone(),
        what: format!("waiting for tenant {}", tenant.spec.name),
        source,
    })?;
    // The reader threads end with the pipes; give them a moment to store the last line.
    let deadline = monotonic_ns() + SECOND;
    while lock(&tenant.report).is_none() && monotonic_ns() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stderr = lock(&tenant.stderr).clone();
    if !status.success() {
        return Err(HarnessError::TenantFailed {
            scenario: scenario.name.clone(),
            tenant: tenant.spec.name.clone(),
            status: status.to_string(),
            stderr,
        });
    }
    let pid = lock(&tenant.pid).ok_or_else(|| HarnessError::NoPid {
        scenario: scenario.name.clone(),
        tenant: tenant.spec.name.clone(),
        stderr: stderr.clone(),
    })?;
    let report = lock(&tenant.report)
        .clone()
        .ok_or_else(|| HarnessError::TenantFailed {
            scenario: scenario.name.clone(),
            tenant: tenant.spec.name.clone(),
            status: "no report".into(),
            stderr,
        })?;
    Ok(FinishedTenant {
        spec: tenant.spec,
        pid,
        report,
        started_ns: tenant.started_ns,
    })
}

fn series_of(pid: u32, samples: &[ProbeSample]) -> BusySeries {
    let mut series = BusySeries::default();
    for sample in samples {
        series.push(sample.at_ns, sample.busy_ns.get(&pid).copied().unwrap_or(0));
    }
    series
}

fn evaluate(
    scenario: &Scenario,
    tenants: &[FinishedTenant],
    samples: &[ProbeSample],
    origin: u64,
) -> ScenarioResult {
    let end = origin + (scenario.seconds * 1e9) as u64;
    let mut result = ScenarioResult {
        name: scenario.name.clone(),
        tenants: Vec::new(),
        burst_alone_share: None,
        burst_fallback_s: None,
        priority_throughput_ratio: None,
    };
    // Shares are measured while every tenant runs, after the settling time.
    let last_start = tenants.iter().map(|t| t.started_ns).max().unwrap_or(origin);
    let window_start = last_start + (scenario.settle_s * 1e9) as u64;
    for tenant in tenants {
        let series = series_of(tenant.pid, samples);
        let cap = tenant.spec.cores.map(|c| f64::from(c) / 100.0);
        let share = series.share(window_start, end);
        let (error_pp, convergence, overshoot) = match cap {
            Some(cap) => (
                Some((share - cap).abs() * 100.0),
                convergence_s(
                    &series,
                    tenant.started_ns,
                    end,
                    cap,
                    CONVERGED_WITHIN_PP,
                    SECOND,
                )
                .filter(|_| scenario.check == Check::Shares),
                longest_overshoot_s(
                    &series,
                    tenant.started_ns,
                    end,
                    cap,
                    OVERSHOOT_MARGIN_PP,
                    SECOND / 4,
                ),
            ),
            None => (None, None, 0.0),
        };
        result.tenants.push(TenantResult {
            name: tenant.spec.name.clone(),
            cap_percent: tenant.spec.cores,
            policy: tenant.spec.policy.into(),
            priority: tenant.spec.priority.into(),
            launch: tenant.spec.worker.launch.name().into(),
            kernel_us: tenant.spec.worker.kernel_us,
            share,
            error_pp: error_pp.filter(|_| scenario.check == Check::Shares),
            convergence_s: convergence,
            overshoot_s: if scenario.check == Check::Burst {
                0.0
            } else {
                overshoot
            },
            kernels: tenant.report.kernels,
            seconds: tenant.report.seconds,
        });
    }
    if scenario.check == Check::Burst {
        evaluate_burst(tenants, samples, end, &mut result);
    }
    result
}

/// Burst: tenant 0's share while alone, and how fast it is back at its cap once tenant 1 runs.
fn evaluate_burst(
    tenants: &[FinishedTenant],
    samples: &[ProbeSample],
    end: u64,
    result: &mut ScenarioResult,
) {
    let (Some(bursty), Some(neighbour)) = (tenants.first(), tenants.get(1)) else {
        return;
    };
    let series = series_of(bursty.pid, samples);
    let cap = f64::from(bursty.spec.cores.unwrap_or(100)) / 100.0;
    let alone_from = bursty.started_ns + SECOND / 2;
    result.burst_alone_share = Some(series.share(alone_from, neighbour.started_ns));
    // Back at the cap: the first 250 ms window from which every later window stays within
    // cap + 5 points.
    let step = SECOND / 4;
    let mut at = neighbour.started_ns;
    let mut settled: Option<u64> = None;
    while at + step <= end {
        if series.share(at, at + step) > cap + 0.05 {
            settled = None;
        } else if settled.is_none() {
            settled = Some(at + step);
        }
        at += step;
    }
    result.burst_fallback_s = settled.map(|t| (t - neighbour.started_ns) as f64 / 1e9);
}

/// Priority: the high tenant's fixed job solo, then beside a saturating low tenant.
fn run_priority(
    options: &HarnessOptions,
    scenario: &Scenario,
) -> Result<ScenarioResult, HarnessError> {
    let high = scenario.tenants[0].clone();
    let mut solo_spec = high.clone();
    solo_spec.start_s = 0.0;
    let (solo, _, _) = execute(options, scenario, std::slice::from_ref(&solo_spec))?;
    let (shared, samples, origin) = execute(options, scenario, &scenario.tenants)?;
    let mut result = evaluate(scenario, &shared, &samples, origin);
    let throughput = |t: &FinishedTenant| t.report.kernels as f64 / t.report.seconds.max(1e-9);
    if let (Some(solo), Some(beside)) = (
        solo.first(),
        shared.iter().find(|t| t.spec.name == high.name),
    ) {
        result.priority_throughput_ratio = Some(throughput(beside) / throughput(solo));
    }
    Ok(result)
}

/// Path of the `hami` executable running now (the harness re-invokes itself).
pub fn current_hami() -> Result<PathBuf, std::io::Error> {
    std::env::current_exe()
}

/// Renders the report as the human table `hami bench limiter` prints.
pub fn render_table(report: &LimiterReport) -> String {
    let mut out = String::new();
    out.push_str(&format!("device: {}\n", report.device));
    out.push_str(&format!(
        "{:<20} {:<6} {:>4} {:<6} {:<12} {:>8} {:>8} {:>8} {:>9} {:>10}\n",
        "scenario",
        "tenant",
        "cap",
        "policy",
        "launch",
        "kernel",
        "share",
        "error",
        "converge",
        "overshoot"
    ));
    for scenario in &report.scenarios {
        for t in &scenario.tenants {
            out.push_str(&format!(
                "{:<20} {:<6} {:>4} {:<6} {:<12} {:>6}us {:>7.1}% {:>8} {:>9} {:>9.2}s\n",
                scenario.name,
                t.name,
                t.cap_percent.map_or("-".into(), |c| format!("{c}%")),
                t.policy,
                t.launch,
                t.kernel_us,
                t.share * 100.0,
                t.error_pp.map_or("-".into(), |e| format!("{e:.1}pp")),
                t.convergence_s.map_or("-".into(), |c| format!("{c:.1}s")),
                t.overshoot_s,
            ));
        }
        if let Some(share) = scenario.burst_alone_share {
            out.push_str(&format!(
                "{:<20} burst tenant alone: {:.1}% of the device\n",
                "",
                share * 100.0
            ));
        }
        if let Some(fallback) = scenario.burst_fallback_s {
            out.push_str(&format!(
                "{:<20} back at its cap {fallback:.2}s after the neighbour started\n",
                ""
            ));
        }
        if let Some(ratio) = scenario.priority_throughput_ratio {
            out.push_str(&format!(
                "{:<20} high-priority throughput beside low: {:.1}% of solo\n",
                "",
                ratio * 100.0
            ));
        }
    }
    out.push_str(&format!(
        "max error {:.2} pp, convergence {}, longest overshoot {:.2}s\n",
        report.max_error_pp,
        report
            .convergence_s
            .map_or("never".into(), |c| format!("{c:.1}s")),
        report.max_overshoot_s
    ));
    out
}

/// Exists so callers can check an artifact path up front with a clear message.
pub fn require_file(path: &Path, what: &str) -> Result<(), std::io::Error> {
    if path.is_file() {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{what} not found at {}", path.display()),
        ))
    }
}
