//! Virtual memory management entry points.

use hami_hooks::cuda::*;

use super::{guard, out, read_in};
use crate::driver::memory::GRANULARITY;
use crate::driver::{Driver, context, initialised, vmm};

fn checked_prop(driver: &Driver, prop: *const CUmemAllocationProp) -> Result<usize, CUresult> {
    // SAFETY: null or a valid property struct by the API contract.
    let prop = unsafe { read_in(prop) }?;
    if prop.type_ != CU_MEM_ALLOCATION_TYPE_PINNED
        || prop.location.type_ != CU_MEM_LOCATION_TYPE_DEVICE
    {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    context::check_device(driver, prop.location.id).map_err(|_| CUDA_ERROR_INVALID_DEVICE)
}

/// # Safety
/// `handle` must be null or writable; `prop` null or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemCreate(
    handle: *mut CUmemGenericAllocationHandle,
    size: usize,
    prop: *const CUmemAllocationProp,
    flags: u64,
) -> CUresult {
    guard(|| {
        let driver = initialised()?;
        if handle.is_null() || flags != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let device = checked_prop(driver, prop)?;
        let created = vmm::create(driver, device, size as u64)?;
        // SAFETY: checked non-null; writable by the API contract.
        unsafe { out(handle, created as CUmemGenericAllocationHandle) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemRelease(handle: CUmemGenericAllocationHandle) -> CUresult {
    guard(|| vmm::release(initialised()?, handle as usize))
}

/// # Safety
/// `ptr` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAddressReserve(
    ptr: *mut CUdeviceptr,
    size: usize,
    alignment: usize,
    addr: CUdeviceptr,
    flags: u64,
) -> CUresult {
    guard(|| {
        initialised()?;
        // A requested address is a hint the driver may ignore; so does this one.
        let _ = addr;
        if ptr.is_null() || flags != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let base = vmm::reserve_address(size as u64, alignment as u64)?;
        // SAFETY: checked non-null; writable by the API contract.
        unsafe { out(ptr, base) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemAddressFree(ptr: CUdeviceptr, size: usize) -> CUresult {
    guard(|| {
        initialised()?;
        vmm::free_address(ptr, size as u64)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemMap(
    ptr: CUdeviceptr,
    size: usize,
    offset: usize,
    handle: CUmemGenericAllocationHandle,
    flags: u64,
) -> CUresult {
    guard(|| {
        initialised()?;
        if flags != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        vmm::map(ptr, size as u64, offset as u64, handle as usize)
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemUnmap(ptr: CUdeviceptr, size: usize) -> CUresult {
    guard(|| vmm::unmap(initialised()?, ptr, size as u64))
}

/// # Safety
/// `desc` must point to `count` access descriptors.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemSetAccess(
    ptr: CUdeviceptr,
    size: usize,
    desc: *const CUmemAccessDesc,
    count: usize,
) -> CUresult {
    guard(|| {
        let driver = initialised()?;
        if desc.is_null() || count == 0 || !vmm::is_mapped(ptr, size as u64) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        for index in 0..count {
            // SAFETY: `desc` holds `count` entries by the API contract.
            let access = unsafe { read_in(desc.add(index)) }?;
            if access.location.type_ != CU_MEM_LOCATION_TYPE_DEVICE {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            context::check_device(driver, access.location.id)?;
        }
        Ok(())
    })
}

/// # Safety
/// `granularity` must be null or writable; `prop` null or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetAllocationGranularity(
    granularity: *mut usize,
    prop: *const CUmemAllocationProp,
    option: CUmemAllocationGranularity_flags,
) -> CUresult {
    guard(|| {
        let driver = initialised()?;
        checked_prop(driver, prop)?;
        if option != CU_MEM_ALLOC_GRANULARITY_MINIMUM
            && option != CU_MEM_ALLOC_GRANULARITY_RECOMMENDED
        {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: forwarded caller contract.
        unsafe { out(granularity, GRANULARITY as usize) }
    })
}
