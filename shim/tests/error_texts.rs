//! The error texts users see, exactly, through `ctr` and through CRI, on each containerd: our
//! own texts (with `%` signs, which containerd 1.x formats) and a backend shim that speaks no
//! task API we know.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use k8s_cri::v1::{
    CreateContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};
use support::cri::{connect, container_config, import_images, sandbox_config};
use support::ctr::{HAMI, remove, run, run_detached};
use support::{GIB, Lab, eventually, require_tools, text, unique};

/// What containerd adds after a shim's error text (the error class, on 1.x only).
fn containerd_suffix(class: &str) -> String {
    if support::containerd::containerd_major() >= 2 {
        String::new()
    } else {
        format!(": {class}")
    }
}

#[test]
fn an_error_text_with_percent_signs_reaches_ctr_intact() {
    let Some(()) = require_tools("an_error_text_with_percent_signs_reaches_ctr_intact") else {
        return;
    };
    let lab = Lab::start(&[]);
    let uuids = lab.write_node_ledger(1, 8 * GIB);
    let first = unique("cores");
    let out = run_detached(
        &lab,
        &first,
        &["hami.io/gpu-memory=1Gi", "hami.io/gpu-cores=70"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = run(
        &lab,
        HAMI,
        &["hami.io/gpu-memory=1Gi", "hami.io/gpu-cores=100"],
        "echo never",
    );
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "ctr: failed to create shim task: hami: cannot place the container: 1 device(s) \
             requested, 0 fit: {} needs 100% of compute, 30% uncommitted{}\n",
            uuids[0],
            containerd_suffix("invalid argument")
        ),
        "containerd {}",
        support::containerd::containerd_version()
    );
    remove(&lab, &first);
    assert!(lab.ledger_entries().is_empty());
}

#[test]
fn a_backend_speaking_neither_task_api_fails_creation_with_a_clear_message() {
    let test = "a_backend_speaking_neither_task_api_fails_creation_with_a_clear_message";
    let Some(()) = require_tools(test) else {
        return;
    };
    let lab = Lab::start(&[]);
    let backend = lab.root().join("containerd-shim-future-v2");
    let reply = r#"{"version":4,"address":"unix:///run/containerd/s/none","protocol":"ttrpc"}"#;
    std::fs::write(&backend, format!("#!/bin/sh\nprintf '%s' '{reply}'\n")).unwrap();
    std::fs::set_permissions(
        &backend,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let library = lab.root().join("libhami-placeholder.so");
    lab.write_shim_config_with(&library, &format!("backend_shim = {backend:?}\n"));
    let out = run(&lab, HAMI, &[], "echo never");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reason = format!(
        "io.containerd.hami.v2: backend shim {} (backend_shim in shim.toml) cannot be used: it \
         speaks shim task API version 4; containerd-shim-hami-v2 speaks versions 2 (containerd \
         1.6, 1.7) and 3 (containerd 2.x)",
        backend.display()
    );
    assert_eq!(
        stderr,
        format!(
            "ctr: failed to start shim: start failed: {reason}: exit status 1{}\n",
            containerd_suffix("unknown")
        ),
        "containerd {}",
        support::containerd::containerd_version()
    );
    assert!(lab.ledger_entries().is_empty());
}

#[test]
fn cri_reports_an_error_text_with_percent_signs_intact() {
    let Some(()) = require_tools("cri_reports_an_error_text_with_percent_signs_intact") else {
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
        let mut pods = Vec::new();
        let mut started = Vec::new();
        for (name, cores) in [("holder", "70"), ("greedy", "100")] {
            let annotations = HashMap::from([
                ("hami.io/gpu-memory".to_owned(), "1Gi".to_owned()),
                ("hami.io/gpu-cores".to_owned(), cores.to_owned()),
            ]);
            let sandbox = sandbox_config(name, annotations, &log_dir);
            let pod_id = client
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(sandbox.clone()),
                    runtime_handler: "hami".to_owned(),
                })
                .await
                .expect("the sandbox runs")
                .into_inner()
                .pod_sandbox_id;
            pods.push(pod_id.clone());
            let id = client
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: pod_id,
                    config: Some(container_config("main")),
                    sandbox_config: Some(sandbox),
                })
                .await
                .expect("CRI creates the container record")
                .into_inner()
                .container_id;
            started.push(
                client
                    .start_container(StartContainerRequest { container_id: id })
                    .await,
            );
        }
        assert!(started[0].is_ok(), "{:?}", started[0]);
        let err = started[1].as_ref().expect_err("no compute is left");
        let placement = format!(
            "hami: cannot place the container: 1 device(s) requested, 0 fit: {} needs 100% of \
             compute, 30% uncommitted",
            uuids[0]
        );
        let class = if support::containerd::containerd_major() >= 2 {
            ""
        } else {
            ": invalid argument"
        };
        assert_eq!(
            err.message(),
            format!(
                "failed to create containerd task: failed to create shim task: {placement}{class}"
            ),
            "containerd {}",
            support::containerd::containerd_version()
        );
        for pod_id in pods {
            client
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod_id.clone(),
                })
                .await
                .expect("pod stops");
            client
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: pod_id,
                })
                .await
                .expect("pod removed");
        }
        assert!(
            eventually(Duration::from_secs(10), || lab.ledger_entries().is_empty()),
            "ledger entries left: {:?}",
            lab.ledger_entries()
        );
    });
}
