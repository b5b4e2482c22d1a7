//! The built-in kernels (`hami_spin`, `hami_fill`), shipped as PTX that real GPUs JIT and
//! the simulated device recognises by name.

use std::sync::Arc;

use anyhow::Context as _;
use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::Ptx;

/// `tests/fakegpu/kernels/hami_kernels.ptx`, compiled into the binary.
pub const PTX: &str = include_str!("../../fakegpu/kernels/hami_kernels.ptx");

/// The two kernels, loaded into `ctx`.
pub struct Kernels {
    pub spin: CudaFunction,
    pub fill: CudaFunction,
}

/// Loads the PTX module and looks both kernels up.
pub fn load(ctx: &Arc<CudaContext>) -> anyhow::Result<Kernels> {
    let module = ctx
        .load_module(Ptx::from_src(PTX))
        .context("loading hami_kernels.ptx")?;
    Ok(Kernels {
        spin: module.load_function("hami_spin").context("hami_spin")?,
        fill: module.load_function("hami_fill").context("hami_fill")?,
    })
}
