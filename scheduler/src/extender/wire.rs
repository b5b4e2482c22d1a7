//! The kube-scheduler extender wire format (`k8s.io/kube-scheduler/extender/v1`). The Go
//! types have no json tags, so keys are the Go field names in PascalCase; nil pointers
//! arrive as `null`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde::{Deserialize, Serialize};

/// A `v1.NodeList` as the scheduler sends it (only the items matter here).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct NodeItems {
    #[serde(default)]
    pub items: Vec<Node>,
}

/// Body of `/filter` and `/prioritize`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderArgs {
    pub pod: Pod,
    /// Full nodes, when the extender is not `nodeCacheCapable`.
    #[serde(default)]
    pub nodes: Option<NodeItems>,
    /// Node names, when it is.
    #[serde(default)]
    pub node_names: Option<Vec<String>>,
}

/// Reply of `/filter`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderFilterResult {
    /// Echoed only when the request carried full nodes.
    pub nodes: Option<NodeItems>,
    pub node_names: Option<Vec<String>>,
    pub failed_nodes: BTreeMap<String, String>,
    pub failed_and_unresolvable_nodes: BTreeMap<String, String>,
    pub error: String,
}

impl PartialEq for NodeItems {
    fn eq(&self, other: &Self) -> bool {
        self.items.len() == other.items.len()
            && self
                .items
                .iter()
                .zip(&other.items)
                .all(|(a, b)| a.metadata.name == b.metadata.name)
    }
}

/// One entry of the `/prioritize` reply (`Score` 0..=10).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct HostPriority {
    pub host: String,
    pub score: i64,
}

/// Body of `/bind`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderBindingArgs {
    pub pod_name: String,
    pub pod_namespace: String,
    #[serde(rename = "PodUID")]
    pub pod_uid: String,
    pub node: String,
}

/// Reply of `/bind`: empty `Error` on success.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderBindingResult {
    pub error: String,
}

/// The highest extender priority kube-scheduler accepts (it scales by MaxNodeScore / 10).
pub const MAX_EXTENDER_PRIORITY: i64 = 10;
