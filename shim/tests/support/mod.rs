//! A private containerd for end-to-end tests: config, state, sockets and ledger under a tempdir,
//! the shim under test on its PATH, and the helpers the ctr and CRI tests share.
//!
//! A test that finds containerd, runc or busybox missing fails when `CI=true` and otherwise
//! prints a visible `SKIPPED` line (install: `apt-get install containerd runc busybox-static`).
//!
//! `HAMI_CONTAINERD_BIN=<dir>` runs the tests on the `containerd`, `ctr` and
//! `containerd-shim-runc-v2` of `<dir>` (the shim's backend too) instead of those on PATH:
//! `scripts/containerd-versions.sh` unpacks Debian's 1.7 and 2.x there. containerd 2.x gets its
//! own configuration format (version 3).

#![allow(dead_code)]

pub mod containerd;
pub mod cri;
pub mod ctr;
pub mod gpu;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hami_ledger::{DeviceInfo, NodeLedger, Vendor};

pub use containerd::tool;
use containerd::{containerd_config, tool_path};

/// One containerd at a time per test binary: the machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

pub const GIB: u64 = 1 << 30;

/// Tools the end-to-end tests run.
const REQUIRED_TOOLS: [&str; 5] = [
    "containerd",
    "ctr",
    "runc",
    "containerd-shim-runc-v2",
    "busybox",
];

/// Returns `None` (after printing why) when the tests cannot run here; panics under `CI=true`.
pub fn require_tools(test: &str) -> Option<()> {
    let missing: Vec<&str> = REQUIRED_TOOLS
        .iter()
        .copied()
        .filter(|t| tool(t).is_none())
        .collect();
    if missing.is_empty() {
        if !nix::unistd::geteuid().is_root() {
            return skip(test, "containerd needs root");
        }
        return Some(());
    }
    skip(
        test,
        &format!(
            "missing {} (apt-get install containerd runc busybox-static)",
            missing.join(", ")
        ),
    )
}

fn skip(test: &str, why: &str) -> Option<()> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    None
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// The shim binary built for this test run.
pub fn shim_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_containerd-shim-hami-v2"))
}

/// `<target>/<profile>/`, where sibling crates' artifacts (libhami.so, fakegpu) are built.
pub fn profile_dir() -> PathBuf {
    shim_binary()
        .parent()
        .expect("binary has a directory")
        .to_owned()
}

/// A unique suffix for ids and names in this process.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A running private containerd.
pub struct Lab {
    pub dir: tempfile::TempDir,
    /// The ledger lives on tmpfs when the machine has one, as `/run/hami` does on nodes.
    ledger: tempfile::TempDir,
    containerd: Option<Child>,
    extra_env: Vec<(String, String)>,
    _serial: MutexGuard<'static, ()>,
}

impl Lab {
    /// Starts containerd with the shim on its PATH; `extra_env` reaches the shim (e.g. the
    /// simulated NVML's `LD_LIBRARY_PATH`).
    pub fn start(extra_env: &[(&str, &str)]) -> Lab {
        let serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = tempfile::Builder::new()
            .prefix("hami-shim-")
            .tempdir_in("/tmp")
            .unwrap();
        let root = dir.path();
        for sub in ["bin", "root", "state", "cni-bin", "cni-conf"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::os::unix::fs::symlink(shim_binary(), root.join("bin/containerd-shim-hami-v2"))
            .unwrap();
        std::fs::write(root.join("config.toml"), containerd_config(root)).unwrap();
        let library = root.join("libhami-placeholder.so");
        std::fs::write(&library, b"").unwrap();
        let shm = Path::new("/dev/shm");
        let ledger_parent = if shm.is_dir() { shm } else { root };
        let ledger = tempfile::Builder::new()
            .prefix("hami-ledger-")
            .tempdir_in(ledger_parent)
            .unwrap();
        let mut lab = Lab {
            dir,
            ledger,
            containerd: None,
            extra_env: extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            _serial: serial,
        };
        lab.write_shim_config(&library);
        lab.start_containerd();
        lab
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn ledger_dir(&self) -> PathBuf {
        self.ledger.path().to_owned()
    }

    pub fn address(&self) -> PathBuf {
        self.root().join("containerd.sock")
    }

    /// Rewrites the shim's config (read at every Create) with another library path.
    pub fn write_shim_config(&self, library: &Path) {
        self.write_shim_config_with(library, "");
    }

    /// Rewrites the shim's config with another library path and `extra` TOML lines (which may
    /// name another `backend_shim`).
    pub fn write_shim_config_with(&self, library: &Path, extra: &str) {
        let backend = if extra.contains("backend_shim") {
            String::new()
        } else {
            format!(
                "backend_shim = {:?}\n",
                tool_path("containerd-shim-runc-v2")
            )
        };
        let text = format!(
            "ledger_dir = {:?}\nlibrary_path = {:?}\n{backend}log_level = \"debug\"\n{extra}",
            self.ledger_dir(),
            library,
        );
        std::fs::write(self.root().join("shim.toml"), text).unwrap();
    }

    /// Starts containerd on the lab's configuration and waits until it serves.
    pub fn start_containerd(&mut self) {
        let root = self.root().to_owned();
        // The shim under test first, then the containerd under test (its runc shim).
        let containerd = tool_path("containerd");
        let containerd_dir = containerd.parent().unwrap_or(Path::new("/usr/bin"));
        let path = format!(
            "{}:{}:{}",
            root.join("bin").display(),
            containerd_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(root.join("containerd.log"))
            .unwrap();
        let child = Command::new(&containerd)
            .arg("--config")
            .arg(root.join("config.toml"))
            .env("PATH", path)
            .env("HAMI_SHIM_CONFIG", root.join("shim.toml"))
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd starts");
        self.containerd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(self.address()).is_err() {
            assert!(
                Instant::now() < deadline,
                "containerd did not serve: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The CRI plugin registers shortly after the socket appears.
        while !self.ctr(&["plugins", "ls"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not answer: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops containerd (SIGTERM); running shims and containers stay.
    pub fn stop_containerd(&mut self) {
        if let Some(mut child) = self.containerd.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops and starts containerd; running shims and containers stay.
    pub fn restart_containerd(&mut self) {
        self.stop_containerd();
        self.start_containerd();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root().join("containerd.log")).unwrap_or_default()
    }

    /// Runs `ctr --address <lab> <args>`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command(args).output().expect("ctr runs")
    }

    /// `ctr` with `args` against this containerd, to spawn.
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(tool_path("ctr"));
        command
            .arg("--address")
            .arg(self.address())
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// Runs `ctr` and asserts success; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(out.status.success(), "ctr {args:?} failed: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes a node ledger with `count` devices of `memory` bytes each.
    pub fn write_node_ledger(&self, count: u32, memory: u64) -> Vec<String> {
        let devices: Vec<DeviceInfo> = (0..count)
            .map(|index| DeviceInfo {
                uuid: format!("GPU-00000000-0000-0000-0000-00000000000{index}"),
                index,
                vendor: Vendor::Nvidia,
                total_memory: memory,
                compute_units: 132,
            })
            .collect();
        NodeLedger::create(self.ledger_dir().join("node.ledger"), &devices).unwrap();
        devices.into_iter().map(|d| d.uuid).collect()
    }

    /// Container ids with a ledger entry.
    pub fn ledger_entries(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.ledger_dir().join("containers"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// The sockets of a pod's (or lone container's) shims: the backend runc shim's and the
    /// proxy's, named like containerd-shim does (sha256 of `<address>/<ns>/<grouping>`).
    pub fn shim_sockets(&self, namespace: &str, grouping: &str) -> Vec<PathBuf> {
        [grouping.to_owned(), format!("{grouping}-hami")]
            .iter()
            .map(|g| {
                let key = format!("{}/{namespace}/{g}", self.address().display());
                let mut child = Command::new("sha256sum")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                std::io::Write::write_all(&mut child.stdin.take().unwrap(), key.as_bytes())
                    .unwrap();
                let out = child.wait_with_output().unwrap();
                let hash = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_owned();
                PathBuf::from("/run/containerd/s").join(hash)
            })
            .collect()
    }

    /// Pids of processes whose command line contains `needle` (zombies excluded).
    pub fn processes_matching(&self, needle: &str) -> Vec<i32> {
        processes_matching(needle)
    }

    fn kill_leftovers(&self) {
        for namespace in ["default", "k8s.io"] {
            let tasks = self.ctr(&["-n", namespace, "tasks", "ls", "-q"]);
            for id in String::from_utf8_lossy(&tasks.stdout).lines() {
                let _ = self.ctr(&["-n", namespace, "tasks", "kill", "-a", "-s", "SIGKILL", id]);
                let _ = self.ctr(&["-n", namespace, "tasks", "rm", "-f", id]);
            }
            let containers = self.ctr(&["-n", namespace, "containers", "ls", "-q"]);
            for id in String::from_utf8_lossy(&containers.stdout).lines() {
                let _ = self.ctr(&["-n", namespace, "containers", "rm", id]);
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill_leftovers();
        self.stop_containerd();
        // Shims this containerd started carry its socket path in their arguments.
        let address = self.address().display().to_string();
        for pid in processes_matching(&address) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        unmount_under(self.root());
    }
}

/// Pids of live processes whose command line contains `needle`.
pub fn processes_matching(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(") ")
                    .map(|(_, rest)| rest.starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie && cmdline.contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

fn unmount_under(root: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let root = root.display().to_string();
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with(&root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// stdout and stderr of a command, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A busybox-static root filesystem (for `ctr run --rootfs`, or an image layer).
pub fn busybox_rootfs(dir: &Path) {
    for sub in [
        "bin", "proc", "sys", "dev", "tmp", "etc", "root", "run", "usr",
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let busybox = tool("busybox").expect("busybox is installed");
    std::fs::copy(&busybox, dir.join("bin/busybox")).unwrap();
    let list = Command::new(&busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
        }
    }
}

/// Waits until `check` holds, up to `timeout`.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
