//! HTTP routes of the extender (`POST /filter`, `/prioritize`, `/bind`, `GET /healthz`)
//! on a small synchronous server, and the bind sequence: reserve in our state, annotate
//! the pod, create the Binding, and undo the reservation if either call fails.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

use super::api::ApiServer;
use super::demand::PodDemand;
use super::state::{ExtenderState, bind_annotations};
use super::wire::{
    ExtenderArgs, ExtenderBindingArgs, ExtenderBindingResult, ExtenderFilterResult, NodeItems,
};

/// Errors raised while serving.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
}

/// The extender: its state and the API server it binds through.
pub struct Extender {
    state: Mutex<ExtenderState>,
    api: Arc<dyn ApiServer>,
}

/// A filter or prioritize call, read.
struct Prepared {
    args: ExtenderArgs,
    demand: PodDemand,
    /// Nodes with a known inventory.
    names: Vec<String>,
    /// Nodes whose inventory cannot be read, and why.
    broken: BTreeMap<String, String>,
}

/// A reply: HTTP status and JSON body.
pub type Reply = (u16, String);

impl Extender {
    /// An extender over `state`, binding through `api`.
    pub fn new(state: ExtenderState, api: Arc<dyn ApiServer>) -> Self {
        Extender {
            state: Mutex::new(state),
            api,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ExtenderState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Routes one request.
    pub fn handle(&self, method: &str, path: &str, body: &str) -> Reply {
        let path = path.split('?').next().unwrap_or(path).trim_end_matches('/');
        match (method, path.rsplit('/').next().unwrap_or("")) {
            ("GET", "healthz") | ("GET", "readyz") => (200, "ok".into()),
            ("POST", "filter") => self.filter(body),
            ("POST", "prioritize") => self.prioritize(body),
            ("POST", "bind") => self.bind(body),
            _ => (
                404,
                format!("{{\"Error\":\"no route for {method} {path}\"}}"),
            ),
        }
    }

    /// Refreshes the state from the pods the API server lists as bound.
    pub fn resync(&self) -> Result<(), super::api::ApiError> {
        let pods = self.api.list_bound_pods()?;
        let mut names: Vec<String> = pods
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            if !self.state().knows_node(&name)
                && let Ok(node) = self.api.get_node(&name)
            {
                let _ = self.state().upsert_node(&node);
            }
        }
        self.state().resync(&pods);
        Ok(())
    }

    /// Reads the args and refreshes node inventories. A node whose inventory cannot be
    /// read fails alone, with the reason, instead of failing the whole call.
    fn prepare(&self, body: &str) -> Result<Prepared, String> {
        let args: ExtenderArgs =
            serde_json::from_str(body).map_err(|e| format!("cannot decode ExtenderArgs: {e}"))?;
        let demand = PodDemand::from_pod(&args.pod).map_err(|e| e.to_string())?;
        let mut names = Vec::new();
        let mut broken = BTreeMap::new();
        match (&args.nodes, &args.node_names) {
            (Some(items), _) => {
                for node in &items.items {
                    let Some(name) = node.metadata.name.clone() else {
                        continue;
                    };
                    match self.state().upsert_node(node) {
                        Ok(()) => names.push(name),
                        Err(e) => {
                            broken.insert(name, e.to_string());
                        }
                    }
                }
            }
            (None, Some(given)) => {
                for name in given {
                    if !self.state().knows_node(name) {
                        let fetched = self.api.get_node(name).map_err(|e| e.to_string());
                        let stored = fetched
                            .and_then(|n| self.state().upsert_node(&n).map_err(|e| e.to_string()));
                        if let Err(e) = stored {
                            broken.insert(name.clone(), e);
                            continue;
                        }
                    }
                    names.push(name.clone());
                }
            }
            (None, None) => {}
        }
        if let Some(uid) = args.pod.metadata.uid.as_deref().filter(|u| !u.is_empty()) {
            self.state().remember(uid, demand.clone());
        }
        Ok(Prepared {
            args,
            demand,
            names,
            broken,
        })
    }

    fn filter(&self, body: &str) -> Reply {
        let Prepared {
            args,
            demand,
            names,
            broken,
        } = match self.prepare(body) {
            Ok(p) => p,
            Err(e) => {
                return json(&ExtenderFilterResult {
                    error: e,
                    ..Default::default()
                });
            }
        };
        let (pass, mut failed) = self.state().filter(&demand, &names);
        failed.extend(broken);
        let result = ExtenderFilterResult {
            nodes: args.nodes.as_ref().map(|items| NodeItems {
                items: items
                    .items
                    .iter()
                    .filter(|n| {
                        n.metadata
                            .name
                            .as_ref()
                            .is_some_and(|name| pass.contains(name))
                    })
                    .cloned()
                    .collect(),
            }),
            node_names: args.node_names.as_ref().map(|_| pass.clone()),
            failed_nodes: failed,
            failed_and_unresolvable_nodes: Default::default(),
            error: String::new(),
        };
        json(&result)
    }

    fn prioritize(&self, body: &str) -> Reply {
        match self.prepare(body) {
            Ok(Prepared { demand, args, .. }) => {
                // Every node gets a score; nodes whose inventory is unreadable get 0.
                let all: Vec<String> = match (&args.nodes, &args.node_names) {
                    (Some(items), _) => items
                        .items
                        .iter()
                        .filter_map(|n| n.metadata.name.clone())
                        .collect(),
                    (None, Some(names)) => names.clone(),
                    (None, None) => Vec::new(),
                };
                json(&self.state().prioritize(&demand, &all))
            }
            // The scheduler ignores a failed prioritize; say why in the body all the same.
            Err(e) => (
                500,
                format!("{{\"Error\":{}}}", serde_json::Value::String(e)),
            ),
        }
    }

    fn bind(&self, body: &str) -> Reply {
        let args: ExtenderBindingArgs = match serde_json::from_str(body) {
            Ok(a) => a,
            Err(e) => {
                return json(&ExtenderBindingResult {
                    error: format!("cannot decode ExtenderBindingArgs: {e}"),
                });
            }
        };
        let error = match self.bind_pod(&args) {
            Ok(()) => String::new(),
            Err(e) => e,
        };
        json(&ExtenderBindingResult { error })
    }

    /// Binds one pod: reserve, annotate, Binding; the reservation is undone on failure.
    pub fn bind_pod(&self, args: &ExtenderBindingArgs) -> Result<(), String> {
        let known = self.state().demand(&args.pod_uid).cloned();
        let demand = match known {
            Some(d) => d,
            None => {
                let pod = self
                    .api
                    .get_pod(&args.pod_namespace, &args.pod_name)
                    .map_err(|e| e.to_string())?;
                PodDemand::from_pod(&pod).map_err(|e| e.to_string())?
            }
        };
        if !self.state().knows_node(&args.node) {
            let node = self.api.get_node(&args.node).map_err(|e| e.to_string())?;
            self.state().upsert_node(&node).map_err(|e| e.to_string())?;
        }
        let placement = self.state().reserve(&args.pod_uid, &demand, &args.node)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let annotations = bind_annotations(&demand, &placement, now);
        let outcome = self
            .api
            .annotate_pod(&args.pod_namespace, &args.pod_name, &annotations)
            .and_then(|()| {
                self.api.bind_pod(
                    &args.pod_namespace,
                    &args.pod_name,
                    &args.pod_uid,
                    &args.node,
                )
            });
        if let Err(e) = outcome {
            self.state().forget(&args.pod_uid);
            return Err(e.to_string());
        }
        Ok(())
    }

    /// Serves HTTP on `addr` with `threads` workers until the server is unblocked.
    pub fn serve(self: Arc<Self>, server: Arc<tiny_http::Server>, threads: usize) {
        std::thread::scope(|scope| {
            for _ in 0..threads.max(1) {
                let server = Arc::clone(&server);
                let this = Arc::clone(&self);
                scope.spawn(move || {
                    while let Ok(mut request) = server.recv() {
                        let mut body = String::new();
                        let reply = match request.as_reader().read_to_string(&mut body) {
                            Ok(_) => this.handle(request.method().as_str(), request.url(), &body),
                            Err(e) => (400, format!("{{\"Error\":\"cannot read body: {e}\"}}")),
                        };
                        let header =
                            tiny_http::Header::from_bytes("Content-Type", "application/json");
                        let mut response =
                            tiny_http::Response::from_string(reply.1).with_status_code(reply.0);
                        if let Ok(h) = header {
                            response = response.with_header(h);
                        }
                        let _ = request.respond(response);
                    }
                });
            }
        });
    }
}

/// Binds a server on `addr` (e.g. `0.0.0.0:8888`, or `127.0.0.1:0` in tests).
pub fn listen(addr: &str) -> Result<Arc<tiny_http::Server>, ServeError> {
    tiny_http::Server::http(addr)
        .map(Arc::new)
        .map_err(|e| ServeError::Listen {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })
}

fn json<T: serde::Serialize>(value: &T) -> Reply {
    match serde_json::to_string(value) {
        Ok(text) => (200, text),
        Err(e) => (500, format!("{{\"Error\":\"cannot encode reply: {e}\"}}")),
    }
}
