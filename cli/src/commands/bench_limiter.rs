//! `hami bench limiter`: compute-cap accuracy with real processes under `hami run`, or in
//! containers through the shim (`--containerd`).
//!
//! Without a subcommand it runs the scenarios (caps 10–90 alone, 30/70 and 20/30/50 side by
//! side, 50 µs and 20 ms kernels, graphs and the other launch kinds, burst, priority) on the
//! simulated device, or on the machine's GPU with `--real-gpu`, and prints a table or, with
//! `--json`, one JSON object. `load` and `probe` are the processes it starts: the kernel
//! launcher that runs under `hami run`, and the reader of the device's per-process busy time.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use hami_bench::limiter::containers::ContainerRuntime;
use hami_bench::limiter::worker::{Launch, WorkerSpec, WorkerStarted, run_worker};
use hami_bench::limiter::{DeviceKind, HarnessOptions, probe, render_table, run_harness};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LimiterArgs {
    #[command(subcommand)]
    role: Option<Role>,
    /// Print one JSON object (shares, max_error_pp, convergence_s, priority_throughput_ratio…)
    /// on stdout, and the table on stderr.
    #[arg(long)]
    json: bool,
    /// Short scenarios (a few seconds each), as CI runs them.
    #[arg(long)]
    quick: bool,
    /// Run only the scenarios whose name starts with this (repeatable): single, pair, trio,
    /// short-kernels, long-kernels, graph, ex, cooperative, per-thread, burst, priority.
    #[arg(long = "scenario")]
    scenarios: Vec<String>,
    /// Use the machine's GPU and driver instead of the simulated device.
    #[arg(long)]
    real_gpu: bool,
    /// Run each tenant as a container through the `hami` runtime of the containerd at this
    /// socket (`ctr run --runtime io.containerd.hami.v2` with `hami.io/*` annotations) instead
    /// of under `hami run`. Simulated device only; the shim's node ledger must list it.
    #[arg(long, value_name = "SOCKET")]
    containerd: Option<PathBuf>,
    /// The `ctr` program for `--containerd`.
    #[arg(long, default_value = "ctr", requires = "containerd")]
    ctr: PathBuf,
    /// containerd namespace of the tenants' containers.
    #[arg(long, default_value = "hami-bench", requires = "containerd")]
    namespace: String,
}

#[derive(Subcommand)]
enum Role {
    /// Internal: launch spin kernels as fast as the cap allows, then print a JSON report.
    #[command(hide = true)]
    Load(LoadArgs),
    /// Internal: print each process's cumulative busy time on a device every interval.
    #[command(hide = true)]
    Probe(ProbeArgs),
}

#[derive(Args)]
struct LoadArgs {
    #[arg(long, default_value_t = 0)]
    device: i32,
    /// Length of one kernel, µs.
    #[arg(long, default_value_t = 1000)]
    kernel_us: u64,
    /// Run this long.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// A fixed job of this many kernels instead of a duration.
    #[arg(long)]
    kernels: Option<u64>,
    #[arg(long, value_enum, default_value_t = LaunchArg::Kernel)]
    launch: LaunchArg,
    /// Kernels per captured graph (`--launch graph`).
    #[arg(long, default_value_t = 4)]
    graph_kernels: u32,
    /// Launches in flight at most.
    #[arg(long, default_value_t = 4)]
    depth: usize,
    /// Device memory to allocate and hold, MiB.
    #[arg(long, default_value_t = 0)]
    memory_mib: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum LaunchArg {
    Kernel,
    Ex,
    Cooperative,
    PerThread,
    Graph,
}

#[derive(Args)]
struct ProbeArgs {
    /// NVML index of the device.
    #[arg(long, default_value_t = 0)]
    device: u32,
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
}

pub fn run(args: LimiterArgs) -> anyhow::Result<()> {
    match args.role {
        Some(Role::Load(load)) => return run_load(load),
        Some(Role::Probe(p)) => {
            return probe::run_probe(p.device, Duration::from_millis(p.interval_ms.max(1)))
                .context("probe");
        }
        None => {}
    }
    let options = HarnessOptions {
        hami: std::env::current_exe().context("locating the hami executable")?,
        device: if args.real_gpu {
            DeviceKind::Real
        } else {
            DeviceKind::Simulated
        },
        quick: args.quick,
        only: args.scenarios,
        containers: args.containerd.map(|address| ContainerRuntime {
            address,
            ctr: args.ctr,
            namespace: args.namespace,
        }),
    };
    let report = run_harness(&options).context("limiter harness")?;
    if args.json {
        // The table goes to stderr, so one run yields both the figures and a readable view.
        eprint!("{}", render_table(&report));
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render_table(&report));
    }
    Ok(())
}

fn run_load(args: LoadArgs) -> anyhow::Result<()> {
    let spec = WorkerSpec {
        device: args.device,
        kernel_us: args.kernel_us,
        seconds: args.seconds,
        kernels: args.kernels,
        launch: match args.launch {
            LaunchArg::Kernel => Launch::Kernel,
            LaunchArg::Ex => Launch::Ex,
            LaunchArg::Cooperative => Launch::Cooperative,
            LaunchArg::PerThread => Launch::PerThread,
            LaunchArg::Graph => Launch::Graph,
        },
        graph_kernels: args.graph_kernels,
        depth: args.depth,
        memory_mib: args.memory_mib,
    };
    if spec.kernel_us == 0 {
        bail!("--kernel-us must be at least 1");
    }
    let started = WorkerStarted {
        pid: std::process::id(),
    };
    emit_line(&serde_json::to_string(&started)?);
    let report = run_worker(&spec).context("launching kernels")?;
    emit_line(&serde_json::to_string(&report)?);
    Ok(())
}

/// Writes one line for the harness; a harness that stopped listening is no error of the load.
fn emit_line(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
