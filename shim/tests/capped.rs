//! The memory cap, observed by a CUDA program inside containers started through the `hami`
//! runtime on the simulated GPU (`support::gpu`): `hami-cuda-client fill-until-oom` reports what
//! it could allocate and what the device said.

mod support;

use std::path::{Path, PathBuf};

use hami_ledger::NodeLedger;
use support::gpu::{DEVICE_MEMORY, setup};
use support::{GIB, eventually, text, unique};

const MIB: u64 = 1 << 20;
const CUDA_ERROR_OUT_OF_MEMORY: i64 = 2;

/// What `hami-cuda-client fill-until-oom` reported.
#[derive(Debug)]
struct Fill {
    allocated: u64,
    error_code: i64,
    total: u64,
}

fn parse_fill(out: &std::process::Output) -> Fill {
    assert!(out.status.success(), "{}", text(out));
    parse_fill_report(&String::from_utf8_lossy(&out.stdout))
}

fn parse_fill_report(stdout: &str) -> Fill {
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let line = line.unwrap_or_else(|| panic!("no JSON: {stdout}"));
    let report: serde_json::Value = serde_json::from_str(line).unwrap();
    Fill {
        allocated: report["allocated_bytes"].as_u64().unwrap(),
        error_code: report["error_code"].as_i64().unwrap(),
        total: report["mem_info_total"].as_u64().unwrap(),
    }
}

fn assert_capped(fill: &Fill, cap: u64) {
    assert_eq!(
        fill.total, cap,
        "the device looks as large as the cap: {fill:?}"
    );
    assert_eq!(fill.error_code, CUDA_ERROR_OUT_OF_MEMORY, "{fill:?}");
    assert!(
        fill.allocated <= cap && fill.allocated + 128 * MIB > cap,
        "allocated up to the cap: {fill:?}"
    );
}

#[test]
fn capped_program_sees_a_device_of_the_cap_and_gets_oom_beyond_it() {
    let Some(s) = setup("capped_program_sees_a_device_of_the_cap_and_gets_oom_beyond_it") else {
        return;
    };
    let id = unique("fill");
    let mut args = s
        .rootfs
        .run_args(false, "io.containerd.hami.v2", &["hami.io/gpu-memory=1Gi"]);
    args.extend([id.as_str(), &s.client, "fill-until-oom", "--step", "64Mi"]);
    let capped = parse_fill(&s.lab.ctr(&args));
    assert_capped(&capped, GIB);

    // The node ledger was created from NVML discovery of the simulated devices.
    let node = NodeLedger::open(s.lab.ledger_dir().join("node.ledger")).unwrap();
    let devices = node.devices();
    assert_eq!(devices.len(), 2);
    assert!(
        devices.iter().all(|d| d.total_memory == DEVICE_MEMORY),
        "{devices:?}"
    );

    // The same program through runc sees the whole device.
    let id = unique("fill");
    let mut args = s.rootfs.run_args(false, "io.containerd.runc.v2", &[]);
    args.extend([id.as_str(), &s.client, "fill-until-oom", "--step", "64Mi"]);
    let whole = parse_fill(&s.lab.ctr(&args));
    assert_eq!(whole.total, DEVICE_MEMORY, "{whole:?}");
    assert!(whole.allocated > 3 * GIB, "{whole:?}");
    assert!(s.lab.ledger_entries().is_empty());
    drop(s.gpu);
}

#[test]
fn two_containers_on_one_device_are_each_capped_and_so_are_their_execs() {
    let Some(s) = setup("two_containers_on_one_device_are_each_capped_and_so_are_their_execs")
    else {
        return;
    };
    let small = unique("small");
    let large = unique("large");
    for (id, cap) in [
        (&small, "hami.io/gpu-memory=512Mi"),
        (&large, "hami.io/gpu-memory=2Gi"),
    ] {
        let annotations = [cap];
        let mut args = s
            .rootfs
            .run_args(true, "io.containerd.hami.v2", &annotations);
        args.extend([id.as_str(), "/usr/bin/sleep", "3600"]);
        let out = s.lab.ctr(&args);
        assert!(out.status.success(), "{}", text(&out));
    }
    let device = |id: &str| {
        let path = s
            .lab
            .ledger_dir()
            .join("containers")
            .join(id)
            .join("limits.ledger");
        hami_ledger::limits::read(path).unwrap().devices[0]
            .uuid
            .clone()
    };
    assert_eq!(
        device(&small),
        device(&large),
        "binpack puts both on one device"
    );

    let fill = |id: &String| {
        let exec_id = unique("exec");
        let args = [
            "tasks",
            "exec",
            "--exec-id",
            &exec_id,
            id,
            &s.client,
            "fill-until-oom",
            "--step",
            "64Mi",
        ];
        parse_fill(&s.lab.ctr(&args))
    };
    let (small_fill, large_fill) = std::thread::scope(|scope| {
        let a = scope.spawn(|| fill(&small));
        let b = scope.spawn(|| fill(&large));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_capped(&small_fill, 512 * MIB);
    assert_capped(&large_fill, 2 * GIB);

    for id in [&small, &large] {
        let _ = s.lab.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
        assert!(eventually(std::time::Duration::from_secs(10), || s
            .lab
            .ctr(&["tasks", "rm", id])
            .status
            .success()));
        s.lab.ctr_ok(&["containers", "rm", id]);
    }
    assert!(s.lab.ledger_entries().is_empty());
}

#[test]
fn a_cleared_or_altered_environment_is_capped_like_the_first_process() {
    let Some(s) = setup("a_cleared_or_altered_environment_is_capped_like_the_first_process") else {
        return;
    };
    let id = unique("env");
    let annotations = ["hami.io/gpu-memory=1Gi"];
    let mut args = s
        .rootfs
        .run_args(true, "io.containerd.hami.v2", &annotations);
    args.extend([id.as_str(), "/usr/bin/sleep", "3600"]);
    let out = s.lab.ctr(&args);
    assert!(out.status.success(), "{}", text(&out));

    // The simulated driver needs its own variables (a real driver needs none); every variable
    // of ours is dropped, pointed elsewhere, or set to loosen the cap.
    let driver_env: Vec<String> = s
        .gpu
        .env()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut cleared = vec!["-i".to_owned()];
    cleared.extend(driver_env.iter().cloned());
    let variants: Vec<(&str, Vec<String>)> = vec![
        ("env -i", cleared),
        (
            "env -u HAMI_LEDGER_LIMITS",
            vec!["-u".into(), "HAMI_LEDGER_LIMITS".into()],
        ),
        (
            "env -u HAMI_LEDGER_USAGE -u HAMI_LEDGER_NODE",
            ["-u", "HAMI_LEDGER_USAGE", "-u", "HAMI_LEDGER_NODE"]
                .map(String::from)
                .to_vec(),
        ),
        (
            "ledger variables pointed elsewhere",
            [
                "HAMI_LEDGER_LIMITS=/tmp/other-limits.ledger",
                "HAMI_LEDGER_USAGE=/tmp/other-usage.ledger",
                "HAMI_LEDGER_NODE=/tmp/other-node.ledger",
            ]
            .map(String::from)
            .to_vec(),
        ),
        (
            "standalone caps instead of the ledger",
            [
                "-u",
                "HAMI_LEDGER_LIMITS",
                "-u",
                "HAMI_LEDGER_USAGE",
                "HAMI_MEMORY_LIMIT=3Gi",
                "CUDA_DEVICE_MEMORY_LIMIT=3Gi",
                "GPU_CORE_UTILIZATION_POLICY=disable",
            ]
            .map(String::from)
            .to_vec(),
        ),
    ];
    for (what, env_args) in &variants {
        let exec_id = unique("exec");
        let mut args: Vec<&str> = vec!["tasks", "exec", "--exec-id", &exec_id, &id, "/usr/bin/env"];
        args.extend(env_args.iter().map(String::as_str));
        args.extend([s.client.as_str(), "fill-until-oom", "--step", "64Mi"]);
        let out = s.lab.ctr(&args);
        assert!(out.status.success(), "{what}: {}", text(&out));
        let fill = parse_fill_report(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(fill.total, GIB, "{what}: {fill:?}");
        assert_capped(&fill, GIB);
    }

    let _ = s.lab.ctr(&["tasks", "kill", "-s", "SIGKILL", &id]);
    assert!(eventually(std::time::Duration::from_secs(10), || s
        .lab
        .ctr(&["tasks", "rm", &id])
        .status
        .success()));
    s.lab.ctr_ok(&["containers", "rm", &id]);
    assert!(s.lab.ledger_entries().is_empty());
}

#[test]
fn cri_container_and_exec_sync_are_capped_by_pod_annotations() {
    use k8s_cri::v1::{
        CreateContainerRequest, KeyValue, Mount, RemovePodSandboxRequest, RunPodSandboxRequest,
        StartContainerRequest, StopPodSandboxRequest,
    };
    use support::cri::{connect, container_config, exec_sync, import_images, sandbox_config};

    let Some(s) = setup("cri_container_and_exec_sync_are_capped_by_pod_annotations") else {
        return;
    };
    import_images(&s.lab);
    let log_dir = s.lab.root().join("pod-logs");
    std::fs::create_dir_all(&log_dir).unwrap();
    let mount = |host: &Path, container: &str, readonly: bool| Mount {
        host_path: host.display().to_string(),
        container_path: container.to_owned(),
        readonly,
        ..Default::default()
    };
    // The busybox image has no glibc: the host's serves the dynamically linked client.
    let mut mounts = vec![
        mount(Path::new("/usr/lib"), "/usr/lib", true),
        mount(Path::new("/usr/lib"), "/lib", true),
        mount(Path::new("/etc/ld.so.cache"), "/etc/ld.so.cache", true),
        mount(
            s.gpu.drivers.path(),
            &s.gpu.drivers.path().display().to_string(),
            true,
        ),
        mount(
            s.gpu.state.path(),
            &s.gpu.state.path().display().to_string(),
            false,
        ),
    ];
    if Path::new("/usr/lib64").is_dir() {
        mounts.push(mount(Path::new("/usr/lib64"), "/lib64", true));
    }
    for file in [&s.gpu.fakegpu, &PathBuf::from(&s.client)] {
        let parent = file.parent().unwrap();
        if !mounts
            .iter()
            .any(|m| m.host_path == parent.display().to_string())
        {
            mounts.push(mount(parent, &parent.display().to_string(), true));
        }
    }
    let fill = format!("{} fill-until-oom --step 64Mi", s.client);
    let mut config = container_config("trainer");
    config.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("{fill} > /tmp/fill.json 2>&1; sleep 3600"),
    ];
    config.mounts = mounts;
    config.envs = s
        .gpu
        .env()
        .into_iter()
        .map(|(key, value)| KeyValue { key, value })
        .collect();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = connect(&s.lab.address()).await;
        let annotations =
            std::collections::HashMap::from([("hami.io/gpu-memory".to_owned(), "1Gi".to_owned())]);
        let sandbox = sandbox_config("trainer-pod", annotations, &log_dir);
        let pod_id = client
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox.clone()),
                runtime_handler: "hami".into(),
            })
            .await
            .expect("sandbox runs")
            .into_inner()
            .pod_sandbox_id;
        let id = client
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox),
            })
            .await
            .expect("container created")
            .into_inner()
            .container_id;
        client
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("container starts");

        // The container's own process.
        let mut report = String::new();
        for _ in 0..200 {
            report = exec_sync(&mut client, &id, "cat /tmp/fill.json 2>/dev/null || true").await;
            if report.contains('}') {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_capped(&parse_fill_report(&report), GIB);
        // A process started by ExecSync, as `kubectl exec` does.
        let exec_report = exec_sync(&mut client, &id, &fill).await;
        assert_capped(&parse_fill_report(&exec_report), GIB);

        assert_eq!(s.lab.ledger_entries(), vec![id.clone()]);
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
        assert!(eventually(std::time::Duration::from_secs(10), || s
            .lab
            .ledger_entries()
            .is_empty()));
    });
}
