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
        let class = if support::containerd_major() >= 2 {
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
            support::containerd_version()
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

/// Pids of the tasks of namespace `k8s.io`, by container id.
fn k8s_task_pids(lab: &Lab) -> HashMap<String, i32> {
    lab.ctr_ok(&["-n", "k8s.io", "tasks", "ls"])
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let id = fields.next()?.to_owned();
            Some((id, fields.next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn cri_pod_whose_shim_was_killed_while_containerd_was_down_is_removed_cleanly() {
    let test = "cri_pod_whose_shim_was_killed_while_containerd_was_down_is_removed_cleanly";
    let Some(()) = require_tools(test) else {
        return;
    };
    let mut lab = Lab::start(&[]);
    lab.write_node_ledger(1, 8 * GIB);
    import_images(&lab);
    let log_dir = lab.root().join("pod-logs");
    std::fs::create_dir_all(&log_dir).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let annotations = HashMap::from([("hami.io/gpu-memory".to_owned(), "1Gi".to_owned())]);
    let sandbox = sandbox_config("crashed-pod", annotations, &log_dir);
    let pod_id = runtime.block_on(async {
        let mut client = connect(&lab.address()).await;
        let pod_id = client
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox.clone()),
                runtime_handler: "hami".to_owned(),
            })
            .await
            .expect("sandbox runs")
            .into_inner()
            .pod_sandbox_id;
        let id = client
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(container_config("main")),
                sandbox_config: Some(sandbox.clone()),
            })
            .await
            .expect("container created")
            .into_inner()
            .container_id;
        client
            .start_container(StartContainerRequest { container_id: id })
            .await
            .expect("container starts");
        pod_id
    });
    assert_eq!(lab.ledger_entries().len(), 1);
    let pids: Vec<i32> = k8s_task_pids(&lab).into_values().collect();
    assert_eq!(pids.len(), 2, "sandbox and container run");
    let marker = format!("-id {pod_id} ");
    let proxy: Vec<i32> = lab
        .processes_matching(&marker)
        .into_iter()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| exe.ends_with("containerd-shim-hami-v2"))
        })
        .collect();
    assert_eq!(proxy.len(), 1, "one proxy daemon for the pod");

    lab.stop_containerd();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proxy[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    lab.start_containerd();

    runtime.block_on(async {
        let mut client = connect(&lab.address()).await;
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
    });
    let alive = |pid: &i32| std::fs::metadata(format!("/proc/{pid}")).is_ok();
    assert!(
        eventually(Duration::from_secs(20), || !pids.iter().any(alive)),
        "the pod's processes are killed: {pids:?}"
    );
    assert!(
        eventually(Duration::from_secs(20), || lab
            .processes_matching(&pod_id)
            .is_empty()),
        "no shim of the pod is left: {:?}",
        lab.processes_matching(&pod_id)
    );
    assert!(
        eventually(Duration::from_secs(20), || lab.ledger_entries().is_empty()),
        "ledger entries left: {:?}",
        lab.ledger_entries()
    );
    assert!(k8s_task_pids(&lab).is_empty(), "no task is left");
    for socket in lab.shim_sockets("k8s.io", &pod_id) {
        assert!(
            eventually(Duration::from_secs(5), || !socket.exists()),
            "socket {} left behind",
            socket.display()
        );
    }
}
