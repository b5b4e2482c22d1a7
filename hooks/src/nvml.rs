//! NVML: ABI types, the entry-point table and what each entry point is.

pub mod samples;
mod table;
mod types;

use std::ffi::CStr;
pub use std::ffi::{c_char, c_uint, c_ulonglong};

pub use types::*;

use crate::cuda::const_cstr;

/// What an NVML entry point does, as far as sharing a device is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Library initialisation and shutdown.
    Init,
    /// Device enumeration and identity.
    Device,
    /// Memory totals (virtualised under a cap).
    MemInfo,
    /// Device and per-process utilisation.
    Utilization,
    /// Processes running on a device.
    Processes,
    /// Everything else (error strings, versions).
    Other,
}

/// One row of the NVML table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryPoint {
    /// The exported symbol, e.g. `nvmlDeviceGetCount_v2`.
    pub symbol: &'static CStr,
    /// The family the symbol belongs to, e.g. `nvmlDeviceGetCount`.
    pub base: &'static str,
    /// What the entry point does.
    pub kind: Kind,
}

macro_rules! generate_table {
    ($(
        $symbol:ident { base: $base:ident, kind: $kind:ident }
            extern "C" fn($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty;
    )*) => {
        /// One function-pointer type per entry point, named after its exported symbol.
        #[allow(non_camel_case_types)]
        pub mod pfn {
            use super::*;
            $(
                #[doc = concat!("`", stringify!($symbol), "`.")]
                pub type $symbol = unsafe extern "C" fn($($arg: $ty),*) -> $ret;
            )*
        }

        /// Every NVML entry point of the table, in table order.
        pub static NVML_ENTRY_POINTS: &[EntryPoint] = &[$(
            EntryPoint {
                symbol: const_cstr(concat!(stringify!($symbol), "\0")),
                base: stringify!($base),
                kind: Kind::$kind,
            },
        )*];
    };
}

crate::nvml_entry_points!(generate_table);

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn symbols_are_unique_and_of_their_family() {
        let mut seen = HashSet::new();
        for entry in NVML_ENTRY_POINTS {
            assert!(seen.insert(entry.symbol));
            let symbol = entry.symbol.to_str().expect("ascii");
            assert!(symbol.starts_with(entry.base), "{symbol}");
        }
    }

    #[test]
    fn memory_v2_version_is_size_and_revision() {
        assert_eq!(NVML_MEMORY_V2 >> 24, 2);
        assert_eq!(NVML_MEMORY_V2 & 0xff_ffff, 40);
    }
}
