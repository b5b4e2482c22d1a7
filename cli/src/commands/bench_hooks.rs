//! `hami bench hooks`: the added cost of libhami.so per driver call.
//!
//! Each round runs the timing worker twice in fresh processes, plainly and under `hami run`
//! (a memory cap set, far above what the worker allocates), alternating which goes first, on
//! the simulated device unless `--system-driver` is given. The overhead is the median over
//! rounds of the paired differences. It also times `/bin/true` with and without the preload:
//! what a process that never touches a GPU pays.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use hami_bench::hooks::{self, HooksReport, WorkerPlan, WorkerReport};

#[derive(Args)]
pub struct HooksArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Paired rounds (plain and hooked worker processes).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Timed batches per entry point in each worker.
    #[arg(long, default_value_t = 200)]
    samples: u32,
    /// Calls per timed batch.
    #[arg(long, default_value_t = 1000)]
    batch: u32,
    /// Use the machine's NVIDIA driver instead of the simulated device.
    #[arg(long)]
    system_driver: bool,
    /// Internal: run the timing loop in this process and print its report as JSON.
    #[arg(long, hide = true)]
    worker: bool,
}

pub fn run(args: HooksArgs) -> anyhow::Result<()> {
    let plan = WorkerPlan {
        batch: args.batch,
        samples: args.samples,
        ..WorkerPlan::default()
    };
    if args.worker {
        let report = hooks::run_worker(plan)?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }

    let hami = std::env::current_exe().context("locating the hami executable")?;
    let state = tempfile::Builder::new()
        .prefix("hami-bench-sim-")
        .tempdir()?;
    let env = if args.system_driver {
        Vec::new()
    } else {
        hami_bench::sim_env::simulated_device_env(&hami, state.path(), &[])?
    };
    let worker = |hooked: bool| -> anyhow::Result<WorkerReport> {
        let mut command = Command::new(&hami);
        if hooked {
            command.args(["run", "--memory", "8Gi", "--"]).arg(&hami);
        }
        command
            .args(["bench", "hooks", "--worker", "--samples"])
            .arg(args.samples.to_string())
            .arg("--batch")
            .arg(args.batch.to_string())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stderr(Stdio::inherit());
        let output = command.output().context("starting a benchmark worker")?;
        if !output.status.success() {
            bail!(
                "benchmark worker (hooked: {hooked}) failed: {}",
                output.status
            );
        }
        serde_json::from_slice(&output.stdout).context("reading the worker's report")
    };

    let mut plain = Vec::new();
    let mut hooked = Vec::new();
    for round in 0..args.rounds.max(1) {
        if round % 2 == 0 {
            plain.push(worker(false)?);
            hooked.push(worker(true)?);
        } else {
            hooked.push(worker(true)?);
            plain.push(worker(false)?);
        }
    }
    let report = hooks::summarize(&plain, &hooked);
    let startup = preload_startup_us(&hami)?;

    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["true_startup_us_plain"] = startup.0.into();
        value["true_startup_us_preloaded"] = startup.1.into();
        println!("{value}");
    } else {
        print_table(&report, startup, args.system_driver);
    }
    Ok(())
}

/// Median µs per `/bin/true` run without and with libhami.so preloaded (10 rounds of 50).
fn preload_startup_us(hami: &Path) -> anyhow::Result<(f64, f64)> {
    let library = hami.with_file_name("libhami.so");
    let time = |preload: bool| -> anyhow::Result<f64> {
        let start = Instant::now();
        for _ in 0..50 {
            let mut command = Command::new("/bin/true");
            if preload {
                command.env("LD_PRELOAD", &library);
            }
            let status = command.status().context("running /bin/true")?;
            if !status.success() {
                bail!("/bin/true failed under the preload: {status}");
            }
        }
        Ok(start.elapsed().as_secs_f64() * 1e6 / 50.0)
    };
    let (mut plain, mut preloaded) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        plain.push(time(false)?);
        preloaded.push(time(true)?);
    }
    Ok((
        hooks::percentile(&mut plain, 0.5),
        hooks::percentile(&mut preloaded, 0.5),
    ))
}

fn print_table(report: &HooksReport, startup: (f64, f64), system_driver: bool) {
    let driver = if system_driver {
        "system driver"
    } else {
        "simulated device"
    };
    println!(
        "libhami.so overhead per call, {driver}, {} paired rounds (ns per call, batch means)",
        report.rounds
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "entry point",
        "plain p50",
        "hooked p50",
        "added p50",
        "plain p99",
        "hooked p99",
        "added p99"
    );
    let row = |name: &str, plain: hooks::CallCost, hooked: hooks::CallCost, p50: f64, p99: f64| {
        println!(
            "{name:<28} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            plain.p50_ns, hooked.p50_ns, p50, plain.p99_ns, hooked.p99_ns, p99
        );
    };
    row(
        "cuLaunchKernel",
        report.baseline.launch,
        report.hooked.launch,
        report.launch_overhead_ns_p50,
        report.launch_overhead_ns_p99,
    );
    row(
        "cuMemAlloc_v2 + cuMemFree_v2",
        report.baseline.alloc_free,
        report.hooked.alloc_free,
        report.alloc_free_overhead_ns_p50,
        report.alloc_free_overhead_ns_p99,
    );
    row(
        "cuMemGetInfo_v2",
        report.baseline.mem_info,
        report.hooked.mem_info,
        report.mem_info_overhead_ns_p50,
        report.hooked.mem_info.p99_ns - report.baseline.mem_info.p99_ns,
    );
    println!(
        "/bin/true start-up: {:.0} µs plain, {:.0} µs with libhami.so preloaded (+{:.0} µs)",
        startup.0,
        startup.1,
        startup.1 - startup.0
    );
}
