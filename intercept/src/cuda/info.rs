//! Memory queries report the container's slice: total = cap, free = what the cap leaves
//! (never more than the device really has), never negative, never an error of our own.
//! Null out-pointers are accepted where the caller passes one (OptiX passes `free = NULL`,
//! which crashed HAMi-core, #333): the driver is asked into locals.

#![allow(non_snake_case)]

use hami_hooks::cuda::{CUDA_ERROR_NOT_SUPPORTED, CUDA_SUCCESS, CUdevice, CUresult, c_uint, pfn};

use super::devices;
use super::{Cuda, REGISTRY};
use crate::boundary::guarded;
use crate::engine::view::{MemoryView, memory_view};
use crate::runtime::engine;

/// The view of a device index given the driver's real figures; `None` when not capped here.
fn view(index: Option<usize>, real_total: u64, real_free: u64) -> Option<MemoryView> {
    let engine = engine()?;
    let index = index?;
    let limit = engine.limit(index)?;
    Some(memory_view(
        limit,
        engine.used(index),
        real_total,
        real_free,
    ))
}

fn current_index() -> Option<usize> {
    let engine = engine()?;
    devices::current(engine).ok()?.index
}

/// Writes `value` through `out` if non-null.
fn put<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: non-null out-pointer of the caller, valid under the driver's contract.
        unsafe { out.write(value) };
    }
}

/// `cuMemGetInfo_v2`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuMemGetInfo_v2,
        pfn::cuMemGetInfo_v2,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    let call = || unsafe { real(free, total) };
    guarded(
        || {
            let (mut real_free, mut real_total) = (0usize, 0usize);
            // SAFETY: valid locals as out-pointers.
            let code = unsafe { real(&mut real_free, &mut real_total) };
            if code != CUDA_SUCCESS {
                return code;
            }
            let shown = view(current_index(), real_total as u64, real_free as u64);
            let (f, t) = shown.map_or((real_free, real_total), |v| {
                (v.free as usize, v.total as usize)
            });
            put(free, f);
            put(total, t);
            CUDA_SUCCESS
        },
        call,
    )
}
const _: pfn::cuMemGetInfo_v2 = cuMemGetInfo_v2;

/// `cuMemGetInfo` (32-bit sizes, clamped).
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetInfo(free: *mut c_uint, total: *mut c_uint) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuMemGetInfo,
        pfn::cuMemGetInfo,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    let call = || unsafe { real(free, total) };
    guarded(
        || {
            let (mut real_free, mut real_total) = (0 as c_uint, 0 as c_uint);
            // SAFETY: valid locals as out-pointers.
            let code = unsafe { real(&mut real_free, &mut real_total) };
            if code != CUDA_SUCCESS {
                return code;
            }
            let clamp = |v: u64| c_uint::try_from(v).unwrap_or(c_uint::MAX);
            let shown = view(current_index(), u64::from(real_total), u64::from(real_free));
            let (f, t) = shown.map_or((real_free, real_total), |v| (clamp(v.free), clamp(v.total)));
            put(free, f);
            put(total, t);
            CUDA_SUCCESS
        },
        call,
    )
}
const _: pfn::cuMemGetInfo = cuMemGetInfo;

fn device_total(dev: CUdevice, real_total: u64) -> u64 {
    let Some(engine) = engine() else {
        return real_total;
    };
    let index = devices::of_ordinal(engine, dev).index;
    view(index, real_total, real_total).map_or(real_total, |v| v.total)
}

/// `cuDeviceTotalMem_v2`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuDeviceTotalMem_v2,
        pfn::cuDeviceTotalMem_v2,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    let call = || unsafe { real(bytes, dev) };
    guarded(
        || {
            let code = call();
            if code == CUDA_SUCCESS && !bytes.is_null() {
                // SAFETY: the driver succeeded and wrote through the non-null pointer.
                let real_total = unsafe { *bytes } as u64;
                put(bytes, device_total(dev, real_total) as usize);
            }
            code
        },
        call,
    )
}
const _: pfn::cuDeviceTotalMem_v2 = cuDeviceTotalMem_v2;

/// `cuDeviceTotalMem` (32-bit size, clamped).
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceTotalMem(bytes: *mut c_uint, dev: CUdevice) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuDeviceTotalMem,
        pfn::cuDeviceTotalMem,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    let call = || unsafe { real(bytes, dev) };
    guarded(
        || {
            let code = call();
            if code == CUDA_SUCCESS && !bytes.is_null() {
                // SAFETY: the driver succeeded and wrote through the non-null pointer.
                let real_total = u64::from(unsafe { *bytes });
                put(
                    bytes,
                    c_uint::try_from(device_total(dev, real_total)).unwrap_or(c_uint::MAX),
                );
            }
            code
        },
        call,
    )
}
const _: pfn::cuDeviceTotalMem = cuDeviceTotalMem;
