//! A CRI client for the tests, driving containerd as kubelet does, and the images it needs.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ExecSyncRequest, ImageSpec, LinuxContainerConfig,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata,
};
use tonic::transport::{Channel, Endpoint, Uri};

use super::{Lab, busybox_rootfs, text, unique};

pub const APP_IMAGE: &str = "hami.test/app:1";

/// Imports one image, tagged as the sandbox (pause) image and as the app image, into `k8s.io`.
pub fn import_images(lab: &Lab) {
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

pub async fn connect(socket: &Path) -> RuntimeServiceClient<Channel> {
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

pub fn sandbox_config(
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

pub fn container_config(name: &str) -> ContainerConfig {
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

pub async fn exec_sync(
    client: &mut RuntimeServiceClient<Channel>,
    id: &str,
    script: &str,
) -> String {
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
