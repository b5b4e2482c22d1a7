//! The typed entry-point tables of every vendor driver API the project hooks or simulates.
//!
//! Each vendor module holds the ABI types and result codes of the real headers and one
//! callback macro that lists every entry point once, with its exact `extern "C"` signature.
//! The interception library's wrappers are still written by hand: each is checked at compile
//! time against the table's `pfn` type (`const _: pfn::X = X;`), and the dlsym and
//! `cuGetProcAddress` lookups resolve through the table; the simulated devices check each of
//! their exports the same way. Generating the wrappers from the table is the library issue's
//! work, not done yet.

pub mod cuda;
pub mod nvml;
mod proc_address;

pub use proc_address::{ProcStatus, resolve};

/// Forwards an entry-point list to `$cb!` after checking that every signature is
/// `extern "C" fn(..) -> Ret`; any other ABI (or a missing one) is a compile error. The vendor
/// tables call it; it is public only so that their expansion can reach it.
///
/// ```
/// macro_rules! count { ($($symbol:ident { $($meta:tt)* } extern "C" fn($($a:tt)*) -> $r:ty;)*) => {
///     const N: usize = [$(stringify!($symbol)),*].len();
/// } }
/// hami_hooks::__extern_c_entry_points! { count;
///     cuInit { base: cuInit, since: 2000, per_thread: false, kind: Init } extern "C" fn(flags: u32) -> i32;
/// }
/// assert_eq!(N, 1);
/// ```
///
/// ```compile_fail
/// macro_rules! count { ($($t:tt)*) => {} }
/// hami_hooks::__extern_c_entry_points! { count;
///     cuInit { base: cuInit, since: 2000, per_thread: false, kind: Init } fn(flags: u32) -> i32;
/// }
/// ```
///
/// ```compile_fail
/// macro_rules! count { ($($t:tt)*) => {} }
/// hami_hooks::__extern_c_entry_points! { count;
///     cuInit { base: cuInit, since: 2000, per_thread: false, kind: Init } extern "system" fn(flags: u32) -> i32;
/// }
/// ```
#[doc(hidden)]
#[macro_export]
macro_rules! __extern_c_entry_points {
    ($cb:path; $($symbol:ident { $($meta:tt)* } extern "C" fn($($args:tt)*) -> $ret:ty;)*) => {
        $cb! { $($symbol { $($meta)* } extern "C" fn($($args)*) -> $ret;)* }
    };
}
