//! Initialisation, versions, entry-point lookup and error strings.

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};

use hami_hooks::cuda::*;
use hami_hooks::{ProcStatus, resolve};

use super::{export_address, guard, out};
use crate::driver::{self, errors};

/// The CUDA version this driver reports (12.8).
pub const DRIVER_VERSION: c_int = 12080;

#[unsafe(no_mangle)]
pub extern "C" fn cuInit(flags: c_uint) -> CUresult {
    guard(|| {
        if flags != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        driver::init()
    })
}

/// # Safety
/// `driver_version` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDriverGetVersion(driver_version: *mut c_int) -> CUresult {
    // SAFETY: forwarded caller contract.
    guard(|| unsafe { out(driver_version, DRIVER_VERSION) })
}

/// Why a lookup serves nothing: the driver's result code and the `symbolStatus` to report.
type LookupFailure = (CUresult, CUdriverProcAddressQueryResult);

fn lookup(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    cuda_version: c_int,
    flags: u64,
) -> Result<(), LookupFailure> {
    if symbol.is_null() || pfn.is_null() {
        return Err((
            CUDA_ERROR_INVALID_VALUE,
            CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND,
        ));
    }
    let failure = |status: ProcStatus| (status.result(), status.query_result());
    // SAFETY: a non-null symbol is a NUL-terminated C string by the API contract.
    let name = unsafe { CStr::from_ptr(symbol) }
        .to_str()
        .map_err(|_| failure(ProcStatus::SymbolNotFound))?;
    let entry = resolve(name, cuda_version, flags).map_err(failure)?;
    let address = export_address(entry.symbol_str());
    if address.is_null() {
        return Err(failure(ProcStatus::SymbolNotFound));
    }
    // SAFETY: `pfn` is non-null and writable by the API contract.
    unsafe { *pfn = address };
    Ok(())
}

/// # Safety
/// `symbol` must be a C string, `pfn` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetProcAddress(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    cuda_version: c_int,
    flags: u64,
) -> CUresult {
    guard(|| {
        if !pfn.is_null() {
            // SAFETY: non-null out-parameter; the driver clears it before looking up.
            unsafe { *pfn = std::ptr::null_mut() };
        }
        lookup(symbol, pfn, cuda_version, flags).map_err(|(result, _)| result)
    })
}

/// # Safety
/// `symbol` must be a C string, `pfn` writable, `symbol_status` null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetProcAddress_v2(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    cuda_version: c_int,
    flags: u64,
    symbol_status: *mut CUdriverProcAddressQueryResult,
) -> CUresult {
    guard(|| {
        if !pfn.is_null() {
            // SAFETY: non-null out-parameter.
            unsafe { *pfn = std::ptr::null_mut() };
        }
        let outcome = lookup(symbol, pfn, cuda_version, flags);
        let status = match outcome {
            Ok(()) => CU_GET_PROC_ADDRESS_SUCCESS,
            Err((_, status)) => status,
        };
        if !symbol_status.is_null() {
            // SAFETY: non-null, writable by the API contract.
            unsafe { *symbol_status = status };
        }
        outcome.map_err(|(result, _)| result)
    })
}

/// # Safety
/// `p_str` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorName(error: CUresult, p_str: *mut *const c_char) -> CUresult {
    guard(|| {
        let described = errors::describe(error);
        // SAFETY: forwarded caller contract; the strings are static.
        unsafe {
            out(
                p_str,
                described.map_or(std::ptr::null(), |(name, _)| name.as_ptr()),
            )
        }?;
        described.map(|_| ()).ok_or(CUDA_ERROR_INVALID_VALUE)
    })
}

/// # Safety
/// `p_str` must be null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorString(error: CUresult, p_str: *mut *const c_char) -> CUresult {
    guard(|| {
        let described = errors::describe(error);
        // SAFETY: forwarded caller contract; the strings are static.
        unsafe {
            out(
                p_str,
                described.map_or(std::ptr::null(), |(_, text)| text.as_ptr()),
            )
        }?;
        described.map(|_| ()).ok_or(CUDA_ERROR_INVALID_VALUE)
    })
}
