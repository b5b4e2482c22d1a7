//! The scheduler configuration in deploy/ matches what the extender serves: its verbs
//! are routes, its managed resources are the ones the extender reads, and the ConfigMap
//! in the Deployment carries the same configuration.

use std::path::PathBuf;
use std::sync::Arc;

use hami_request::keys::resource;
use hami_scheduler::extender::{Extender, ExtenderState, HttpApiServer};
use hami_scheduler::frag::TargetWorkload;
use hami_scheduler::policy::NodePolicy;

fn deploy_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/scheduler")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The value of every `key: value` line, in order.
fn values(yaml: &str, key: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| {
            l.trim()
                .trim_start_matches("- ")
                .strip_prefix(&format!("{key}:"))
        })
        .map(|v| v.trim().trim_matches('"').to_owned())
        .collect()
}

/// The configuration's meaningful lines, comments and indentation dropped.
fn config_lines(yaml: &str) -> Vec<String> {
    yaml.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn extender_stanza_names_served_routes_and_our_resources() {
    let config = deploy_file("scheduler-config.yaml");
    assert_eq!(values(&config, "urlPrefix"), vec!["http://127.0.0.1:8888"]);
    assert_eq!(values(&config, "nodeCacheCapable"), vec!["true"]);
    let extender = Extender::new(
        ExtenderState::new(NodePolicy::Ours, TargetWorkload::default()),
        Arc::new(HttpApiServer::new("http://127.0.0.1:9", None)),
    );
    for key in ["filterVerb", "prioritizeVerb", "bindVerb"] {
        let verb = values(&config, key)
            .pop()
            .unwrap_or_else(|| panic!("no {key}"));
        let (status, _) = extender.handle("POST", &format!("/{verb}"), "{}");
        assert_ne!(status, 404, "{key}: {verb} is not served");
    }
    let mut managed = values(&config, "name");
    managed.sort();
    let mut ours = vec![
        resource::GPU,
        resource::GPU_MEMORY,
        resource::GPU_MEMORY_PERCENTAGE,
        resource::GPU_CORES,
    ];
    ours.sort_unstable();
    assert_eq!(managed, ours);
}

#[test]
fn the_deployment_configmap_carries_the_same_configuration() {
    let config = config_lines(&deploy_file("scheduler-config.yaml"));
    let deployment = deploy_file("deployment.yaml");
    let embedded = deployment
        .split("scheduler-config.yaml: |")
        .nth(1)
        .and_then(|rest| rest.split("\n---").next())
        .expect("the ConfigMap embeds scheduler-config.yaml");
    assert_eq!(config_lines(embedded), config);
}
