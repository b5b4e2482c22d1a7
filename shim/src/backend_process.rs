//! The backend runc shim as a program: its `start` (which says where it listens and which Task
//! API it speaks), its `delete`, the bundle file that remembers it, and the cleanup of a
//! container through it after the proxy died.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use containerd_shim::api::{
    DeleteRequest, DeleteResponse, KillRequest, ShutdownRequest, WaitRequest,
};
use containerd_shim::protos::protobuf::Message;
use thiserror::Error;

use crate::backend::{TaskBackend, TaskClient};
use crate::task_api::{BootstrapError, Endpoint};

/// File, in each container's bundle, holding the backend's `start` reply (for `delete` after a
/// crash). Bundles of an older shim hold a plain address, which reads as task API v2.
const BACKEND_FILE: &str = "hami-backend-address";
/// How long an idle backend is given to exit after Shutdown, in polls of `BACKEND_EXIT_POLL`
/// (kept short: containerd waits for this delete before it goes on).
const BACKEND_EXIT_POLLS: u32 = 40;
const BACKEND_EXIT_POLL: std::time::Duration = std::time::Duration::from_millis(50);
/// How long (ns) each cleanup call may take (kill, wait for the exit, delete).
const CLEANUP_WAIT_NS: i64 = 10_000_000_000;

/// The arguments containerd gave this shim, which the backend gets too.
#[derive(Debug, Clone)]
pub struct BackendArgs {
    pub namespace: String,
    pub id: String,
    pub address: String,
    pub publish_binary: String,
    pub debug: bool,
}

/// Why the backend shim could not be started or asked to delete.
#[derive(Debug, Error)]
pub enum BackendError {
    #[error("cannot run backend shim {binary}: {source}")]
    Run {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("backend shim {binary} {action} failed ({status}): {stderr}")]
    Failed {
        binary: PathBuf,
        action: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("backend shim {binary} (backend_shim in shim.toml) cannot be used: {source}")]
    Bootstrap {
        binary: PathBuf,
        source: BootstrapError,
    },
    #[error("backend shim {binary} delete reply: {source}")]
    DeleteReply {
        binary: PathBuf,
        source: containerd_shim::protos::protobuf::Error,
    },
}

/// Base arguments of the backend shim, as containerd would pass them.
fn command(binary: &Path, args: &BackendArgs) -> Command {
    let mut command = Command::new(binary);
    command.args([
        "-namespace",
        &args.namespace,
        "-address",
        &args.address,
        "-publish-binary",
        &args.publish_binary,
        "-id",
        &args.id,
    ]);
    if args.debug {
        command.arg("-debug");
    }
    command
}

fn run(
    binary: &Path,
    command: &mut Command,
    action: &'static str,
) -> Result<Vec<u8>, BackendError> {
    let output = command.output().map_err(|source| BackendError::Run {
        binary: binary.to_owned(),
        source,
    })?;
    if !output.status.success() {
        return Err(BackendError::Failed {
            binary: binary.to_owned(),
            action,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output.stdout)
}

/// Runs the backend's `start`; returns where it listens and which Task API it speaks.
///
/// Its stdin is empty so that CRI's `runtimeoptions.v1.Options`, which the runc shim cannot
/// decode, never reach it; its stderr is captured, since anything this process writes to stderr
/// would corrupt the reply containerd reads.
pub fn start(binary: &Path, args: &BackendArgs) -> Result<Endpoint, BackendError> {
    let mut start = command(binary, args);
    start
        .arg("start")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let reply = run(binary, &mut start, "start")?;
    Endpoint::parse(&String::from_utf8_lossy(&reply)).map_err(|source| BackendError::Bootstrap {
        binary: binary.to_owned(),
        source,
    })
}

/// Runs the backend binary's own `delete` (the backend daemon is gone too).
pub fn delete_with_binary(
    binary: &Path,
    args: &BackendArgs,
    bundle: &Path,
) -> Result<DeleteResponse, BackendError> {
    let mut delete = command(binary, args);
    delete
        .arg("-bundle")
        .arg(bundle)
        .arg("delete")
        .current_dir(bundle)
        .stdin(Stdio::null());
    let reply = run(binary, &mut delete, "delete")?;
    DeleteResponse::parse_from_bytes(&reply).map_err(|source| BackendError::DeleteReply {
        binary: binary.to_owned(),
        source,
    })
}

/// Remembers in `bundle` which backend serves its container.
pub fn record(bundle: &Path, backend: &Endpoint) {
    if let Err(e) = std::fs::write(bundle.join(BACKEND_FILE), backend.reply()) {
        log::warn!("cannot record the backend in {}: {e}", bundle.display());
    }
}

/// The backend that served the container of `bundle`.
pub fn recorded(bundle: &Path) -> Result<Endpoint, String> {
    let reply = std::fs::read_to_string(bundle.join(BACKEND_FILE))
        .map_err(|e| format!("no backend recorded: {e}"))?;
    Endpoint::parse(&reply).map_err(|e| e.to_string())
}

/// Whether something accepts connections on a `unix://` address.
pub fn listening(address: &str) -> bool {
    let path = address.strip_prefix("unix://").unwrap_or(address);
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// Kills and deletes the container through the running backend, then lets it exit if idle.
pub fn delete_through_backend(bundle: &Path, id: &str) -> Result<DeleteResponse, String> {
    let backend = recorded(bundle)?;
    let client = TaskClient::connect(&backend)
        .map_err(|e| e.to_string())?
        .with_timeout(CLEANUP_WAIT_NS);
    let kill = KillRequest {
        id: id.to_owned(),
        signal: 9,
        all: true,
        ..Default::default()
    };
    if let Err(e) = client.kill(&kill) {
        log::debug!("container {id}: kill: {e}");
    }
    let wait = WaitRequest {
        id: id.to_owned(),
        ..Default::default()
    };
    if let Err(e) = client.wait(&wait) {
        log::debug!("container {id}: wait: {e}");
    }
    let delete = DeleteRequest {
        id: id.to_owned(),
        ..Default::default()
    };
    let response = client.delete(&delete).map_err(|e| e.to_string());
    // The runc shim ignores Shutdown while it still has containers. An idle one exits: inside
    // the call on containerd 1.6 (the reply never comes), just after replying on later ones. It
    // removes the socket named in the bundle's `address` file, which is the proxy's, and leaves
    // its own. This path runs only after a proxy died, so waiting a little here costs nothing
    // on the normal path.
    if let Err(e) = client.shutdown(&ShutdownRequest::default()) {
        log::debug!("container {id}: shutdown: {e}");
    }
    drop(client);
    let gone = (0..BACKEND_EXIT_POLLS).any(|_| {
        std::thread::sleep(BACKEND_EXIT_POLL);
        !listening(&backend.address)
    });
    if gone {
        remove_socket(&backend.address);
    }
    response
}

/// The answer for a container that was killed (exit status 128 + SIGKILL) just now.
pub fn killed_response() -> DeleteResponse {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut exited_at =
        containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp::new();
    exited_at.seconds = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    exited_at.nanos = i32::try_from(now.subsec_nanos()).unwrap_or(0);
    DeleteResponse {
        exit_status: 128 + 9,
        exited_at: Some(exited_at).into(),
        ..Default::default()
    }
}

/// Removes the Unix socket of a `unix://` address, if it is one.
pub fn remove_socket(address: &str) {
    let Some(path) = address.strip_prefix("unix://") else {
        return;
    };
    let is_socket = std::fs::symlink_metadata(path)
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()));
    if is_socket && let Err(e) = std::fs::remove_file(path) {
        log::warn!("cannot remove socket {path}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::task_api::TaskApi;

    fn args() -> BackendArgs {
        BackendArgs {
            namespace: "default".into(),
            id: "c1".into(),
            address: "/run/containerd/containerd.sock".into(),
            publish_binary: "/usr/bin/containerd".into(),
            debug: false,
        }
    }

    /// A backend shim that answers `start` with `reply`.
    fn fake_backend(dir: &Path, reply: &str) -> PathBuf {
        let path = dir.join("containerd-shim-fake-v2");
        std::fs::write(&path, format!("#!/bin/sh\nprintf '%s' '{reply}'\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn start_reports_the_backends_endpoint_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let v3 = r#"{"version":3,"address":"unix:///run/containerd/s/ab","protocol":"ttrpc"}"#;
        let endpoint = start(&fake_backend(dir.path(), v3), &args()).unwrap();
        assert_eq!(endpoint.api, TaskApi::V3);
        assert_eq!(endpoint.address, "unix:///run/containerd/s/ab");
    }

    #[test]
    fn a_backend_speaking_neither_version_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let v4 = r#"{"version":4,"address":"unix:///run/containerd/s/ab","protocol":"ttrpc"}"#;
        let binary = fake_backend(dir.path(), v4);
        let err = start(&binary, &args()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "backend shim {} (backend_shim in shim.toml) cannot be used: it speaks shim task \
                 API version 4; containerd-shim-hami-v2 speaks versions 2 (containerd 1.6, 1.7) \
                 and 3 (containerd 2.x)",
                binary.display()
            )
        );
    }

    #[test]
    fn a_recorded_backend_reads_back_and_an_old_plain_record_is_v2() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = Endpoint {
            address: "unix:///run/containerd/s/cd".into(),
            api: TaskApi::V3,
        };
        record(dir.path(), &endpoint);
        assert_eq!(recorded(dir.path()).unwrap(), endpoint);
        std::fs::write(dir.path().join(BACKEND_FILE), "unix:///run/containerd/s/ef").unwrap();
        assert_eq!(recorded(dir.path()).unwrap().api, TaskApi::V2);
    }

    #[test]
    fn killed_response_reports_sigkill_now() {
        let response = killed_response();
        assert_eq!(response.exit_status, 137);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        assert!(now.as_secs().abs_diff(response.exited_at.seconds as u64) < 5);
    }

    #[test]
    fn only_unix_sockets_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        remove_socket(&format!("unix://{}", file.display()));
        remove_socket(&file.display().to_string());
        assert!(file.exists());
        assert!(listening(&format!("unix://{}", socket.display())));
        remove_socket(&format!("unix://{}", socket.display()));
        assert!(!socket.exists());
    }
}
