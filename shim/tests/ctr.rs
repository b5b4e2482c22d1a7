//! End to end through `ctr` on a private containerd 1.6 + runc from Debian: the `hami` runtime
//! caps annotated containers and behaves like `io.containerd.runc.v2` otherwise.

mod support;

use std::time::Duration;

use support::ctr::{HAMI, alive, remove, rootfs, run, run_detached, task_pid};
use support::{GIB, Lab, eventually, require_tools, text, unique};

#[test]
fn container_without_hami_annotation_runs_exactly_as_with_runc() {
    let Some(()) = require_tools("container_without_hami_annotation_runs_exactly_as_with_runc")
    else {
        return;
    };
    let lab = Lab::start(&[]);
    let script = "echo out; echo err >&2; env | grep -c HAMI_ || true; test -e /run/hami/usage.ledger && echo mounted; exit 7";
    let hami = run(&lab, HAMI, &["other.io/x=1"], script);
    let runc = run(&lab, "io.containerd.runc.v2", &[], script);
    assert_eq!(hami.status.code(), Some(7), "{}", text(&hami));
    assert_eq!(hami.status.code(), runc.status.code());
    assert_eq!(String::from_utf8_lossy(&hami.stdout), "out\n0\n");
    assert_eq!(hami.stdout, runc.stdout);
    assert_eq!(hami.stderr, runc.stderr);
    assert!(lab.ledger_entries().is_empty());
}

#[test]
fn malformed_annotation_fails_creation_with_an_error_naming_it() {
    let Some(()) = require_tools("malformed_annotation_fails_creation_with_an_error_naming_it")
    else {
        return;
    };
    let lab = Lab::start(&[]);
    lab.write_node_ledger(1, 8 * GIB);
    let out = run(&lab, HAMI, &["hami.io/gpu-memory=12 GB"], "echo never");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hami.io/gpu-memory=\"12 GB\""), "{stderr}");
    assert!(
        stderr.contains("accepted: a Kubernetes quantity"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("never"));

    let out = run(
        &lab,
        HAMI,
        &["hami.io/gpu-memory=1Gi", "hami.io/gpu-memory-percentage=50"],
        "true",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("contradict"), "{stderr}");

    let out = run(&lab, HAMI, &["hami.io/gpu-memroy=1Gi"], "true");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("annotation hami.io/gpu-memroy is unknown"),
        "{stderr}"
    );
    assert!(
        lab.ledger_entries().is_empty(),
        "a failed creation leaves no ledger entry"
    );
}

#[test]
fn capped_container_and_its_execs_get_the_library_ledger_and_environment() {
    let Some(()) =
        require_tools("capped_container_and_its_execs_get_the_library_ledger_and_environment")
    else {
        return;
    };
    let lab = Lab::start(&[]);
    let uuids = lab.write_node_ledger(1, 8 * GIB);
    let id = unique("capped");
    let out = run_detached(
        &lab,
        &id,
        &[
            "hami.io/gpu-memory=1536Mi",
            "hami.io/gpu-cores=40",
            "hami.io/gpu-priority=high",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    assert_eq!(lab.ledger_entries(), vec![id.clone()]);
    let limits = hami_ledger::limits::read(
        lab.ledger_dir()
            .join("containers")
            .join(&id)
            .join("limits.ledger"),
    )
    .unwrap();
    assert_eq!(limits.container_id, id);
    assert_eq!(limits.devices.len(), 1);
    assert_eq!(limits.devices[0].uuid, uuids[0]);
    assert_eq!(limits.devices[0].memory_limit, Some(1536 << 20));
    assert_eq!(limits.devices[0].compute_percent, Some(40));
    assert_eq!(limits.devices[0].priority, hami_ledger::Priority::High);

    let probe = "env | grep -E '^(HAMI_LEDGER|NVIDIA_VISIBLE|LD_PRELOAD)' | sort; cat /etc/ld.so.preload; \
                 (echo x >> /run/hami/limits.ledger) 2>/dev/null && echo limits-writable; \
                 (echo x >> /etc/ld.so.preload) 2>/dev/null && echo preload-writable; \
                 (echo x >> /run/hami/node.ledger) 2>/dev/null && echo node-writable; \
                 test -w /run/hami/usage.ledger && echo usage-writable; \
                 test -f /usr/local/lib/hami/libhami.so && echo library";
    let exec = lab.ctr_ok(&[
        "tasks",
        "exec",
        "--exec-id",
        "probe",
        &id,
        "/bin/sh",
        "-c",
        probe,
    ]);
    let expected = format!(
        "HAMI_LEDGER_LIMITS=/run/hami/limits.ledger\nHAMI_LEDGER_NODE=/run/hami/node.ledger\n\
         HAMI_LEDGER_USAGE=/run/hami/usage.ledger\nLD_PRELOAD=/usr/local/lib/hami/libhami.so\n\
         NVIDIA_VISIBLE_DEVICES={}\n/usr/local/lib/hami/libhami.so\nusage-writable\nlibrary\n",
        uuids[0]
    );
    assert_eq!(exec, expected);
    // The container's own process has the same environment as the exec'd one.
    let pid = lab.ctr_ok(&["tasks", "ls"]);
    let pid: i32 = pid
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.contains("HAMI_LEDGER_USAGE=/run/hami/usage.ledger"),
        "{environ}"
    );

    remove(&lab, &id);
    assert!(
        lab.ledger_entries().is_empty(),
        "deleting the container removes its ledger entry"
    );
}

#[test]
fn concurrent_creations_never_share_the_last_slice() {
    let Some(()) = require_tools("concurrent_creations_never_share_the_last_slice") else {
        return;
    };
    let lab = Lab::start(&[]);
    let uuids = lab.write_node_ledger(2, 2 * GIB);
    let ids: Vec<String> = (0..3).map(|_| unique("slice")).collect();
    let outputs: Vec<std::process::Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = ids
            .iter()
            .map(|id| scope.spawn(|| run_detached(&lab, id, &["hami.io/gpu-memory=1536Mi"])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let started: Vec<&String> = ids
        .iter()
        .zip(&outputs)
        .filter(|(_, o)| o.status.success())
        .map(|(id, _)| id)
        .collect();
    assert_eq!(started.len(), 2, "two fit, one does not: {outputs:#?}");
    let failed = outputs.iter().find(|o| !o.status.success()).unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("cannot place the container"), "{stderr}");
    assert!(
        stderr.contains("needs 1536 MiB of memory, 512 MiB uncommitted"),
        "{stderr}"
    );

    let mut placed: Vec<String> = started
        .iter()
        .map(|id| {
            let path = lab
                .ledger_dir()
                .join("containers")
                .join(id)
                .join("limits.ledger");
            hami_ledger::limits::read(path).unwrap().devices[0]
                .uuid
                .clone()
        })
        .collect();
    placed.sort();
    assert_eq!(placed, uuids, "each container got its own device");
    for id in started {
        remove(&lab, id);
    }
    assert!(lab.ledger_entries().is_empty());
}

#[test]
fn lifecycle_calls_behave_like_runc_and_survive_a_containerd_restart() {
    let Some(()) =
        require_tools("lifecycle_calls_behave_like_runc_and_survive_a_containerd_restart")
    else {
        return;
    };
    let mut lab = Lab::start(&[]);
    lab.write_node_ledger(1, 8 * GIB);
    let id = unique("life");
    let out = run_detached(&lab, &id, &["hami.io/gpu-memory=1Gi"]);
    assert!(out.status.success(), "{}", text(&out));

    lab.ctr_ok(&["tasks", "pause", &id]);
    assert!(
        lab.ctr_ok(&["tasks", "ls"])
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("PAUSED"))
    );
    lab.ctr_ok(&["tasks", "resume", &id]);
    assert!(
        lab.ctr_ok(&["tasks", "ls"])
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("RUNNING"))
    );
    let pid = task_pid(&lab, &id);
    assert!(lab.ctr_ok(&["tasks", "ps", &id]).contains(&pid.to_string()));
    assert!(lab.ctr_ok(&["tasks", "metrics", &id]).contains("memory"));

    lab.restart_containerd();

    assert_eq!(task_pid(&lab, &id), pid, "the task survived the restart");
    let exec = lab.ctr_ok(&[
        "tasks",
        "exec",
        "--exec-id",
        "after",
        &id,
        "/bin/sh",
        "-c",
        "echo $HAMI_LEDGER_USAGE",
    ]);
    assert_eq!(exec, "/run/hami/usage.ledger\n");
    let sockets = lab.shim_sockets("default", &id);
    assert!(
        sockets.iter().all(|s| s.exists()),
        "backend and proxy listen on {sockets:?}"
    );
    remove(&lab, &id);
    assert!(!alive(pid));
    assert!(lab.ledger_entries().is_empty());
    for socket in sockets {
        assert!(
            eventually(Duration::from_secs(5), || !socket.exists()),
            "socket {} left behind",
            socket.display()
        );
    }
}

#[test]
fn configured_runtime_binary_runs_every_container() {
    let Some(()) = require_tools("configured_runtime_binary_runs_every_container") else {
        return;
    };
    let lab = Lab::start(&[]);
    lab.write_node_ledger(1, 8 * GIB);
    // Stands for nvidia-container-runtime: records its arguments, then runs runc.
    let calls = lab.root().join("runtime-calls.log");
    let wrapper = lab.root().join("bin/recording-runtime");
    let runc = support::which("runc").unwrap();
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> {}\nexec {} \"$@\"\n",
        calls.display(),
        runc.display()
    );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let library = lab.root().join("libhami-placeholder.so");
    lab.write_shim_config_with(
        &library,
        &format!("runtime_binary = {:?}\n", wrapper.display().to_string()),
    );

    let capped = run(&lab, HAMI, &["hami.io/gpu-memory=1Gi"], "echo capped");
    assert!(capped.status.success(), "{}", text(&capped));
    let plain = run(&lab, HAMI, &[], "echo plain");
    assert!(plain.status.success(), "{}", text(&plain));
    let calls = std::fs::read_to_string(calls).unwrap_or_default();
    let creates = calls
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == "create"))
        .count();
    assert_eq!(
        creates, 2,
        "both containers created through the configured runtime: {calls}"
    );
}

#[test]
fn placement_honours_visible_devices_and_device_selection() {
    let Some(()) = require_tools("placement_honours_visible_devices_and_device_selection") else {
        return;
    };
    let lab = Lab::start(&[]);
    let uuids = lab.write_node_ledger(3, 8 * GIB);
    let rootfs = rootfs(&lab);
    let placed_on = |env: Option<&str>, annotations: &[&str]| {
        let id = unique("placed");
        let mut args = vec!["run", "-d", "--runtime", HAMI];
        if let Some(env) = env {
            args.extend(["--env", env]);
        }
        for annotation in annotations {
            args.extend(["--annotation", annotation]);
        }
        args.extend(["--rootfs", &rootfs, &id, "/bin/sleep", "3600"]);
        let out = lab.ctr(&args);
        assert!(out.status.success(), "{}", text(&out));
        let path = lab
            .ledger_dir()
            .join("containers")
            .join(&id)
            .join("limits.ledger");
        let device = hami_ledger::limits::read(path).unwrap().devices[0]
            .uuid
            .clone();
        let seen = lab.ctr_ok(&[
            "tasks",
            "exec",
            "--exec-id",
            "env",
            &id,
            "/bin/sh",
            "-c",
            "echo $NVIDIA_VISIBLE_DEVICES",
        ]);
        assert_eq!(seen.trim(), device, "the container sees only its device");
        remove(&lab, &id);
        device
    };
    assert_eq!(
        placed_on(
            Some("NVIDIA_VISIBLE_DEVICES=2"),
            &["hami.io/gpu-memory=1Gi"]
        ),
        uuids[2]
    );
    let visible = format!("NVIDIA_VISIBLE_DEVICES={},{}", uuids[0], uuids[1]);
    let excluded = format!("hami.io/nouse-gpuuuid={}", uuids[0]);
    assert_eq!(
        placed_on(Some(&visible), &["hami.io/gpu-memory=1Gi", &excluded]),
        uuids[1]
    );
    let chosen = format!("hami.io/use-gpuuuid={}", uuids[1]);
    assert_eq!(
        placed_on(None, &["hami.io/gpu-memory=1Gi", &chosen]),
        uuids[1]
    );
    let out = run(
        &lab,
        HAMI,
        &["hami.io/gpu-memory=1Gi", "hami.io/use-gputype=ascend"],
        "true",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("excluded by hami.io/use-gputype"),
        "{stderr}"
    );
    assert!(lab.ledger_entries().is_empty());
}
