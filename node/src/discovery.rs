//! Device discovery through the vendor management library (NVML for NVIDIA).
//!
//! NVML is loaded at run time with `libloading`, never linked, so the host tools start on machines
//! without a driver and report a clear error only when a device is actually needed. On test
//! machines `libnvidia-ml.so.1` is the simulated device, found through `LD_LIBRARY_PATH`.

use std::ffi::{CStr, c_char, c_uint};
use std::path::Path;

use hami_hooks::nvml::{self, nvmlDevice_t, nvmlMemory_t, nvmlReturn_t, pfn};
use hami_ledger::{DeviceInfo, NodeLedger, Vendor};
use libloading::Library;
use thiserror::Error;

/// NVML's library name on every Linux driver installation.
pub const NVML_LIBRARY: &str = "libnvidia-ml.so.1";

/// Why the node's devices could not be listed.
#[derive(Debug, Error)]
pub enum DiscoveryError {
    #[error(
        "cannot load {NVML_LIBRARY}: {0} (no NVIDIA driver here? for the simulated device run `eval \"$(hami sim env)\"` first)"
    )]
    Load(#[source] libloading::Error),
    #[error("{NVML_LIBRARY} has no entry point {symbol}: {source}")]
    Symbol {
        symbol: &'static str,
        #[source]
        source: libloading::Error,
    },
    #[error("{call} failed with NVML error {code}")]
    Call {
        call: &'static str,
        code: nvmlReturn_t,
    },
    #[error("device {index} reports no UUID")]
    NoUuid { index: u32 },
    #[error("cannot write the node ledger {path}: {message}")]
    NodeLedger { path: String, message: String },
}

/// One device found on the node, with the model name a type selection can match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredDevice {
    pub info: DeviceInfo,
    /// Model name as NVML reports it, e.g. `NVIDIA H200`.
    pub model: String,
}

/// Lists the NVIDIA devices of this node in NVML index order.
pub fn discover_nvidia() -> Result<Vec<DiscoveredDevice>, DiscoveryError> {
    // SAFETY: loading NVML runs its initializers, which is the vendor's documented way to use it;
    // it has no preconditions on the caller.
    let library = unsafe { Library::new(NVML_LIBRARY) }.map_err(DiscoveryError::Load)?;
    let api = Nvml::load(&library)?;
    api.devices()
}

/// Returns the devices recorded in `path`, creating the node part from NVML when it is missing.
pub fn ensure_node_ledger(path: &Path) -> Result<Vec<DeviceInfo>, DiscoveryError> {
    let node_error = |message: String| DiscoveryError::NodeLedger {
        path: path.display().to_string(),
        message,
    };
    if path.exists() {
        let node = NodeLedger::open(path).map_err(|e| node_error(e.to_string()))?;
        return Ok(node.devices());
    }
    let devices: Vec<DeviceInfo> = discover_nvidia()?.into_iter().map(|d| d.info).collect();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| node_error(e.to_string()))?;
    }
    NodeLedger::create(path, &devices).map_err(|e| node_error(e.to_string()))?;
    Ok(devices)
}

/// The NVML entry points discovery needs, typed by the `hooks` table.
struct Nvml<'lib> {
    init: libloading::Symbol<'lib, pfn::nvmlInit_v2>,
    count: libloading::Symbol<'lib, pfn::nvmlDeviceGetCount_v2>,
    handle: libloading::Symbol<'lib, pfn::nvmlDeviceGetHandleByIndex_v2>,
    uuid: libloading::Symbol<'lib, pfn::nvmlDeviceGetUUID>,
    name: libloading::Symbol<'lib, pfn::nvmlDeviceGetName>,
    memory: libloading::Symbol<'lib, pfn::nvmlDeviceGetMemoryInfo>,
}

macro_rules! symbol {
    ($library:expr, $name:ident) => {{
        let name = concat!(stringify!($name), "\0");
        // SAFETY: the symbol's type is the `hooks` table's signature for exactly this NVML name.
        unsafe { $library.get::<pfn::$name>(name.as_bytes()) }.map_err(|source| {
            DiscoveryError::Symbol {
                symbol: stringify!($name),
                source,
            }
        })?
    }};
}

impl<'lib> Nvml<'lib> {
    fn load(library: &'lib Library) -> Result<Self, DiscoveryError> {
        Ok(Self {
            init: symbol!(library, nvmlInit_v2),
            count: symbol!(library, nvmlDeviceGetCount_v2),
            handle: symbol!(library, nvmlDeviceGetHandleByIndex_v2),
            uuid: symbol!(library, nvmlDeviceGetUUID),
            name: symbol!(library, nvmlDeviceGetName),
            memory: symbol!(library, nvmlDeviceGetMemoryInfo),
        })
    }

    fn devices(&self) -> Result<Vec<DiscoveredDevice>, DiscoveryError> {
        let check = |call: &'static str, code: nvmlReturn_t| match code {
            nvml::NVML_SUCCESS => Ok(()),
            code => Err(DiscoveryError::Call { call, code }),
        };
        // SAFETY: nvmlInit_v2 may be called at any time and any number of times.
        check("nvmlInit_v2", unsafe { (self.init)() })?;
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
            let mut uuid = [0 as c_char; 96];
            // SAFETY: the buffer is writable for the length passed.
            check("nvmlDeviceGetUUID", unsafe {
                (self.uuid)(device, uuid.as_mut_ptr(), 96)
            })?;
            let mut name = [0 as c_char; 96];
            // SAFETY: as above; a failure leaves the buffer zeroed, i.e. an empty name.
            let _ = unsafe { (self.name)(device, name.as_mut_ptr(), 96) };
            let mut memory = nvmlMemory_t::default();
            // SAFETY: `memory` is an `nvmlMemory_t` the call may write.
            check("nvmlDeviceGetMemoryInfo", unsafe {
                (self.memory)(device, &mut memory)
            })?;
            let uuid = text(&uuid);
            if uuid.is_empty() {
                return Err(DiscoveryError::NoUuid { index });
            }
            devices.push(DiscoveredDevice {
                info: DeviceInfo {
                    uuid,
                    index,
                    vendor: Vendor::Nvidia,
                    total_memory: memory.total,
                    compute_units: 0,
                },
                model: text(&name),
            });
        }
        Ok(devices)
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
