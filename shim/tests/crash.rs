//! A shim killed with SIGKILL, while containerd runs or while it is down: once containerd
//! notices (at once, or when it starts again), nothing of the container is left: no process,
//! no ledger entry, no task, no socket. Through `ctr`, and for a CRI pod.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use k8s_cri::v1::{
    CreateContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};
use support::cri::{connect, container_config, import_images, sandbox_config};
use support::ctr::{alive, exe_name, run_detached, task_pid};
use support::{GIB, Lab, eventually, require_tools, text, unique};

/// The pid of the proxy daemon serving container `id` (started with `-id <id>`).
fn proxy_of(lab: &Lab, id: &str) -> i32 {
    let marker = format!("-id {id} ");
    let proxy: Vec<i32> = lab
        .processes_matching(&marker)
        .into_iter()
        .filter(|pid| exe_name(*pid).is_some_and(|n| n.contains("containerd-shim-hami-v2")))
        .collect();
    assert_eq!(proxy.len(), 1, "one proxy daemon for the container");
    proxy[0]
}

fn sigkill(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// Waits until nothing of container `id` (whose process was `container_pid`) is left.
fn assert_nothing_left(lab: &Lab, id: &str, container_pid: i32) {
    let marker = format!("-id {id} ");
    assert!(
        eventually(Duration::from_secs(20), || !alive(container_pid)),
        "the container's process is killed"
    );
    assert!(
        eventually(Duration::from_secs(20), || lab
            .processes_matching(&marker)
            .is_empty()),
        "no shim of the container is left: {:?}",
        lab.processes_matching(&marker)
    );
    assert!(
        eventually(Duration::from_secs(20), || lab.ledger_entries().is_empty()),
        "ledger entry removed"
    );
    assert!(
        eventually(Duration::from_secs(20), || !lab
            .ctr_ok(&["tasks", "ls"])
            .contains(id)),
        "task {id} removed"
    );
    lab.ctr_ok(&["containers", "rm", id]);
    for socket in lab.shim_sockets("default", id) {
        assert!(
            eventually(Duration::from_secs(5), || !socket.exists()),
            "socket {} left behind",
            socket.display()
        );
    }
}

#[test]
fn shim_killed_then_containerd_cleanup_leaks_nothing() {
    let Some(()) = require_tools("shim_killed_then_containerd_cleanup_leaks_nothing") else {
        return;
    };
    let lab = Lab::start(&[]);
    lab.write_node_ledger(1, 8 * GIB);
    let id = unique("killed");
    let out = run_detached(&lab, &id, &["hami.io/gpu-memory=1Gi"]);
    assert!(out.status.success(), "{}", text(&out));
    let proxy = proxy_of(&lab, &id);
    let container_pid = task_pid(&lab, &id);
    sigkill(proxy);
    assert_nothing_left(&lab, &id, container_pid);
}

#[test]
fn shim_killed_while_containerd_is_down_is_cleaned_up_when_it_starts() {
    let Some(()) =
        require_tools("shim_killed_while_containerd_is_down_is_cleaned_up_when_it_starts")
    else {
        return;
    };
    let mut lab = Lab::start(&[]);
    lab.write_node_ledger(1, 8 * GIB);
    let id = unique("down");
    let out = run_detached(&lab, &id, &["hami.io/gpu-memory=1Gi"]);
    assert!(out.status.success(), "{}", text(&out));
    let proxy = proxy_of(&lab, &id);
    let container_pid = task_pid(&lab, &id);
    lab.stop_containerd();
    sigkill(proxy);
    assert!(alive(container_pid), "the container outlives its proxy");
    assert_eq!(lab.ledger_entries(), vec![id.clone()]);
    lab.start_containerd();
    assert_nothing_left(&lab, &id, container_pid);
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
