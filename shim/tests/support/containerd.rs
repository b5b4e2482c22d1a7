//! The containerd under test: the installed one, or the one of `HAMI_CONTAINERD_BIN` (Debian's
//! 1.7 or 2.x unpacked by `scripts/containerd-versions.sh`), its version, and its configuration
//! in the format of its generation.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::which;

/// The environment variable naming the directory of the containerd under test.
pub const CONTAINERD_BIN_ENV: &str = "HAMI_CONTAINERD_BIN";

/// Tools that come with containerd (taken from `HAMI_CONTAINERD_BIN` when it is set).
const CONTAINERD_TOOLS: [&str; 3] = ["containerd", "ctr", "containerd-shim-runc-v2"];

/// Where a tool of the containerd under test, or any other tool, is.
pub fn tool(name: &str) -> Option<PathBuf> {
    match std::env::var_os(CONTAINERD_BIN_ENV).filter(|dir| !dir.is_empty()) {
        Some(dir) if CONTAINERD_TOOLS.contains(&name) => {
            Some(PathBuf::from(dir).join(name)).filter(|p| p.is_file())
        }
        _ => which(name),
    }
}

pub fn tool_path(name: &str) -> PathBuf {
    tool(name).unwrap_or_else(|| PathBuf::from(name))
}

/// `containerd --version` of the containerd under test, e.g. `2.1.9+unknown`.
pub fn containerd_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let out = Command::new(tool_path("containerd"))
            .arg("--version")
            .output()
            .expect("containerd --version runs");
        // "containerd github.com/containerd/containerd[/v2] 1.6.20~ds1 1.6.20~ds1-1+deb12u3"
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_owned()
    })
}

/// The major version of the containerd under test.
pub fn containerd_major() -> u32 {
    containerd_version()
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .unwrap_or(1)
}

/// The private containerd's configuration, in the format of its generation: version 2 for 1.6
/// and 1.7, version 3 for 2.x, with the `hami` handler of `deploy/containerd/`.
pub fn containerd_config(root: &Path) -> String {
    let r = root.display();
    let common = format!(
        r#"root = "{r}/root"
state = "{r}/state"
[grpc]
  address = "{r}/containerd.sock"
[ttrpc]
  address = "{r}/containerd-ttrpc.sock"
"#
    );
    if containerd_major() >= 2 {
        return format!(
            r#"version = 3
{common}[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "registry.k8s.io/pause:3.6"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{r}/cni-bin"]
    conf_dir = "{r}/cni-conf"
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
{}"#,
            handler(include_str!(
                "../../../deploy/containerd/config-hami-v3.toml"
            ))
        );
    }
    format!(
        r#"version = 2
{common}[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = "registry.k8s.io/pause:3.6"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{r}/cni-bin"
    conf_dir = "{r}/cni-conf"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
{}"#,
        handler(include_str!("../../../deploy/containerd/config-hami.toml"))
    )
}

/// The `hami` runtime handler of a documented snippet (`deploy/containerd/`), without its
/// `version` line: the tests run exactly what users merge.
fn handler(snippet: &str) -> String {
    snippet
        .lines()
        .filter(|line| !line.starts_with("version"))
        .map(|line| format!("{line}\n"))
        .collect()
}
