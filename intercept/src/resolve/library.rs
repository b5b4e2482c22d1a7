//! The real `dlsym` and the driver libraries, found lazily and never linked.
//!
//! The library has no `DT_NEEDED` on libcuda or NVML: a process that never asks for a driver
//! symbol never loads one. The real `dlsym` comes from `dlvsym(RTLD_NEXT, "dlsym", version)`,
//! which never goes through this library's own `dlsym` export (HAMi-core's `dlopen(libc)`
//! fallback re-entered its override).

use std::ffi::{CStr, c_char, c_void};
use std::sync::atomic::{AtomicPtr, Ordering};

/// The signature of `dlsym`.
pub type DlsymFn = unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void;

static REAL_DLSYM: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());

/// glibc versions of `dlsym`, newest first: 2.34 merged libdl into libc; older ones are the
/// first version of each architecture.
const DLSYM_VERSIONS: &[&CStr] = &[c"GLIBC_2.34", c"GLIBC_2.2.5", c"GLIBC_2.17", c"GLIBC_2.0"];

unsafe extern "C" fn no_dlsym(_: *mut c_void, _: *const c_char) -> *mut c_void {
    std::ptr::null_mut()
}

/// The real `dlsym` (resolved once; a lookup that fails everywhere yields one that finds nothing).
pub fn real_dlsym() -> DlsymFn {
    let cached = REAL_DLSYM.load(Ordering::Acquire);
    if !cached.is_null() {
        // SAFETY: only addresses of `dlsym` (or `no_dlsym`) are ever stored, both `DlsymFn`.
        return unsafe { std::mem::transmute::<*mut c_void, DlsymFn>(cached) };
    }
    let mut found: *mut c_void = no_dlsym as DlsymFn as *mut c_void;
    for version in DLSYM_VERSIONS {
        // SAFETY: both strings are NUL-terminated literals; RTLD_NEXT is a valid pseudo-handle.
        let address = unsafe { libc::dlvsym(libc::RTLD_NEXT, c"dlsym".as_ptr(), version.as_ptr()) };
        if !address.is_null() {
            found = address;
            break;
        }
    }
    REAL_DLSYM.store(found, Ordering::Release);
    // SAFETY: `found` is glibc's dlsym or `no_dlsym`, both of type `DlsymFn`.
    unsafe { std::mem::transmute::<*mut c_void, DlsymFn>(found) }
}

/// The address of the real `dlsym`, for the assembly trampoline of the `dlsym` export.
pub extern "C" fn real_dlsym_address() -> *mut c_void {
    real_dlsym() as *mut c_void
}

/// Looks `name` up in `handle` with the real `dlsym`.
pub(crate) fn lookup(handle: *mut c_void, name: &CStr) -> *mut c_void {
    if handle.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: `handle` came from dlopen and is never closed (RTLD_NODELETE); `name` is a C string.
    unsafe { real_dlsym()(handle, name.as_ptr()) }
}

/// A driver library, opened at most once per process and never closed.
pub struct DriverLibrary {
    soname: &'static CStr,
    handle: AtomicPtr<c_void>,
}

impl DriverLibrary {
    /// A library known by its SONAME (`libcuda.so.1`).
    pub const fn new(soname: &'static CStr) -> DriverLibrary {
        DriverLibrary {
            soname,
            handle: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// The handle, opening the library if needed: the one already loaded when there is one
    /// (RTLD_NOLOAD), else a fresh load — a wrapper only runs when a program asked for the
    /// driver, so loading it then changes nothing the program did not ask for.
    pub fn handle(&self) -> *mut c_void {
        let cached = self.handle.load(Ordering::Acquire);
        if !cached.is_null() {
            return cached;
        }
        let flags = libc::RTLD_NOW | libc::RTLD_NODELETE;
        // SAFETY: the SONAME is a NUL-terminated literal; flags are valid dlopen flags.
        let mut handle = unsafe { libc::dlopen(self.soname.as_ptr(), flags | libc::RTLD_NOLOAD) };
        if handle.is_null() {
            // SAFETY: as above.
            handle = unsafe { libc::dlopen(self.soname.as_ptr(), flags | libc::RTLD_LOCAL) };
        }
        if handle.is_null() {
            crate::hami_log!(crate::log::Level::Warn, "cannot open {:?}", self.soname);
            return handle;
        }
        // Racing openers get the same handle (dlopen refcounts); keep the first.
        match self.handle.compare_exchange(
            std::ptr::null_mut(),
            handle,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => handle,
            Err(existing) => existing,
        }
    }
}
