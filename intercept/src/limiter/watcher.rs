//! The watcher thread: one per process that launched on a gated device. On capped devices
//! exactly one per container and device (the holder of the cell's lease) measures and corrects.
//!
//! Every [`PERIOD`] the thread renews or tries to take the lease of each capped device. The
//! holder reads the container's busy time from its [`BusySource`] and runs the
//! [`Controller`]; the others only sleep. A holder that dies or stops stops renewing, and
//! another process takes over within [`LEASE_NS`]. On uncapped, normal-priority devices it
//! refreshes the process's [`UncappedLane`](super::lane::UncappedLane) instead, which is what
//! lets their launches skip the clock and the contention view. Nothing here is on a launch's
//! path.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hami_ledger::compute::PPM;
use hami_ledger::compute::futex::{monotonic_ns, wake_all};

use super::busy::{BusySource, NvmlBusy};
use super::controller::Controller;
use super::process::{NvmlPids, ProcessLimiter};
use crate::hami_log;
use crate::log::Level;

/// Measurement period.
pub const PERIOD: Duration = Duration::from_millis(25);
/// Periods between two debug lines (`HAMI_LOG=debug`): one a second.
const LOG_EVERY: u64 = 40;
/// A container that launched nothing for this long is not measured until it launches again.
const IDLE_NS: u64 = 2_000_000_000;
/// How long a measurer's lease lasts without renewal.
pub const LEASE_NS: u64 = 250_000_000;
/// How long the container's host PIDs may stay unknown before the log says so (a new
/// process is mapped within a few of the publisher's 10 ms periods).
const UNMAPPED_LOG_NS: u64 = 1_000_000_000;

/// Whether this process runs its watcher (reset in a forked child, whose threads are gone).
static STARTED: AtomicBool = AtomicBool::new(false);

extern "C" fn after_fork_in_child() {
    STARTED.store(false, Ordering::Release);
}

/// Starts the watcher thread of this process unless it runs (one atomic load when it does).
#[inline]
pub fn ensure_running(limiter: &'static ProcessLimiter) {
    if STARTED.load(Ordering::Acquire) || STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    static FORK_HANDLER: AtomicBool = AtomicBool::new(false);
    if !FORK_HANDLER.swap(true, Ordering::AcqRel) {
        // SAFETY: the handler performs one atomic store, which is allowed in a forked child.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    }
    let spawned = std::thread::Builder::new()
        .name("hami-limiter".into())
        .spawn(move || run(limiter));
    if let Err(err) = spawned {
        hami_log!(Level::Warn, "no limiter watcher (estimates only): {err}");
    }
}

fn run(limiter: &'static ProcessLimiter) {
    let pid = std::process::id();
    let mut source: Option<Option<NvmlBusy>> = None;
    let mut controllers = vec![Controller::default(); limiter.devices.len()];
    let mut rounds = 0u64;
    let mut unmapped = Unmapped::default();
    loop {
        rounds += 1;
        let now = monotonic_ns();
        let mut pids: Option<NvmlPids> = None;
        for (index, device) in limiter.devices.iter().enumerate() {
            let Some(device) = device else { continue };
            let config = device.gate.config();
            let budget = device.gate.budget();
            if let Some(lane) = device.gate.lane() {
                lane.refresh(budget, device.gate.contention());
            }
            if config.cap_ppm >= PPM {
                continue;
            }
            if !budget.hold_measurer_lease(pid, now, LEASE_NS) {
                continue;
            }
            if now.saturating_sub(budget.last_demand_ns()) > IDLE_NS {
                // Nothing launched lately: nothing to measure or correct, and NVML queries are
                // not free on a real GPU. The cursor resumes where it stopped.
                continue;
            }
            let pids = pids.get_or_insert_with(|| limiter.nvml_pids());
            let busy =
                source
                    .get_or_insert_with(NvmlBusy::open)
                    .as_mut()
                    .and_then(|nvml| match pids {
                        NvmlPids::Known(pids) => nvml.busy_since_last(&device.key, pids),
                        // Whose busy time is whose cannot be told: all of it is counted as the
                        // container's, and others as wanting the device. A hard cap then holds
                        // (the container is charged at least what it used); the device may be
                        // under-used until the map is known.
                        NvmlPids::Unmapped => nvml
                            .busy_since_last(&device.key, &[])
                            .map(|b| b.all_as_own()),
                    });
            unmapped.note(matches!(pids, NvmlPids::Unmapped), now);
            let measured = busy.map(|b| budget.measured_ns().saturating_add(b.own_ns));
            // Other processes busy for more than 2 % of the newly settled stretch want the
            // device (between samples nothing is known, and the controller holds the sign).
            let others_busy = busy.map(|b| {
                matches!(pids, NvmlPids::Unmapped)
                    || (b.period_ns > 0 && b.others_ns.saturating_mul(50) > b.period_ns)
            });
            let step = controllers[index].step(
                budget,
                device.gate.contention(),
                measured,
                others_busy,
                busy.map_or(0, |b| b.lag_ns),
                now,
                config.cap_ppm,
                config.burst,
            );
            if rounds.is_multiple_of(LOG_EVERY) {
                hami_log!(
                    Level::Debug,
                    "limiter device {index}: measured {} ms, charged {} ms, estimate {} us, rate {} ppm, throttled {} ms",
                    budget.measured_ns() / 1_000_000,
                    (i128::from(budget.estimated_total_ns()) + budget.net_correction_ns())
                        / 1_000_000,
                    budget.launch_estimate_ns() / 1_000,
                    step.rate_ppm,
                    budget.throttled_ns() / 1_000_000,
                );
            }
            if step.wake && budget.bump_wake_seq() {
                wake_all(budget.wake_word());
            }
        }
        std::thread::sleep(PERIOD);
    }
}

/// Since when the container's host PIDs have been unknown, and whether the log said so.
#[derive(Default)]
struct Unmapped {
    since_ns: Option<u64>,
    logged: bool,
}

impl Unmapped {
    fn note(&mut self, unmapped: bool, now: u64) {
        if !unmapped {
            self.since_ns = None;
            return;
        }
        let since = *self.since_ns.get_or_insert(now);
        if !self.logged && now.saturating_sub(since) >= UNMAPPED_LOG_NS {
            self.logged = true;
            hami_log!(
                Level::Warn,
                "compute: the host PIDs of this container's processes are unknown (no PID map from the shim's publisher); all device busy time counts as this container's, so the cap holds but the device may be under-used"
            );
        }
    }
}
