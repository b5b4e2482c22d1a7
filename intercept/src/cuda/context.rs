//! Contexts cost device memory (100–500 MB on real GPUs, uncounted by HAMi-core): the first
//! context of this process on a device charges `HAMI_CONTEXT_OVERHEAD` once, before the
//! driver creates it. A context that does not fit fails with `CUDA_ERROR_OUT_OF_MEMORY`, as
//! the driver itself does when a device is full. The charge is returned when the process's
//! slot is reclaimed (contexts live until the process exits in practice).

#![allow(non_snake_case)]

use hami_hooks::cuda::{
    CUDA_ERROR_NOT_SUPPORTED, CUDA_ERROR_OUT_OF_MEMORY, CUcontext, CUctxCreateParams, CUdevice,
    CUexecAffinityParam, CUresult, c_int, c_uint, pfn,
};

use super::devices;
use super::{Cuda, REGISTRY};
use crate::boundary::guarded;
use crate::runtime::engine;

/// Charges the context overhead of `dev`, then runs `call`.
#[inline]
fn charged_context(dev: CUdevice, call: impl Fn() -> CUresult + Copy) -> CUresult {
    guarded(
        || {
            let Some(engine) = engine() else {
                return call();
            };
            if let Some(index) = devices::of_ordinal(engine, dev).index
                && engine.charge_context(index).is_err()
            {
                return CUDA_ERROR_OUT_OF_MEMORY;
            }
            call()
        },
        call,
    )
}

/// `cuDevicePrimaryCtxRetain`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(pctx: *mut CUcontext, dev: CUdevice) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuDevicePrimaryCtxRetain,
        pfn::cuDevicePrimaryCtxRetain,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    charged_context(dev, || unsafe { real(pctx, dev) })
}
const _: pfn::cuDevicePrimaryCtxRetain = cuDevicePrimaryCtxRetain;

/// `cuCtxCreate`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxCreate(
    pctx: *mut CUcontext,
    flags: c_uint,
    dev: CUdevice,
) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuCtxCreate,
        pfn::cuCtxCreate,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    charged_context(dev, || unsafe { real(pctx, flags, dev) })
}
const _: pfn::cuCtxCreate = cuCtxCreate;

/// `cuCtxCreate_v2`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxCreate_v2(
    pctx: *mut CUcontext,
    flags: c_uint,
    dev: CUdevice,
) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuCtxCreate_v2,
        pfn::cuCtxCreate_v2,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    charged_context(dev, || unsafe { real(pctx, flags, dev) })
}
const _: pfn::cuCtxCreate_v2 = cuCtxCreate_v2;

/// `cuCtxCreate_v3`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxCreate_v3(
    pctx: *mut CUcontext,
    params: *mut CUexecAffinityParam,
    num_params: c_int,
    flags: c_uint,
    dev: CUdevice,
) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuCtxCreate_v3,
        pfn::cuCtxCreate_v3,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    charged_context(dev, || unsafe {
        real(pctx, params, num_params, flags, dev)
    })
}
const _: pfn::cuCtxCreate_v3 = cuCtxCreate_v3;

/// `cuCtxCreate_v4`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxCreate_v4(
    pctx: *mut CUcontext,
    params: *mut CUctxCreateParams,
    flags: c_uint,
    dev: CUdevice,
) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuCtxCreate_v4,
        pfn::cuCtxCreate_v4,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    charged_context(dev, || unsafe { real(pctx, params, flags, dev) })
}
const _: pfn::cuCtxCreate_v4 = cuCtxCreate_v4;
