//! Tenants as containers through the `hami` runtime (`hami bench limiter --containerd ADDRESS`):
//! each tenant is `ctr run --runtime io.containerd.hami.v2` of the worker with the tenant's caps
//! as `hami.io/*` annotations, in its own PID namespace, capped by the library the shim mounts,
//! exactly as users run it. The probe stays on the host and sees host PIDs, so a tenant is
//! known by its task's PID on the host (the worker is the container's first process).
//!
//! The container's root is the host's `/usr` (read-only binds, so the `hami` binary and the
//! device's libraries run unchanged), plus the directories the device's environment names. On
//! the simulated device the private device's host side (`hami-fakegpu-host`) runs beside it, so
//! that its NVML reports host PIDs as a driver does; the shim's own node ledger must list the
//! simulated device's UUID (the simulated devices' UUIDs depend only on their index).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hami_request::keys::{knob, pod_key};

use super::HarnessError;
use super::scenarios::TenantSpec;

/// The runtime type of the shim.
pub const HAMI_RUNTIME: &str = "io.containerd.hami.v2";
/// The host side of the simulated device, next to the `hami` executable.
const FAKEGPU_HOST: &str = "hami-fakegpu-host";

/// Where the containers run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRuntime {
    /// containerd's socket.
    pub address: PathBuf,
    /// The `ctr` that drives it.
    pub ctr: PathBuf,
    /// containerd's namespace for the tenants.
    pub namespace: String,
}

/// Starts tenants as containers of one scenario.
pub struct ContainerLauncher {
    runtime: ContainerRuntime,
    rootfs: PathBuf,
    mounts: Vec<String>,
    env: Vec<String>,
    host_side: Option<Child>,
}

impl ContainerLauncher {
    /// Prepares a root under `work` and what the containers need of `device_env` (the
    /// simulated device's variables, or nothing on a real GPU).
    pub fn new(
        runtime: &ContainerRuntime,
        hami: &Path,
        device_env: &[(String, String)],
        work: &Path,
        label: &str,
    ) -> Result<Self, HarnessError> {
        let rootfs = work.join("rootfs");
        for sub in [
            "proc",
            "sys",
            "dev",
            "tmp",
            "etc",
            "run",
            "root",
            "usr/bin",
            "usr/sbin",
            "usr/lib",
            "usr/lib64",
        ] {
            std::fs::create_dir_all(rootfs.join(sub)).map_err(HarnessError::TempDir)?;
        }
        for (link, target) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            std::os::unix::fs::symlink(target, rootfs.join(link)).map_err(HarnessError::TempDir)?;
        }
        let mut mounts = Vec::new();
        let mut bind = |path: &Path, mode: &str| {
            let mount = format!(
                "type=bind,src={0},dst={0},options=rbind:{mode}",
                path.display()
            );
            if path.exists() && !mounts.contains(&mount) {
                mounts.push(mount);
            }
        };
        // /usr itself stays the root's own: the shim creates its mount point under it.
        for dir in [
            "/usr/bin",
            "/usr/sbin",
            "/usr/lib",
            "/usr/lib64",
            "/etc/ld.so.cache",
        ] {
            bind(Path::new(dir), "ro");
        }
        if let Some(dir) = hami.parent() {
            bind(dir, "ro");
        }
        let mut env = Vec::new();
        let mut state_dir = None;
        for (name, value) in device_env {
            match name.as_str() {
                "HAMI_FAKEGPU_DIR" => {
                    bind(Path::new(value), "rw");
                    state_dir = Some(PathBuf::from(value));
                }
                "LD_LIBRARY_PATH" => {
                    for dir in value.split(':').filter(|d| !d.is_empty()) {
                        bind(Path::new(dir), "ro");
                        // The simulated driver is a link to the built library: its directory too.
                        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                            if let Ok(target) = std::fs::canonicalize(entry.path())
                                && let Some(parent) = target.parent()
                            {
                                bind(parent, "ro");
                            }
                        }
                    }
                }
                _ => {}
            }
            if name.starts_with("HAMI_FAKEGPU_") || name == "LD_LIBRARY_PATH" {
                env.push(format!("{name}={value}"));
            }
        }
        let host_side = match state_dir {
            Some(state) => Some(start_host_side(hami, &state, label)?),
            None => None,
        };
        Ok(Self {
            runtime: runtime.clone(),
            rootfs,
            mounts,
            env,
            host_side,
        })
    }

    /// `ctr run` of the worker (`worker_args` of `hami`) for `spec`, as container `id`.
    pub fn command(
        &self,
        id: &str,
        spec: &TenantSpec,
        hami: &Path,
        worker_args: &[String],
    ) -> Command {
        let mut command = self.ctr();
        command.args(["run", "--rm", "--runtime", HAMI_RUNTIME]);
        for annotation in annotations(spec) {
            command.args(["--annotation", &annotation]);
        }
        for mount in &self.mounts {
            command.args(["--mount", mount]);
        }
        for env in &self.env {
            command.args(["--env", env]);
        }
        command
            .arg("--rootfs")
            .arg(&self.rootfs)
            .arg(id)
            .arg(hami)
            .args(worker_args);
        command
    }

    /// What finds the host PID of container `id`'s first process, for a reader thread.
    pub fn host_pid_finder(&self) -> HostPidFinder {
        HostPidFinder {
            runtime: self.runtime.clone(),
        }
    }

    fn ctr(&self) -> Command {
        ctr_command(&self.runtime)
    }
}

impl Drop for ContainerLauncher {
    fn drop(&mut self) {
        if let Some(host_side) = &mut self.host_side {
            // SAFETY: kill has no memory-safety preconditions; the PID is our child's.
            unsafe { libc::kill(host_side.id() as libc::pid_t, libc::SIGTERM) };
            let _ = host_side.wait();
        }
    }
}

/// Finds a task's PID on the host through `ctr tasks ls`.
#[derive(Clone)]
pub struct HostPidFinder {
    runtime: ContainerRuntime,
}

impl HostPidFinder {
    /// The host PID of container `id`'s first process, once containerd lists it (up to 5 s).
    pub fn find(&self, id: &str) -> Option<u32> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let listed = ctr_command(&self.runtime)
                .args(["tasks", "ls"])
                .stderr(Stdio::null())
                .output()
                .ok()?;
            let found = String::from_utf8_lossy(&listed.stdout)
                .lines()
                .find_map(|line| {
                    let mut fields = line.split_whitespace();
                    (fields.next() == Some(id)).then(|| fields.next()?.parse().ok())?
                });
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn ctr_command(runtime: &ContainerRuntime) -> Command {
    let mut command = Command::new(&runtime.ctr);
    command
        .arg("--address")
        .arg(&runtime.address)
        .args(["--namespace", &runtime.namespace])
        .stdin(Stdio::null());
    command
}

/// The tenant's caps as the shim's annotations.
pub fn annotations(spec: &TenantSpec) -> Vec<String> {
    let annotation =
        |knob: &str, value: &dyn std::fmt::Display| format!("{}={value}", pod_key(knob));
    let mut annotations = vec![
        annotation(knob::COMPUTE_POLICY, &spec.policy),
        annotation(knob::PRIORITY, &spec.priority),
    ];
    if let Some(cores) = spec.cores {
        annotations.push(annotation(knob::GPU_CORES, &cores));
    }
    // Without a memory cap the shim commits the whole device's memory to the container, and
    // the next tenant would not fit: ask for what the worker holds, with room to spare.
    let memory = spec
        .memory
        .clone()
        .unwrap_or_else(|| format!("{}Mi", spec.worker.memory_mib + DEFAULT_MEMORY_MIB));
    annotations.push(annotation(knob::GPU_MEMORY, &memory));
    annotations
}

/// A tenant's memory cap beyond what its worker allocates, when the scenario sets none.
const DEFAULT_MEMORY_MIB: u64 = 256;

/// Starts the simulated device's host side for `state` and waits for its socket.
fn start_host_side(hami: &Path, state: &Path, label: &str) -> Result<Child, HarnessError> {
    let program = hami.with_file_name(FAKEGPU_HOST);
    let spawn_error = |source| HarnessError::Spawn {
        scenario: label.to_owned(),
        what: format!(
            "{} (build it: cargo build --release --workspace)",
            program.display()
        ),
        source,
    };
    let mut child = Command::new(&program)
        .arg(state)
        .stdin(Stdio::null())
        .spawn()
        .map_err(spawn_error)?;
    let socket = state.join("host.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(spawn_error(std::io::Error::other(format!(
                "it did not listen on {}",
                socket.display()
            ))));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(child)
}
