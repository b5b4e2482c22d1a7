//! The few API-server calls the extender makes: read a pod or node, list pods, patch a
//! pod's annotations, and bind it. Behind a trait so tests can play the API server.

use std::collections::BTreeMap;
use std::io::Read;

use k8s_openapi::api::core::v1::{Node, Pod};
use thiserror::Error;

/// An API-server call that failed.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{verb} {path}: http status {status}: {body}")]
    Status {
        verb: &'static str,
        path: String,
        status: u16,
        body: String,
    },
    #[error("{verb} {path}: {reason}")]
    Transport {
        verb: &'static str,
        path: String,
        reason: String,
    },
    #[error("{verb} {path}: cannot decode the reply: {source}")]
    Decode {
        verb: &'static str,
        path: String,
        source: serde_json::Error,
    },
}

/// The API-server operations the extender needs.
pub trait ApiServer: Send + Sync {
    fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod, ApiError>;
    fn get_node(&self, name: &str) -> Result<Node, ApiError>;
    /// Every pod bound to a node.
    fn list_bound_pods(&self) -> Result<Vec<Pod>, ApiError>;
    /// Merge-patches `metadata.annotations` of the pod.
    fn annotate_pod(
        &self,
        namespace: &str,
        name: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<(), ApiError>;
    /// Creates the pod's `Binding` to `node`.
    fn bind_pod(&self, namespace: &str, name: &str, uid: &str, node: &str) -> Result<(), ApiError>;
}

/// The API server over plain HTTP (in a cluster: a `kubectl proxy` sidecar on localhost,
/// which adds TLS and the service-account token), with an optional bearer token.
pub struct HttpApiServer {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl HttpApiServer {
    /// A client of the API server at `base` (e.g. `http://127.0.0.1:8001`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .build()
            .into();
        HttpApiServer {
            base: base.trim_end_matches('/').to_owned(),
            token,
            agent,
        }
    }

    fn call(
        &self,
        verb: &'static str,
        path: &str,
        content_type: &str,
        body: Option<String>,
    ) -> Result<String, ApiError> {
        let url = format!("{}{path}", self.base);
        let transport = |e: ureq::Error| ApiError::Transport {
            verb,
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let response = match (verb, body) {
            ("GET", _) => {
                let mut req = self.agent.get(&url).header("Accept", "application/json");
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.call().map_err(transport)?
            }
            (_, body) => {
                let mut req = match verb {
                    "PATCH" => self.agent.patch(&url),
                    _ => self.agent.post(&url),
                }
                .header("Content-Type", content_type)
                .header("Accept", "application/json");
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.send(body.unwrap_or_default()).map_err(transport)?
            }
        };
        let status = response.status().as_u16();
        let mut text = String::new();
        response
            .into_body()
            .into_reader()
            .read_to_string(&mut text)
            .map_err(|e| ApiError::Transport {
                verb,
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        if !(200..300).contains(&status) {
            return Err(ApiError::Status {
                verb,
                path: path.to_owned(),
                status,
                body: text,
            });
        }
        Ok(text)
    }

    fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let text = self.call("GET", path, "", None)?;
        serde_json::from_str(&text).map_err(|source| ApiError::Decode {
            verb: "GET",
            path: path.to_owned(),
            source,
        })
    }
}

#[derive(serde::Deserialize)]
struct PodItems {
    #[serde(default)]
    items: Vec<Pod>,
}

impl ApiServer for HttpApiServer {
    fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod, ApiError> {
        self.get(&format!("/api/v1/namespaces/{namespace}/pods/{name}"))
    }

    fn get_node(&self, name: &str) -> Result<Node, ApiError> {
        self.get(&format!("/api/v1/nodes/{name}"))
    }

    fn list_bound_pods(&self) -> Result<Vec<Pod>, ApiError> {
        let list: PodItems = self.get("/api/v1/pods?fieldSelector=spec.nodeName!%3D")?;
        Ok(list.items)
    }

    fn annotate_pod(
        &self,
        namespace: &str,
        name: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        let patch = serde_json::json!({"metadata": {"annotations": annotations}});
        self.call(
            "PATCH",
            &format!("/api/v1/namespaces/{namespace}/pods/{name}"),
            "application/merge-patch+json",
            Some(patch.to_string()),
        )
        .map(drop)
    }

    fn bind_pod(&self, namespace: &str, name: &str, uid: &str, node: &str) -> Result<(), ApiError> {
        let binding = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}
        });
        self.call(
            "POST",
            &format!("/api/v1/namespaces/{namespace}/pods/{name}/binding"),
            "application/json",
            Some(binding.to_string()),
        )
        .map(drop)
    }
}
