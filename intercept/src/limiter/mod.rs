//! The compute limiter: every launch wrapper calls [`before_launch`] before handing the launch
//! to the driver, and the launch waits there (bounded) until the container's share of the
//! device allows it.
//!
//! # Design
//!
//! * **What is limited** is device time: a container capped at X % gets X % of the device's
//!   busy time. The budget is a token bucket in device-nanoseconds per container and device,
//!   refilled at X % of wall time, kept in the container's `ComputeCell` so that all of its
//!   processes, threads and streams draw on one budget (`hami_ledger::compute::Budget`), and
//!   each device independently.
//! * **Every launch kind is charged the same way**: `cuLaunchKernel`, `cuLaunchKernelEx`,
//!   `cuLaunchCooperativeKernel`, `cuGraphLaunch` and their per-thread-stream variants all call
//!   [`before_launch`]; a graph is charged at graph level.
//! * **Charge first, measure later.** A kernel's device time is unknown when it is launched,
//!   so the launch is charged an estimate before it is enqueued, and one process per container
//!   (the measurer, [`watcher`]) reads the container's measured busy time from NVML
//!   ([`busy`]) and trues the budget up ([`controller`]): the long-run debit equals the
//!   measured time, so the share converges to the cap whatever the estimates, while learned
//!   estimates keep the short term smooth.
//! * **Waiting** ([`gate`]): a launch that finds the budget short knows the exact instant its
//!   claim will be covered and sleeps on the cell's futex word until then (timer slack lowered
//!   to 1 µs), or until a measurer wakes it because budget or the rate went up. No sleep loop.
//! * **Policies**: `hard` refills at the cap, always. `burst` refills at the whole device while
//!   the node's contention view shows no other container wanting the device, and at the cap
//!   within about 0.1 s of someone else's first launch. **Priority**: a normal container yields
//!   while a high-priority container on the device launched in the last 50 ms.
//! * **Liveness**: one launch never waits more than 2 s for budget nor yields more than 1 s to
//!   priority, so a capped rank of a collective is slowed, never stopped.
//!
//! The hot path of a capped device (budget available, nothing to yield to) is a clock read and
//! a handful of atomics on the shared cell: no lock, syscall or allocation. An uncapped,
//! normal-priority device (gated only so that neighbours see its demand and so that it yields
//! to high priority) takes the [`lane`]: two process-local loads, kept current by the watcher
//! thread, and no clock; only a launch that may have to yield takes the gate's full path.

pub mod busy;
pub mod controller;
pub mod gate;
pub mod lane;
pub mod process;
pub mod watcher;

#[cfg(test)]
mod simulated_device_tests;

use std::sync::OnceLock;

use process::ProcessLimiter;

/// How a launch reaches the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchKind {
    /// `cuLaunchKernel` (and `_ptsz`).
    Kernel,
    /// `cuLaunchKernelEx` (and `_ptsz`).
    KernelEx,
    /// `cuLaunchCooperativeKernel` (and `_ptsz`): all blocks co-resident, often one rank of a
    /// collective.
    Cooperative,
    /// `cuGraphLaunch` (and `_ptsz`): a whole graph at once.
    Graph,
}

/// One launch as the limiter sees it. The device is computed only if asked for, so a limiter
/// with nothing to do costs no driver call.
pub struct LaunchSite<'a> {
    pub kind: LaunchKind,
    /// The stream handle as an integer (0: legacy default stream).
    pub stream: usize,
    /// Whether the entry point was a per-thread-default-stream (`_ptsz`) variant.
    pub per_thread: bool,
    device: &'a dyn Fn() -> Option<usize>,
}

impl<'a> LaunchSite<'a> {
    /// A launch site; `device` yields the container device index of the current context.
    pub fn new(
        kind: LaunchKind,
        stream: usize,
        per_thread: bool,
        device: &'a dyn Fn() -> Option<usize>,
    ) -> LaunchSite<'a> {
        LaunchSite {
            kind,
            stream,
            per_thread,
            device,
        }
    }

    /// The container device index the launch runs on (`None`: not a device of the container,
    /// or nothing is capped).
    pub fn device_slot(&self) -> Option<usize> {
        (self.device)()
    }
}

/// The process's limiter, built at the first launch; `None` when nothing is capped.
/// The process's compute configuration, read once.
#[derive(Clone, Copy)]
enum Limiter {
    Uncapped,
    Capped(&'static ProcessLimiter),
    /// A compute cap is set but cannot be read: fail closed, as memory does.
    Refused,
}

static LIMITER: OnceLock<Limiter> = OnceLock::new();

/// A launch the limiter refuses: a compute cap is configured but cannot be enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchRefused;

/// Called before every launch; may wait (bounded) until the container's compute share allows
/// the launch. Fails only when a compute cap is set but unreadable (the log said why, once).
#[inline(always)]
pub fn before_launch(site: &LaunchSite<'_>) -> Result<(), LaunchRefused> {
    let limiter = LIMITER.get_or_init(|| match ProcessLimiter::from_env() {
        Ok(Some(limiter)) => Limiter::Capped(limiter),
        Ok(None) => Limiter::Uncapped,
        Err(_) => Limiter::Refused,
    });
    match *limiter {
        Limiter::Uncapped => Ok(()),
        Limiter::Capped(limiter) => {
            gate_launch(limiter, site);
            Ok(())
        }
        Limiter::Refused => Err(LaunchRefused),
    }
}

#[inline(never)]
fn gate_launch(limiter: &'static ProcessLimiter, site: &LaunchSite<'_>) {
    // Ledger mode: the container's device index. Standalone caps (`CUDA_DEVICE_SM_LIMIT_i`)
    // are per CUDA ordinal, and there may be no memory engine to map one to an index.
    let index = site.device_slot().or_else(|| {
        limiter
            .by_ordinal
            .then(crate::cuda::devices::current_ordinal)
            .and_then(Result::ok)
            .and_then(|ordinal| usize::try_from(ordinal).ok())
    });
    let Some(device) = index.and_then(|index| limiter.device(index)) else {
        return;
    };
    watcher::ensure_running(limiter);
    device.gate.admit();
}
