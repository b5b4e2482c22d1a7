//! `cuGetProcAddress` and `_v2`: the CUDA runtime (≥ 11.3) fetches every driver entry point
//! through these.
//!
//! HAMi-core ignored the caller's version and flags and guessed `_v3`/`_v2`/plain by name,
//! so v1 callers got v2 ABIs (#57) and `_ptsz` callers got legacy-stream wrappers. Here the
//! real function answers with the caller's own version and flags; the address it returns is
//! then compared with the real address of every wrapped variant of that base name, and only an
//! exact match is replaced, by the wrapper of that very variant. Anything else — unknown
//! names, unwrapped entry points, addresses this library cannot place — is returned untouched.

#![allow(non_snake_case)]

use std::ffi::CStr;

use hami_hooks::cuda::{
    CUDA_ERROR_NOT_SUPPORTED, CUDA_SUCCESS, CUdriverProcAddressQueryResult, CUresult, c_char,
    c_int, c_void, pfn,
};

use super::{Cuda, REGISTRY};
use crate::boundary::guarded;

/// Replaces `*pfn` by the wrapper of the variant it is, if it is one.
fn map_result(symbol: *const c_char, pfn: *mut *mut c_void) {
    if symbol.is_null() || pfn.is_null() {
        return;
    }
    guarded(
        || {
            // SAFETY: non-null, and the driver accepted it as a C string.
            let Ok(base) = unsafe { CStr::from_ptr(symbol) }.to_str() else {
                return;
            };
            // SAFETY: non-null, and the driver just wrote it.
            let real = unsafe { *pfn };
            let chosen = REGISTRY.wrap_base(base, real);
            if chosen != real {
                // SAFETY: as above.
                unsafe { *pfn = chosen };
            }
        },
        || {},
    );
}

/// `cuGetProcAddress` (CUDA 11.3 ABI).
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetProcAddress(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    cuda_version: c_int,
    flags: u64,
) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuGetProcAddress,
        pfn::cuGetProcAddress,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    let code = unsafe { real(symbol, pfn, cuda_version, flags) };
    if code == CUDA_SUCCESS {
        map_result(symbol, pfn);
    }
    code
}
const _: pfn::cuGetProcAddress = cuGetProcAddress;

/// `cuGetProcAddress_v2` (CUDA 12 ABI, with the symbol status).
///
/// # Safety
/// The driver's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetProcAddress_v2(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    cuda_version: c_int,
    flags: u64,
    symbol_status: *mut CUdriverProcAddressQueryResult,
) -> CUresult {
    let real = crate::real_or!(
        REGISTRY,
        Cuda::cuGetProcAddress_v2,
        pfn::cuGetProcAddress_v2,
        CUDA_ERROR_NOT_SUPPORTED
    );
    // SAFETY: forwarded unchanged.
    let code = unsafe { real(symbol, pfn, cuda_version, flags, symbol_status) };
    if code == CUDA_SUCCESS {
        map_result(symbol, pfn);
    }
    code
}
const _: pfn::cuGetProcAddress_v2 = cuGetProcAddress_v2;
