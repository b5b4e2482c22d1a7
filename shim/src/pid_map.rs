//! The PID map: which host PID each of a container's processes has, written next to its slot
//! in the container's usage part.
//!
//! NVML reports processes under their host PIDs; a process in the container's PID namespace
//! registers its slot under the PID it knows, which NVML never reports. The container's
//! compute measurer reads the host PIDs written here instead (`ledger/src/usage/host_pids.rs`).
//! The host side finds the container's processes in its cgroup and the PID each one has
//! inside the container (`hami_node::processes`, shared with the node agent's backstop).
//!
//! This runs in the container's publisher process (`contention.rs` says why not in the shim):
//! the usage part is a file the container can truncate under a mapping.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use hami_ledger::{SlotState, UsageLedger};
pub use hami_node::processes::{ContainerProcesses, HostPaths};

/// How often the map is brought up to date while a live slot has no host PID.
pub const PERIOD: Duration = Duration::from_millis(10);

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
