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

use hami_hooks::cuda::CUDA_ENTRY_POINTS;
use hami_hooks::resolve;

use super::{Cuda, REGISTRY};
use crate::boundary::guarded;
use crate::hami_log;
use crate::log::Level;
use crate::resolve::registry::Hook;

/// Replaces `*pfn` by the wrapper of the variant it is, if it is one.
fn map_result(symbol: *const c_char, pfn: *mut *mut c_void, cuda_version: c_int, flags: u64) {
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
            let mut chosen = REGISTRY.wrap_base(base, real);
            if chosen == real && !real.is_null() {
                chosen = by_table(base, cuda_version, flags).unwrap_or(real);
            }
            if chosen != real {
                // SAFETY: as above.
                unsafe { *pfn = chosen };
            }
        },
        || {},
    );
}

/// The newest CUDA major version whose entry points the `hami_hooks` table describes fully.
fn table_major() -> i32 {
    CUDA_ENTRY_POINTS
        .iter()
        .map(|e| e.since / 1000)
        .max()
        .unwrap_or(0)
}

/// When the driver hands out an address that is not the exported symbol of any variant (a
/// driver may serve internal aliases), the variant is the one the table says this version and
/// these flags get. Trusted only for CUDA majors the table covers: for a newer runtime a
/// variant missing from the table could have another ABI, and an unwrapped call is safer
/// than a wrong-ABI one (logged at `warn` so an uncapped path is visible).
pub fn by_table(base: &str, cuda_version: c_int, flags: u64) -> Option<*mut c_void> {
    let hook = table_variant(base, cuda_version, flags)?;
    // The wrapper calls the exported symbol; without one, leave the driver's answer alone.
    if REGISTRY.real_of(hook).is_null() {
        return None;
    }
    hami_log!(
        Level::Debug,
        "cuGetProcAddress({base}): mapped by table to {:?}",
        hook.symbol
    );
    Some(hook.wrapper.cast_mut())
}

/// The wrapped row the table assigns to (base, version, flags), if the table may be trusted.
fn table_variant(base: &str, cuda_version: c_int, flags: u64) -> Option<&'static Hook> {
    let wrapped = REGISTRY.hooks().iter().any(|hook| hook.base == base);
    if !wrapped {
        return None;
    }
    if cuda_version / 1000 > table_major() {
        hami_log!(
            Level::Warn,
            "cuGetProcAddress({base}, {cuda_version}) returned an unknown address; not wrapped"
        );
        return None;
    }
    let entry = resolve(base, cuda_version, flags).ok()?;
    REGISTRY.by_symbol(entry.symbol.to_bytes())
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
        map_result(symbol, pfn, cuda_version, flags);
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
        map_result(symbol, pfn, cuda_version, flags);
    }
    code
}
const _: pfn::cuGetProcAddress_v2 = cuGetProcAddress_v2;

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(base: &str, version: c_int, flags: u64) -> Option<&'static str> {
        table_variant(base, version, flags).map(|hook| hook.symbol.to_str().unwrap())
    }

    #[test]
    fn unknown_addresses_of_wrapped_bases_map_by_version_and_flags() {
        assert_eq!(variant("cuMemAlloc", 12000, 0), Some("cuMemAlloc_v2"));
        assert_eq!(variant("cuMemGetInfo", 3010, 0), Some("cuMemGetInfo"));
        assert_eq!(
            variant("cuLaunchKernel", 12000, 2),
            Some("cuLaunchKernel_ptsz")
        );
        assert_eq!(variant("cuCtxCreate", 11040, 0), Some("cuCtxCreate_v3"));
    }

    #[test]
    fn unwrapped_bases_and_unknown_majors_stay_untouched() {
        assert_eq!(variant("cuStreamCreate", 12000, 0), None);
        assert_eq!(variant("cuNoSuchThing", 12000, 0), None);
        assert_eq!(variant("cuMemAlloc", (table_major() + 1) * 1000, 0), None);
        assert_eq!(variant("cuMemAlloc", 12000, 3), None, "invalid flags");
    }
}
