//! A node's device inventory, read from the annotation the node agent writes, and its
//! CPU and memory from `status.allocatable`.
//!
//! The annotation is HAMi's v2.10 format, a JSON array under
//! `hami.io/node-nvidia-register`: `{"id", "index", "count", "devmem", "devcore",
//! "type", "numa", "health"}` per device, plus our optional `"link"` (NVLink group).

use k8s_openapi::api::core::v1::Node;
use serde::Deserialize;
use thiserror::Error;

use crate::cluster::{DeviceSpec, NodeSpec};
use crate::model::{ModelError, ModelTable};
use hami_request::keys::{bookkeeping, pod_key};
use hami_request::quantity::{self, QuantityError};

/// The node annotation holding the device inventory (`hami.io/node-nvidia-register`).
pub fn register_annotation() -> String {
    pod_key(bookkeeping::NODE_NVIDIA_REGISTER)
}

/// One device as the node agent registers it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RegisteredDevice {
    pub id: String,
    #[serde(default)]
    pub index: u32,
    /// Device memory, MiB.
    #[serde(default)]
    pub devmem: u64,
    #[serde(rename = "type", default)]
    pub model: String,
    #[serde(default)]
    pub numa: Option<u16>,
    /// NVLink group (devices of one group are linked all-to-all).
    #[serde(default)]
    pub link: Option<u16>,
    #[serde(default = "healthy")]
    pub health: bool,
}

fn healthy() -> bool {
    true
}

/// Why a node's inventory cannot be read.
#[derive(Debug, Error)]
pub enum InventoryError {
    #[error("node has no name")]
    NoName,
    #[error(
        "node {node}: annotation {} is not a JSON device list: {source}",
        register_annotation()
    )]
    Json {
        node: String,
        source: serde_json::Error,
    },
    #[error("node {node}: allocatable {key}: {source}")]
    Quantity {
        node: String,
        key: &'static str,
        source: QuantityError,
    },
    #[error(
        "node {node}: devices of different models ({first}, {other}) are not supported on one node"
    )]
    MixedModels {
        node: String,
        first: String,
        other: String,
    },
    #[error("node {node}: {source}")]
    Model { node: String, source: ModelError },
}

/// The node's spec for the scheduler: healthy registered devices in index order.
pub fn node_spec(node: &Node, models: &mut ModelTable) -> Result<NodeSpec, InventoryError> {
    let name = node.metadata.name.clone().ok_or(InventoryError::NoName)?;
    let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let read = |key: &'static str, parse: fn(&str) -> Result<u64, QuantityError>| {
        allocatable
            .and_then(|a| a.get(key))
            .map(|q| {
                parse(&q.0).map_err(|source| InventoryError::Quantity {
                    node: name.clone(),
                    key,
                    source,
                })
            })
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let cpu_milli = read("cpu", quantity::cpu_milli)?;
    let memory_mib = read("memory", quantity::memory_mib)?;
    let mut devices: Vec<RegisteredDevice> = match node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&register_annotation()))
    {
        Some(text) => serde_json::from_str(text).map_err(|source| InventoryError::Json {
            node: name.clone(),
            source,
        })?,
        None => Vec::new(),
    };
    devices.retain(|d| d.health);
    devices.sort_by_key(|d| d.index);
    let model = match devices.first() {
        None => None,
        Some(first) => {
            if let Some(other) = devices.iter().find(|d| d.model != first.model) {
                return Err(InventoryError::MixedModels {
                    node: name,
                    first: first.model.clone(),
                    other: other.model.clone(),
                });
            }
            Some(
                models
                    .intern(&first.model)
                    .map_err(|source| InventoryError::Model {
                        node: name.clone(),
                        source,
                    })?,
            )
        }
    };
    Ok(NodeSpec {
        name,
        cpu_milli,
        memory_mib,
        model,
        devices: devices
            .into_iter()
            .map(|d| DeviceSpec {
                uuid: d.id,
                memory_mib: d.devmem,
                numa: d.numa,
                link_group: d.link,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(annotation: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gpu-1", "annotations": {register_annotation(): annotation}},
            "status": {"allocatable": {"cpu": "96", "memory": "384Gi"}}
        }))
        .unwrap()
    }

    #[test]
    fn registered_devices_become_the_node_spec() {
        let n = node(
            r#"[{"id":"GPU-b","index":1,"count":10,"devmem":81920,"devcore":100,"type":"NVIDIA A100","numa":0,"link":0,"health":true},
                {"id":"GPU-a","index":0,"count":10,"devmem":81920,"devcore":100,"type":"NVIDIA A100","numa":0,"health":true},
                {"id":"GPU-sick","index":2,"devmem":81920,"type":"NVIDIA A100","health":false}]"#,
        );
        let mut models = ModelTable::default();
        let spec = node_spec(&n, &mut models).unwrap();
        assert_eq!((spec.cpu_milli, spec.memory_mib), (96_000, 384 * 1024));
        assert_eq!(spec.devices.len(), 2);
        assert_eq!(spec.devices[0].uuid, "GPU-a");
        assert_eq!(spec.devices[1].link_group, Some(0));
        assert_eq!(models.name(spec.model.unwrap()), "NVIDIA A100");
    }

    #[test]
    fn broken_inventories_are_refused_with_the_node_named() {
        let err = node_spec(&node("not json"), &mut ModelTable::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gpu-1") && err.contains(&register_annotation()),
            "{err}"
        );
        let mixed = node(r#"[{"id":"a","type":"T4"},{"id":"b","index":1,"type":"A10"}]"#);
        assert!(matches!(
            node_spec(&mixed, &mut ModelTable::default()),
            Err(InventoryError::MixedModels { .. })
        ));
    }
}
