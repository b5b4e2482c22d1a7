//! Helpers of the tests that drive containerd through `ctr`.

use std::path::Path;
use std::time::Duration;

use super::{Lab, busybox_rootfs, eventually, unique};

/// The runtime type of the shim under test.
pub const HAMI: &str = "io.containerd.hami.v2";

pub fn rootfs(lab: &Lab) -> String {
    let dir = lab.root().join("rootfs");
    if !dir.exists() {
        // Built aside and renamed, so concurrent callers never see a half-filled root.
        let aside = lab.root().join(unique("rootfs-building"));
        busybox_rootfs(&aside);
        if std::fs::rename(&aside, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&aside);
        }
    }
    dir.display().to_string()
}

/// `ctr run --rm` of `script` under runtime `runtime` with `annotations`.
pub fn run(lab: &Lab, runtime: &str, annotations: &[&str], script: &str) -> std::process::Output {
    let id = unique("run");
    let rootfs = rootfs(lab);
    let mut args = vec!["run", "--rm", "--runtime", runtime];
    for annotation in annotations {
        args.extend(["--annotation", annotation]);
    }
    args.extend(["--rootfs", &rootfs, &id, "/bin/sh", "-c", script]);
    lab.ctr(&args)
}

/// Starts a detached container running `sleep` under the hami runtime.
pub fn run_detached(lab: &Lab, id: &str, annotations: &[&str]) -> std::process::Output {
    let rootfs = rootfs(lab);
    let mut args = vec!["run", "-d", "--runtime", HAMI];
    for annotation in annotations {
        args.extend(["--annotation", annotation]);
    }
    args.extend(["--rootfs", &rootfs, id, "/bin/sleep", "3600"]);
    lab.ctr(&args)
}

pub fn remove(lab: &Lab, id: &str) {
    let _ = lab.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
    assert!(
        eventually(Duration::from_secs(10), || lab
            .ctr(&["tasks", "rm", id])
            .status
            .success()),
        "task {id} not removed"
    );
    lab.ctr_ok(&["containers", "rm", id]);
}

pub fn task_pid(lab: &Lab, id: &str) -> i32 {
    let tasks = lab.ctr_ok(&["tasks", "ls"]);
    let line = tasks
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("no task {id}: {tasks}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

pub fn exe_name(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| {
            Path::new(&p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
}
