//! The registry of wrapped entry points: per vendor, one static array of [`Hook`]s holding the
//! exported symbol, its `cuGetProcAddress` base name, the wrapper's address and the real
//! driver address (filled lazily, all at once, from the driver library).
//!
//! Only entry points whose behaviour changes under a cap are wrapped (allocations, frees,
//! memory queries, launches, contexts, lookups). Every other driver symbol is returned
//! untouched: a pass-through wrapper would add a jump and a failure mode for nothing.

use std::ffi::{CStr, c_void};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use super::library::{DriverLibrary, lookup};

/// One wrapped entry point.
pub struct Hook {
    /// The exported symbol (`cuMemAlloc_v2`).
    pub symbol: &'static CStr,
    /// The name `cuGetProcAddress` callers ask for (`cuMemAlloc`).
    pub base: &'static str,
    /// This library's wrapper for exactly this ABI variant.
    pub wrapper: *const c_void,
    real: AtomicPtr<c_void>,
}

// SAFETY: `wrapper` is the immutable address of a function of this library; `real` is atomic.
unsafe impl Sync for Hook {}

impl Hook {
    /// A registry row; the real address is found later.
    pub const fn new(symbol: &'static CStr, base: &'static str, wrapper: *const c_void) -> Hook {
        Hook {
            symbol,
            base,
            wrapper,
            real: AtomicPtr::new(std::ptr::null_mut()),
        }
    }
}

/// The wrapped entry points of one driver library.
pub struct Registry {
    library: DriverLibrary,
    hooks: &'static [Hook],
    loaded: AtomicBool,
}

impl Registry {
    /// A registry over `hooks`, whose real addresses come from `library`.
    pub const fn new(library: DriverLibrary, hooks: &'static [Hook]) -> Registry {
        Registry {
            library,
            hooks,
            loaded: AtomicBool::new(false),
        }
    }

    /// The rows, in declaration order.
    pub fn hooks(&self) -> &'static [Hook] {
        self.hooks
    }

    /// The real address of row `index`, or null when the driver lacks it.
    #[inline(always)]
    pub fn real(&self, index: usize) -> *mut c_void {
        let address = self.hooks[index].real.load(Ordering::Relaxed);
        if address.is_null() {
            self.load_and_get(index)
        } else {
            address
        }
    }

    #[cold]
    fn load_and_get(&self, index: usize) -> *mut c_void {
        self.load();
        self.hooks[index].real.load(Ordering::Acquire)
    }

    /// Fills every real address from the driver library (idempotent; racing loaders store the
    /// same values).
    pub fn load(&self) {
        if self.loaded.load(Ordering::Acquire) {
            return;
        }
        let handle = self.library.handle();
        if handle.is_null() {
            return;
        }
        for hook in self.hooks {
            let address = lookup(handle, hook.symbol);
            // Our own export can only come back if the driver lacks the symbol and dlsym fell
            // through to the global scope; calling it would recurse.
            if address.cast_const() != hook.wrapper {
                hook.real.store(address, Ordering::Release);
            }
        }
        self.loaded.store(true, Ordering::Release);
    }

    /// The driver's address for `hook` (a row of this registry), loading the driver if needed.
    pub fn real_of(&self, hook: &Hook) -> *mut c_void {
        self.load();
        hook.real.load(Ordering::Acquire)
    }

    /// The row of an exported symbol name.
    pub fn by_symbol(&self, name: &[u8]) -> Option<&'static Hook> {
        self.hooks
            .iter()
            .find(|hook| hook.symbol.to_bytes() == name)
    }

    /// What to hand out for `symbol` whose real definition (found with the caller's own
    /// handle, version and flags) is `real`: the wrapper when `real` is the driver's own
    /// definition of a wrapped entry point, else `real` untouched.
    pub fn wrap_symbol(&self, symbol: &[u8], real: *mut c_void) -> *mut c_void {
        let Some(hook) = self.by_symbol(symbol) else {
            return real;
        };
        self.wrap_address(std::slice::from_ref(hook), real)
    }

    /// Maps a real address returned for base name `base` to the wrapper of the variant it
    /// really is (v1/v2/v3, `_ptsz`/`_ptds`), comparing against every variant's real address.
    pub fn wrap_base(&self, base: &str, real: *mut c_void) -> *mut c_void {
        let start = self.hooks.iter().position(|hook| hook.base == base);
        let Some(start) = start else { return real };
        let end = self.hooks[start..]
            .iter()
            .position(|hook| hook.base != base)
            .map_or(self.hooks.len(), |n| start + n);
        self.wrap_address(&self.hooks[start..end], real)
    }

    fn wrap_address(&self, candidates: &'static [Hook], real: *mut c_void) -> *mut c_void {
        if real.is_null()
            || candidates
                .iter()
                .any(|hook| real.cast_const() == hook.wrapper)
        {
            // Already ours (an RTLD_DEFAULT lookup finds the export): no need to open a driver.
            return real;
        }
        self.load();
        candidates
            .iter()
            .find(|hook| hook.real.load(Ordering::Acquire) == real)
            .map_or(real, |hook| hook.wrapper.cast_mut())
    }
}

/// Declares a vendor's registry: an index enum, the rows, and the static registry.
///
/// Rows of one base name must be adjacent (checked by a unit test per vendor).
#[macro_export]
macro_rules! hook_registry {
    ($registry:ident, $index:ident, $soname:expr, [$($symbol:ident ($base:ident) => $wrapper:path),* $(,)?]) => {
        /// Row indexes of the registry, one per wrapped symbol.
        #[allow(non_camel_case_types, dead_code)]
        #[derive(Clone, Copy, Debug)]
        #[repr(usize)]
        pub enum $index { $($symbol),* }

        const ROW_COUNT: usize = [$(stringify!($symbol)),*].len();
        static ROWS: [$crate::resolve::registry::Hook; ROW_COUNT] = [$(
            $crate::resolve::registry::Hook::new(
                match ::std::ffi::CStr::from_bytes_with_nul(concat!(stringify!($symbol), "\0").as_bytes()) {
                    Ok(name) => name,
                    Err(_) => panic!("symbol is not a C string"),
                },
                stringify!($base),
                $wrapper as *const ::std::ffi::c_void,
            )
        ),*];

        /// The registry of this vendor's wrapped entry points.
        pub static $registry: $crate::resolve::registry::Registry =
            $crate::resolve::registry::Registry::new(
                $crate::resolve::library::DriverLibrary::new($soname),
                &ROWS,
            );
    };
}

/// Loads the real address of a row as its typed function pointer, or returns `$missing` from
/// the enclosing function when the driver lacks it (HAMi-core called NULL).
#[macro_export]
macro_rules! real_or {
    ($registry:expr, $index:expr, $pfn:ty, $missing:expr) => {{
        let address = $registry.real($index as usize);
        if address.is_null() {
            return $missing;
        }
        // SAFETY: the address is the driver's definition of exactly this symbol, whose C
        // signature is the table's (`hami_hooks` pfn alias).
        unsafe { ::std::mem::transmute::<*mut ::std::ffi::c_void, $pfn>(address) }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::library::real_dlsym;

    extern "C" fn first_wrapper() {}
    extern "C" fn second_wrapper() {}

    /// A "driver" that every test process has: libc, with two rows of one family.
    static ROWS: [Hook; 2] = [
        Hook::new(c"malloc", "alloc", first_wrapper as *const c_void),
        Hook::new(c"calloc", "alloc", second_wrapper as *const c_void),
    ];
    static LIBC: Registry = Registry::new(DriverLibrary::new(c"libc.so.6"), &ROWS);

    fn libc_address(name: &std::ffi::CStr) -> *mut c_void {
        // SAFETY: RTLD_DEFAULT and a C string literal.
        unsafe { real_dlsym()(libc::RTLD_DEFAULT, name.as_ptr()) }
    }

    #[test]
    fn a_real_address_maps_to_the_wrapper_of_exactly_that_variant() {
        let malloc = libc_address(c"malloc");
        let calloc = libc_address(c"calloc");
        assert_eq!(
            LIBC.wrap_base("alloc", malloc),
            first_wrapper as *mut c_void
        );
        assert_eq!(
            LIBC.wrap_base("alloc", calloc),
            second_wrapper as *mut c_void
        );
        assert_eq!(
            LIBC.wrap_symbol(b"calloc", calloc),
            second_wrapper as *mut c_void
        );
    }

    #[test]
    fn anything_else_comes_back_untouched() {
        let free = libc_address(c"free");
        let malloc = libc_address(c"malloc");
        assert_eq!(
            LIBC.wrap_base("alloc", free),
            free,
            "not a variant of the family"
        );
        assert_eq!(LIBC.wrap_base("other", malloc), malloc, "unknown family");
        assert_eq!(LIBC.wrap_symbol(b"free", free), free, "unknown symbol");
        let ours = first_wrapper as *mut c_void;
        assert_eq!(LIBC.wrap_base("alloc", ours), ours, "already a wrapper");
        assert!(LIBC.wrap_base("alloc", std::ptr::null_mut()).is_null());
    }

    #[test]
    fn real_addresses_are_the_drivers() {
        assert_eq!(LIBC.real(0), libc_address(c"malloc"));
        assert_eq!(LIBC.real(1), libc_address(c"calloc"));
    }
}
