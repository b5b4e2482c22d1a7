//! End to end through the CRI API, as kubelet drives containerd: RunPodSandbox with pod
//! annotations, CreateContainer, StartContainer, ExecSync, StopPodSandbox, RemovePodSandbox.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ExecSyncRequest, ImageSpec,
    LinuxContainerConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};
use support::{GIB, Lab, busybox_rootfs, eventually, require_tools, text, unique};
use tonic::transport::{Channel, Endpoint, Uri};

const APP_IMAGE: &str = "hami.test/app:1";

/// Imports one image, tagged as the sandbox (pause) image and as the app image, into `k8s.io`.
fn import_images(lab: &Lab) {
    let work = lab.root().join("image");
    let layer_dir = work.join("layer");
    busybox_rootfs(&layer_dir);
    let archive_dir = work.join("archive");
    std::fs::create_dir_all(&archive_dir).unwrap();
    let layer = archive_dir.join("layer.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&layer)
        .arg("-C")
        .arg(&layer_dir)
        .arg("."));
    let digest = run(Command::new("sha256sum").arg(&layer));
    let digest = digest.split_whitespace().next().unwrap().to_owned();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sleep", "3600"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{digest}")]},
    });
    std::fs::write(archive_dir.join("config.json"), config.to_string()).unwrap();
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": ["registry.k8s.io/pause:3.6", APP_IMAGE],
        "Layers": ["layer.tar"],
    }]);
    std::fs::write(archive_dir.join("manifest.json"), manifest.to_string()).unwrap();
    let tarball = work.join("images.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&archive_dir)
        .args(["manifest.json", "config.json", "layer.tar"]));
    lab.ctr_ok(&[
        "-n",
        "k8s.io",
        "images",
        "import",
        &tarball.display().to_string(),
    ]);
}

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{command:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn connect(socket: &Path) -> RuntimeServiceClient<Channel> {
    let socket = socket.to_owned();
    let channel = Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("CRI socket answers");
    RuntimeServiceClient::new(channel)
}

fn sandbox_config(
    name: &str,
    annotations: HashMap<String, String>,
    log_dir: &Path,
) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_owned(),
            uid: unique("uid"),
            namespace: "default".to_owned(),
            attempt: 0,
        }),
        log_directory: log_dir.display().to_string(),
        annotations,
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(name: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_owned(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: APP_IMAGE.to_owned(),
            ..Default::default()
        }),
        command: vec!["/bin/sleep".to_owned(), "3600".to_owned()],
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig::default()),
        ..Default::default()
    }
}

async fn exec_sync(client: &mut RuntimeServiceClient<Channel>, id: &str, script: &str) -> String {
    let response = client
        .exec_sync(ExecSyncRequest {
            container_id: id.to_owned(),
            cmd: vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()],
            timeout: 20,
        })
        .await
        .expect("exec runs")
        .into_inner();
    assert_eq!(
        response.exit_code,
        0,
        "{}",
        String::from_utf8_lossy(&response.stderr)
    );
    String::from_utf8_lossy(&response.stdout).into_owned()
}

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
