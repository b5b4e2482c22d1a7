//! `spin`: launch `hami_spin` kernels back to back for a while and count how many finished
//! (the compute-limiter tests compare this with the time a share allows).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use cudarc::driver::{CudaContext, LaunchConfig, PushKernelArg};

use crate::kernels;

#[derive(Args)]
pub struct SpinArgs {
    /// Duration of each kernel in microseconds.
    #[arg(long, default_value_t = 1000)]
    kernel_us: u64,
    /// How long to keep launching.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Kernels kept queued on the stream between synchronisations.
    #[arg(long, default_value_t = 4)]
    queue: u32,
    /// Also print `{"at_unix_ns", "launches"}` (launches so far) about this often; 0: never.
    /// Wall-clock instants, so reports of processes in different containers line up.
    #[arg(long, default_value_t = 0)]
    every_ms: u64,
}

fn unix_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Spins on `device` and prints `{"launches", "kernel_us", "elapsed_s", "started_unix_ns"}`,
/// after the progress lines `--every-ms` asks for.
pub fn run(device: usize, args: &SpinArgs) -> anyhow::Result<()> {
    let ctx = CudaContext::new(device).context("opening the device")?;
    let stream = ctx.new_stream()?;
    let kernels = kernels::load(&ctx)?;
    let ns = args.kernel_us * 1_000;
    let deadline = Duration::try_from_secs_f64(args.seconds).context("--seconds")?;
    let every = Duration::from_millis(args.every_ms);
    let started_unix_ns = unix_ns();
    let started = Instant::now();
    let mut reported = started;
    let mut launches = 0u64;
    while started.elapsed() < deadline {
        for _ in 0..args.queue.max(1) {
            let mut spin = stream.launch_builder(&kernels.spin);
            spin.arg(&ns);
            // SAFETY: hami_spin(u64 ns) only reads the clock.
            unsafe { spin.launch(LaunchConfig::for_num_elems(1)) }?;
            launches += 1;
        }
        stream.synchronize()?;
        if !every.is_zero() && reported.elapsed() >= every {
            reported = Instant::now();
            println!(
                "{}",
                serde_json::json!({"at_unix_ns": unix_ns(), "launches": launches})
            );
        }
    }
    let report = serde_json::json!({
        "launches": launches,
        "kernel_us": args.kernel_us,
        "elapsed_s": started.elapsed().as_secs_f64(),
        "started_unix_ns": started_unix_ns,
    });
    println!("{report}");
    Ok(())
}
