//! The NVML health probe: a device is healthy while NVML can find it by UUID and read its
//! memory. A lost GPU answers `NVML_ERROR_GPU_IS_LOST`, one that fell off the bus
//! `NVML_ERROR_NOT_FOUND`; any failure marks the device unhealthy, with NVML's words as the reason.

use std::ffi::{CStr, CString, OsStr};

use hami_hooks::nvml::{self, nvmlDevice_t, nvmlMemory_t, nvmlReturn_t, pfn};
use libloading::Library;
use thiserror::Error;

use super::health::{HealthProbe, Unhealthy};

/// Why NVML cannot be used to probe device health.
#[derive(Debug, Error)]
pub enum NvmlProbeError {
    #[error("cannot load NVML from {library}: {source}")]
    Load {
        library: String,
        #[source]
        source: libloading::Error,
    },
    #[error("NVML library {library} has no entry point {symbol}: {source}")]
    Symbol {
        library: String,
        symbol: &'static str,
        #[source]
        source: libloading::Error,
    },
    #[error("nvmlInit_v2 failed with NVML error {0}")]
    Init(nvmlReturn_t),
}

/// NVML loaded for health probes.
pub struct NvmlProbe {
    handle_by_uuid: pfn::nvmlDeviceGetHandleByUUID,
    memory: pfn::nvmlDeviceGetMemoryInfo,
    error_string: pfn::nvmlErrorString,
    /// Keeps the entry points above valid; dropped last.
    _library: Library,
}

impl NvmlProbe {
    /// Loads NVML (a library name searched the usual way, or a path) and initializes it.
    pub fn open(library: &OsStr) -> Result<Self, NvmlProbeError> {
        let name = library.to_string_lossy().into_owned();
        // SAFETY: loading NVML runs its initializers, the vendor's documented way to use it.
        let loaded = unsafe { Library::new(library) }.map_err(|source| NvmlProbeError::Load {
            library: name.clone(),
            source,
        })?;
        macro_rules! entry {
            ($symbol:ident) => {{
                let symbol = concat!(stringify!($symbol), "\0");
                // SAFETY: the type is the `hooks` table's signature for exactly this NVML name;
                // the pointer is copied out and used only while `_library` keeps it loaded.
                *unsafe { loaded.get::<pfn::$symbol>(symbol.as_bytes()) }.map_err(|source| {
                    NvmlProbeError::Symbol {
                        library: name.clone(),
                        symbol: stringify!($symbol),
                        source,
                    }
                })?
            }};
        }
        let init = entry!(nvmlInit_v2);
        let probe = Self {
            handle_by_uuid: entry!(nvmlDeviceGetHandleByUUID),
            memory: entry!(nvmlDeviceGetMemoryInfo),
            error_string: entry!(nvmlErrorString),
            _library: loaded,
        };
        // SAFETY: nvmlInit_v2 may be called at any time and any number of times.
        match unsafe { init() } {
            nvml::NVML_SUCCESS => Ok(probe),
            code => Err(NvmlProbeError::Init(code)),
        }
    }

    fn failure(&self, call: &str, code: nvmlReturn_t) -> Unhealthy {
        // SAFETY: nvmlErrorString accepts any code and returns a static C string (or null).
        let text = unsafe { (self.error_string)(code) };
        let words = if text.is_null() {
            "unknown error".to_string()
        } else {
            // SAFETY: non-null, NUL-terminated and static by NVML's contract.
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        };
        format!("{call} failed: {words} (NVML error {code})")
    }
}

impl HealthProbe for NvmlProbe {
    fn check(&mut self, uuid: &str) -> Result<(), Unhealthy> {
        let Ok(c_uuid) = CString::new(uuid) else {
            return Err(format!("UUID {uuid:?} contains a NUL byte"));
        };
        let mut device: nvmlDevice_t = std::ptr::null_mut();
        // SAFETY: `c_uuid` is NUL-terminated and `device` a valid out-pointer during the call.
        let code = unsafe { (self.handle_by_uuid)(c_uuid.as_ptr(), &mut device) };
        if code != nvml::NVML_SUCCESS {
            return Err(self.failure("nvmlDeviceGetHandleByUUID", code));
        }
        let mut memory = nvmlMemory_t::default();
        // SAFETY: `device` came from NVML and `memory` is an `nvmlMemory_t` the call may write.
        let code = unsafe { (self.memory)(device, &mut memory) };
        if code != nvml::NVML_SUCCESS {
            return Err(self.failure("nvmlDeviceGetMemoryInfo", code));
        }
        Ok(())
    }
}
