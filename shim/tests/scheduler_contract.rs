//! The contract between the scheduler extender and the shim: what the extender writes at bind
//! (`bind_annotations`), merged into the pod's own annotations, is what the shim reads back as
//! the container's request, for a pod that asked through HAMi's resources and through
//! annotations in every accepted size spelling. Both sides spell the keys and sizes through
//! `hami_request`; this test holds them to it.

use std::collections::BTreeMap;
use std::time::Instant;

use hami_request::{ContainerRequest, MemoryRequest};
use hami_scheduler::extender::demand::PodDemand;
use hami_scheduler::extender::state::{ContainerPlacement, Placement, bind_annotations};
use hami_scheduler::request::Request;
use k8s_openapi::api::core::v1::Pod;

fn pod(annotations: serde_json::Value, limits: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "trainer", "annotations": annotations},
        "spec": {"containers": [{"name": "main", "resources": {"limits": limits}}]}
    }))
    .unwrap()
}

/// What the shim reads for container `main` after the extender bound `pod` to `uuids`.
fn shim_view(pod: &Pod, uuids: &[&str]) -> ContainerRequest {
    let demand = PodDemand::from_pod(pod).expect("the extender reads the pod");
    let placement = Placement {
        node: "gpu-1".into(),
        containers: vec![ContainerPlacement {
            container: "main".into(),
            request: Request::cpu_only(0, 0),
            devices: (0..uuids.len()).collect(),
            uuids: uuids.iter().map(|u| (*u).to_owned()).collect(),
        }],
        host_request: None,
        since: Instant::now(),
    };
    let mut annotations: BTreeMap<String, String> =
        pod.metadata.annotations.clone().unwrap_or_default();
    annotations.extend(bind_annotations(&demand, &placement, 1_700_000_000));
    ContainerRequest::from_annotations(&annotations, "main")
        .expect("the shim accepts what the extender wrote")
        .expect("the container is capped")
}

#[test]
fn a_pod_asking_through_resources_is_capped_as_the_extender_placed_it() {
    let pod = pod(
        serde_json::json!({}),
        serde_json::json!({"nvidia.com/gpu": "2", "nvidia.com/gpumem": "3000", "nvidia.com/gpucores": "30"}),
    );
    let request = shim_view(&pod, &["GPU-a", "GPU-b"]);
    assert_eq!(request.memory, Some(MemoryRequest::Bytes(3000 << 20)));
    assert_eq!(request.compute_percent, Some(30));
    assert_eq!(request.device_count, 2);
    assert_eq!(
        request.assigned_devices,
        Some(vec!["GPU-a".to_owned(), "GPU-b".to_owned()])
    );
}

#[test]
fn every_size_spelling_means_the_same_memory_to_the_extender_and_the_shim() {
    for (text, mib) in [
        ("3000", 3000),
        ("1.5Gi", 1536),
        ("1536Mi", 1536),
        ("0.5Gi", 512),
        (".5Gi", 512),
        ("2Gi", 2048),
    ] {
        let pod = pod(
            serde_json::json!({"hami.io/gpu-memory": text, "hami.io/gpu-cores": "25"}),
            serde_json::json!({"nvidia.com/gpu": "1"}),
        );
        let request = shim_view(&pod, &["GPU-a"]);
        assert_eq!(
            request.memory,
            Some(MemoryRequest::Bytes(mib << 20)),
            "{text}"
        );
        assert_eq!(request.compute_percent, Some(25), "{text}");
    }
}
