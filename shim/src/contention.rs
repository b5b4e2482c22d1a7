//! One host-side publisher per capped container. It copies the container's compute demand and
//! priority into the node part, which containers may only read (the compute limiter of other
//! containers on the same device reads it: `high` priority and `burst` decisions depend on
//! it), and keeps the container's PID map (`pid_map.rs`): the host PIDs of its processes,
//! which its own compute limiter needs to read NVML.
//!
//! The publisher maps the container's usage part, a file the container can write and even
//! truncate, and touching a truncated mapping raises SIGBUS. So it does not run in the shim,
//! which serves every container of the pod: it runs in a child process of its own (this same
//! binary, [`PUBLISH_COMMAND`]), where a hostile container can only kill its own publisher.
//! The shim tells the child the host PID of the container's first process on its stdin
//! (`pid N`, once the backend created the container). The child stops when its stdin closes —
//! when the shim releases the container, or dies — and gives its node slots back on the way
//! out.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use hami_ledger::{NodeLedger, UsageLedger, compute, limits};

use crate::ledger_entry::{EntryPaths, node_path};
use crate::pid_map;

/// First argument that turns this binary into a contention publisher:
/// `containerd-shim-hami-v2 publish-contention NODE USAGE LIMITS`.
pub const PUBLISH_COMMAND: &str = "publish-contention";

/// The publisher processes of this shim's containers, by container id.
#[derive(Debug)]
pub struct ContentionPublishers {
    program: PathBuf,
    children: Mutex<HashMap<String, Child>>,
}

impl Default for ContentionPublishers {
    /// Publishers run by this very executable.
    fn default() -> Self {
        let program = std::env::current_exe().unwrap_or_else(|_| "containerd-shim-hami-v2".into());
        Self::with_program(program)
    }
}

impl ContentionPublishers {
    /// Publishers run by `program` (the shim binary).
    pub fn with_program(program: PathBuf) -> Self {
        Self {
            program,
            children: Mutex::new(HashMap::new()),
        }
    }

    /// Starts publishing for container `id`; a failure is logged, never fatal to the container
    /// (its caps still hold; only priority between tenants is lost).
    pub fn start(&self, id: &str, root: &Path, paths: &EntryPaths) {
        let spawned = Command::new(&self.program)
            .arg(PUBLISH_COMMAND)
            .arg(node_path(root))
            .arg(&paths.usage)
            .arg(&paths.limits)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(child) => {
                self.lock().insert(id.to_owned(), child);
            }
            Err(e) => log::warn!("container {id}: cannot start the contention publisher: {e}"),
        }
    }

    /// Container `id` was created with its first process at host PID `pid`: its publisher
    /// starts following the container's processes from there.
    pub fn created(&self, id: &str, pid: u32) {
        let mut children = self.lock();
        let Some(stdin) = children.get_mut(id).and_then(|c| c.stdin.as_mut()) else {
            return;
        };
        if let Err(e) = writeln!(stdin, "pid {pid}") {
            log::warn!("container {id}: the publisher cannot follow its processes: {e}");
        }
    }

    /// Stops publishing for container `id`: closes the publisher's stdin and waits for it to
    /// give its slots back.
    pub fn stop(&self, id: &str) {
        let child = self.lock().remove(id);
        if let Some(mut child) = child {
            drop(child.stdin.take());
            if let Err(e) = child.wait() {
                log::warn!("container {id}: contention publisher: {e}");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Child>> {
        // Single inserts and removes cannot leave the map inconsistent after a panic.
        self.children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The publisher process: `args` are NODE USAGE LIMITS. Publishes until stdin closes; returns
/// the exit status.
pub fn run_publisher_process(args: &[String]) -> i32 {
    let [node, usage, limits] = args else {
        eprintln!("usage: containerd-shim-hami-v2 {PUBLISH_COMMAND} NODE USAGE LIMITS");
        return 2;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let init = Arc::new(AtomicU32::new(0));
    let (stdin_open, init_pid) = (Arc::clone(&stop), Arc::clone(&init));
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if let Some(pid) = line
                .strip_prefix("pid ")
                .and_then(|p| p.trim().parse().ok())
            {
                init_pid.store(pid, Ordering::Release);
            }
        }
        // EOF or an error both mean the shim let go of this container (or died).
        stdin_open.store(true, Ordering::Relaxed);
    });
    let result = publish(
        Path::new(node),
        Path::new(usage),
        Path::new(limits),
        &init,
        &stop,
    );
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("contention publisher: {e}");
            1
        }
    }
}

fn publish(
    node: &Path,
    usage: &Path,
    limits: &Path,
    init: &AtomicU32,
    stop: &AtomicBool,
) -> Result<(), String> {
    let node = NodeLedger::open_writable(node).map_err(|e| e.to_string())?;
    let usage = UsageLedger::attach(usage).map_err(|e| e.to_string())?;
    let limits = limits::read(limits).map_err(|e| e.to_string())?;
    std::thread::scope(|scope| {
        scope.spawn(|| pid_map::follow(&usage, init, stop));
        compute::publish_contention(&node, &usage, &limits, stop).map_err(|e| e.to_string())
    })
}
