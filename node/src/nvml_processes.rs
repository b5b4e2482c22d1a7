//! Per-process device memory as the driver reports it: NVML's
//! `nvmlDeviceGetComputeRunningProcesses_v3`, by host PID, per device UUID.
//!
//! This is the driver's own count, whatever path a process allocated through (the hooked
//! entry points, a private copy of the driver, raw ioctls), which is why the backstop reads it.

use std::ffi::{CStr, c_char, c_uint};
use std::path::Path;

use hami_hooks::nvml::{self, nvmlDevice_t, nvmlProcessInfo_t, nvmlReturn_t, pfn};
use libloading::Library;
use thiserror::Error;

/// NVML could not be loaded or answered with an error.
#[derive(Debug, Error)]
pub enum NvmlError {
    #[error("cannot load {library}: {source}")]
    Load {
        library: String,
        source: libloading::Error,
    },
    #[error("{library} has no entry point {symbol}: {source}")]
    Symbol {
        library: String,
        symbol: &'static str,
        source: libloading::Error,
    },
    #[error("{call} failed with NVML error {code}")]
    Call {
        call: &'static str,
        code: nvmlReturn_t,
    },
}

/// One process on one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceProcess {
    /// Host PID.
    pub pid: u32,
    pub used_bytes: u64,
}

/// NVML, loaded and initialised, with the entry points the backstop needs.
pub struct NvmlProcesses {
    init: pfn::nvmlInit_v2,
    count: pfn::nvmlDeviceGetCount_v2,
    handle: pfn::nvmlDeviceGetHandleByIndex_v2,
    uuid: pfn::nvmlDeviceGetUUID,
    processes: pfn::nvmlDeviceGetComputeRunningProcesses_v3,
    /// Keeps the function pointers above valid; never unloaded before them.
    _library: Library,
}

/// `usedGpuMemory` when the driver cannot say (no permission, some platforms).
const NVML_VALUE_NOT_AVAILABLE: u64 = u64::MAX;

macro_rules! symbol {
    ($library:expr, $name:ident, $path:expr) => {{
        let name = concat!(stringify!($name), "\0");
        // SAFETY: the symbol's type is the `hooks` table's signature for exactly this NVML name;
        // the pointer is copied out and kept valid by keeping the library loaded (`_library`).
        unsafe { $library.get::<pfn::$name>(name.as_bytes()) }
            .map(|symbol| *symbol)
            .map_err(|source| NvmlError::Symbol {
                library: $path.to_owned(),
                symbol: stringify!($name),
                source,
            })?
    }};
}

impl NvmlProcesses {
    /// Loads NVML from `library` (a soname such as `libnvidia-ml.so.1`, or a path) and
    /// initialises it.
    pub fn open(library: &Path) -> Result<Self, NvmlError> {
        let name = library.display().to_string();
        // SAFETY: loading NVML runs its initialisers, the vendor's documented way to use it.
        let lib = unsafe { Library::new(library) }.map_err(|source| NvmlError::Load {
            library: name.clone(),
            source,
        })?;
        let api = Self {
            init: symbol!(lib, nvmlInit_v2, name),
            count: symbol!(lib, nvmlDeviceGetCount_v2, name),
            handle: symbol!(lib, nvmlDeviceGetHandleByIndex_v2, name),
            uuid: symbol!(lib, nvmlDeviceGetUUID, name),
            processes: symbol!(lib, nvmlDeviceGetComputeRunningProcesses_v3, name),
            _library: lib,
        };
        // SAFETY: nvmlInit_v2 may be called at any time and any number of times.
        check("nvmlInit_v2", unsafe { (api.init)() })?;
        Ok(api)
    }

    /// `(device UUID, processes)` of every device now. A device whose list cannot be read is
    /// an error: the backstop must not read "nothing" as "nobody over cap" silently.
    pub fn snapshot(&self) -> Result<Vec<(String, Vec<DeviceProcess>)>, NvmlError> {
        let mut count: c_uint = 0;
        // SAFETY: `count` is a valid out-pointer for the duration of the call.
        check("nvmlDeviceGetCount_v2", unsafe { (self.count)(&mut count) })?;
        let mut devices = Vec::new();
        for index in 0..count {
            let mut device: nvmlDevice_t = std::ptr::null_mut();
            // SAFETY: `device` is a valid out-pointer and `index` is below the reported count.
            check("nvmlDeviceGetHandleByIndex_v2", unsafe {
                (self.handle)(index, &mut device)
            })?;
            let mut uuid = [0 as c_char; nvml::NVML_DEVICE_UUID_V2_BUFFER_SIZE];
            // SAFETY: the buffer is writable for the length passed.
            check("nvmlDeviceGetUUID", unsafe {
                (self.uuid)(device, uuid.as_mut_ptr(), uuid.len() as c_uint)
            })?;
            devices.push((text(&uuid), self.device_processes(device)?));
        }
        Ok(devices)
    }

    fn device_processes(&self, device: nvmlDevice_t) -> Result<Vec<DeviceProcess>, NvmlError> {
        // The list can grow between the size query and the read: retry with room to spare.
        let mut room: c_uint = 64;
        for _ in 0..4 {
            let mut infos = vec![nvmlProcessInfo_t::default(); room as usize];
            let mut count = room;
            // SAFETY: `infos` holds `count` writable elements; `count` is a valid in/out pointer.
            let code = unsafe { (self.processes)(device, &mut count, infos.as_mut_ptr()) };
            match code {
                nvml::NVML_SUCCESS => {
                    infos.truncate(count as usize);
                    return Ok(infos
                        .into_iter()
                        .filter(|p| p.usedGpuMemory != NVML_VALUE_NOT_AVAILABLE)
                        .map(|p| DeviceProcess {
                            pid: p.pid,
                            used_bytes: p.usedGpuMemory,
                        })
                        .collect());
                }
                nvml::NVML_ERROR_INSUFFICIENT_SIZE => room = count.saturating_mul(2).max(room * 2),
                code => {
                    return Err(NvmlError::Call {
                        call: "nvmlDeviceGetComputeRunningProcesses_v3",
                        code,
                    });
                }
            }
        }
        Err(NvmlError::Call {
            call: "nvmlDeviceGetComputeRunningProcesses_v3",
            code: nvml::NVML_ERROR_INSUFFICIENT_SIZE,
        })
    }
}

fn check(call: &'static str, code: nvmlReturn_t) -> Result<(), NvmlError> {
    match code {
        nvml::NVML_SUCCESS => Ok(()),
        code => Err(NvmlError::Call { call, code }),
    }
}

/// A NUL-terminated C string from a fixed buffer; an unterminated buffer reads as empty.
fn text(buffer: &[c_char]) -> String {
    // SAFETY: c_char and u8 have the same size and alignment; the slice stays borrowed.
    let bytes = unsafe { std::slice::from_raw_parts(buffer.as_ptr().cast::<u8>(), buffer.len()) };
    CStr::from_bytes_until_nul(bytes)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}
