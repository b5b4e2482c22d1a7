//! The shim daemon: the long-lived process `start` spawns, serving the proxy Task service.
//!
//! containerd-shim's `run` serves the Task service under `containerd.task.v2.Task` only; this
//! takes over its daemon branch so that the same handlers are also reached as
//! `containerd.task.v3.Task`, which containerd 2.x calls when `start` announced version 3.
//! `start` and `delete` still go through `containerd_shim::run`.

use std::os::unix::net::UnixListener;
use std::path::Path;

use containerd_shim::protos::ttrpc;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::write_address;
use containerd_shim::{Config, Flags, Shim};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use thiserror::Error;

use crate::shim::{HamiShim, RUNTIME_ID};
use crate::task_api;

/// Why the daemon could not serve.
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("environment variable TTRPC_ADDRESS is not set (containerd sets it)")]
    NoTtrpcAddress,
    #[error("cannot set up the shim: {0}")]
    Setup(String),
    #[error("cannot listen on {socket}: {source}")]
    Listen {
        socket: String,
        source: std::io::Error,
    },
    #[error("ttrpc server: {0}")]
    Server(#[from] ttrpc::Error),
}

/// Whether `flags` ask for the daemon (no action, a socket to serve on).
pub fn is_daemon(flags: &Flags) -> bool {
    flags.action.is_empty() && !flags.socket.is_empty()
}

/// Serves until the shim is told to exit; what `containerd_shim::run` does for a daemon, with
/// the Task service registered under every Task API name.
pub fn serve(flags: &Flags, mut config: Config) -> Result<(), DaemonError> {
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").map_err(|_| DaemonError::NoTtrpcAddress)?;
    if !config.no_sub_reaper {
        // Orphans below this process (publisher children) are reparented here, not to init.
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| DaemonError::Setup(format!("set child subreaper: {e}")))?;
    }
    ignore_termination_signals()?;
    let mut shim = HamiShim::new(RUNTIME_ID, flags, &mut config);
    if !config.no_setup_logger {
        containerd_shim::logger::init(
            flags.debug,
            &config.default_log_level,
            &flags.namespace,
            &flags.id,
        )
        .map_err(|e| DaemonError::Setup(format!("logger: {e}")))?;
    }
    let publisher = RemotePublisher::new(&ttrpc_address)
        .map_err(|e| DaemonError::Setup(format!("publisher: {e}")))?;
    let Some(listener) = listen(&flags.socket)? else {
        // Another daemon of the same pod already serves this socket: it takes the container.
        write_address(&flags.socket).map_err(|e| DaemonError::Setup(e.to_string()))?;
        signal_started();
        return Ok(());
    };
    let task = shim.create_task_service(publisher);
    let mut server = ttrpc::Server::new()
        .add_listener(std::os::fd::IntoRawFd::into_raw_fd(listener))?
        .register_service(task_api::services(task));
    server.start()?;
    signal_started();
    log::info!("shim serving task API v2 and v3 on {}", flags.socket);
    shim.wait();
    server.shutdown();
    Ok(())
}

/// Binds the daemon's socket; `None` when a live daemon already listens on it.
fn listen(socket: &str) -> Result<Option<UnixListener>, DaemonError> {
    let path = Path::new(socket.strip_prefix("unix://").unwrap_or(socket));
    let error = |source| DaemonError::Listen {
        socket: socket.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(error)?;
    }
    match UnixListener::bind(path) {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let live = (0..5).any(|_| {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
                false
            });
            if live {
                return Ok(None);
            }
            std::fs::remove_file(path).map_err(error)?;
            UnixListener::bind(path).map(Some).map_err(error)
        }
        Err(e) => Err(error(e)),
    }
}

extern "C" fn ignore_signal(_: nix::libc::c_int) {}

/// containerd stops shims through the Task API (`Shutdown`), never by signal: SIGTERM and
/// SIGINT are caught and ignored. A handler, not `SIG_IGN`, so that the processes this daemon
/// starts get the default disposition back at exec.
fn ignore_termination_signals() -> Result<(), DaemonError> {
    let action = SigAction::new(
        SigHandler::Handler(ignore_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler does nothing, so it is async-signal-safe and touches no state
        // the interrupted code may hold; the previous disposition is not needed.
        unsafe { sigaction(signal, &action) }
            .map_err(|e| DaemonError::Setup(format!("sigaction {signal}: {e}")))?;
    }
    Ok(())
}

/// Tells `start` (which copies our stdout until it closes) that the socket is served: stdout
/// becomes stderr, closing the pipe.
fn signal_started() {
    if let Err(e) = nix::unistd::dup2_stdout(std::io::stderr()) {
        log::warn!("cannot close the start pipe: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_is_the_call_without_action_with_a_socket() {
        let parse = |args: &[&str]| containerd_shim::parse(args).unwrap();
        let daemon = parse(&[
            "-namespace",
            "k8s.io",
            "-id",
            "c1",
            "-socket",
            "unix:///s/x",
        ]);
        assert!(is_daemon(&daemon));
        let start = parse(&["-namespace", "k8s.io", "-id", "c1", "start"]);
        assert!(!is_daemon(&start));
        let delete = parse(&[
            "-namespace",
            "k8s.io",
            "-id",
            "c1",
            "-bundle",
            "/b",
            "delete",
        ]);
        assert!(!is_daemon(&delete));
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_is_left_to_its_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/s");
        let socket = format!("unix://{}", path.display());
        let live = listen(&socket).unwrap().expect("bound");
        assert!(listen(&socket).unwrap().is_none(), "live socket kept");
        drop(live);
        assert!(listen(&socket).unwrap().is_some(), "stale socket replaced");
    }
}
