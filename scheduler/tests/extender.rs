//! The extender over real HTTP: kube-scheduler request bodies (fixtures in Go's marshal
//! form) in, responses checked; binds go to a local server playing the API server's
//! Node, Pod, Patch and Binding endpoints.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hami_scheduler::extender::{Extender, ExtenderState, HttpApiServer, listen};
use hami_scheduler::frag::TargetWorkload;
use hami_scheduler::policy::NodePolicy;
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What the fake API server saw.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    body: String,
}

/// A local HTTP server answering like the API server for nodes, pods, patches and bindings.
struct FakeApiServer {
    url: String,
    calls: Arc<Mutex<Vec<Call>>>,
    server: Arc<tiny_http::Server>,
}

impl FakeApiServer {
    /// Serves `nodes` (name → JSON) and `pods` ("ns/name" → JSON); bindings of pods named
    /// in `refuse_binding` get a 409.
    fn start(
        nodes: HashMap<String, String>,
        pods: HashMap<String, String>,
        refuse_binding: Vec<String>,
    ) -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let calls = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..4 {
            let (server, calls) = (Arc::clone(&server), Arc::clone(&calls));
            let (nodes, pods, refuse) = (nodes.clone(), pods.clone(), refuse_binding.clone());
            std::thread::spawn(move || {
                while let Ok(mut req) = server.recv() {
                    let mut body = String::new();
                    req.as_reader().read_to_string(&mut body).unwrap();
                    let (method, path) = (req.method().as_str().to_owned(), req.url().to_owned());
                    calls.lock().unwrap().push(Call {
                        method: method.clone(),
                        path: path.clone(),
                        body,
                    });
                    let parts: Vec<&str> = path.split('?').next().unwrap().split('/').collect();
                    let (status, reply) = match (method.as_str(), parts.as_slice()) {
                        ("GET", ["", "api", "v1", "nodes", name]) => nodes
                            .get(*name)
                            .map_or((404, "{}".to_owned()), |n| (200, n.clone())),
                        ("GET", ["", "api", "v1", "namespaces", ns, "pods", name]) => pods
                            .get(&format!("{ns}/{name}"))
                            .map_or((404, "{}".to_owned()), |p| (200, p.clone())),
                        ("GET", ["", "api", "v1", "pods"]) => {
                            (200, r#"{"kind":"PodList","items":[]}"#.to_owned())
                        }
                        ("PATCH", ["", "api", "v1", "namespaces", _, "pods", _]) => {
                            (200, "{}".to_owned())
                        }
                        ("POST", ["", "api", "v1", "namespaces", _, "pods", name, "binding"]) => {
                            if refuse.iter().any(|r| r == name) {
                                (409, r#"{"kind":"Status","message":"conflict"}"#.to_owned())
                            } else {
                                (201, "{}".to_owned())
                            }
                        }
                        _ => (404, "{}".to_owned()),
                    };
                    let _ = req
                        .respond(tiny_http::Response::from_string(reply).with_status_code(status));
                }
            });
        }
        FakeApiServer {
            url: format!("http://127.0.0.1:{port}"),
            calls,
            server,
        }
    }

    fn calls(&self, method: &str) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// The extender serving HTTP on a free local port.
struct Running {
    url: String,
    server: Arc<tiny_http::Server>,
}

impl Running {
    fn start(api: &FakeApiServer, policy: NodePolicy) -> Self {
        let extender = Arc::new(Extender::new(
            ExtenderState::new(policy, TargetWorkload::default()),
            Arc::new(HttpApiServer::new(&api.url, Some("test-token".into()))),
        ));
        let server = listen("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let serving = Arc::clone(&server);
        std::thread::spawn(move || extender.serve(serving, 4));
        Running {
            url: format!("http://127.0.0.1:{port}"),
            server,
        }
    }

    fn post(&self, verb: &str, body: &str) -> Value {
        let mut response = ureq::post(&format!("{}/{verb}", self.url))
            .header("Content-Type", "application/json")
            .send(body)
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{verb}");
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

fn cluster_nodes() -> HashMap<String, String> {
    HashMap::from([
        ("gpu-a".to_owned(), fixture("node_gpu_a.json")),
        ("gpu-b".to_owned(), fixture("node_gpu_b.json")),
        ("cpu-only".to_owned(), fixture("node_cpu_only.json")),
    ])
}

fn share_pod(name: &str, cores: u32) -> String {
    json!({"metadata": {"name": name, "namespace": "ml", "uid": format!("uid-{name}")},
           "spec": {"containers": [{"name": "main", "resources": {"limits": {
               "nvidia.com/gpu": "1", "nvidia.com/gpucores": cores.to_string(), "nvidia.com/gpumem": "1000"}}}]}})
    .to_string()
}

#[test]
fn healthz_answers_and_unknown_routes_are_404() {
    let api = FakeApiServer::start(HashMap::new(), HashMap::new(), vec![]);
    let ext = Running::start(&api, NodePolicy::Ours);
    let ok = ureq::get(&format!("{}/healthz", ext.url)).call().unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let missing = agent
        .post(&format!("{}/preempt", ext.url))
        .send("{}")
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
}

#[test]
fn filter_with_node_names_fetches_inventories_and_names_why_nodes_fail() {
    let api = FakeApiServer::start(cluster_nodes(), HashMap::new(), vec![]);
    let ext = Running::start(&api, NodePolicy::Ours);
    let reply = ext.post("filter", &fixture("filter_node_names.json"));
    assert_eq!(reply["NodeNames"], json!(["gpu-a", "gpu-b"]));
    assert_eq!(reply["Nodes"], Value::Null);
    assert_eq!(reply["Error"], "");
    assert_eq!(
        reply["FailedNodes"]["cpu-only"],
        "container main: node has no devices"
    );
    // Inventories came from the API server, with the token.
    assert_eq!(api.calls("GET").len(), 3);
}

#[test]
fn a_node_with_an_unreadable_inventory_fails_alone() {
    let mut nodes = cluster_nodes();
    nodes.insert(
        "broken".into(),
        json!({"metadata": {"name": "broken", "annotations": {"hami.io/node-nvidia-register": "not json"}}}).to_string(),
    );
    let api = FakeApiServer::start(nodes, HashMap::new(), vec![]);
    let ext = Running::start(&api, NodePolicy::Ours);
    let body = fixture("filter_node_names.json")
        .replace(r#""cpu-only"]"#, r#""cpu-only","broken","gone"]"#);
    let reply = ext.post("filter", &body);
    assert_eq!(reply["NodeNames"], json!(["gpu-a", "gpu-b"]));
    assert_eq!(reply["Error"], "");
    let why = reply["FailedNodes"]["broken"].as_str().unwrap();
    assert!(
        why.contains("hami.io/node-nvidia-register") && why.contains("not a JSON device list"),
        "{why}"
    );
    assert!(
        reply["FailedNodes"]["gone"]
            .as_str()
            .unwrap()
            .contains("404"),
        "{reply}"
    );
    let scores = ext.post("prioritize", &body);
    assert_eq!(scores.as_array().unwrap().len(), 5);
    assert_eq!(scores[3], json!({"Host": "broken", "Score": 0}));
}

#[test]
fn bind_writes_devices_and_knobs_then_creates_the_binding() {
    let api = FakeApiServer::start(cluster_nodes(), HashMap::new(), vec![]);
    let ext = Running::start(&api, NodePolicy::Ours);
    ext.post("filter", &fixture("filter_node_names.json"));
    let reply = ext.post("bind", &fixture("bind.json"));
    assert_eq!(reply, json!({"Error": ""}));
    let patches = api.calls("PATCH");
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].path, "/api/v1/namespaces/ml/pods/trainer-0");
    let patch: Value = serde_json::from_str(&patches[0].body).unwrap();
    let annotations = &patch["metadata"]["annotations"];
    let device = annotations["hami.io/assigned-devices.main"]
        .as_str()
        .unwrap();
    assert!(device == "GPU-a0" || device == "GPU-a1", "{device}");
    assert_eq!(annotations["hami.io/gpu-memory.main"], "8000Mi");
    assert_eq!(annotations["hami.io/gpu-cores.main"], "30");
    assert_eq!(annotations["hami.io/vgpu-node"], "gpu-a");
    let bindings = api.calls("POST");
    assert_eq!(bindings.len(), 1);
    assert_eq!(
        bindings[0].path,
        "/api/v1/namespaces/ml/pods/trainer-0/binding"
    );
    let binding: Value = serde_json::from_str(&bindings[0].body).unwrap();
    assert_eq!(binding["kind"], "Binding");
    assert_eq!(
        binding["target"],
        json!({"apiVersion": "v1", "kind": "Node", "name": "gpu-a"})
    );
    assert_eq!(
        binding["metadata"]["uid"],
        "5c1f7e0a-0000-4000-8000-000000000001"
    );
    // After the bind, binpack (the pod's annotation) prefers the node now in use.
    let prioritized = ext.post(
        "prioritize",
        &fixture("filter_node_names.json").replace("000000000001", "000000000009"),
    );
    assert_eq!(
        prioritized,
        json!([{"Host": "gpu-a", "Score": 10}, {"Host": "gpu-b", "Score": 0}, {"Host": "cpu-only", "Score": 0}])
    );
}

#[test]
fn full_node_lists_are_echoed_filtered_and_multi_device_pods_stay_in_one_nvlink_group() {
    let api = FakeApiServer::start(HashMap::new(), HashMap::new(), vec![]);
    let ext = Running::start(&api, NodePolicy::Ours);
    let reply = ext.post("filter", &fixture("filter_nodes.json"));
    let kept: Vec<&str> = reply["Nodes"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(kept, vec!["nvl-node"]);
    assert_eq!(reply["NodeNames"], Value::Null);
    assert_eq!(
        reply["FailedNodes"]["small"],
        "container main: too few devices with room for the request"
    );
    let bind = json!({"PodName": "pair", "PodNamespace": "ml", "PodUID": "5c1f7e0a-0000-4000-8000-000000000002", "Node": "nvl-node"});
    assert_eq!(ext.post("bind", &bind.to_string()), json!({"Error": ""}));
    let patch: Value = serde_json::from_str(&api.calls("PATCH")[0].body).unwrap();
    // GPU-n0 and GPU-n2 share NVLink group 0 (n1 and n3 are group 1).
    assert_eq!(
        patch["metadata"]["annotations"]["hami.io/assigned-devices.main"],
        "GPU-n0,GPU-n2"
    );
    assert_eq!(
        patch["metadata"]["annotations"]["hami.io/gpu-count.main"],
        "2"
    );
}

#[test]
fn a_refused_binding_is_reported_and_its_reservation_undone() {
    let pods = HashMap::from([
        ("ml/doomed".to_owned(), share_pod("doomed", 100)),
        ("ml/next".to_owned(), share_pod("next", 100)),
        ("ml/third".to_owned(), share_pod("third", 100)),
    ]);
    let api = FakeApiServer::start(cluster_nodes(), pods, vec!["doomed".into()]);
    let ext = Running::start(&api, NodePolicy::Binpack);
    let bind = |name: &str| {
        json!({"PodName": name, "PodNamespace": "ml", "PodUID": format!("uid-{name}"), "Node": "gpu-a"}).to_string()
    };
    let reply = ext.post("bind", &bind("doomed"));
    assert!(reply["Error"].as_str().unwrap().contains("409"), "{reply}");
    // Both whole-compute devices are still free: two more pods fit.
    assert_eq!(ext.post("bind", &bind("next")), json!({"Error": ""}));
    assert_eq!(ext.post("bind", &bind("third")), json!({"Error": ""}));
}

#[test]
fn concurrent_binds_to_one_node_never_overcommit_a_device() {
    // 12 pods of 50 % compute race for gpu-a's two devices: exactly 4 fit.
    let pods: HashMap<String, String> = (0..12)
        .map(|i| (format!("ml/p{i}"), share_pod(&format!("p{i}"), 50)))
        .collect();
    let api = FakeApiServer::start(cluster_nodes(), pods, vec![]);
    let ext = Arc::new(Running::start(&api, NodePolicy::Ours));
    let handles: Vec<_> = (0..12)
        .map(|i| {
            let ext = Arc::clone(&ext);
            std::thread::spawn(move || {
                let body = json!({"PodName": format!("p{i}"), "PodNamespace": "ml", "PodUID": format!("uid-p{i}"), "Node": "gpu-a"});
                ext.post("bind", &body.to_string())["Error"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let errors: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        errors.iter().filter(|e| e.is_empty()).count(),
        4,
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .filter(|e| !e.is_empty())
            .all(|e| e.contains("too few devices")),
        "{errors:?}"
    );
    let mut per_device: BTreeMap<String, u32> = BTreeMap::new();
    for patch in api.calls("PATCH") {
        let v: Value = serde_json::from_str(&patch.body).unwrap();
        let device = v["metadata"]["annotations"]["hami.io/assigned-devices.main"]
            .as_str()
            .unwrap()
            .to_owned();
        *per_device.entry(device).or_default() += 1;
    }
    assert_eq!(
        per_device,
        BTreeMap::from([("GPU-a0".to_owned(), 2), ("GPU-a1".to_owned(), 2)])
    );
    assert_eq!(api.calls("POST").len(), 4);
}
