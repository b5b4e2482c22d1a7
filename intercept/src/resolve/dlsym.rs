//! The `dlsym` export: resolve with the caller's own handle, then hand out a wrapper only when
//! the answer is the driver's definition of an entry point this library wraps.
//!
//! HAMi-core ignored the caller's handle and looked every `cu*` name up in itself, which made
//! libcuda's own lookups recurse on WSL2 and gave `RTLD_NEXT` callers the wrong object.
//! Here:
//! - `RTLD_NEXT` is answered by glibc itself for the true caller: the export is a two-branch
//!   assembly trampoline that tail-jumps to the real `dlsym`, so glibc sees the caller's return
//!   address, exactly as if this library were not there. ("The next definition after me" is by
//!   construction not a wrapper; a caller loaded before this library already gets our export.)
//! - Any other handle (including `RTLD_DEFAULT`) goes through the real `dlsym` first; unknown
//!   names and addresses that are not the driver's come back untouched.

use std::ffi::{CStr, c_char, c_void};

use super::library::real_dlsym;

#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[unsafe(no_mangle)]
/// `dlsym(3)` as the process sees it with this library preloaded.
///
/// # Safety
/// Same contract as glibc's `dlsym`.
pub unsafe extern "C" fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void {
    core::arch::naked_asm!(
        "cmp rdi, -1",
        "jne {lookup}",
        // RTLD_NEXT: fetch the real dlsym (arguments saved, stack kept 16-byte aligned), then
        // jump to it with the caller's return address still on top of the stack.
        "push rdi",
        "push rsi",
        "sub rsp, 8",
        "call {real}",
        "add rsp, 8",
        "pop rsi",
        "pop rdi",
        "jmp rax",
        lookup = sym dlsym_lookup,
        real = sym super::library::real_dlsym_address,
    )
}

#[cfg(target_arch = "aarch64")]
#[unsafe(naked)]
#[unsafe(no_mangle)]
/// `dlsym(3)` as the process sees it with this library preloaded.
///
/// # Safety
/// Same contract as glibc's `dlsym`.
pub unsafe extern "C" fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void {
    core::arch::naked_asm!(
        "cmn x0, #1",
        "b.ne {lookup}",
        "stp x29, x30, [sp, #-32]!",
        "stp x0, x1, [sp, #16]",
        "bl {real}",
        "mov x16, x0",
        "ldp x0, x1, [sp, #16]",
        "ldp x29, x30, [sp], #32",
        "br x16",
        lookup = sym dlsym_lookup,
        real = sym super::library::real_dlsym_address,
    )
}

/// Every handle but `RTLD_NEXT`: the real answer first, then the wrapper if it is ours to give.
unsafe extern "C" fn dlsym_lookup(handle: *mut c_void, symbol: *const c_char) -> *mut c_void {
    // SAFETY: the caller's arguments are passed on unchanged under dlsym's own contract.
    let real = unsafe { real_dlsym()(handle, symbol) };
    if real.is_null() || symbol.is_null() {
        return real;
    }
    crate::boundary::guarded(
        || {
            // SAFETY: `symbol` is non-null and dlsym's contract makes it a C string.
            let name = unsafe { CStr::from_ptr(symbol) }.to_bytes();
            wrap_known(name, real)
        },
        || real,
    )
}

/// The wrapper for a known entry point whose real definition is `real`, else `real`.
pub fn wrap_known(name: &[u8], real: *mut c_void) -> *mut c_void {
    if name.starts_with(b"cu") {
        crate::cuda::REGISTRY.wrap_symbol(name, real)
    } else if name.starts_with(b"nvml") {
        crate::nvml::REGISTRY.wrap_symbol(name, real)
    } else {
        real
    }
}
