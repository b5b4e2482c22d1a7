//! NVML's process lists inside a container name only the container's own processes.
//!
//! The driver lists every process on the device, under host PIDs: without this, a tenant that
//! asks NVML (`nvidia-smi`, a monitoring agent, a framework's memory report) sees its
//! neighbours. The container's processes are the live slots of its usage part; their host
//! PIDs come from the PID map the shim's publisher keeps ([`hami_ledger::LiveSlot`]). A
//! process whose host PID is not mapped yet (its first few milliseconds) is left out: hiding
//! a process of our own for a moment is better than showing a neighbour's.
//!
//! On the host (`hami run`, no container) nothing is filtered: the lists are the host's own.
//! The limiter's measurer reads the driver's unfiltered lists through the driver's pointer.

#![allow(non_snake_case)]

use hami_hooks::nvml::{
    NVML_ERROR_FUNCTION_NOT_FOUND, NVML_SUCCESS, c_uint, c_ulonglong, nvmlDevice_t,
    nvmlProcessInfo_t, nvmlProcessUtilizationSample_t, nvmlReturn_t, pfn,
};

use super::{Nvml, REGISTRY};
use crate::boundary::guarded;
use crate::config::confinement::Confinement;
use crate::runtime::{ProcessAccounts, engine};

/// The host PIDs of this container's processes; `None` when this process is not confined in
/// a container (nothing to filter).
pub fn own_host_pids() -> Option<Vec<u32>> {
    if Confinement::current() == Confinement::Host {
        return None;
    }
    // A confined process always has an engine; one that cannot build it refuses, and shows
    // nothing of the device's processes either.
    let Some(engine) = engine() else {
        return Some(Vec::new());
    };
    Some(match engine.accounts() {
        ProcessAccounts::Ledger(ledger) => ledger
            .usage
            .live_slots()
            .iter()
            .filter_map(|slot| slot.host_pid)
            .collect(),
        ProcessAccounts::Refused => Vec::new(),
    })
}

/// Keeps, in order and at the front of `entries`, those whose PID is in `own`; returns how
/// many were kept.
pub fn keep_own<T: Copy>(entries: &mut [T], pid: impl Fn(&T) -> c_uint, own: &[u32]) -> c_uint {
    let mut kept = 0usize;
    for index in 0..entries.len() {
        let entry = entries[index];
        if own.contains(&pid(&entry)) {
            entries[kept] = entry;
            kept += 1;
        }
    }
    c_uint::try_from(kept).unwrap_or(c_uint::MAX)
}

/// Filters the `*count` entries NVML wrote at `entries` down to the container's own.
///
/// # Safety
/// `entries` holds `*count` initialized entries written by NVML, and `count` is valid.
unsafe fn filter_in_place<T: Copy>(
    entries: *mut T,
    count: *mut c_uint,
    pid: impl Fn(&T) -> c_uint,
) {
    if entries.is_null() || count.is_null() {
        return;
    }
    guarded(
        || {
            let Some(own) = own_host_pids() else {
                return;
            };
            // SAFETY: the caller's contract: `count` is valid and NVML wrote `*count` entries.
            let list = unsafe { std::slice::from_raw_parts_mut(entries, *count as usize) };
            let kept = keep_own(list, pid, &own);
            // SAFETY: as above.
            unsafe { *count = kept };
        },
        // A fault while filtering shows nothing rather than the neighbours.
        // SAFETY: as above.
        || unsafe { *count = 0 },
    );
}

/// `nvmlDeviceGetComputeRunningProcesses_v3`, the container's processes only.
///
/// # Safety
/// NVML's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_t,
) -> nvmlReturn_t {
    let real = crate::real_or!(
        REGISTRY,
        Nvml::nvmlDeviceGetComputeRunningProcesses_v3,
        pfn::nvmlDeviceGetComputeRunningProcesses_v3,
        NVML_ERROR_FUNCTION_NOT_FOUND
    );
    // SAFETY: forwarded unchanged.
    let code = unsafe { real(device, info_count, infos) };
    if code == NVML_SUCCESS {
        // SAFETY: on success NVML wrote `*info_count` entries at `infos`.
        unsafe { filter_in_place(infos, info_count, |info| info.pid) };
    }
    code
}
const _: pfn::nvmlDeviceGetComputeRunningProcesses_v3 = nvmlDeviceGetComputeRunningProcesses_v3;

/// `nvmlDeviceGetProcessUtilization`, the container's processes only.
///
/// # Safety
/// NVML's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetProcessUtilization(
    device: nvmlDevice_t,
    utilization: *mut nvmlProcessUtilizationSample_t,
    process_samples_count: *mut c_uint,
    last_seen_time_stamp: c_ulonglong,
) -> nvmlReturn_t {
    let real = crate::real_or!(
        REGISTRY,
        Nvml::nvmlDeviceGetProcessUtilization,
        pfn::nvmlDeviceGetProcessUtilization,
        NVML_ERROR_FUNCTION_NOT_FOUND
    );
    // SAFETY: forwarded unchanged.
    let code = unsafe {
        real(
            device,
            utilization,
            process_samples_count,
            last_seen_time_stamp,
        )
    };
    if code == NVML_SUCCESS {
        // SAFETY: on success NVML wrote `*process_samples_count` samples at `utilization`.
        unsafe { filter_in_place(utilization, process_samples_count, |sample| sample.pid) };
    }
    code
}
const _: pfn::nvmlDeviceGetProcessUtilization = nvmlDeviceGetProcessUtilization;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_containers_processes_are_kept_in_order() {
        let mut pids = [40u32, 7, 41, 9, 42];
        let kept = keep_own(&mut pids, |p| *p, &[42, 40, 41]);
        assert_eq!(kept, 3);
        assert_eq!(&pids[..3], &[40, 41, 42]);
        assert_eq!(keep_own(&mut pids, |p| *p, &[]), 0);
    }
}
