//! End to end through the CRI API, as kubelet drives containerd: RunPodSandbox with pod
//! annotations, CreateContainer, StartContainer, ExecSync, StopPodSandbox, RemovePodSandbox.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use k8s_cri::v1::{
    CreateContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};
use support::cri::{connect, container_config, exec_sync, import_images, sandbox_config};
use support::{GIB, Lab, eventually, require_tools};

#[test]
fn cri_pod_containers_and_execs_are_capped_and_pod_removal_clears_the_ledger() {
    let Some(()) =
        require_tools("cri_pod_containers_and_execs_are_capped_and_pod_removal_clears_the_ledger")
    else {
        return;
    };
    let lab = Lab::start(&[]);
    let uuids = lab.write_node_ledger(1, 8 * GIB);
    import_images(&lab);
    let log_dir = lab.root().join("pod-logs");
    std::fs::create_dir_all(&log_dir).unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = connect(&lab.address()).await;
        let annotations = HashMap::from([
            ("hami.io/gpu-memory.main".to_owned(), "3Gi".to_owned()),
            ("hami.io/gpu-memory-percentage".to_owned(), "25".to_owned()),
            ("hami.io/gpu-cores".to_owned(), "25".to_owned()),
        ]);
        let sandbox = sandbox_config("capped-pod", annotations, &log_dir);
        let pod_id = client
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox.clone()),
                runtime_handler: "hami".to_owned(),
            })
            .await
            .expect("sandbox runs")
            .into_inner()
            .pod_sandbox_id;

        let mut ids = HashMap::new();
        for name in ["main", "side"] {
            let id = client
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: pod_id.clone(),
                    config: Some(container_config(name)),
                    sandbox_config: Some(sandbox.clone()),
                })
                .await
                .unwrap_or_else(|e| panic!("container {name} created: {e}\n{}", lab.log()))
                .into_inner()
                .container_id;
            client
                .start_container(StartContainerRequest {
                    container_id: id.clone(),
                })
                .await
                .expect("container starts");
            ids.insert(name, id);
        }

        let mut entries = vec![ids["main"].clone(), ids["side"].clone()];
        entries.sort();
        assert_eq!(
            lab.ledger_entries(),
            entries,
            "both app containers, not the sandbox, have entries"
        );
        let limits = |name: &str| {
            let path = lab
                .ledger_dir()
                .join("containers")
                .join(&ids[name])
                .join("limits.ledger");
            hami_ledger::limits::read(path).unwrap().devices
        };
        assert_eq!(
            limits("main")[0].memory_limit,
            Some(3 * GIB),
            "container-specific annotation wins"
        );
        assert_eq!(limits("main")[0].compute_percent, Some(25));
        assert_eq!(
            limits("side")[0].memory_limit,
            Some(2 * GIB),
            "pod-wide percentage of 8 GiB"
        );
        assert_eq!(limits("side")[0].compute_percent, Some(25));

        let probe = "echo $HAMI_LEDGER_USAGE $NVIDIA_VISIBLE_DEVICES; cat /etc/ld.so.preload; \
                     grep -c ' /run/hami/usage.ledger ' /proc/self/mountinfo";
        let expected = format!(
            "/run/hami/usage.ledger {}\n/usr/local/lib/hami/libhami.so\n1\n",
            uuids[0]
        );
        assert_eq!(exec_sync(&mut client, &ids["main"], probe).await, expected);
        // The sandbox's own process (pause) is not capped.
        let pause_env = lab.ctr_ok(&["-n", "k8s.io", "containers", "info", &pod_id]);
        assert!(!pause_env.contains("HAMI_LEDGER"), "sandbox spec untouched");

        client
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            })
            .await
            .expect("pod stops");
        client
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            })
            .await
            .expect("pod removed");
        assert!(
            eventually(Duration::from_secs(10), || lab.ledger_entries().is_empty()),
            "removing the pod removes its ledger entries: {:?}",
            lab.ledger_entries()
        );
        assert!(
            eventually(Duration::from_secs(10), || lab
                .processes_matching(&pod_id)
                .is_empty()),
            "no shim of the pod is left: {:?}",
            lab.processes_matching(&pod_id)
        );
    });
}

#[test]
fn cri_reports_a_malformed_annotation_by_name_when_the_container_starts() {
    let Some(()) =
        require_tools("cri_reports_a_malformed_annotation_by_name_when_the_container_starts")
    else {
        return;
    };
    let lab = Lab::start(&[]);
    lab.write_node_ledger(1, 8 * GIB);
    import_images(&lab);
    let log_dir = lab.root().join("pod-logs");
    std::fs::create_dir_all(&log_dir).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = connect(&lab.address()).await;
        let annotations = HashMap::from([("hami.io/gpu-cores".to_owned(), "150".to_owned())]);
        let sandbox = sandbox_config("bad-pod", annotations, &log_dir);
        let pod_id = client
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox.clone()),
                runtime_handler: "hami".to_owned(),
            })
            .await
            .expect("the sandbox is not capped, so it runs")
            .into_inner()
            .pod_sandbox_id;
        let id = client
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(container_config("main")),
                sandbox_config: Some(sandbox),
            })
            .await
            .expect("CRI creates the container record")
            .into_inner()
            .container_id;
        let err = client
            .start_container(StartContainerRequest { container_id: id })
            .await
            .expect_err("the shim refuses the container");
        let message = err.message();
        assert!(message.contains("hami.io/gpu-cores=\"150\""), "{message}");
        assert!(
            message.contains("a whole number from 1 to 100"),
            "{message}"
        );
        assert!(lab.ledger_entries().is_empty());
        client
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            })
            .await
            .expect("pod stops");
        client
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            })
            .await
            .expect("pod removed");
        assert!(
            eventually(Duration::from_secs(10), || lab
                .processes_matching(&pod_id)
                .is_empty()),
            "no shim of the pod is left"
        );
    });
}
