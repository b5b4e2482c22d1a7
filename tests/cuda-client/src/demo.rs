//! `demo`: one pass over what a CUDA program does, printed step by step.

use anyhow::{Context as _, ensure};
use cudarc::driver::sys::{CUdevice_attribute, CUevent_flags};
use cudarc::driver::{CudaContext, LaunchConfig, PushKernelArg};

use crate::kernels;

const MIB: usize = 1 << 20;
const VALUES: usize = 1 << 20;
const FILL_VALUE: u32 = 0x00C0_FFEE;
const SPIN_NS: u64 = 20_000_000;

/// Runs the demo on `device`.
pub fn run(device: usize) -> anyhow::Result<()> {
    let ctx = CudaContext::new(device)
        .context("opening the device (is libcuda.so.1 on the library path?)")?;
    let sms = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
    println!(
        "device {device}: {}, {} MiB, {sms} SMs",
        ctx.name()?,
        ctx.total_mem()? / MIB
    );
    let stream = ctx.new_stream()?;
    let kernels = kernels::load(&ctx)?;

    let host: Vec<u32> = (0..VALUES as u32).collect();
    let mut buffer = stream.clone_htod(&host)?;
    let round_trip = stream.clone_dtoh(&buffer)?;
    ensure!(round_trip == host, "host→device→host copy changed the data");
    println!(
        "copied {} MiB host→device→host, bytes intact",
        VALUES * 4 / MIB
    );

    let count = VALUES as u64;
    let config = LaunchConfig::for_num_elems(VALUES as u32);
    let mut fill = stream.launch_builder(&kernels.fill);
    fill.arg(&mut buffer).arg(&FILL_VALUE).arg(&count);
    // SAFETY: hami_fill(u64 dst, u32 value, u64 count) writes `count` u32 into `buffer`,
    // which holds exactly VALUES of them.
    unsafe { fill.launch(config) }?;
    let filled = stream.clone_dtoh(&buffer)?;
    ensure!(
        filled.iter().all(|v| *v == FILL_VALUE),
        "hami_fill did not write every value"
    );
    println!("hami_fill wrote {VALUES} values of {FILL_VALUE:#x}, verified on the host");

    let start = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    let mut spin = stream.launch_builder(&kernels.spin);
    spin.arg(&SPIN_NS);
    // SAFETY: hami_spin(u64 ns) only reads the clock.
    unsafe { spin.launch(LaunchConfig::for_num_elems(1)) }?;
    let end = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    end.synchronize()?;
    let elapsed = start.elapsed_ms(&end)?;
    println!(
        "hami_spin asked for {} ms, events measured {elapsed:.2} ms",
        SPIN_NS / 1_000_000
    );
    ensure!(
        f64::from(elapsed) >= (SPIN_NS / 1_000_000) as f64 * 0.99,
        "the spin kernel ended early"
    );

    let (free, total) = ctx.mem_get_info()?;
    println!(
        "memory: {} MiB free of {} MiB while holding {} MiB",
        free / MIB,
        total / MIB,
        VALUES * 4 / MIB
    );
    drop(buffer);
    stream.synchronize()?;
    println!("demo ok");
    Ok(())
}
