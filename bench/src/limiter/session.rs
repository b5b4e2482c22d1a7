//! One run of tenants on one device: a private ledger directory shared by the tenants (as
//! containers on one node share it), on the simulated device a private device, the probe
//! watching the device, and each tenant as `hami run … -- hami bench limiter load …`, or as a
//! container through the `hami` runtime ([`super::containers`]).
//! Used by the harness (run to the end, then evaluate) and by `hami demo` (watch it live).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::containers::ContainerLauncher;
use super::probe::{ProbeSample, SETTLE_LAG_NS, monotonic_ns};
use super::scenarios::TenantSpec;
use super::worker::{WorkerReport, WorkerStarted};
use super::{DeviceKind, HarnessError, HarnessOptions};

const SECOND: u64 = 1_000_000_000;

/// A tenant's process and what it printed so far.
struct RunningTenant {
    spec: TenantSpec,
    child: Child,
    pid: Arc<Mutex<Option<u32>>>,
    report: Arc<Mutex<Option<WorkerReport>>>,
    stderr: Arc<Mutex<String>>,
    started_ns: u64,
}

/// A tenant that ran to the end.
#[derive(Debug, Clone)]
pub struct FinishedTenant {
    pub spec: TenantSpec,
    pub pid: u32,
    pub report: WorkerReport,
    pub started_ns: u64,
}

/// Tenants sharing one device, watched by the probe.
pub struct Session {
    label: String,
    hami: PathBuf,
    _dirs: tempfile::TempDir,
    env: Vec<(String, String)>,
    ledger_dir: PathBuf,
    probe: Child,
    probe_reader: Option<JoinHandle<()>>,
    probe_stderr: Arc<Mutex<String>>,
    samples: Arc<Mutex<Vec<ProbeSample>>>,
    tenants: Vec<RunningTenant>,
    containers: Option<ContainerLauncher>,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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

impl Session {
    /// Prepares the directories and device and starts the probe. `label` names the run in
    /// errors.
    pub fn new(options: &HarnessOptions, label: &str) -> Result<Self, HarnessError> {
        let dirs = tempfile::Builder::new()
            .prefix("hami-limiter-")
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
        let mut probe = Command::new(&options.hami)
            .args(["bench", "limiter", "probe", "--interval-ms", "100"])
            .envs(env.iter().cloned())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                scenario: label.to_owned(),
                what: "the probe".into(),
                source,
            })?;
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
        let containers = match &options.containers {
            Some(runtime) => Some(ContainerLauncher::new(
                runtime,
                &options.hami,
                &env,
                dirs.path(),
                label,
            )?),
            None => None,
        };
        // Let the probe start before the first tenant does.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self {
            label: label.to_owned(),
            hami: options.hami.clone(),
            _dirs: dirs,
            env,
            ledger_dir,
            probe,
            probe_reader,
            probe_stderr,
            samples,
            tenants: Vec::new(),
            containers,
        })
    }

    /// The ledger directory the tenants share.
    pub fn ledger_dir(&self) -> &Path {
        &self.ledger_dir
    }

    /// A copy of the probe's samples so far.
    pub fn samples(&self) -> Vec<ProbeSample> {
        lock(&self.samples).clone()
    }

    /// The pid of a started tenant's worker, once it printed it.
    pub fn pid_of(&self, name: &str) -> Option<u32> {
        self.tenants
            .iter()
            .find(|t| t.spec.name == name)
            .and_then(|t| *lock(&t.pid))
    }

    /// Starts one tenant now.
    pub fn start(&mut self, spec: &TenantSpec) -> Result<(), HarnessError> {
        let container_id = format!(
            "hami-bench-{}-{}-{}-{}",
            self.label,
            spec.name,
            std::process::id(),
            monotonic_ns()
        );
        let mut command = match &self.containers {
            Some(containers) => {
                containers.command(&container_id, spec, &self.hami, &worker_args(spec))
            }
            None => self.hami_run(spec),
        };
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let started_ns = monotonic_ns();
        let mut child = command.spawn().map_err(|source| HarnessError::Spawn {
            scenario: self.label.clone(),
            what: format!("tenant {}", spec.name),
            source,
        })?;
        let pid = Arc::new(Mutex::new(None));
        let report = Arc::new(Mutex::new(None));
        let stderr = Arc::new(Mutex::new(String::new()));
        // In a container the worker knows its PID in the container's namespace; the probe
        // sees the host's.
        let host_pid = self.containers.as_ref().map(|c| c.host_pid_finder());
        if let Some(out) = child.stdout.take() {
            let (pid, report) = (Arc::clone(&pid), Arc::clone(&report));
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Ok(started) = serde_json::from_str::<WorkerStarted>(&line) {
                        *lock(&pid) = match &host_pid {
                            Some(finder) => finder.find(&container_id),
                            None => Some(started.pid),
                        };
                    } else if let Ok(done) = serde_json::from_str::<WorkerReport>(&line) {
                        *lock(&report) = Some(done);
                    }
                }
            });
        }
        collect_text(child.stderr.take(), Arc::clone(&stderr));
        self.tenants.push(RunningTenant {
            spec: spec.clone(),
            child,
            pid,
            report,
            stderr,
            started_ns,
        });
        Ok(())
    }

    /// `hami run` of the worker for `spec`, in the session's ledger directory.
    fn hami_run(&self, spec: &TenantSpec) -> Command {
        let mut command = Command::new(&self.hami);
        command
            .arg("run")
            .args(["--policy", spec.policy, "--priority", spec.priority])
            .arg("--ledger-dir")
            .arg(&self.ledger_dir)
            .args(["--container-id", &spec.name]);
        if let Some(cores) = spec.cores {
            command.args(["--cores", &cores.to_string()]);
        }
        if let Some(memory) = &spec.memory {
            command.args(["--memory", memory]);
        }
        command
            .arg("--")
            .arg(&self.hami)
            .args(worker_args(spec))
            .envs(self.env.iter().cloned());
        command
    }

    /// Waits for every tenant, stops the probe, and returns the tenants and all samples.
    pub fn finish(mut self) -> Result<(Vec<FinishedTenant>, Vec<ProbeSample>), HarnessError> {
        let mut finished = Vec::new();
        let mut failure = None;
        for tenant in std::mem::take(&mut self.tenants) {
            match finish_tenant(&self.label, tenant) {
                Ok(done) => finished.push(done),
                Err(err) => failure = failure.or(Some(err)),
            }
        }
        // The probe reports time once it is settled: let it see past the end.
        std::thread::sleep(Duration::from_nanos(SETTLE_LAG_NS) + Duration::from_millis(300));
        self.stop_probe();
        if let Some(err) = failure {
            return Err(err);
        }
        let samples = std::mem::take(&mut *lock(&self.samples));
        if samples.len() < 2 {
            return Err(HarnessError::NoSamples {
                scenario: self.label.clone(),
                stderr: lock(&self.probe_stderr).clone(),
            });
        }
        Ok((finished, samples))
    }

    fn stop_probe(&mut self) {
        // The probe is ours and loops until killed.
        let _ = self.probe.kill();
        let _ = self.probe.wait();
        if let Some(reader) = self.probe_reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for tenant in &mut self.tenants {
            // Tenants of an abandoned session are ours: stop them rather than leak them.
            let _ = tenant.child.kill();
            let _ = tenant.child.wait();
        }
        self.stop_probe();
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

fn finish_tenant(label: &str, mut tenant: RunningTenant) -> Result<FinishedTenant, HarnessError> {
    let status = tenant.child.wait().map_err(|source| HarnessError::Spawn {
        scenario: label.to_owned(),
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
            scenario: label.to_owned(),
            tenant: tenant.spec.name.clone(),
            status: status.to_string(),
            stderr,
        });
    }
    let pid = lock(&tenant.pid).ok_or_else(|| HarnessError::NoPid {
        scenario: label.to_owned(),
        tenant: tenant.spec.name.clone(),
        stderr: stderr.clone(),
    })?;
    let report = lock(&tenant.report)
        .clone()
        .ok_or_else(|| HarnessError::TenantFailed {
            scenario: label.to_owned(),
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
