//! The shim's process lifecycle for containerd: `start` (launch the backend runc shim, then the
//! proxy daemon), the daemon itself, and `delete` (cleanup after a dead shim).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use containerd_shim::api::{
    DeleteRequest, DeleteResponse, KillRequest, ShutdownRequest, WaitRequest,
};
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::ttrpc;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::write_address;
use containerd_shim::{Config, Error as ShimError, ExitSignal, Flags, StartOpts};

use crate::backend::{self, BackendClient};
use crate::config::ShimConfig;
use crate::ledger_entry;
use crate::prepare::LedgerPreparer;
use crate::proxy::ProxyTask;
use crate::spec_rewrite;

/// The runtime type containerd knows this shim by.
pub const RUNTIME_ID: &str = "io.containerd.hami.v2";
/// Environment variable through which `start` tells the daemon where the backend listens.
const BACKEND_ADDRESS_ENV: &str = "HAMI_BACKEND_ADDRESS";
/// File, in each container's bundle, naming the backend's address (for `delete` after a crash).
const BACKEND_ADDRESS_FILE: &str = "hami-backend-address";
/// How long (ns) each cleanup call of `delete` may take (kill, wait for the exit, delete).
const CLEANUP_WAIT_NS: i64 = 10_000_000_000;

/// The shim, as containerd runs it.
pub struct HamiShim {
    flags: ShimFlags,
    exit: Arc<ExitSignal>,
}

/// The command-line flags this shim needs again later (containerd's [`Flags`] is not `Clone`).
#[derive(Debug, Clone)]
struct ShimFlags {
    namespace: String,
    id: String,
    bundle: String,
    address: String,
    publish_binary: String,
    debug: bool,
    /// The daemon's own socket (`unix://...`), empty for `start` and `delete`.
    socket: String,
}

impl containerd_shim::Shim for HamiShim {
    type T = ProxyTask<BackendClient, LedgerPreparer>;

    fn new(_runtime_id: &str, args: &Flags, config: &mut Config) -> Self {
        if let Ok(shim_config) = ShimConfig::load() {
            config.default_log_level = shim_config.log_filter().to_string().to_lowercase();
        }
        Self {
            flags: ShimFlags {
                namespace: args.namespace.clone(),
                id: args.id.clone(),
                bundle: args.bundle.clone(),
                address: args.address.clone(),
                publish_binary: args.publish_binary.clone(),
                debug: args.debug,
                socket: args.socket.clone(),
            },
            exit: Arc::new(ExitSignal::default()),
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let config = ShimConfig::load().map_err(|e| ShimError::Other(e.to_string()))?;
        let bundle =
            std::env::current_dir().map_err(|e| ShimError::Other(format!("bundle: {e}")))?;
        let grouping = spec_rewrite::read_spec(&bundle)
            .ok()
            .and_then(|spec| spec_rewrite::annotations(&spec).remove(spec_rewrite::CRI_SANDBOX_ID))
            .unwrap_or_else(|| opts.id.clone());
        let backend_address = start_backend(&config.backend_shim, &self.flags)?;
        let (_, address) = containerd_shim::spawn(
            opts,
            &format!("{grouping}-hami"),
            vec![(BACKEND_ADDRESS_ENV, backend_address.as_str())],
        )?;
        // The backend wrote its own address into the bundle; containerd reconnects through this
        // file after a restart, and must reach the proxy, not the backend.
        write_address(&address)?;
        record_backend_address(&bundle, &backend_address);
        Ok(address)
    }

    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = if self.flags.bundle.is_empty() {
            std::env::current_dir().map_err(|e| ShimError::Other(format!("bundle: {e}")))?
        } else {
            PathBuf::from(&self.flags.bundle)
        };
        let config = ShimConfig::load().unwrap_or_default();
        let id = &self.flags.id;
        let response = delete_through_backend(&bundle, id)
            .or_else(|e| {
                log::warn!("container {id}: backend cannot delete it ({e}), running its delete");
                delete_with_backend_binary(&config.backend_shim, &self.flags, &bundle)
            })
            .or_else(|e| {
                // Nothing of the container is left to delete (its creation failed before runc
                // ran): report it killed, as the runc shim does for a container it cannot find.
                log::warn!("container {id}: {e}");
                Ok::<_, ShimError>(killed_response())
            });
        if let Err(e) = ledger_entry::remove_entry(&config.ledger_dir, &self.flags.id) {
            log::warn!("container {}: {e}", self.flags.id);
        }
        // The dead proxy's socket: nobody listens on it any more.
        if let Ok(address) = std::fs::read_to_string(bundle.join("address"))
            && backend::connect(address.trim()).is_err()
        {
            remove_socket(address.trim());
        }
        response
    }

    fn wait(&mut self) {
        self.exit.wait();
        // The library removes the socket named in the `address` file of the working directory,
        // which is the pod's first bundle and usually deleted by now: remove it ourselves. The
        // backend (already told to shut down) would remove the socket named in that same file,
        // ours, instead of its own: remove its socket too.
        remove_socket(&self.flags.socket);
        if let Ok(backend) = std::env::var(BACKEND_ADDRESS_ENV) {
            remove_socket(&backend);
        }
    }

    fn create_task_service(&self, _publisher: RemotePublisher) -> Self::T {
        let address = std::env::var(BACKEND_ADDRESS_ENV).unwrap_or_default();
        let backend = BackendClient::new(address.clone());
        let on_bundle = Box::new(move |bundle: &Path| record_backend_address(bundle, &address));
        ProxyTask::new(
            backend,
            LedgerPreparer::default(),
            self.exit.clone(),
            on_bundle,
        )
    }
}

/// Removes the Unix socket of a `unix://` address, if it is one.
fn remove_socket(address: &str) {
    let Some(path) = address.strip_prefix("unix://") else {
        return;
    };
    let is_socket = std::fs::symlink_metadata(path)
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()));
    if is_socket && let Err(e) = std::fs::remove_file(path) {
        log::warn!("cannot remove socket {path}: {e}");
    }
}

fn record_backend_address(bundle: &Path, address: &str) {
    if let Err(e) = std::fs::write(bundle.join(BACKEND_ADDRESS_FILE), address) {
        log::warn!("cannot record backend address in {}: {e}", bundle.display());
    }
}

/// Base arguments of the backend shim, as containerd would pass them.
fn backend_command(binary: &Path, flags: &ShimFlags) -> Command {
    let mut command = Command::new(binary);
    command.args([
        "-namespace",
        &flags.namespace,
        "-address",
        &flags.address,
        "-publish-binary",
        &flags.publish_binary,
        "-id",
        &flags.id,
    ]);
    if flags.debug {
        command.arg("-debug");
    }
    command
}

/// Runs the backend's `start`; returns the address it listens on.
///
/// Its stdin is empty so that CRI's `runtimeoptions.v1.Options`, which the runc shim cannot
/// decode, never reach it; its stderr is captured, since anything this process writes to stderr
/// would corrupt the address containerd reads.
fn start_backend(binary: &Path, flags: &ShimFlags) -> containerd_shim::Result<String> {
    let output = backend_command(binary, flags)
        .arg("start")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| {
            ShimError::Other(format!("cannot run backend shim {}: {e}", binary.display()))
        })?;
    if !output.status.success() {
        return Err(ShimError::Other(format!(
            "backend shim {} start failed ({}): {}",
            binary.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    parse_start_reply(&String::from_utf8_lossy(&output.stdout))
}

/// The address in a shim's `start` reply: a plain address (task API v2, containerd 1.6/1.7), or
/// JSON with an `address` field (shims of containerd 2.x).
fn parse_start_reply(reply: &str) -> containerd_shim::Result<String> {
    let reply = reply.trim();
    if !reply.starts_with('{') {
        return Ok(reply.to_owned());
    }
    let parsed: serde_json::Value = serde_json::from_str(reply)
        .map_err(|e| ShimError::Other(format!("backend start reply {reply:?}: {e}")))?;
    parsed["address"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ShimError::Other(format!("backend start reply {reply:?} has no address")))
}

/// Kills and deletes the container through the running backend, then lets it exit if idle.
fn delete_through_backend(bundle: &Path, id: &str) -> Result<DeleteResponse, String> {
    let address = std::fs::read_to_string(bundle.join(BACKEND_ADDRESS_FILE))
        .map_err(|e| format!("no backend address: {e}"))?;
    let client = backend::connect(address.trim()).map_err(|e| e.to_string())?;
    let kill = KillRequest {
        id: id.to_owned(),
        signal: 9,
        all: true,
        ..Default::default()
    };
    if let Err(e) = client.kill(ttrpc::context::with_timeout(CLEANUP_WAIT_NS), &kill) {
        log::debug!("container {id}: kill: {e}");
    }
    let wait = WaitRequest {
        id: id.to_owned(),
        ..Default::default()
    };
    if let Err(e) = client.wait(ttrpc::context::with_timeout(CLEANUP_WAIT_NS), &wait) {
        log::debug!("container {id}: wait: {e}");
    }
    let delete = DeleteRequest {
        id: id.to_owned(),
        ..Default::default()
    };
    let response = client
        .delete(ttrpc::context::with_timeout(CLEANUP_WAIT_NS), &delete)
        .map_err(|e| e.to_string());
    // The runc shim ignores Shutdown while it still has containers, so this only ends an idle one.
    let shutdown = ShutdownRequest::default();
    if client
        .shutdown(ttrpc::context::with_timeout(CLEANUP_WAIT_NS), &shutdown)
        .is_ok()
    {
        drop(client);
        // An idle backend exits now and leaves its socket behind (it removes the one named in
        // the bundle's `address` file, which is the proxy's).
        let gone = (0..20).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            backend::connect(address.trim()).is_err()
        });
        if gone {
            remove_socket(address.trim());
        }
    }
    response
}

/// The answer for a container that was killed (exit status 128 + SIGKILL) just now.
fn killed_response() -> DeleteResponse {
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

/// Runs the backend binary's own `delete` (the backend daemon is gone too).
fn delete_with_backend_binary(
    binary: &Path,
    flags: &ShimFlags,
    bundle: &Path,
) -> containerd_shim::Result<DeleteResponse> {
    let output = backend_command(binary, flags)
        .arg("-bundle")
        .arg(bundle)
        .arg("delete")
        .current_dir(bundle)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ShimError::Other(format!("cannot run backend shim delete: {e}")))?;
    if !output.status.success() {
        return Err(ShimError::Other(format!(
            "backend shim delete failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(DeleteResponse::parse_from_bytes(&output.stdout)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_reply_is_a_plain_address_or_json() {
        assert_eq!(
            parse_start_reply("unix:///run/containerd/s/ab\n").unwrap(),
            "unix:///run/containerd/s/ab"
        );
        let json = r#"{"address":"unix:///run/containerd/s/cd","protocol":"ttrpc","version":3}"#;
        assert_eq!(
            parse_start_reply(json).unwrap(),
            "unix:///run/containerd/s/cd"
        );
        assert!(parse_start_reply(r#"{"protocol":"ttrpc"}"#).is_err());
        assert!(parse_start_reply("{oops").is_err());
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
        remove_socket(&format!("unix://{}", socket.display()));
        assert!(!socket.exists());
    }
}
