//! Contexts: primary retain/release, create/destroy, current, synchronize.

use std::ffi::{c_int, c_uint};

use hami_hooks::cuda::*;

use super::{guard, out};
use crate::driver::{context, initialised, stream};

fn as_context(handle: usize) -> CUcontext {
    handle as CUcontext
}

/// # Safety
/// `pctx` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(pctx: *mut CUcontext, dev: CUdevice) -> CUresult {
    guard(|| {
        if pctx.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let handle = context::primary_retain(dev)?;
        // SAFETY: checked non-null; writable by the API contract.
        unsafe { out(pctx, as_context(handle)) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxRelease(dev: CUdevice) -> CUresult {
    guard(|| context::primary_release(dev))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxRelease_v2(dev: CUdevice) -> CUresult {
    guard(|| context::primary_release(dev))
}

/// # Safety
/// `flags` and `active` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxGetState(
    dev: CUdevice,
    flags: *mut c_uint,
    active: *mut c_int,
) -> CUresult {
    guard(|| {
        let is_active = context::primary_active(dev)?;
        // SAFETY: forwarded caller contract.
        unsafe {
            out(flags, 0)?;
            out(active, c_int::from(is_active))
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxSetFlags(dev: CUdevice, flags: c_uint) -> CUresult {
    guard(|| {
        context::primary_active(dev)
            .map(|_| ())
            .and_then(|()| check_ctx_flags(flags))
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxSetFlags_v2(dev: CUdevice, flags: c_uint) -> CUresult {
    cuDevicePrimaryCtxSetFlags(dev, flags)
}

fn check_ctx_flags(flags: c_uint) -> Result<(), CUresult> {
    // Scheduling (0x07), map-host (0x08), lmem-resize (0x10) and coredump/sync-memops bits.
    if flags & !0xff == 0 {
        Ok(())
    } else {
        Err(CUDA_ERROR_INVALID_VALUE)
    }
}

fn create(pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) -> Result<(), CUresult> {
    if pctx.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    check_ctx_flags(flags)?;
    let handle = context::create(dev)?;
    // SAFETY: checked non-null; writable by the API contract.
    unsafe { out(pctx, as_context(handle)) }
}

/// # Safety
/// `pctx` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxCreate(
    pctx: *mut CUcontext,
    flags: c_uint,
    dev: CUdevice,
) -> CUresult {
    guard(|| create(pctx, flags, dev))
}

/// # Safety
/// `pctx` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxCreate_v2(
    pctx: *mut CUcontext,
    flags: c_uint,
    dev: CUdevice,
) -> CUresult {
    guard(|| create(pctx, flags, dev))
}

/// # Safety
/// `pctx` must be null or writable; `params` must hold `num_params` entries.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxCreate_v3(
    pctx: *mut CUcontext,
    _params: *mut CUexecAffinityParam,
    num_params: c_int,
    flags: c_uint,
    dev: CUdevice,
) -> CUresult {
    guard(|| {
        if num_params < 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        create(pctx, flags, dev)
    })
}

/// # Safety
/// `pctx` must be null or writable; `params` null or a valid `CUctxCreateParams`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxCreate_v4(
    pctx: *mut CUcontext,
    _params: *mut CUctxCreateParams,
    flags: c_uint,
    dev: CUdevice,
) -> CUresult {
    guard(|| create(pctx, flags, dev))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxDestroy(ctx: CUcontext) -> CUresult {
    guard(|| context::destroy(ctx as usize))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxDestroy_v2(ctx: CUcontext) -> CUresult {
    guard(|| context::destroy(ctx as usize))
}

/// # Safety
/// `pctx` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetCurrent(pctx: *mut CUcontext) -> CUresult {
    guard(|| {
        initialised()?;
        // SAFETY: forwarded caller contract.
        unsafe { out(pctx, as_context(context::current_handle())) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSetCurrent(ctx: CUcontext) -> CUresult {
    guard(|| context::set_current(ctx as usize))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxPushCurrent(ctx: CUcontext) -> CUresult {
    guard(|| context::push_current(ctx as usize))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxPushCurrent_v2(ctx: CUcontext) -> CUresult {
    guard(|| context::push_current(ctx as usize))
}

fn pop(pctx: *mut CUcontext) -> Result<(), CUresult> {
    let handle = context::pop_current()?;
    if !pctx.is_null() {
        // SAFETY: non-null out-parameter, writable by the API contract.
        unsafe { out(pctx, as_context(handle)) }?;
    }
    Ok(())
}

/// # Safety
/// `pctx` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxPopCurrent(pctx: *mut CUcontext) -> CUresult {
    guard(|| pop(pctx))
}

/// # Safety
/// `pctx` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxPopCurrent_v2(pctx: *mut CUcontext) -> CUresult {
    guard(|| pop(pctx))
}

/// # Safety
/// `device` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetDevice(device: *mut CUdevice) -> CUresult {
    guard(|| {
        initialised()?;
        let current = context::current()?;
        // SAFETY: forwarded caller contract.
        unsafe { out(device, current.device as CUdevice) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSynchronize() -> CUresult {
    guard(|| {
        initialised()?;
        stream::synchronize_device(context::current()?.device)
    })
}
