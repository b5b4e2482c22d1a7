//! The `extern "C"` boundary: no panic may unwind into the application.
//!
//! Unwinding out of an `extern "C"` function aborts the process, so every exported entry point
//! runs its body through [`guarded`]. If the body panics (a bug in this library), the call is
//! handed to the driver unchanged: an unaccounted call is better than a dead application.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `body`; on panic runs `fallback` (the plain driver call) instead.
#[inline(always)]
pub fn guarded<R>(body: impl FnOnce() -> R, fallback: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(_) => {
            crate::hami_log!(
                crate::log::Level::Error,
                "internal error; call passed through"
            );
            fallback()
        }
    }
}
