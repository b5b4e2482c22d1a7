//! A shim killed with SIGKILL, while containerd runs or while it is down: once containerd
//! notices (at once, or when it starts again), nothing of the container is left: no process,
//! no ledger entry, no task, no socket.

mod support;

use std::time::Duration;

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
