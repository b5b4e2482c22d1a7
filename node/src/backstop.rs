//! The enforcement backstop: what the preload library cannot stop (a private copy of the
//! driver, `dlmopen`, raw ioctls, a forged usage counter), caught from outside the container.
//!
//! Each pass reads, per device, the memory the driver says each process holds
//! (`nvml_processes.rs`, host PIDs), maps the processes to containers (the container's cgroup
//! found from its first process, or the process tree of a `hami run` root:
//! `hami_ledger::owner::ProcessAnchor`, `processes.rs`), sums per container and device, and
//! compares with the cap in the container's limits part (written by the host, read-only to the
//! container). The container's own usage part is never read: its counters are the container's
//! to write, so a forged counter changes nothing here.
//!
//! Over the cap: a log line and [`OverCapSample`]s for the metrics; under `enforce = kill`,
//! the container's processes on that device are killed with SIGKILL, the largest holder first,
//! until what is left fits the cap. A kill goes through a pidfd taken before the process's
//! membership is checked once more, so a PID reused in between is never signalled.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hami_ledger::owner::ProcessAnchor;
use hami_ledger::paths::LedgerDir;

use crate::metrics::{OverCapSample, ScrapeExtras};
use crate::nvml_processes::{DeviceProcess, NvmlError, NvmlProcesses};
use crate::processes::{HostPaths, Members};

/// What the backstop does about a container over its cap (node setting `enforce`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enforcement {
    /// Log and export the finding.
    Report,
    /// Also kill the offending processes, largest first, until the container fits.
    Kill,
}

impl Enforcement {
    /// Accepted words, for error messages.
    pub const ACCEPTED: &str = "report, kill";

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "report" => Some(Self::Report),
            "kill" => Some(Self::Kill),
            _ => None,
        }
    }
}

/// What the metrics endpoint reads: the last pass's findings and the kills so far.
#[derive(Debug, Default)]
pub struct BackstopFindings {
    over_cap: Mutex<Vec<OverCapSample>>,
    kills: AtomicU64,
}

impl ScrapeExtras for BackstopFindings {
    fn over_cap(&self) -> Vec<OverCapSample> {
        self.over_cap
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn kills(&self) -> u64 {
        self.kills.load(Ordering::Relaxed)
    }
}

/// What one pass found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackstopReport {
    /// One sample per process of a container over its cap on a device.
    pub over_cap: Vec<OverCapSample>,
    /// Host PIDs killed by this pass.
    pub killed: Vec<u32>,
    /// Entries the pass could not check, with the reason.
    pub problems: Vec<String>,
}

/// The backstop of one node.
pub struct Backstop {
    ledger: LedgerDir,
    nvml: NvmlProcesses,
    enforcement: Enforcement,
    paths: HostPaths,
    /// Each container's processes, resolved once from its anchor while its first process
    /// still lives (so a later reuse of that PID is never taken for the container).
    members: HashMap<String, (ProcessAnchor, Members)>,
    findings: Arc<BackstopFindings>,
}

impl Backstop {
    pub fn new(ledger: LedgerDir, nvml: NvmlProcesses, enforcement: Enforcement) -> Self {
        Self {
            ledger,
            nvml,
            enforcement,
            paths: HostPaths::default(),
            members: HashMap::new(),
            findings: Arc::default(),
        }
    }

    /// What the metrics endpoint reads.
    pub fn findings(&self) -> Arc<BackstopFindings> {
        Arc::clone(&self.findings)
    }

    /// One pass over every device and entry.
    pub fn pass(&mut self) -> Result<BackstopReport, NvmlError> {
        let devices = self.nvml.snapshot()?;
        let mut report = BackstopReport::default();
        let ids = self.entry_ids();
        self.members.retain(|id, _| ids.contains(id));
        for id in &ids {
            self.check_container(id, &devices, &mut report);
        }
        *self
            .findings
            .over_cap
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = report.over_cap.clone();
        self.findings
            .kills
            .fetch_add(report.killed.len() as u64, Ordering::Relaxed);
        Ok(report)
    }

    fn entry_ids(&self) -> Vec<String> {
        let Ok(listing) = std::fs::read_dir(self.ledger.root().join("containers")) else {
            return Vec::new();
        };
        listing
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| self.ledger.container_dir(id).is_ok())
            .collect()
    }

    fn check_container(
        &mut self,
        id: &str,
        devices: &[(String, Vec<DeviceProcess>)],
        report: &mut BackstopReport,
    ) {
        let Ok(dir) = self.ledger.container_dir(id) else {
            return;
        };
        let limits = match self.ledger.limits(id).map(hami_ledger::limits::read) {
            Ok(Ok(limits)) => limits,
            // Being written, or removed since the listing: nothing to hold it to yet.
            Ok(Err(_)) | Err(_) if !dir.join("limits.ledger").exists() => return,
            Ok(Err(e)) => return report.problems.push(format!("entry {id}: {e}")),
            Err(e) => return report.problems.push(format!("entry {id}: {e}")),
        };
        let anchor = match ProcessAnchor::read(&dir) {
            Ok(Some(anchor)) => anchor,
            // The container has not started yet (the shim records its first PID at start).
            Ok(None) => return,
            Err(e) => return report.problems.push(format!("entry {id}: {e}")),
        };
        let known = matches!(self.members.get(id), Some((recorded, _)) if *recorded == anchor);
        if !known {
            match Members::resolve(anchor, self.paths.clone()) {
                Ok(members) => {
                    self.members.insert(id.to_owned(), (anchor, members));
                }
                Err(e) => {
                    return report
                        .problems
                        .push(format!("entry {id}: cannot find its processes: {e}"));
                }
            }
        }
        let Some((_, members)) = self.members.get(id) else {
            return;
        };
        let pids = members.host_pids();
        for limit in &limits.devices {
            let Some(cap) = limit.memory_limit else {
                continue;
            };
            let Some((_, processes)) = devices.iter().find(|(uuid, _)| *uuid == limit.uuid) else {
                continue;
            };
            let mut holders: Vec<DeviceProcess> = processes
                .iter()
                .filter(|p| pids.contains(&p.pid))
                .copied()
                .collect();
            let total: u64 = holders.iter().map(|p| p.used_bytes).sum();
            if total <= cap {
                continue;
            }
            log::warn!(
                "container {id} holds {total} bytes on {} beyond its cap of {cap} (processes {:?})",
                limit.uuid,
                holders.iter().map(|p| p.pid).collect::<Vec<_>>()
            );
            report
                .over_cap
                .extend(holders.iter().map(|p| OverCapSample {
                    container_id: id.to_owned(),
                    device_uuid: limit.uuid.clone(),
                    pid: p.pid,
                    used_bytes: p.used_bytes,
                    limit_bytes: cap,
                }));
            if self.enforcement == Enforcement::Kill {
                holders.sort_by_key(|p| std::cmp::Reverse(p.used_bytes));
                let mut left = total;
                for holder in holders {
                    if left <= cap {
                        break;
                    }
                    match kill_member(holder.pid, members) {
                        Ok(()) => {
                            log::warn!(
                                "container {id}: killed process {} ({} bytes on {})",
                                holder.pid,
                                holder.used_bytes,
                                limit.uuid
                            );
                            report.killed.push(holder.pid);
                            left = left.saturating_sub(holder.used_bytes);
                        }
                        Err(e) => report.problems.push(format!(
                            "container {id}: cannot kill process {}: {e}",
                            holder.pid
                        )),
                    }
                }
            }
        }
    }
}

/// SIGKILL to `pid` through a pidfd, after checking once more, with the pidfd held, that the
/// process is still the container's (a PID that was reused since the listing is left alone).
fn kill_member(pid: u32, members: &Members) -> std::io::Result<()> {
    let raw_pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: pidfd_open takes a PID and flags by value and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw_pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let raw_fd = i32::try_from(fd).map_err(std::io::Error::other)?;
    // SAFETY: `raw_fd` is a descriptor the kernel just returned to us and nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw_fd) };
    if !members.host_pids().contains(&pid) {
        return Err(std::io::Error::other("it left the container"));
    }
    // SAFETY: pidfd_send_signal takes the pidfd, a signal number, a null siginfo and flags 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
