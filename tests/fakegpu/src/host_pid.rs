//! The host side of the simulated device: it tells each process its PID as the host sees it.
//!
//! The real driver is a kernel module. It sees every process in the host's PID namespace,
//! so NVML reports processes under their host PIDs, whatever namespace they run in: inside a
//! container, `nvmlDeviceGetProcessUtilization` lists PIDs that `getpid()` never returns. A
//! library has no unprivileged way to learn its own host PID, but the kernel translates a
//! socket peer's PID into the namespace of whoever asks (`SO_PEERCRED`). So the simulated
//! device has a host side, as the real one has its kernel module: a process in the host's
//! namespace (`hami-fakegpu-host DIR`, or [`HostSide::serve`] in a test) listening on
//! `DIR/host.sock`. A process connects when it claims its slot and reads back 4 bytes: its
//! PID on the host. The socket lives in the state directory, which containers already mount.
//!
//! Without a host side (no socket in the directory) a process records `getpid()`, which is
//! right for every process in the host's namespace: plain `hami run` and the unit tests.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use thiserror::Error;

/// Name of the host side's socket inside the state directory.
pub const HOST_SOCKET_NAME: &str = "host.sock";
/// How long a process waits for the host side's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// The host side is there but did not tell this process its PID.
#[derive(Debug, Error)]
#[error(
    "the simulated device's host side at {path} did not answer ({source}); is `hami-fakegpu-host` running in the host's PID namespace?"
)]
pub struct HostPidError {
    path: PathBuf,
    source: std::io::Error,
}

/// This process's PID on the host: asked of the host side when `dir` has one, else
/// `getpid()`.
pub fn host_pid(dir: &Path) -> Result<u32, HostPidError> {
    let path = dir.join(HOST_SOCKET_NAME);
    if !path.exists() {
        return Ok(std::process::id());
    }
    let error = |source| HostPidError {
        path: path.clone(),
        source,
    };
    let mut stream = UnixStream::connect(&path).map_err(error)?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(error)?;
    let mut answer = [0u8; 4];
    stream.read_exact(&mut answer).map_err(error)?;
    match u32::from_le_bytes(answer) {
        0 => Err(error(std::io::Error::other(
            "the host side could not see this process",
        ))),
        pid => Ok(pid),
    }
}

/// The PID of the peer of `stream` in this process's PID namespace (0: not visible here).
fn peer_pid(stream: &UnixStream) -> std::io::Result<u32> {
    let mut credentials = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut length = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED on a connected unix socket writes one `ucred` into `credentials`,
    // whose size is passed in `length`; both outlive the call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut credentials).cast(),
            &mut length,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(u32::try_from(credentials.pid).unwrap_or(0))
}

/// A running host side; it stops and removes its socket when dropped.
pub struct HostSide {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    /// The listening socket, shut down to wake the accept loop (whatever became of its path).
    listener: UnixListener,
    thread: Option<JoinHandle<()>>,
}

impl HostSide {
    /// Serves host PIDs on `dir/host.sock` from a thread of this process, which must run in
    /// the host's PID namespace (the namespace NVML's PIDs are to be in).
    pub fn serve(dir: &Path) -> std::io::Result<HostSide> {
        let path = dir.join(HOST_SOCKET_NAME);
        // A socket left by a host side that died is replaced; a live one is refused.
        if path.exists() && UnixStream::connect(&path).is_err() {
            std::fs::remove_file(&path)?;
        }
        let listener = UnixListener::bind(&path)?;
        // Processes of other users (containers) connect too.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let serving = listener.try_clone()?;
        let thread = std::thread::Builder::new()
            .name("fakegpu-host".into())
            .spawn(move || answer_until(&serving, &stopping))?;
        Ok(HostSide {
            path,
            stop,
            listener,
            thread: Some(thread),
        })
    }
}

fn answer_until(listener: &UnixListener, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut stream) = stream else { continue };
        let pid = peer_pid(&stream).unwrap_or(0);
        let _ = stream.set_write_timeout(Some(ANSWER_TIMEOUT));
        let _ = stream.write_all(&pid.to_le_bytes());
    }
}

impl Drop for HostSide {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accept loop, which then sees `stop`; works even when the socket's path
        // is gone (its directory removed first), where connecting to it would not.
        // SAFETY: shutdown only changes the state of a socket this struct owns.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_host_side_a_process_is_its_own_pid() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(host_pid(dir.path()).unwrap(), std::process::id());
    }

    #[test]
    fn the_host_side_stops_even_when_its_directory_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostSide::serve(dir.path()).unwrap();
        std::fs::remove_dir_all(dir.path()).unwrap();
        drop(host);
    }

    #[test]
    fn the_host_side_answers_the_callers_pid_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostSide::serve(dir.path()).unwrap();
        assert_eq!(host_pid(dir.path()).unwrap(), std::process::id());
        drop(host);
        assert!(!dir.path().join(HOST_SOCKET_NAME).exists());
    }

    #[test]
    fn a_dead_host_side_is_an_error_not_a_guess() {
        let dir = tempfile::tempdir().unwrap();
        // A socket nobody listens on: what a host side that was killed leaves.
        drop(UnixListener::bind(dir.path().join(HOST_SOCKET_NAME)).unwrap());
        let err = host_pid(dir.path()).unwrap_err();
        assert!(err.to_string().contains("hami-fakegpu-host"), "{err}");
    }
}
