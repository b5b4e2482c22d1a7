//! `fill-until-oom`: allocate in steps until the driver refuses, report how far it got and
//! the exact error code (the memory-cap tests of libhami.so read this JSON).

use anyhow::Context as _;
use clap::Args;
use cudarc::driver::{CudaContext, result};

#[derive(Args)]
pub struct FillArgs {
    /// Size of each allocation: a Kubernetes quantity (64Mi, 1Gi; a bare number is MiB).
    #[arg(long, default_value = "64Mi", value_parser = step_bytes)]
    step: usize,
}

fn step_bytes(text: &str) -> Result<usize, String> {
    let bytes = hami_request::gpu_memory_bytes(text).map_err(|e| e.to_string())?;
    usize::try_from(bytes).map_err(|_| format!("{text:?} does not fit in memory"))
}

/// Allocates `args.step` bytes at a time on `device` until an allocation fails.
pub fn run(device: usize, args: &FillArgs) -> anyhow::Result<()> {
    let ctx = CudaContext::new(device).context("opening the device")?;
    ctx.bind_to_thread()?;
    let mut held = Vec::new();
    let error = loop {
        // SAFETY: the allocation is freed below with `free_sync`, never used otherwise.
        match unsafe { result::malloc_sync(args.step) } {
            Ok(pointer) => held.push(pointer),
            Err(error) => break error,
        }
        if held.len() > 1 << 20 {
            anyhow::bail!("no out-of-memory after {} allocations", held.len());
        }
    };
    let (free, total) = result::mem_get_info()?;
    for pointer in held.iter().copied() {
        // SAFETY: each pointer came from `malloc_sync` and is freed once.
        unsafe { result::free_sync(pointer) }?;
    }
    let report = serde_json::json!({
        "allocated_bytes": held.len() * args.step,
        "error_code": error.0 as i32,
        "mem_info_total": total,
        "mem_info_free": free,
    });
    println!("{report}");
    Ok(())
}
