//! The node's devices: read from the node ledger, or discovered through NVML and recorded there.
//!
//! On test machines `libnvidia-ml.so.1` is the simulated one, found through containerd's
//! `LD_LIBRARY_PATH`; on GPU nodes it is the driver's.

use std::path::Path;

use hami_ledger::{DeviceInfo, NodeLedger, Vendor};
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
        Some(hami_node::discover_nvidia().map_err(|e| e.to_string()))
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
            Some(Ok(devices)) => devices.iter().map(|d| d.info.clone()).collect::<Vec<_>>(),
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
        Some(Ok(devices)) => devices.into_iter().map(|d| (d.info, d.model)).collect(),
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
