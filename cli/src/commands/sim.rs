//! `hami sim`: the simulated NVIDIA device. `env` prints the shell lines that put any
//! program on it; `status` shows its memory and who keeps it busy, read through its NVML.

use std::ffi::{CStr, c_char, c_uint};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail, ensure};
use clap::{Args, Subcommand};
use hami_hooks::nvml::samples::utilization_by_pid;
use hami_hooks::nvml::{self, *};

/// Sonames under which programs look for the driver and NVML.
const SONAMES: [&str; 4] = [
    "libcuda.so.1",
    "libcuda.so",
    "libnvidia-ml.so.1",
    "libnvidia-ml.so",
];
const LIBRARY: &str = "libhami_fakegpu.so";
const MIB: u64 = 1 << 20;

#[derive(Args)]
pub struct SimArgs {
    #[command(subcommand)]
    command: SimCommand,
}

#[derive(Subcommand)]
enum SimCommand {
    /// Print `export` lines for the simulated device: `eval "$(hami sim env)"`.
    Env(EnvArgs),
    /// Show the simulated device: memory, utilisation, processes and their busy share.
    Status(StatusArgs),
}

#[derive(Args)]
struct EnvArgs {
    /// Number of devices.
    #[arg(long, default_value_t = 1)]
    devices: u32,
    /// Memory per device: a Kubernetes quantity (16Gi, 512Mi; a bare number is MiB).
    #[arg(long, default_value = "16Gi")]
    memory: String,
    /// Streaming multiprocessors per device.
    #[arg(long, default_value_t = 132)]
    sms: u32,
    /// Device memory each context costs (300Mi; a bare number is MiB).
    #[arg(long, default_value = "0")]
    context_memory: String,
    /// Directory of the shared device state (default: /tmp/hami-fakegpu-$UID).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Forget the existing device state first (its configuration wins otherwise).
    #[arg(long)]
    reset: bool,
}

#[derive(Args)]
struct StatusArgs {
    /// Directory of the shared device state (default: $HAMI_FAKEGPU_DIR, else /tmp/hami-fakegpu-$UID).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: SimArgs) -> anyhow::Result<()> {
    match args.command {
        SimCommand::Env(args) => env(&args),
        SimCommand::Status(args) => status(&args),
    }
}

fn default_state_dir() -> PathBuf {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("hami-fakegpu-{uid}"))
}

/// The built simulated driver: `$HAMI_FAKEGPU_LIB`, else next to this executable.
fn fakegpu_library() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("HAMI_FAKEGPU_LIB") {
        let path = PathBuf::from(path);
        ensure!(
            path.is_file(),
            "HAMI_FAKEGPU_LIB={} is not a file",
            path.display()
        );
        return Ok(path);
    }
    let exe = std::env::current_exe().context("locating the hami executable")?;
    let dir = exe.parent().context("hami executable has no directory")?;
    // The newest build: `cargo test` refreshes `deps/` without copying the library up.
    [dir.join(LIBRARY), dir.join("deps").join(LIBRARY)]
        .into_iter()
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .with_context(|| {
            format!("{LIBRARY} not found next to {} (build it: cargo build --release --workspace, or set HAMI_FAKEGPU_LIB)", exe.display())
        })
}

/// A memory flag: a Kubernetes quantity, a bare number is MiB (as `hami run --memory`);
/// `0` only where `zero_allowed`.
fn parse_memory(flag: &str, text: &str, zero_allowed: bool) -> anyhow::Result<u64> {
    match hami_request::gpu_memory_bytes(text) {
        Ok(bytes) => Ok(bytes),
        Err(hami_request::QuantityError::NotPositive { .. })
            if zero_allowed && !text.trim().starts_with('-') =>
        {
            Ok(0)
        }
        Err(e) => Err(e).with_context(|| format!("--{flag} (a bare number is MiB)")),
    }
}

/// Single-quotes `text` for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn env(args: &EnvArgs) -> anyhow::Result<()> {
    ensure!(
        (1..=8).contains(&args.devices),
        "--devices must be between 1 and 8"
    );
    ensure!(args.sms > 0, "--sms must be positive");
    let memory = parse_memory("memory", &args.memory, false)?;
    let context_memory = parse_memory("context-memory", &args.context_memory, true)?;
    let library = fakegpu_library()?;
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let state_dir = std::path::absolute(&state_dir).context("resolving the state directory")?;
    if args.reset {
        reset(&state_dir)?;
    }
    let lib_dir = state_dir.join("lib");
    std::fs::create_dir_all(&lib_dir).with_context(|| format!("creating {}", lib_dir.display()))?;
    for soname in SONAMES {
        let link = lib_dir.join(soname);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&library, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    let lib_dir = lib_dir.to_str().context("state directory is not UTF-8")?;
    let state = state_dir.to_str().context("state directory is not UTF-8")?;
    println!(
        "export LD_LIBRARY_PATH={}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}",
        shell_quote(lib_dir)
    );
    println!("export HAMI_FAKEGPU_DIR={}", shell_quote(state));
    println!("export HAMI_FAKEGPU_DEVICES={}", args.devices);
    println!("export HAMI_FAKEGPU_MEMORY={memory}");
    println!("export HAMI_FAKEGPU_SMS={}", args.sms);
    println!("export HAMI_FAKEGPU_CONTEXT_MEMORY={context_memory}");
    if state_dir.join("device-state").exists() && !args.reset {
        eprintln!(
            "hami sim: {} already holds a device state; its configuration wins (use --reset to start over)",
            state_dir.display()
        );
    }
    Ok(())
}

fn reset(state_dir: &Path) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "device-state" || (name.starts_with("slot-") && name.ends_with(".lock")) {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// NVML of the simulated device, loaded from the built library.
struct Nvml {
    library: libloading::Library,
}

impl Nvml {
    fn load(state_dir: &Path) -> anyhow::Result<Nvml> {
        ensure!(
            state_dir.join("device-state").exists(),
            "no simulated device state in {} (run a program after `eval \"$(hami sim env)\"` first)",
            state_dir.display()
        );
        // SAFETY: set before the simulated driver is loaded and before this process starts
        // any thread, so nothing reads the environment concurrently.
        unsafe { std::env::set_var("HAMI_FAKEGPU_DIR", state_dir) };
        // SAFETY: loading the simulated driver runs no initialisers with preconditions.
        let library = unsafe { libloading::Library::new(fakegpu_library()?) }
            .context("loading the simulated NVML")?;
        let nvml = Nvml { library };
        let init: nvml::pfn::nvmlInit_v2 = nvml.sym("nvmlInit_v2")?;
        // SAFETY: nvmlInit_v2 takes no arguments.
        check(unsafe { init() }, "nvmlInit_v2")?;
        Ok(nvml)
    }

    fn sym<T: Copy>(&self, name: &str) -> anyhow::Result<T> {
        // SAFETY: callers name the exact function-pointer type from the hooks table.
        Ok(unsafe {
            *self
                .library
                .get::<T>(name.as_bytes())
                .with_context(|| format!("NVML has no {name}"))?
        })
    }
}

fn check(rc: nvmlReturn_t, what: &str) -> anyhow::Result<()> {
    ensure!(rc == NVML_SUCCESS, "{what} failed with NVML error {rc}");
    Ok(())
}

fn c_text(buffer: &[c_char]) -> String {
    // SAFETY: NVML NUL-terminates what it writes into the zero-initialised buffer.
    unsafe { CStr::from_ptr(buffer.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let state_dir = args
        .state_dir
        .clone()
        .or_else(|| std::env::var_os("HAMI_FAKEGPU_DIR").map(PathBuf::from))
        .unwrap_or_else(default_state_dir);
    let nvml = Nvml::load(&state_dir)?;
    let count_fn: nvml::pfn::nvmlDeviceGetCount_v2 = nvml.sym("nvmlDeviceGetCount_v2")?;
    let handle_fn: nvml::pfn::nvmlDeviceGetHandleByIndex_v2 =
        nvml.sym("nvmlDeviceGetHandleByIndex_v2")?;
    let uuid_fn: nvml::pfn::nvmlDeviceGetUUID = nvml.sym("nvmlDeviceGetUUID")?;
    let name_fn: nvml::pfn::nvmlDeviceGetName = nvml.sym("nvmlDeviceGetName")?;
    let memory_fn: nvml::pfn::nvmlDeviceGetMemoryInfo = nvml.sym("nvmlDeviceGetMemoryInfo")?;
    let rates_fn: nvml::pfn::nvmlDeviceGetUtilizationRates =
        nvml.sym("nvmlDeviceGetUtilizationRates")?;
    let processes_fn: nvml::pfn::nvmlDeviceGetComputeRunningProcesses_v3 =
        nvml.sym("nvmlDeviceGetComputeRunningProcesses_v3")?;
    let samples_fn: nvml::pfn::nvmlDeviceGetProcessUtilization =
        nvml.sym("nvmlDeviceGetProcessUtilization")?;

    let mut count: c_uint = 0;
    // SAFETY: valid out-pointer.
    check(unsafe { count_fn(&mut count) }, "nvmlDeviceGetCount_v2")?;
    let mut devices = Vec::new();
    for index in 0..count {
        let mut device = std::ptr::null_mut();
        let mut uuid = [0 as c_char; NVML_DEVICE_UUID_V2_BUFFER_SIZE];
        let mut name = [0 as c_char; NVML_DEVICE_NAME_V2_BUFFER_SIZE];
        let mut memory = nvmlMemory_t::default();
        let mut rates = nvmlUtilization_t::default();
        let mut infos = [nvmlProcessInfo_t::default(); 64];
        let mut info_count = infos.len() as c_uint;
        let mut samples = [nvmlProcessUtilizationSample_t::default(); 512];
        let mut sample_count = samples.len() as c_uint;
        // SAFETY: valid out-pointers and buffers of the sizes passed.
        let sampled = unsafe {
            check(
                handle_fn(index, &mut device),
                "nvmlDeviceGetHandleByIndex_v2",
            )?;
            check(
                uuid_fn(device, uuid.as_mut_ptr(), uuid.len() as c_uint),
                "nvmlDeviceGetUUID",
            )?;
            check(
                name_fn(device, name.as_mut_ptr(), name.len() as c_uint),
                "nvmlDeviceGetName",
            )?;
            check(memory_fn(device, &mut memory), "nvmlDeviceGetMemoryInfo")?;
            check(
                rates_fn(device, &mut rates),
                "nvmlDeviceGetUtilizationRates",
            )?;
            check(
                processes_fn(device, &mut info_count, infos.as_mut_ptr()),
                "nvmlDeviceGetComputeRunningProcesses_v3",
            )?;
            samples_fn(device, samples.as_mut_ptr(), &mut sample_count, 0)
        };
        let busy: Vec<(u32, u32)> = match sampled {
            NVML_SUCCESS => {
                let count = (sample_count as usize).min(samples.len());
                utilization_by_pid(&mut samples[..count], 0)
            }
            NVML_ERROR_NOT_FOUND => Vec::new(),
            rc => bail!("nvmlDeviceGetProcessUtilization failed with NVML error {rc}"),
        };
        let processes: Vec<serde_json::Value> = infos[..info_count as usize]
            .iter()
            .map(|info| {
                let share = busy.iter().find(|(pid, _)| *pid == info.pid).map_or(0, |(_, u)| *u);
                serde_json::json!({ "pid": info.pid, "memory_bytes": info.usedGpuMemory, "busy_percent": share })
            })
            .collect();
        devices.push(serde_json::json!({
            "index": index,
            "uuid": c_text(&uuid),
            "name": c_text(&name),
            "memory_total_bytes": memory.total,
            "memory_used_bytes": memory.used,
            "utilization_percent": rates.gpu,
            "processes": processes,
        }));
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "state_dir": state_dir, "devices": devices })
        );
        return Ok(());
    }
    println!("simulated devices in {}", state_dir.display());
    for device in &devices {
        println!(
            "device {}  {}  {}",
            device["index"],
            device["uuid"].as_str().unwrap_or(""),
            device["name"].as_str().unwrap_or("")
        );
        let (used, total) = (
            device["memory_used_bytes"].as_u64().unwrap_or(0),
            device["memory_total_bytes"].as_u64().unwrap_or(0),
        );
        println!(
            "  memory       {} MiB used of {} MiB",
            used / MIB,
            total / MIB
        );
        println!(
            "  utilization  {}% over the last second",
            device["utilization_percent"]
        );
        let processes = device["processes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if processes.is_empty() {
            println!("  processes    none");
        }
        for process in processes {
            println!(
                "  pid {:<8} memory {:>8} MiB   busy {:>3}% of the device",
                process["pid"],
                process["memory_bytes"].as_u64().unwrap_or(0) / MIB,
                process["busy_percent"]
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_quotes() {
        assert_eq!(parse_memory("memory", "16Gi", false).unwrap(), 16 << 30);
        assert_eq!(
            parse_memory("memory", "4096", false).unwrap(),
            4 << 30,
            "MiB"
        );
        assert_eq!(parse_memory("memory", "1.5Gi", false).unwrap(), 3 << 29);
        assert_eq!(parse_memory("context-memory", "0", true).unwrap(), 0);
        assert!(parse_memory("memory", "0", false).is_err());
        let err = parse_memory("memory", "12GB", false).unwrap_err();
        assert!(format!("{err:#}").contains("--memory"), "{err:#}");
        assert_eq!(shell_quote("/tmp/it's"), r"'/tmp/it'\''s'");
    }
}
