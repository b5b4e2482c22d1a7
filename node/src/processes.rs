//! A container's processes as the host sees them: from the cgroup of its first process
//! (containers started by the shim), or the process tree under a root process (`hami run`).
//!
//! One copy of this logic serves the shim's PID map (host PID per process slot) and the node
//! agent's enforcement backstop (which processes' device memory is the container's).
//!
//! Cgroup: every process of the container, `exec`s included, is in its cgroup; a process
//! counts only when it is also in the container's PID namespace, so a cgroup that holds more
//! than the container (a shared cgroup v1 hierarchy, a misread path) cannot lend a stranger's
//! PID. The PID a process has inside the container is the last field of `NSpid` in
//! `/proc/PID/status`.
//!
//! Tree: the root and its descendants by parent PID (`/proc/PID/stat`), as long as the root
//! is the process that was recorded (its start time has not changed: no PID reuse).

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use hami_ledger::owner::ProcessAnchor;

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

/// A running container's processes, found through its cgroup.
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

/// A process and its descendants.
#[derive(Debug)]
pub struct ProcessTree {
    proc: PathBuf,
    root: u32,
    /// The root's start time (clock ticks after boot): a reused PID has another.
    started: u64,
}

impl ProcessTree {
    /// The tree under `root` (a host PID), which must exist now.
    pub fn of(root: u32, proc: &Path) -> std::io::Result<Self> {
        let stat = read_stat(proc, root)
            .ok_or_else(|| std::io::Error::other(format!("process {root} does not exist")))?;
        Ok(Self {
            proc: proc.to_owned(),
            root,
            started: stat.started,
        })
    }

    /// Host PIDs of the root and its descendants now; empty once the root is gone.
    pub fn list(&self) -> Vec<u32> {
        if read_stat(&self.proc, self.root).map(|s| s.started) != Some(self.started) {
            return Vec::new();
        }
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for pid in all_pids(&self.proc) {
            if let Some(stat) = read_stat(&self.proc, pid) {
                children.entry(stat.parent).or_default().push(pid);
            }
        }
        let mut members = vec![self.root];
        let mut seen = HashSet::from([self.root]);
        let mut next = 0;
        while let Some(&pid) = members.get(next) {
            next += 1;
            for &child in children.get(&pid).into_iter().flatten() {
                if seen.insert(child) {
                    members.push(child);
                }
            }
        }
        members
    }
}

/// The processes of one container, however its entry anchors them.
#[derive(Debug)]
pub enum Members {
    Cgroup(ContainerProcesses),
    Tree(ProcessTree),
}

impl Members {
    /// Resolves `anchor` now (its process must be alive).
    pub fn resolve(anchor: ProcessAnchor, paths: HostPaths) -> std::io::Result<Self> {
        match anchor {
            ProcessAnchor::Cgroup { init_pid } => {
                ContainerProcesses::of(init_pid, paths).map(Self::Cgroup)
            }
            ProcessAnchor::Tree { root_pid } => {
                ProcessTree::of(root_pid, &paths.proc).map(Self::Tree)
            }
        }
    }

    /// Host PIDs of the container's processes now.
    pub fn host_pids(&self) -> Vec<u32> {
        match self {
            Self::Cgroup(processes) => processes.list().into_iter().map(|(host, _)| host).collect(),
            Self::Tree(tree) => tree.list(),
        }
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

/// Every numeric entry of `/proc`.
fn all_pids(proc: &Path) -> Vec<u32> {
    std::fs::read_dir(proc)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

struct Stat {
    parent: u32,
    started: u64,
}

/// Parent PID and start time from `/proc/PID/stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
fn read_stat(proc: &Path, pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(proc.join(format!("{pid}/stat"))).ok()?;
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state (3), ppid (4), ... starttime (22).
    Some(Stat {
        parent: fields.get(1)?.parse().ok()?,
        started: fields.get(19)?.parse().ok()?,
    })
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
    fn a_tree_holds_its_descendants_and_not_its_parent() {
        let mut sleeper = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .spawn()
            .unwrap();
        let tree = ProcessTree::of(sleeper.id(), Path::new("/proc")).unwrap();
        let mut listed = tree.list();
        for _ in 0..200 {
            if listed.len() >= 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
            listed = tree.list();
        }
        for &pid in &listed {
            // SAFETY: kill has no memory arguments; these are this test's own children.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        sleeper.wait().unwrap();
        assert_eq!(listed[0], sleeper.id());
        assert_eq!(listed.len(), 3, "the shell and its two sleeps: {listed:?}");
        assert!(!listed.contains(&std::process::id()));
        assert!(tree.list().is_empty(), "a dead root has no tree");
    }

    #[test]
    fn a_stat_line_with_parentheses_in_the_name_parses() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("9")).unwrap();
        let line = "9 (a) b (c)) S 4 9 9 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 777 0 0\n";
        std::fs::write(dir.path().join("9/stat"), line).unwrap();
        let stat = read_stat(dir.path(), 9).unwrap();
        assert_eq!((stat.parent, stat.started), (4, 777));
    }
}
