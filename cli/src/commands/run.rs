//! `hami run`: one program under libhami.so with a private ledger entry, no containerd needed.
//!
//! It does on one machine what the shim does for a container: record the node's devices, write
//! the container's limits and an empty usage part, preload the library with the ledger paths in
//! the environment, run the program, and remove the entry when the program ends.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use clap::Args;
use hami_ledger::paths::{ENV_LIMITS, ENV_NODE, ENV_USAGE, LedgerDir};
use hami_ledger::{
    ComputePolicy, ContainerLimits, DeviceInfo, DeviceLimit, NodeLedger, Priority, UsageLedger,
    compute, limits,
};
use hami_request::knobs;

/// Environment variable that names libhami.so when it is not next to the `hami` executable.
pub const ENV_LIBRARY: &str = "HAMI_LIBRARY";

#[derive(Args)]
pub struct RunArgs {
    /// Memory cap on each device: a Kubernetes quantity (`1Gi`, `512Mi`); a bare number is MiB.
    #[arg(long)]
    memory: Option<String>,
    /// Compute cap on each device, in percent of the device's busy time (1-100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    cores: Option<u32>,
    /// How the compute cap applies: hard or burst.
    #[arg(long, default_value = "hard", value_parser = policy_arg)]
    policy: ComputePolicy,
    /// Scheduling priority against other tenants of the device: high, normal or low.
    #[arg(long, default_value = "normal", value_parser = priority_arg)]
    priority: Priority,
    /// Devices the program may use, by index or UUID, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    device: Vec<String>,
    /// Ledger directory shared with other `hami run`s (default: a private temporary one);
    /// `hami top --ledger-dir DIR` shows what runs in it.
    #[arg(long)]
    ledger_dir: Option<PathBuf>,
    /// Container id of the ledger entry (default: `run-<pid>`).
    #[arg(long)]
    container_id: Option<String>,
    /// Keep the ledger entry after the program exits, for inspection.
    #[arg(long)]
    keep: bool,
    /// The program and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<OsString>,
}

fn policy_arg(text: &str) -> Result<ComputePolicy, String> {
    knobs::compute_policy(text).ok_or_else(|| format!("accepted: {}", knobs::ACCEPTED_POLICIES))
}

fn priority_arg(text: &str) -> Result<Priority, String> {
    knobs::priority(text).ok_or_else(|| format!("accepted: {}", knobs::ACCEPTED_PRIORITIES))
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let library = library_path()?;
    let memory_limit = args
        .memory
        .as_deref()
        .map(|text| {
            hami_request::gpu_memory_bytes(text)
                .with_context(|| format!("--memory {text:?} (a bare number is MiB)"))
        })
        .transpose()?;

    // A private directory disappears with the run; a shared one keeps other entries.
    let mut private_dir = match &args.ledger_dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("hami-run-")
                .tempdir()
                .context("creating a private ledger directory")?,
        ),
    };
    let root = match (&args.ledger_dir, &private_dir) {
        (Some(dir), _) => dir.clone(),
        (None, Some(dir)) => dir.path().to_path_buf(),
        (None, None) => unreachable!("one of the two is always set"),
    };
    let ledger = LedgerDir::new(&root);
    let node_path = ledger.node();
    let devices = hami_node::ensure_node_ledger(&node_path)?;
    let chosen = select_devices(&devices, &args.device)?;

    let container_id = args
        .container_id
        .clone()
        .unwrap_or_else(|| format!("run-{}", std::process::id()));
    let mut entry = Entry::create(&ledger, &container_id)?;
    let limits = ContainerLimits {
        container_id: container_id.clone(),
        devices: chosen
            .iter()
            .map(|device| DeviceLimit {
                uuid: device.uuid.clone(),
                memory_limit,
                compute_percent: args.cores,
                policy: args.policy,
                priority: args.priority,
            })
            .collect(),
    };
    limits::write(&entry.limits, &limits)
        .with_context(|| format!("writing {}", entry.limits.display()))?;
    UsageLedger::create(&entry.usage, chosen.len())
        .with_context(|| format!("writing {}", entry.usage.display()))?;

    let mut command = Command::new(&args.command[0]);
    command
        .args(&args.command[1..])
        .env("LD_PRELOAD", preload_value(&library))
        .env(ENV_NODE, &node_path)
        .env(ENV_LIMITS, &entry.limits)
        .env(ENV_USAGE, &entry.usage);
    if !args.device.is_empty() {
        let uuids: Vec<&str> = chosen.iter().map(|d| d.uuid.as_str()).collect();
        command.env("CUDA_VISIBLE_DEVICES", uuids.join(","));
    }
    // Host side, like the shim: publish the container's demand and priority to the node part,
    // which the container itself may only read (the compute limiter's priority and burst view).
    let node = NodeLedger::open_writable(&node_path)
        .with_context(|| format!("opening {}", node_path.display()))?;
    let usage = UsageLedger::attach(&entry.usage)
        .with_context(|| format!("attaching {}", entry.usage.display()))?;
    let stop = AtomicBool::new(false);
    let status = std::thread::scope(|scope| {
        scope.spawn(|| {
            if let Err(error) = compute::publish_contention(&node, &usage, &limits, &stop) {
                eprintln!("hami run: compute priority is not published: {error}");
            }
        });
        let status = wait_ignoring_interrupts(command);
        stop.store(true, Ordering::Relaxed);
        status
    })
    .with_context(|| format!("starting {:?}", args.command[0]))?;

    if args.keep {
        eprintln!("hami run: ledger entry kept in {}", entry.dir.display());
        entry.keep = true;
        if let Some(dir) = private_dir.take() {
            let _ = dir.keep();
        }
    }
    // `exit` runs no destructors: remove the entry (and a private directory) first.
    drop(entry);
    drop(private_dir);
    std::process::exit(match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    })
}

/// libhami.so: `$HAMI_LIBRARY`, else next to this executable (both live in `target/release`).
fn library_path() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(ENV_LIBRARY) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the hami executable")?;
    let path = exe.with_file_name("libhami.so");
    if !path.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p hami-intercept` or set {ENV_LIBRARY}",
            path.display()
        );
    }
    Ok(path)
}

/// The library first, then whatever the caller already preloads.
fn preload_value(library: &Path) -> OsString {
    let mut value = library.as_os_str().to_owned();
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        value.push(":");
        value.push(existing);
    }
    value
}

/// The devices named by `--device` (indices or UUIDs), or all of them.
fn select_devices(devices: &[DeviceInfo], wanted: &[String]) -> anyhow::Result<Vec<DeviceInfo>> {
    if devices.is_empty() {
        bail!("no devices found on this node");
    }
    if wanted.is_empty() {
        return Ok(devices.to_vec());
    }
    let mut chosen: Vec<DeviceInfo> = Vec::new();
    for name in wanted {
        let found = devices
            .iter()
            .find(|d| d.uuid == *name || name.parse::<u32>().is_ok_and(|i| i == d.index))
            .with_context(|| {
                let known: Vec<String> = devices
                    .iter()
                    .map(|d| format!("{} ({})", d.index, d.uuid))
                    .collect();
                format!(
                    "--device {name:?}: no such device; known: {}",
                    known.join(", ")
                )
            })?;
        if !chosen.iter().any(|d| d.uuid == found.uuid) {
            chosen.push(found.clone());
        }
    }
    Ok(chosen)
}

/// The container's directory and its two parts; removed when dropped unless kept, so an
/// early error never leaves an entry behind in a shared ledger directory.
struct Entry {
    dir: PathBuf,
    limits: PathBuf,
    usage: PathBuf,
    keep: bool,
}

impl Entry {
    fn create(ledger: &LedgerDir, container_id: &str) -> anyhow::Result<Self> {
        let dir = ledger.container_dir(container_id)?;
        if dir.exists() {
            bail!(
                "container id {container_id:?} is already in use in {} (pick another --container-id)",
                ledger.root().display()
            );
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            limits: ledger.limits(container_id)?,
            usage: ledger.usage(container_id)?,
            dir,
            keep: false,
        })
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs the program to completion. Like `system(3)`, the parent ignores the terminal's
/// interrupt while the child runs, so Ctrl-C stops the program and `hami run` still cleans up.
fn wait_ignoring_interrupts(mut command: Command) -> std::io::Result<std::process::ExitStatus> {
    let mut child = command.spawn()?;
    // SAFETY: SIG_IGN is a valid disposition and no Rust handler is replaced (none is installed).
    let previous = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let status = child.wait();
    // SAFETY: restores the disposition returned above.
    unsafe { libc::signal(libc::SIGINT, previous) };
    status
}
