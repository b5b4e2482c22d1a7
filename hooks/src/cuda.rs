//! The CUDA driver API: ABI types, the entry-point table and what each entry point is.

#[cfg(test)]
mod header_check;
mod table;
mod types;

use std::ffi::CStr;
pub use std::ffi::{c_char, c_int, c_uint, c_void};

pub use types::*;

/// What an entry point does, as far as sharing a device is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Driver initialisation (`cuInit`).
    Init,
    /// Entry-point lookup (`cuGetProcAddress`).
    Lookup,
    /// Device enumeration and properties.
    Device,
    /// Context lifetime and the current context; a primary context costs device memory.
    Context,
    /// Takes device memory (every allocation path, including VMM handles and arrays).
    Alloc,
    /// Gives device memory back.
    Free,
    /// Reports memory size or free memory (virtualised under a cap).
    MemInfo,
    /// Queues a kernel on a stream.
    Launch,
    /// Queues a whole graph on a stream.
    GraphLaunch,
    /// Moves or sets bytes.
    Copy,
    /// Stream-ordered pool management (pool memory is charged when allocated from).
    Pool,
    /// Virtual address reservation and mapping: no physical memory of its own.
    VirtualAddress,
    /// Stream lifetime, ordering and capture.
    Stream,
    /// Events.
    Event,
    /// Graph construction and instantiation.
    Graph,
    /// Modules and kernel lookup.
    Module,
    /// Everything else (versions, error strings).
    Other,
}

/// One row of the CUDA table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryPoint {
    /// The exported symbol, e.g. `cuMemAlloc_v2`.
    pub symbol: &'static CStr,
    /// The name `cuGetProcAddress` callers ask for, e.g. `cuMemAlloc`.
    pub base: &'static str,
    /// The CUDA version that introduced this ABI variant (`PFN_cuMemAlloc_v3020` → 3020).
    pub since: i32,
    /// A `_ptsz`/`_ptds` variant that uses the per-thread default stream.
    pub per_thread: bool,
    /// What the entry point does.
    pub kind: Kind,
}

impl EntryPoint {
    /// The symbol as UTF-8 (symbols are ASCII identifiers).
    pub fn symbol_str(&self) -> &'static str {
        self.symbol.to_str().unwrap_or_default()
    }
}

/// A base name that, from some CUDA version on, resolves to an entry point of another base
/// (`cuda.h` 12 defines `cuGraphInstantiate` as `cuGraphInstantiateWithFlags`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaseRedirect {
    /// The name the caller asks for.
    pub base: &'static str,
    /// The first CUDA version for which the redirect applies.
    pub since: i32,
    /// The symbol served instead.
    pub symbol: &'static str,
}

/// Base names that `cuGetProcAddress` maps onto another family from some version on.
pub static CUDA_BASE_REDIRECTS: &[BaseRedirect] = &[BaseRedirect {
    base: "cuGraphInstantiate",
    since: 12000,
    symbol: "cuGraphInstantiateWithFlags",
}];

/// Turns a NUL-terminated literal into a `&CStr` at compile time.
#[doc(hidden)]
pub const fn const_cstr(with_nul: &'static str) -> &'static CStr {
    match CStr::from_bytes_with_nul(with_nul.as_bytes()) {
        Ok(name) => name,
        Err(_) => panic!("entry-point symbol is not a C string"),
    }
}

macro_rules! generate_table {
    ($(
        $symbol:ident { base: $base:ident, since: $since:literal, per_thread: $per_thread:literal, kind: $kind:ident }
            extern "C" fn($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty;
    )*) => {
        /// One function-pointer type per entry point, named after its exported symbol.
        #[allow(non_camel_case_types)]
        pub mod pfn {
            use super::*;
            $(
                #[doc = concat!("`", stringify!($symbol), "` (CUDA ", stringify!($since), ").")]
                pub type $symbol = unsafe extern "C" fn($($arg: $ty),*) -> $ret;
            )*
        }

        /// Every CUDA driver entry point of the table, in table order.
        pub static CUDA_ENTRY_POINTS: &[EntryPoint] = &[$(
            EntryPoint {
                symbol: const_cstr(concat!(stringify!($symbol), "\0")),
                base: stringify!($base),
                since: $since,
                per_thread: $per_thread,
                kind: Kind::$kind,
            },
        )*];
    };
}

crate::cuda_entry_points!(generate_table);

/// The table row of an exported symbol (`cuMemAlloc_v2`), if the table has it.
pub fn entry_point(symbol: &str) -> Option<&'static EntryPoint> {
    CUDA_ENTRY_POINTS
        .iter()
        .find(|entry| entry.symbol_str() == symbol)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn symbols_are_unique() {
        let mut seen = HashSet::new();
        for entry in CUDA_ENTRY_POINTS {
            assert!(seen.insert(entry.symbol), "duplicate {:?}", entry.symbol);
        }
    }

    #[test]
    fn symbol_names_follow_base_and_stream_suffix() {
        for entry in CUDA_ENTRY_POINTS {
            let symbol = entry.symbol_str();
            assert!(
                symbol.starts_with(entry.base),
                "{symbol} is not of family {}",
                entry.base
            );
            let suffixed = symbol.ends_with("_ptsz") || symbol.ends_with("_ptds");
            assert_eq!(suffixed, entry.per_thread, "{symbol}");
        }
    }

    #[test]
    fn every_per_thread_variant_has_a_legacy_sibling() {
        for entry in CUDA_ENTRY_POINTS.iter().filter(|e| e.per_thread) {
            let legacy = &entry.symbol_str()[..entry.symbol_str().len() - 5];
            let sibling = entry_point(legacy).unwrap_or_else(|| panic!("no {legacy}"));
            assert_eq!(sibling.base, entry.base);
            assert!(!sibling.per_thread);
        }
    }

    #[test]
    fn redirect_targets_exist() {
        for redirect in CUDA_BASE_REDIRECTS {
            let target = entry_point(redirect.symbol).expect("redirect target in table");
            assert!(target.since <= redirect.since);
        }
    }

    #[test]
    fn allocation_paths_are_all_marked_alloc() {
        let allocs: HashSet<&str> = CUDA_ENTRY_POINTS
            .iter()
            .filter(|e| e.kind == Kind::Alloc)
            .map(|e| e.base)
            .collect();
        for base in [
            "cuMemAlloc",
            "cuMemAllocPitch",
            "cuMemAllocManaged",
            "cuMemAllocAsync",
            "cuMemAllocFromPoolAsync",
            "cuMemCreate",
            "cuArrayCreate",
            "cuArray3DCreate",
        ] {
            assert!(allocs.contains(base), "{base} is not an allocation path");
        }
    }

    #[test]
    fn pfn_types_match_the_c_signatures() {
        // The out-of-memory path depends on these exact widths.
        let alloc: Option<pfn::cuMemAlloc_v2> = None;
        let get_info_v1: Option<pfn::cuMemGetInfo> = None;
        let _: Option<unsafe extern "C" fn(*mut CUdeviceptr, usize) -> CUresult> = alloc;
        let _: Option<unsafe extern "C" fn(*mut c_uint, *mut c_uint) -> CUresult> = get_info_v1;
        assert_eq!(entry_point("cuMemAlloc_v2").map(|e| e.since), Some(3020));
    }
}
