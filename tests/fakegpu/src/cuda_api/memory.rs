//! Allocation paths (plain, pitch, managed, stream-ordered, pools, arrays), frees and
//! memory queries. Every path charges the shared device and fails with exactly
//! `CUDA_ERROR_OUT_OF_MEMORY` when it is full.

use std::ffi::{c_uint, c_void};

use hami_hooks::cuda::*;

use super::{guard, out, read_in};
use crate::driver::memory::{self, ARRAYS, Origin, PITCH_ALIGNMENT};
use crate::driver::ops::Op;
use crate::driver::pool::{self, AttributeValue, Pool};
use crate::driver::{Driver, context, initialised, stream};

fn current() -> Result<(&'static Driver, usize), CUresult> {
    let driver = initialised()?;
    Ok((driver, context::current()?.device))
}

fn mem_info() -> Result<(u64, u64), CUresult> {
    let (driver, device) = current()?;
    let info = driver
        .state
        .device(device)
        .ok_or(CUDA_ERROR_INVALID_DEVICE)?;
    Ok((
        info.total_memory.saturating_sub(info.used_memory),
        info.total_memory,
    ))
}

/// # Safety
/// `free` and `total` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetInfo(free: *mut c_uint, total: *mut c_uint) -> CUresult {
    guard(|| {
        let (available, all) = mem_info()?;
        let clamp = |v: u64| c_uint::try_from(v).unwrap_or(c_uint::MAX);
        // SAFETY: forwarded caller contract.
        unsafe {
            out(free, clamp(available))?;
            out(total, clamp(all))
        }
    })
}

/// # Safety
/// `free` and `total` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    guard(|| {
        let (available, all) = mem_info()?;
        // SAFETY: forwarded caller contract.
        unsafe {
            out(free, available as usize)?;
            out(total, all as usize)
        }
    })
}

fn allocate(
    dptr: *mut CUdeviceptr,
    bytes: usize,
    origin: Origin,
) -> Result<memory::Region, CUresult> {
    if dptr.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let (driver, device) = current()?;
    let region = memory::allocate(driver, device, bytes as u64, origin)?;
    // SAFETY: checked non-null; writable by the API contract.
    unsafe { out(dptr, region.base) }?;
    Ok(region)
}

/// # Safety
/// `dptr` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytesize: usize) -> CUresult {
    guard(|| allocate(dptr, bytesize, Origin::Plain).map(|_| ()))
}

/// # Safety
/// `dptr` and `p_pitch` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocPitch_v2(
    dptr: *mut CUdeviceptr,
    p_pitch: *mut usize,
    width_in_bytes: usize,
    height: usize,
    element_size_bytes: c_uint,
) -> CUresult {
    guard(|| {
        if p_pitch.is_null()
            || width_in_bytes == 0
            || height == 0
            || ![4, 8, 16].contains(&element_size_bytes)
        {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let pitch = width_in_bytes
            .checked_next_multiple_of(PITCH_ALIGNMENT)
            .ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let bytes = pitch.checked_mul(height).ok_or(CUDA_ERROR_OUT_OF_MEMORY)?;
        allocate(dptr, bytes, Origin::Pitch)?;
        // SAFETY: checked non-null; writable by the API contract.
        unsafe { out(p_pitch, pitch) }
    })
}

/// # Safety
/// `dptr` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocManaged(
    dptr: *mut CUdeviceptr,
    bytesize: usize,
    flags: c_uint,
) -> CUresult {
    guard(|| {
        if flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        allocate(dptr, bytesize, Origin::Managed).map(|_| ())
    })
}

fn free(dptr: CUdeviceptr) -> Result<(), CUresult> {
    let (driver, device) = current()?;
    if dptr == 0 {
        return Ok(());
    }
    // The driver does not free memory queued work may still touch: neither does this.
    stream::synchronize_device(device)?;
    let region = memory::free(driver, dptr)?;
    if let Origin::Pool(handle) = region.origin {
        pool::freed(handle, region.charged);
    }
    Ok(())
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult {
    guard(|| free(dptr))
}

fn alloc_from_pool(
    dptr: *mut CUdeviceptr,
    bytes: usize,
    pool_handle: usize,
    h_stream: CUstream,
) -> Result<(), CUresult> {
    let (_, device) = current()?;
    stream::resolve(h_stream as usize, device)?;
    let target = pool::get(pool_handle)?;
    if target.device != device {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let region = allocate(dptr, bytes, Origin::Pool(pool_handle))?;
    pool::allocated(pool_handle, region.charged);
    Ok(())
}

fn alloc_async(dptr: *mut CUdeviceptr, bytes: usize, h_stream: CUstream) -> Result<(), CUresult> {
    let (_, device) = current()?;
    alloc_from_pool(dptr, bytes, pool::default_pool(device), h_stream)
}

/// # Safety
/// `dptr` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocAsync(
    dptr: *mut CUdeviceptr,
    bytesize: usize,
    h_stream: CUstream,
) -> CUresult {
    guard(|| alloc_async(dptr, bytesize, h_stream))
}

/// # Safety
/// `dptr` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocAsync_ptsz(
    dptr: *mut CUdeviceptr,
    bytesize: usize,
    h_stream: CUstream,
) -> CUresult {
    guard(|| alloc_async(dptr, bytesize, h_stream))
}

/// # Safety
/// `dptr` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocFromPoolAsync(
    dptr: *mut CUdeviceptr,
    bytesize: usize,
    pool: CUmemoryPool,
    h_stream: CUstream,
) -> CUresult {
    guard(|| alloc_from_pool(dptr, bytesize, pool as usize, h_stream))
}

/// # Safety
/// `dptr` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocFromPoolAsync_ptsz(
    dptr: *mut CUdeviceptr,
    bytesize: usize,
    pool: CUmemoryPool,
    h_stream: CUstream,
) -> CUresult {
    guard(|| alloc_from_pool(dptr, bytesize, pool as usize, h_stream))
}

fn free_async(dptr: CUdeviceptr, h_stream: CUstream) -> Result<(), CUresult> {
    let (_, device) = current()?;
    let target = stream::resolve(h_stream as usize, device)?;
    memory::host_range(dptr, 1)?;
    target.submit(Op::Free { address: dptr });
    Ok(())
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemFreeAsync(dptr: CUdeviceptr, h_stream: CUstream) -> CUresult {
    guard(|| free_async(dptr, h_stream))
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemFreeAsync_ptsz(dptr: CUdeviceptr, h_stream: CUstream) -> CUresult {
    guard(|| free_async(dptr, h_stream))
}

/// # Safety
/// `pool` must be null or writable; `pool_props` null or a valid `CUmemPoolProps`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemPoolCreate(
    pool: *mut CUmemoryPool,
    pool_props: *const CUmemPoolProps,
) -> CUresult {
    guard(|| {
        let driver = initialised()?;
        // SAFETY: forwarded caller contract.
        let props = unsafe { read_in(pool_props) }?;
        if props.allocType != CU_MEM_ALLOCATION_TYPE_PINNED
            || props.location.type_ != CU_MEM_LOCATION_TYPE_DEVICE
        {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let device = context::check_device(driver, props.location.id)?;
        // SAFETY: forwarded caller contract.
        unsafe { out(pool, pool::create(device) as CUmemoryPool) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemPoolDestroy(pool: CUmemoryPool) -> CUresult {
    guard(|| {
        initialised()?;
        pool::destroy(pool as usize)
    })
}

/// # Safety
/// `value` must point to an `int` (reuse attributes) or a `cuuint64_t` (the others).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemPoolSetAttribute(
    pool: CUmemoryPool,
    attr: CUmemPool_attribute,
    value: *mut c_void,
) -> CUresult {
    guard(|| {
        initialised()?;
        let target = pool::get(pool as usize)?;
        let value = if Pool::is_int_attribute(attr) {
            // SAFETY: int attributes are passed as `int *` (caller contract).
            AttributeValue::Int(unsafe { read_in(value.cast::<i32>()) }?)
        } else {
            // SAFETY: the other attributes are passed as `cuuint64_t *`.
            AttributeValue::U64(unsafe { read_in(value.cast::<u64>()) }?)
        };
        target.set_attribute(attr, value)
    })
}

/// # Safety
/// `value` must point to writable storage of the attribute's type.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemPoolGetAttribute(
    pool: CUmemoryPool,
    attr: CUmemPool_attribute,
    value: *mut c_void,
) -> CUresult {
    guard(|| {
        initialised()?;
        match pool::get(pool as usize)?.attribute(attr)? {
            // SAFETY: the caller provides storage of the attribute's type.
            AttributeValue::Int(v) => unsafe { out(value.cast::<i32>(), v) },
            // SAFETY: as above.
            AttributeValue::U64(v) => unsafe { out(value.cast::<u64>(), v) },
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemPoolTrimTo(pool: CUmemoryPool, _min_bytes_to_keep: usize) -> CUresult {
    // Pools keep nothing cached, so there is never anything to trim.
    guard(|| {
        initialised()?;
        pool::get(pool as usize).map(|_| ())
    })
}

fn device_pool(pool_out: *mut CUmemoryPool, dev: CUdevice) -> Result<(), CUresult> {
    let driver = initialised()?;
    let device = context::check_device(driver, dev)?;
    // SAFETY: writable by the API contract (null is refused by `out`).
    unsafe { out(pool_out, pool::default_pool(device) as CUmemoryPool) }
}

/// # Safety
/// `pool_out` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetDefaultMemPool(
    pool_out: *mut CUmemoryPool,
    dev: CUdevice,
) -> CUresult {
    guard(|| device_pool(pool_out, dev))
}

/// # Safety
/// `pool` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetMemPool(pool: *mut CUmemoryPool, dev: CUdevice) -> CUresult {
    guard(|| device_pool(pool, dev))
}

fn element_size(format: CUarray_format) -> Option<u64> {
    match format {
        CU_AD_FORMAT_UNSIGNED_INT8 | CU_AD_FORMAT_SIGNED_INT8 => Some(1),
        CU_AD_FORMAT_UNSIGNED_INT16 | CU_AD_FORMAT_SIGNED_INT16 | CU_AD_FORMAT_HALF => Some(2),
        CU_AD_FORMAT_UNSIGNED_INT32 | CU_AD_FORMAT_SIGNED_INT32 | CU_AD_FORMAT_FLOAT => Some(4),
        _ => None,
    }
}

fn create_array(
    p_handle: *mut CUarray,
    width: usize,
    height: usize,
    depth: usize,
    format: CUarray_format,
    channels: c_uint,
) -> Result<(), CUresult> {
    if p_handle.is_null() || width == 0 || ![1, 2, 4].contains(&channels) {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let element = element_size(format).ok_or(CUDA_ERROR_INVALID_VALUE)?;
    let bytes = [width.max(1), height.max(1), depth.max(1)]
        .iter()
        .try_fold(element * u64::from(channels), |acc, n| {
            acc.checked_mul(*n as u64)
        })
        .ok_or(CUDA_ERROR_OUT_OF_MEMORY)?;
    let (driver, device) = current()?;
    let region = memory::allocate(driver, device, bytes, Origin::Array)?;
    let handle = ARRAYS.insert(region.base).0;
    // SAFETY: checked non-null; writable by the API contract.
    unsafe { out(p_handle, handle as CUarray) }
}

/// # Safety
/// `p_handle` must be null or writable; the descriptor null or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuArrayCreate_v2(
    p_handle: *mut CUarray,
    p_allocate_array: *const CUDA_ARRAY_DESCRIPTOR,
) -> CUresult {
    guard(|| {
        // SAFETY: forwarded caller contract.
        let desc = unsafe { read_in(p_allocate_array) }?;
        create_array(
            p_handle,
            desc.Width,
            desc.Height,
            0,
            desc.Format,
            desc.NumChannels,
        )
    })
}

/// # Safety
/// `p_handle` must be null or writable; the descriptor null or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuArray3DCreate_v2(
    p_handle: *mut CUarray,
    p_allocate_array: *const CUDA_ARRAY3D_DESCRIPTOR,
) -> CUresult {
    guard(|| {
        // SAFETY: forwarded caller contract.
        let desc = unsafe { read_in(p_allocate_array) }?;
        create_array(
            p_handle,
            desc.Width,
            desc.Height,
            desc.Depth,
            desc.Format,
            desc.NumChannels,
        )
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuArrayDestroy(h_array: CUarray) -> CUresult {
    guard(|| {
        let driver = initialised()?;
        stream::synchronize_device(context::current()?.device)?;
        let base = ARRAYS
            .remove(h_array as usize)
            .ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        memory::free(driver, *base).map(|_| ())
    })
}
