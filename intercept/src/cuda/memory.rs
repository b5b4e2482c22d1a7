//! Every CUDA allocation path, charged before the driver call at the size the driver takes.
//!
//! | path | charged | released |
//! |---|---|---|
//! | `cuMemAlloc_v2`, `cuMemAllocManaged` | size rounded up to the granularity | `cuMemFree_v2` |
//! | `cuMemAllocPitch_v2` | real pitch × height, rounded (reserved at an upper bound, then settled) | `cuMemFree_v2` |
//! | `cuMemAllocAsync[_ptsz]`, `cuMemAllocFromPoolAsync[_ptsz]` | size rounded, at allocation | `cuMemFreeAsync[_ptsz]` (or `cuMemFree_v2`) |
//! | `cuMemCreate` (device location) | size rounded, at creation (mapping costs nothing more) | `cuMemRelease` |
//! | `cuArrayCreate_v2`, `cuArray3DCreate_v2` | width × height × depth × element size, rounded | `cuArrayDestroy` |
//!
//! Over the cap every path returns `CUDA_ERROR_OUT_OF_MEMORY` without calling the driver.
//! Frees are always forwarded, tracked or not (HAMi-core refused untracked frees, #93).
//! The device of a pointer allocation is the current context's; pool and async allocations
//! likewise (the stream's context is current in every runtime-driven program).

#![allow(non_snake_case)]

use hami_hooks::cuda::{
    CU_AD_FORMAT_HALF, CU_AD_FORMAT_SIGNED_INT8, CU_AD_FORMAT_SIGNED_INT16,
    CU_AD_FORMAT_UNSIGNED_INT8, CU_AD_FORMAT_UNSIGNED_INT16, CU_MEM_LOCATION_TYPE_DEVICE,
    CUDA_ARRAY_DESCRIPTOR, CUDA_ARRAY3D_DESCRIPTOR, CUDA_ERROR_NOT_SUPPORTED,
    CUDA_ERROR_OUT_OF_MEMORY, CUDA_SUCCESS, CUarray, CUarray_format, CUdeviceptr,
    CUmemAllocationProp, CUmemGenericAllocationHandle, CUmemoryPool, CUresult, CUstream, c_uint,
    pfn,
};

use super::devices::{self, DeviceRef, round_up};
use super::{Cuda, REGISTRY, checked, result_of};
use crate::boundary::guarded;
use crate::engine::table::KeyKind;
use crate::runtime::{ProcessEngine, engine};

/// An upper bound of the row alignment `cuMemAllocPitch` uses, for the reservation made before
/// the driver picks the pitch (a larger real pitch is reserved afterwards).
const PITCH_ALIGNMENT_BOUND: u64 = 512;

fn free_pointer_unaccounted(raw: u64) {
    let address = REGISTRY.real(Cuda::cuMemFree_v2 as usize);
    if !address.is_null() {
        // SAFETY: the driver's cuMemFree_v2; `raw` is a pointer it just returned.
        let free =
            unsafe { std::mem::transmute::<*mut std::ffi::c_void, pfn::cuMemFree_v2>(address) };
        // SAFETY: as above.
        let _ = unsafe { free(raw) };
    }
}

fn current_device(engine: &ProcessEngine) -> Result<(usize, DeviceRef), CUresult> {
    let device = devices::current(engine)?;
    let index = device.index.ok_or(CUDA_ERROR_OUT_OF_MEMORY)?;
    Ok((index, device))
}

/// A pointer allocation of `size` bytes on the current device through `call`.
#[inline(always)]
fn accounted_pointer(
    out: *mut CUdeviceptr,
    size: usize,
    call: impl Fn() -> CUresult + Copy,
) -> CUresult {
    guarded(
        || {
            let Some(engine) = engine() else {
                return call();
            };
            if out.is_null() || size == 0 {
                return call();
            }
            let (index, device) = match current_device(engine) {
                Ok(found) => found,
                Err(code) => return code,
            };
            let bytes = round_up(size as u64, device.granularity);
            result_of(engine.allocate(
                index,
                KeyKind::DevicePointer,
                bytes,
                || {
                    checked(call())?;
                    // SAFETY: the driver succeeded, so it wrote the new pointer to `out`.
                    Ok(unsafe { *out })
                },
                free_pointer_unaccounted,
            ))
        },
        call,
    )
}

/// Forwards a free and releases what the object charged.
#[inline(always)]
fn accounted_free(kind: KeyKind, raw: u64, call: impl Fn() -> CUresult + Copy) -> CUresult {
    guarded(
        || {
            let Some(engine) = engine() else {
                return call();
            };
            match engine.free(kind, raw, || checked(call())) {
                Ok(()) => CUDA_SUCCESS,
                Err(code) => code,
            }
        },
        call,
    )
}

/// `cuMemAlloc_v2`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytesize: usize) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuMemAlloc_v2,
        pfn::cuMemAlloc_v2,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: the caller's arguments, forwarded unchanged under the driver's contract.
    accounted_pointer(dptr, bytesize, || unsafe { real(dptr, bytesize) })
}
const _: pfn::cuMemAlloc_v2 = cuMemAlloc_v2;

/// `cuMemAllocManaged`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocManaged(
    dptr: *mut CUdeviceptr,
    bytesize: usize,
    flags: c_uint,
) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuMemAllocManaged,
        pfn::cuMemAllocManaged,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    accounted_pointer(dptr, bytesize, || unsafe { real(dptr, bytesize, flags) })
}
const _: pfn::cuMemAllocManaged = cuMemAllocManaged;

/// `cuMemAllocAsync`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocAsync(
    dptr: *mut CUdeviceptr,
    bytesize: usize,
    h_stream: CUstream,
) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuMemAllocAsync,
        pfn::cuMemAllocAsync,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    accounted_pointer(dptr, bytesize, || unsafe { real(dptr, bytesize, h_stream) })
}
const _: pfn::cuMemAllocAsync = cuMemAllocAsync;

/// `cuMemAllocAsync_ptsz`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocAsync_ptsz(
    dptr: *mut CUdeviceptr,
    bytesize: usize,
    h_stream: CUstream,
) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuMemAllocAsync_ptsz,
        pfn::cuMemAllocAsync_ptsz,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    accounted_pointer(dptr, bytesize, || unsafe { real(dptr, bytesize, h_stream) })
}
const _: pfn::cuMemAllocAsync_ptsz = cuMemAllocAsync_ptsz;

/// `cuMemAllocFromPoolAsync`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocFromPoolAsync(
    dptr: *mut CUdeviceptr,
    bytesize: usize,
    pool: CUmemoryPool,
    h_stream: CUstream,
) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuMemAllocFromPoolAsync,
        pfn::cuMemAllocFromPoolAsync,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    accounted_pointer(dptr, bytesize, || unsafe {
        real(dptr, bytesize, pool, h_stream)
    })
}
const _: pfn::cuMemAllocFromPoolAsync = cuMemAllocFromPoolAsync;

/// `cuMemAllocFromPoolAsync_ptsz`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocFromPoolAsync_ptsz(
    dptr: *mut CUdeviceptr,
    bytesize: usize,
    pool: CUmemoryPool,
    h_stream: CUstream,
) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuMemAllocFromPoolAsync_ptsz,
        pfn::cuMemAllocFromPoolAsync_ptsz,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    accounted_pointer(dptr, bytesize, || unsafe {
        real(dptr, bytesize, pool, h_stream)
    })
}
const _: pfn::cuMemAllocFromPoolAsync_ptsz = cuMemAllocFromPoolAsync_ptsz;

/// `cuMemAllocPitch_v2`: the pitch is the driver's choice, so the reservation is made at an
/// upper bound and settled to the real pitch × height once the driver has answered.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocPitch_v2(
    dptr: *mut CUdeviceptr,
    p_pitch: *mut usize,
    width_in_bytes: usize,
    height: usize,
    element_size_bytes: c_uint,
) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuMemAllocPitch_v2,
        pfn::cuMemAllocPitch_v2,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    let call = || unsafe { real(dptr, p_pitch, width_in_bytes, height, element_size_bytes) };
    guarded(
        || {
            let Some(engine) = engine() else {
                return call();
            };
            if dptr.is_null() || p_pitch.is_null() || width_in_bytes == 0 || height == 0 {
                return call();
            }
            let (index, device) = match current_device(engine) {
                Ok(found) => found,
                Err(code) => return code,
            };
            let rows = height as u64;
            let estimate = round_up(
                round_up(width_in_bytes as u64, PITCH_ALIGNMENT_BOUND).saturating_mul(rows),
                device.granularity,
            );
            result_of(engine.allocate_adjusted(
                index,
                KeyKind::DevicePointer,
                estimate,
                || {
                    checked(call())?;
                    // SAFETY: the driver succeeded, so it wrote both out-parameters.
                    let (pointer, pitch) = unsafe { (*dptr, *p_pitch) };
                    Ok((
                        pointer,
                        round_up((pitch as u64).saturating_mul(rows), device.granularity),
                    ))
                },
                free_pointer_unaccounted,
            ))
        },
        call,
    )
}
const _: pfn::cuMemAllocPitch_v2 = cuMemAllocPitch_v2;

/// `cuMemFree_v2`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuMemFree_v2,
        pfn::cuMemFree_v2,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    accounted_free(KeyKind::DevicePointer, dptr, || unsafe { real(dptr) })
}
const _: pfn::cuMemFree_v2 = cuMemFree_v2;

/// `cuMemFreeAsync`: released when the free is queued (the bytes are the pool's again from
/// the stream's point of view).
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemFreeAsync(dptr: CUdeviceptr, h_stream: CUstream) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuMemFreeAsync,
        pfn::cuMemFreeAsync,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    accounted_free(KeyKind::DevicePointer, dptr, || unsafe {
        real(dptr, h_stream)
    })
}
const _: pfn::cuMemFreeAsync = cuMemFreeAsync;

/// `cuMemFreeAsync_ptsz`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemFreeAsync_ptsz(dptr: CUdeviceptr, h_stream: CUstream) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuMemFreeAsync_ptsz,
        pfn::cuMemFreeAsync_ptsz,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    accounted_free(KeyKind::DevicePointer, dptr, || unsafe {
        real(dptr, h_stream)
    })
}
const _: pfn::cuMemFreeAsync_ptsz = cuMemFreeAsync_ptsz;

/// `cuMemCreate`: physical memory is charged when created; `cuMemMap` adds nothing.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemCreate(
    handle: *mut CUmemGenericAllocationHandle,
    size: usize,
    prop: *const CUmemAllocationProp,
    flags: u64,
) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuMemCreate,
        pfn::cuMemCreate,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    let call = || unsafe { real(handle, size, prop, flags) };
    guarded(
        || {
            let Some(engine) = engine() else {
                return call();
            };
            if handle.is_null() || prop.is_null() || size == 0 {
                return call();
            }
            // SAFETY: non-null, and the driver's contract makes it a valid property struct.
            let location = unsafe { (*prop).location };
            if location.type_ != CU_MEM_LOCATION_TYPE_DEVICE {
                return call();
            }
            let device = devices::of_ordinal(engine, location.id);
            let Some(index) = device.index else {
                return CUDA_ERROR_OUT_OF_MEMORY;
            };
            let release = |raw: u64| {
                let address = REGISTRY.real(Cuda::cuMemRelease as usize);
                if !address.is_null() {
                    // SAFETY: the driver's cuMemRelease, for a handle it just created.
                    let f = unsafe {
                        std::mem::transmute::<*mut std::ffi::c_void, pfn::cuMemRelease>(address)
                    };
                    // SAFETY: as above.
                    let _ = unsafe { f(raw) };
                }
            };
            result_of(engine.allocate(
                index,
                KeyKind::MemHandle,
                round_up(size as u64, device.granularity),
                || {
                    checked(call())?;
                    // SAFETY: the driver succeeded, so it wrote the handle.
                    Ok(unsafe { *handle })
                },
                release,
            ))
        },
        call,
    )
}
const _: pfn::cuMemCreate = cuMemCreate;

/// `cuMemRelease`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemRelease(handle: CUmemGenericAllocationHandle) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuMemRelease,
        pfn::cuMemRelease,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    accounted_free(KeyKind::MemHandle, handle, || unsafe { real(handle) })
}
const _: pfn::cuMemRelease = cuMemRelease;

/// Bytes per channel of an array format (formats not listed are 4-byte ones).
fn format_bytes(format: CUarray_format) -> u64 {
    match format {
        CU_AD_FORMAT_UNSIGNED_INT8 | CU_AD_FORMAT_SIGNED_INT8 => 1,
        CU_AD_FORMAT_UNSIGNED_INT16 | CU_AD_FORMAT_SIGNED_INT16 | CU_AD_FORMAT_HALF => 2,
        _ => 4,
    }
}

/// The footprint of an array: every dimension at least 1 (1D and 2D arrays have height or
/// depth 0), times the element size.
pub fn array_bytes(
    width: usize,
    height: usize,
    depth: usize,
    format: CUarray_format,
    channels: c_uint,
) -> u64 {
    [width, height.max(1), depth.max(1)].iter().fold(
        format_bytes(format).saturating_mul(u64::from(channels.max(1))),
        |acc, dim| acc.saturating_mul(*dim as u64),
    )
}

fn accounted_array(
    handle: *mut CUarray,
    bytes: Option<u64>,
    call: impl Fn() -> CUresult + Copy,
) -> CUresult {
    guarded(
        || {
            let Some(engine) = engine() else {
                return call();
            };
            let Some(bytes) = bytes.filter(|b| *b > 0 && !handle.is_null()) else {
                return call();
            };
            let (index, device) = match current_device(engine) {
                Ok(found) => found,
                Err(code) => return code,
            };
            let destroy = |raw: u64| {
                let address = REGISTRY.real(Cuda::cuArrayDestroy as usize);
                if !address.is_null() {
                    // SAFETY: the driver's cuArrayDestroy, for an array it just created.
                    let f = unsafe {
                        std::mem::transmute::<*mut std::ffi::c_void, pfn::cuArrayDestroy>(address)
                    };
                    // SAFETY: as above; the handle round-trips through u64 unchanged.
                    let _ = unsafe { f(raw as usize as CUarray) };
                }
            };
            result_of(engine.allocate(
                index,
                KeyKind::Array,
                round_up(bytes, device.granularity),
                || {
                    checked(call())?;
                    // SAFETY: the driver succeeded, so it wrote the array handle.
                    Ok(unsafe { *handle } as usize as u64)
                },
                destroy,
            ))
        },
        call,
    )
}

/// `cuArrayCreate_v2`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuArrayCreate_v2(
    p_handle: *mut CUarray,
    p_allocate_array: *const CUDA_ARRAY_DESCRIPTOR,
) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuArrayCreate_v2,
        pfn::cuArrayCreate_v2,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: null-checked; the driver's contract makes a non-null descriptor valid.
    let bytes = unsafe { p_allocate_array.as_ref() }
        .map(|d| array_bytes(d.Width, d.Height, 1, d.Format, d.NumChannels));
    // SAFETY: forwarded unchanged.
    accounted_array(p_handle, bytes, || unsafe {
        real(p_handle, p_allocate_array)
    })
}
const _: pfn::cuArrayCreate_v2 = cuArrayCreate_v2;

/// `cuArray3DCreate_v2`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuArray3DCreate_v2(
    p_handle: *mut CUarray,
    p_allocate_array: *const CUDA_ARRAY3D_DESCRIPTOR,
) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuArray3DCreate_v2,
        pfn::cuArray3DCreate_v2,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: null-checked; the driver's contract makes a non-null descriptor valid.
    let bytes = unsafe { p_allocate_array.as_ref() }
        .map(|d| array_bytes(d.Width, d.Height, d.Depth, d.Format, d.NumChannels));
    // SAFETY: forwarded unchanged.
    accounted_array(p_handle, bytes, || unsafe {
        real(p_handle, p_allocate_array)
    })
}
const _: pfn::cuArray3DCreate_v2 = cuArray3DCreate_v2;

/// `cuArrayDestroy`.
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuArrayDestroy(h_array: CUarray) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuArrayDestroy,
        pfn::cuArrayDestroy,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    accounted_free(KeyKind::Array, h_array as usize as u64, || unsafe {
        real(h_array)
    })
}
const _: pfn::cuArrayDestroy = cuArrayDestroy;

#[cfg(test)]
mod tests {
    use hami_hooks::cuda::CU_AD_FORMAT_FLOAT;

    use super::*;

    #[test]
    fn array_footprints_follow_the_descriptor() {
        assert_eq!(array_bytes(1024, 0, 0, CU_AD_FORMAT_FLOAT, 4), 1024 * 16);
        assert_eq!(
            array_bytes(1024, 768, 0, CU_AD_FORMAT_UNSIGNED_INT8, 1),
            1024 * 768
        );
        assert_eq!(
            array_bytes(64, 64, 64, CU_AD_FORMAT_HALF, 2),
            64 * 64 * 64 * 4
        );
        assert_eq!(
            array_bytes(usize::MAX, 2, 2, CU_AD_FORMAT_FLOAT, 4),
            u64::MAX
        );
    }
}
