//! Every launch variant passes the compute limiter's seam before reaching the driver: plain,
//! `Ex`, cooperative and graph launches, legacy and per-thread-stream (`_ptsz`) alike —
//! HAMi-core left cooperative and graph launches unthrottled and missed `Ex` for a while.
//! The device is only looked up if the limiter asks, so an idle seam costs nothing.

#![allow(non_snake_case, clippy::too_many_arguments)]

use hami_hooks::cuda::{
    CUDA_ERROR_NOT_PERMITTED, CUDA_ERROR_NOT_SUPPORTED, CUfunction, CUgraphExec, CUlaunchConfig,
    CUresult, CUstream, c_uint, c_void, pfn,
};

use super::devices;
use super::{Cuda, REGISTRY};
use crate::boundary::guarded;
use crate::limiter::{LaunchKind, LaunchRefused, LaunchSite, before_launch};
use crate::runtime::engine;

fn current_device_slot() -> Option<usize> {
    let engine = engine()?;
    devices::current_index(engine).ok()?
}

#[inline(always)]
fn launch(
    kind: LaunchKind,
    stream: usize,
    per_thread: bool,
    call: impl Fn() -> CUresult + Copy,
) -> CUresult {
    guarded(
        || {
            let site = LaunchSite::new(kind, stream, per_thread, &current_device_slot);
            match before_launch(&site) {
                Ok(()) => call(),
                Err(LaunchRefused) => CUDA_ERROR_NOT_PERMITTED,
            }
        },
        call,
    )
}

macro_rules! kernel_launch {
    ($name:ident, $kind:expr, $per_thread:expr, ($($extra:ident : $extra_ty:ty),*)) => {
        #[doc = concat!("`", stringify!($name), "`.")]
        ///
        /// # Safety
        /// The driver's contract for this entry point.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            f: CUfunction,
            grid_dim_x: c_uint,
            grid_dim_y: c_uint,
            grid_dim_z: c_uint,
            block_dim_x: c_uint,
            block_dim_y: c_uint,
            block_dim_z: c_uint,
            shared_mem_bytes: c_uint,
            h_stream: CUstream,
            kernel_params: *mut *mut c_void,
            $($extra: $extra_ty),*
        ) -> CUresult {
            let real = crate::real_or!(REGISTRY, Cuda::$name, pfn::$name, CUDA_ERROR_NOT_SUPPORTED);
            launch($kind, h_stream as usize, $per_thread, || {
                // SAFETY: the caller's arguments, forwarded unchanged under the driver's contract.
                unsafe {
                    real(
                        f, grid_dim_x, grid_dim_y, grid_dim_z, block_dim_x, block_dim_y,
                        block_dim_z, shared_mem_bytes, h_stream, kernel_params $(, $extra)*,
                    )
                }
            })
        }
        const _: pfn::$name = $name;
    };
}

kernel_launch!(cuLaunchKernel, LaunchKind::Kernel, false, (extra: *mut *mut c_void));
kernel_launch!(cuLaunchKernel_ptsz, LaunchKind::Kernel, true, (extra: *mut *mut c_void));
kernel_launch!(
    cuLaunchCooperativeKernel,
    LaunchKind::Cooperative,
    false,
    ()
);
kernel_launch!(
    cuLaunchCooperativeKernel_ptsz,
    LaunchKind::Cooperative,
    true,
    ()
);

fn config_stream(config: *const CUlaunchConfig) -> usize {
    // SAFETY: null-checked; the driver's contract makes a non-null config valid.
    unsafe { config.as_ref() }.map_or(0, |c| c.hStream as usize)
}

/// `cuLaunchKernelEx`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLaunchKernelEx(
    config: *const CUlaunchConfig,
    f: CUfunction,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuLaunchKernelEx,
        pfn::cuLaunchKernelEx,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    launch(
        LaunchKind::KernelEx,
        config_stream(config),
        false,
        || unsafe { real(config, f, kernel_params, extra) },
    )
}
const _: pfn::cuLaunchKernelEx = cuLaunchKernelEx;

/// `cuLaunchKernelEx_ptsz`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLaunchKernelEx_ptsz(
    config: *const CUlaunchConfig,
    f: CUfunction,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuLaunchKernelEx_ptsz,
        pfn::cuLaunchKernelEx_ptsz,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    launch(
        LaunchKind::KernelEx,
        config_stream(config),
        true,
        || unsafe { real(config, f, kernel_params, extra) },
    )
}
const _: pfn::cuLaunchKernelEx_ptsz = cuLaunchKernelEx_ptsz;

/// `cuGraphLaunch`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphLaunch(h_graph_exec: CUgraphExec, h_stream: CUstream) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuGraphLaunch,
        pfn::cuGraphLaunch,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    launch(LaunchKind::Graph, h_stream as usize, false, || unsafe {
        real(h_graph_exec, h_stream)
    })
}
const _: pfn::cuGraphLaunch = cuGraphLaunch;

/// `cuGraphLaunch_ptsz`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphLaunch_ptsz(
    h_graph_exec: CUgraphExec,
    h_stream: CUstream,
) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuGraphLaunch_ptsz,
        pfn::cuGraphLaunch_ptsz,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    launch(LaunchKind::Graph, h_stream as usize, true, || unsafe {
        real(h_graph_exec, h_stream)
    })
}
const _: pfn::cuGraphLaunch_ptsz = cuGraphLaunch_ptsz;
