//! The `extern "C"` CUDA driver API: thin translations from the C ABI onto [`crate::driver`].
//!
//! Every export is checked against the `hami_hooks` table's function-pointer type, and the
//! same table builds the `cuGetProcAddress` lookup, so an entry point that the table lists
//! and this library lacks, or exports with another signature, does not compile.

mod context;
mod copy;
mod device;
mod init;
mod launch;
mod memory;
mod stream;
mod vmm;

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use hami_hooks::cuda::{CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_UNKNOWN, CUDA_SUCCESS, CUresult};

pub use context::*;
pub use copy::*;
pub use device::*;
pub use init::*;
pub use launch::*;
pub use memory::*;
pub use stream::*;
pub use vmm::*;

/// Runs an entry point's body; a panic becomes `CUDA_ERROR_UNKNOWN` instead of unwinding
/// into C.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), CUresult>) -> CUresult {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => CUDA_SUCCESS,
        Ok(Err(code)) => code,
        Err(_) => CUDA_ERROR_UNKNOWN,
    }
}

/// Writes an out-parameter; null is `CUDA_ERROR_INVALID_VALUE`.
///
/// # Safety
/// `pointer` must be null or valid for a write of `T`.
pub(crate) unsafe fn out<T>(pointer: *mut T, value: T) -> Result<(), CUresult> {
    if pointer.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null, and valid for writes by the caller's contract.
    unsafe { pointer.write(value) };
    Ok(())
}

/// Reads an in-parameter struct; null is `CUDA_ERROR_INVALID_VALUE`.
///
/// # Safety
/// `pointer` must be null or valid for a read of `T`.
pub(crate) unsafe fn read_in<T: Copy>(pointer: *const T) -> Result<T, CUresult> {
    if pointer.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null, and valid for reads by the caller's contract.
    Ok(unsafe { pointer.read() })
}

macro_rules! check_exports {
    ($(
        $symbol:ident { base: $base:ident, since: $since:literal, per_thread: $per_thread:literal, kind: $kind:ident }
            extern "C" fn($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty;
    )*) => {
        $(const _: hami_hooks::cuda::pfn::$symbol = $symbol;)*

        /// The address of the export named `symbol` (a table symbol such as `cuMemAlloc_v2`).
        pub(crate) fn export_address(symbol: &str) -> *mut c_void {
            match symbol {
                $(stringify!($symbol) => $symbol as hami_hooks::cuda::pfn::$symbol as *mut c_void,)*
                _ => std::ptr::null_mut(),
            }
        }
    };
}

hami_hooks::cuda_entry_points!(check_exports);
