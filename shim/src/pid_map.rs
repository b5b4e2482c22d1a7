//! The PID map: which host PID each of a container's processes has, written next to its slot
//! in the container's usage part.
//!
//! NVML reports processes under their host PIDs; a process in the container's PID namespace
//! registers its slot under the PID it knows, which NVML never reports. The container's
//! compute measurer reads the host PIDs written here instead (`ledger/src/usage/host_pids.rs`).
//! The host side finds the container's processes in its cgroup (every process of the
//! container, `exec`s included, is in it) and learns the PID each one has inside the container
//! from the last field of `NSpid` in `/proc/PID/status`. A process counts only when it is in
//! the container's PID namespace, so a cgroup that holds more than the container (a shared
//! cgroup v1 hierarchy, a misread path) cannot lend a stranger's PID to a slot.
//!
//! This runs in the container's publisher process (`contention.rs` says why not in the shim):
//! the usage part is a file the container can truncate under a mapping.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use hami_ledger::{SlotState, UsageLedger};

/// How often the map is brought up to date while a live slot has no host PID.
pub const PERIOD: Duration = Duration::from_millis(10);

/// Where `/proc` and the cgroup hierarchies are (a test points them elsewhere).
#[derive(Clone, Debug)]
pub struct HostPaths {
    pub proc: PathBuf,
    pub cgroup: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        Self {
            proc: "/proc".into(),
            cgroup: "/sys/fs/cgroup".into(),
        }
    }
}

/// A running container's processes, as the host sees them.
#[derive(Debug)]
pub struct ContainerProcesses {
    paths: HostPaths,
    /// `cgroup.procs` of the container's cgroup.
    procs: PathBuf,
    /// Device and inode of the container's PID namespace.
    namespace: (u64, u64),
}

impl ContainerProcesses {
    /// The processes of the container whose first process is `init` (a host PID).
    pub fn of(init: u32, paths: HostPaths) -> std::io::Result<Self> {
        let namespace = pid_namespace(&paths.proc, init)?;
        let cgroups = std::fs::read_to_string(paths.proc.join(format!("{init}/cgroup")))?;
        let procs = procs_files(&cgroups, &paths.cgroup)
            .into_iter()
            .find(|file| read_pids(file).contains(&init))
            .ok_or_else(|| {
                std::io::Error::other(format!("no cgroup of process {init} lists it"))
            })?;
        Ok(Self {
            paths,
            procs,
            namespace,
        })
    }

    /// `(host PID, PID in the container)` of each process in the container now.
    pub fn list(&self) -> Vec<(u32, u32)> {
        read_pids(&self.procs)
            .into_iter()
            .filter(|&pid| pid_namespace(&self.paths.proc, pid).ok() == Some(self.namespace))
            .filter_map(|pid| Some((pid, innermost_pid(&self.paths.proc, pid)?)))
            .collect()
    }
}

/// The `cgroup.procs` files that may list a process whose `/proc/PID/cgroup` is `cgroups`:
/// the unified hierarchy first, then each v1 hierarchy (`pids` and `memory` are the ones
/// runc always joins).
fn procs_files(cgroups: &str, root: &Path) -> Vec<PathBuf> {
    let mut unified = Vec::new();
    let mut v1 = Vec::new();
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        if id == "0" && controllers.is_empty() {
            unified.push(root.join(relative).join("cgroup.procs"));
            unified.push(root.join("unified").join(relative).join("cgroup.procs"));
        } else {
            for controller in controllers.split(',') {
                let name = controller.strip_prefix("name=").unwrap_or(controller);
                let file = root.join(name).join(relative).join("cgroup.procs");
                if matches!(name, "pids" | "memory") {
                    v1.insert(0, file);
                } else {
                    v1.push(file);
                }
            }
        }
    }
    unified.extend(v1);
    unified
}

/// The PIDs in a `cgroup.procs` file; nothing when it cannot be read.
fn read_pids(file: &Path) -> Vec<u32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

fn pid_namespace(proc: &Path, pid: u32) -> std::io::Result<(u64, u64)> {
    let link = std::fs::metadata(proc.join(format!("{pid}/ns/pid")))?;
    Ok((link.dev(), link.ino()))
}

/// The PID of `pid` in its innermost namespace: the last field of `NSpid`.
fn innermost_pid(proc: &Path, pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(proc.join(format!("{pid}/status"))).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// Writes the host PID of every live slot that lacks one; returns how many live slots still
/// have none (their process is not, or no longer, in the container).
pub fn update(usage: &UsageLedger, processes: &ContainerProcesses) -> usize {
    let unmapped: Vec<_> = live_unmapped(usage);
    if unmapped.is_empty() {
        return 0;
    }
    let listed = processes.list();
    let mut left = 0;
    for slot in unmapped {
        match listed.iter().find(|(_, inner)| *inner == slot.pid) {
            Some(&(host, _)) => usage.set_host_pid(slot.index, slot.generation, host),
            None => left += 1,
        }
    }
    left
}

/// Slots owned by a live process with no host PID yet.
fn live_unmapped(usage: &UsageLedger) -> Vec<hami_ledger::SlotSnapshot> {
    usage
        .snapshot()
        .slots
        .into_iter()
        .filter(|s| s.state == SlotState::Live && s.alive != Some(false) && s.host_pid.is_none())
        .collect()
}

/// Keeps the map of `usage` up to date until `stop`; `init` is 0 until the shim says which
/// host PID the container's first process has.
pub fn follow(usage: &UsageLedger, init: &AtomicU32, stop: &AtomicBool) {
    let mut processes: Option<ContainerProcesses> = None;
    while !stop.load(Ordering::Relaxed) {
        if processes.is_none() {
            let pid = init.load(Ordering::Acquire);
            if pid != 0 {
                match ContainerProcesses::of(pid, HostPaths::default()) {
                    Ok(found) => processes = Some(found),
                    // Logged once; the container's measurer stays on the safe side meanwhile.
                    Err(e) => {
                        eprintln!("pid map: {e}");
                        return;
                    }
                }
            }
        }
        if let Some(processes) = &processes {
            update(usage, processes);
        }
        std::thread::sleep(PERIOD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unified_hierarchy_comes_first_then_pids_and_memory() {
        let cgroups = "12:cpu,cpuacct:/default/c1\n\
                       5:memory:/default/c1\n\
                       3:pids:/default/c1\n\
                       1:name=systemd:/default/c1\n\
                       0::/default/c1\n";
        let files = procs_files(cgroups, Path::new("/cg"));
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        assert_eq!(names[0], "/cg/default/c1/cgroup.procs");
        assert_eq!(names[1], "/cg/unified/default/c1/cgroup.procs");
        assert!(names[2..4].contains(&"/cg/pids/default/c1/cgroup.procs".to_owned()));
        assert!(names[2..4].contains(&"/cg/memory/default/c1/cgroup.procs".to_owned()));
        assert!(names.contains(&"/cg/systemd/default/c1/cgroup.procs".to_owned()));
        assert!(names.contains(&"/cg/cpu/default/c1/cgroup.procs".to_owned()));
    }

    #[test]
    fn a_process_reads_as_itself_on_the_host() {
        let me = std::process::id();
        let processes = ContainerProcesses::of(me, HostPaths::default())
            .expect("this process's cgroup lists it");
        let listed = processes.list();
        assert!(
            listed.contains(&(me, me)),
            "in the host's namespace a process's PIDs agree: {listed:?}"
        );
    }

    #[test]
    fn live_slots_get_the_host_pid_of_the_process_with_their_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.ledger");
        UsageLedger::create(&path, 1).unwrap();
        let usage = UsageLedger::attach(&path).unwrap();
        let slot = usage.register().unwrap();
        let processes = ContainerProcesses::of(std::process::id(), HostPaths::default()).unwrap();
        assert_eq!(update(&usage, &processes), 0);
        let live = usage.live_slots();
        assert_eq!(live[0].index, slot.index());
        assert_eq!(live[0].host_pid, Some(std::process::id()));
    }
}
