//! The node's devices: read from the node ledger, or discovered through NVML and recorded there.
//!
//! On test machines `libnvidia-ml.so.1` is the simulated one, found through containerd's
//! `LD_LIBRARY_PATH`; on GPU nodes it is the driver's.

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::path::Path;

use hami_ledger::{DeviceInfo, NodeLedger, Vendor};
use libloading::{Library, Symbol};
use thiserror::Error;

use crate::ledger_entry::node_path;

/// Why the node's devices are unknown.
#[derive(Debug, Error)]
pub enum InventoryError {
    #[error("cannot read node ledger {path}: {message}")]
    NodeLedger { path: String, message: String },
    #[error("cannot create node ledger {path}: {message}")]
    CreateNodeLedger { path: String, message: String },
    #[error("no node ledger and NVML is unavailable: {0}")]
    Nvml(String),
}

/// One device with the names a `use-gputype` selection can match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub info: DeviceInfo,
    /// Vendor name, and the model name when NVML reports it.
    pub type_names: Vec<String>,
}

fn vendor_name(vendor: Vendor) -> &'static str {
    match vendor {
        Vendor::Nvidia => "NVIDIA",
        Vendor::Ascend => "Ascend",
        Vendor::Cambricon => "Cambricon",
    }
}

/// The node's devices. Creates the node ledger from NVML when it does not exist yet.
///
/// Model names come from NVML only when `want_models` (a type selection needs them).
pub fn load_or_discover(root: &Path, want_models: bool) -> Result<Vec<Device>, InventoryError> {
    let path = node_path(root);
    let nvml = if want_models || !path.exists() {
        Some(Nvml::discover())
    } else {
        None
    };
    let infos = if path.exists() {
        let node = NodeLedger::open(&path).map_err(|e| InventoryError::NodeLedger {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        node.devices()
    } else {
        let discovered = match &nvml {
            Some(Ok(devices)) => devices
                .iter()
                .map(|(info, _)| info.clone())
                .collect::<Vec<_>>(),
            Some(Err(e)) => return Err(InventoryError::Nvml(e.clone())),
            None => Vec::new(),
        };
        std::fs::create_dir_all(root).map_err(|e| InventoryError::CreateNodeLedger {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        NodeLedger::create(&path, &discovered).map_err(|e| InventoryError::CreateNodeLedger {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        discovered
    };
    let models: Vec<(DeviceInfo, String)> = match nvml {
        Some(Ok(devices)) => devices,
        _ => Vec::new(),
    };
    Ok(infos
        .into_iter()
        .map(|info| {
            let mut type_names = vec![vendor_name(info.vendor).to_owned()];
            if let Some((_, model)) = models.iter().find(|(d, _)| d.uuid == info.uuid) {
                type_names.push(model.clone());
            }
            Device { info, type_names }
        })
        .collect())
}

#[repr(C)]
#[derive(Default)]
struct NvmlMemory {
    total: u64,
    free: u64,
    used: u64,
}

type NvmlDevice = *mut c_void;

/// NVML entry points used for discovery.
struct Nvml;

impl Nvml {
    /// Lists devices with their model names; the error says what failed.
    fn discover() -> Result<Vec<(DeviceInfo, String)>, String> {
        // SAFETY: loading NVML runs its initializers; it is the vendor's documented way to use it
        // and it has no preconditions on the caller.
        let library = unsafe { Library::new("libnvidia-ml.so.1") }
            .map_err(|e| format!("cannot load libnvidia-ml.so.1: {e}"))?;
        // SAFETY: the symbol types below are NVML's documented C signatures (nvml.h).
        unsafe { Self::query(&library) }
    }

    /// # Safety
    /// `library` must be an NVML implementation with the documented signatures.
    unsafe fn query(library: &Library) -> Result<Vec<(DeviceInfo, String)>, String> {
        type Init = unsafe extern "C" fn() -> c_int;
        type Count = unsafe extern "C" fn(*mut c_uint) -> c_int;
        type Handle = unsafe extern "C" fn(c_uint, *mut NvmlDevice) -> c_int;
        type Text = unsafe extern "C" fn(NvmlDevice, *mut c_char, c_uint) -> c_int;
        type Memory = unsafe extern "C" fn(NvmlDevice, *mut NvmlMemory) -> c_int;
        type Cores = unsafe extern "C" fn(NvmlDevice, *mut c_uint) -> c_int;
        fn symbol<'l, T>(library: &'l Library, name: &[u8]) -> Result<Symbol<'l, T>, String> {
            // SAFETY: the caller of `query` guarantees the signature matches the name.
            unsafe { library.get(name) }.map_err(|e| e.to_string())
        }
        let init: Symbol<Init> = symbol(library, b"nvmlInit_v2\0")?;
        let count: Symbol<Count> = symbol(library, b"nvmlDeviceGetCount_v2\0")?;
        let handle: Symbol<Handle> = symbol(library, b"nvmlDeviceGetHandleByIndex_v2\0")?;
        let uuid: Symbol<Text> = symbol(library, b"nvmlDeviceGetUUID\0")?;
        let name: Symbol<Text> = symbol(library, b"nvmlDeviceGetName\0")?;
        let memory: Symbol<Memory> = symbol(library, b"nvmlDeviceGetMemoryInfo\0")?;
        let cores: Option<Symbol<Cores>> = symbol(library, b"nvmlDeviceGetNumGpuCores\0").ok();
        let check = |what: &str, code: c_int| match code {
            0 => Ok(()),
            code => Err(format!("{what} returned NVML error {code}")),
        };
        // SAFETY: NVML documents nvmlInit_v2 as callable at any time, any number of times.
        check("nvmlInit_v2", unsafe { init() })?;
        let mut n: c_uint = 0;
        // SAFETY: `n` is a valid out-pointer for the duration of the call.
        check("nvmlDeviceGetCount_v2", unsafe { count(&mut n) })?;
        let mut devices = Vec::new();
        for index in 0..n {
            let mut device: NvmlDevice = std::ptr::null_mut();
            // SAFETY: `device` is a valid out-pointer; `index` is below the reported count.
            check("nvmlDeviceGetHandleByIndex_v2", unsafe {
                handle(index, &mut device)
            })?;
            let mut uuid_buf = [0u8; 96];
            // SAFETY: the buffer is writable for the length passed.
            check("nvmlDeviceGetUUID", unsafe {
                uuid(device, uuid_buf.as_mut_ptr().cast(), 96)
            })?;
            let mut name_buf = [0u8; 96];
            // SAFETY: as above.
            let named = unsafe { name(device, name_buf.as_mut_ptr().cast(), 96) } == 0;
            let mut mem = NvmlMemory::default();
            // SAFETY: `mem` has nvmlMemory_t's layout (three unsigned long long) and is writable.
            check("nvmlDeviceGetMemoryInfo", unsafe {
                memory(device, &mut mem)
            })?;
            let mut core_count: c_uint = 0;
            if let Some(cores) = &cores {
                // SAFETY: `core_count` is a valid out-pointer; failure leaves it 0, which we keep.
                let _ = unsafe { cores(device, &mut core_count) };
            }
            let text = |buf: &[u8]| {
                CStr::from_bytes_until_nul(buf)
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            let uuid_text = text(&uuid_buf);
            if uuid_text.is_empty() {
                return Err(format!("device {index} has no UUID"));
            }
            let model = if named {
                text(&name_buf)
            } else {
                String::new()
            };
            devices.push((
                DeviceInfo {
                    uuid: uuid_text,
                    index,
                    vendor: Vendor::Nvidia,
                    total_memory: mem.total,
                    compute_units: core_count,
                },
                model,
            ));
        }
        Ok(devices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(uuid: &str, index: u32) -> DeviceInfo {
        DeviceInfo {
            uuid: uuid.into(),
            index,
            vendor: Vendor::Nvidia,
            total_memory: 8 << 30,
            compute_units: 80,
        }
    }

    #[test]
    fn existing_node_ledger_is_the_inventory() {
        let root = tempfile::tempdir().unwrap();
        let devices = [device("GPU-a", 0), device("GPU-b", 1)];
        NodeLedger::create(node_path(root.path()), &devices).unwrap();
        let found = load_or_discover(root.path(), false).unwrap();
        assert_eq!(
            found.iter().map(|d| d.info.clone()).collect::<Vec<_>>(),
            devices
        );
        assert_eq!(found[0].type_names, vec!["NVIDIA".to_owned()]);
    }

    #[test]
    fn corrupt_node_ledger_is_an_error_naming_it() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(node_path(root.path()), b"not a ledger").unwrap();
        let err = load_or_discover(root.path(), false).unwrap_err();
        assert!(err.to_string().contains("node.ledger"), "{err}");
    }
}
