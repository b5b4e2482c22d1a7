//! Devices: count, handles, names, UUIDs, attributes, total memory.

use std::ffi::{c_char, c_int, c_uint};

use hami_hooks::cuda::*;

use super::{guard, out};
use crate::driver::context::check_device;
use crate::driver::initialised;

/// What every simulated device is called.
pub const DEVICE_NAME: &str = "NVIDIA H200 (hami-fakegpu)";

/// # Safety
/// `device` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGet(device: *mut CUdevice, ordinal: c_int) -> CUresult {
    guard(|| {
        let driver = initialised()?;
        let index = check_device(driver, ordinal)?;
        // SAFETY: forwarded caller contract.
        unsafe { out(device, index as CUdevice) }
    })
}

/// # Safety
/// `count` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut c_int) -> CUresult {
    guard(|| {
        let driver = initialised()?;
        // SAFETY: forwarded caller contract.
        unsafe { out(count, driver.device_count() as c_int) }
    })
}

/// # Safety
/// `name` must be null or writable for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice) -> CUresult {
    guard(|| {
        let driver = initialised()?;
        check_device(driver, dev)?;
        let len = usize::try_from(len).map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
        if name.is_null() || len == 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: `name` is writable for `len` bytes by the API contract.
        unsafe { write_c_string(name, len, DEVICE_NAME) };
        Ok(())
    })
}

/// Writes `text` truncated to `len - 1` bytes plus a NUL.
///
/// # Safety
/// `buffer` must be writable for `len > 0` bytes.
pub(crate) unsafe fn write_c_string(buffer: *mut c_char, len: usize, text: &str) {
    let copied = text.len().min(len - 1);
    // SAFETY: `copied + 1 <= len` bytes are written into the caller's buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), buffer, copied);
        *buffer.add(copied) = 0;
    }
}

fn uuid_of(dev: CUdevice) -> Result<CUuuid, CUresult> {
    let driver = initialised()?;
    let index = check_device(driver, dev)?;
    let info = driver
        .state
        .device(index)
        .ok_or(CUDA_ERROR_INVALID_DEVICE)?;
    Ok(CUuuid {
        bytes: info.uuid.map(|b| b as c_char),
    })
}

/// # Safety
/// `uuid` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetUuid(uuid: *mut CUuuid, dev: CUdevice) -> CUresult {
    // SAFETY: forwarded caller contract.
    guard(|| unsafe { out(uuid, uuid_of(dev)?) })
}

/// # Safety
/// `uuid` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetUuid_v2(uuid: *mut CUuuid, dev: CUdevice) -> CUresult {
    // SAFETY: forwarded caller contract.
    guard(|| unsafe { out(uuid, uuid_of(dev)?) })
}

/// The value of a device attribute on a device with `sms` multiprocessors.
#[allow(clippy::match_overlapping_arm)]
pub fn attribute(attrib: CUdevice_attribute, sms: u32, ordinal: usize) -> Option<c_int> {
    let value = match attrib {
        CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK => 1024,
        CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X | CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y => 1024,
        CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z => 64,
        CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X => i32::MAX,
        CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y | CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z => 65535,
        CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK => 48 * 1024,
        CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY => 64 * 1024,
        CU_DEVICE_ATTRIBUTE_WARP_SIZE => 32,
        CU_DEVICE_ATTRIBUTE_MAX_PITCH => i32::MAX,
        CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK => 65536,
        CU_DEVICE_ATTRIBUTE_CLOCK_RATE => 1_980_000,
        CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT => 512,
        CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT => c_int::try_from(sms).unwrap_or(c_int::MAX),
        CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS => 1,
        CU_DEVICE_ATTRIBUTE_PCI_BUS_ID => c_int::try_from(ordinal + 1).unwrap_or(0),
        CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID | CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID => 0,
        CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE => 2_619_000,
        CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH => 6144,
        CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE => 50 * 1024 * 1024,
        CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR => 2048,
        CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT => 2,
        CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING => 1,
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR => 9,
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR => 0,
        CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR => 228 * 1024,
        CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR => 65536,
        CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY => 1,
        CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS => 1,
        CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH => 1,
        CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN => 227 * 1024,
        CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED => 1,
        CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED => 1,
        // Every other attribute the driver defines exists and is unsupported here.
        1..CU_DEVICE_ATTRIBUTE_MAX => 0,
        _ => return None,
    };
    Some(value)
}

/// # Safety
/// `pi` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetAttribute(
    pi: *mut c_int,
    attrib: CUdevice_attribute,
    dev: CUdevice,
) -> CUresult {
    guard(|| {
        let driver = initialised()?;
        let index = check_device(driver, dev)?;
        let sms = driver.state.device(index).map_or(0, |d| d.sms);
        let value = attribute(attrib, sms, index).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        // SAFETY: forwarded caller contract.
        unsafe { out(pi, value) }
    })
}

fn total_memory(dev: CUdevice) -> Result<u64, CUresult> {
    let driver = initialised()?;
    let index = check_device(driver, dev)?;
    Ok(driver.state.device(index).map_or(0, |d| d.total_memory))
}

/// # Safety
/// `bytes` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceTotalMem(bytes: *mut c_uint, dev: CUdevice) -> CUresult {
    // SAFETY: forwarded caller contract; the 32-bit ABI saturates like the driver.
    guard(|| unsafe {
        out(
            bytes,
            c_uint::try_from(total_memory(dev)?).unwrap_or(c_uint::MAX),
        )
    })
}

/// # Safety
/// `bytes` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) -> CUresult {
    // SAFETY: forwarded caller contract.
    guard(|| unsafe {
        out(
            bytes,
            usize::try_from(total_memory(dev)?).unwrap_or(usize::MAX),
        )
    })
}
