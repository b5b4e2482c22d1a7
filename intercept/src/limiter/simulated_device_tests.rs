//! The limiter's gate and controller against an in-process simulated device.
//!
//! A mutex stands for a time-sliced device that runs one kernel at a time; a kernel holds it
//! for its length, and the time each container held it is the truth the controller is fed
//! (as the measurer would read it from NVML). Containers are separate compute cells, so this
//! checks the budget protocol, the waits, the true-up and burst/priority decisions with real
//! threads and real time, without any driver. The end-to-end versions with processes under
//! `hami run` on the simulated driver live in `tests/e2e/tests/compute_*.rs`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hami_ledger::compute::futex::{monotonic_ns, wake_all};
use hami_ledger::compute::{Budget, COMPUTE_WORDS, ContentionCell, ContentionSlot, PPM, SlotClass};

use super::controller::Controller;
use super::gate::{DeviceGate, GateConfig, percent_to_ppm};

const PERIOD: Duration = Duration::from_millis(25);

struct Tenant {
    cell: [AtomicU64; COMPUTE_WORDS],
    busy_ns: AtomicU64,
    kernels: AtomicU64,
    config: GateConfig,
    kernel: Duration,
    threads: usize,
    slot: Option<ContentionSlot>,
}

impl Tenant {
    fn new(percent: u32, kernel: Duration) -> Self {
        Self {
            cell: std::array::from_fn(|_| AtomicU64::new(0)),
            busy_ns: AtomicU64::new(0),
            kernels: AtomicU64::new(0),
            config: GateConfig {
                cap_ppm: percent_to_ppm(percent),
                burst: false,
                high_priority: false,
            },
            kernel,
            threads: 2,
            slot: None,
        }
    }
}

/// Busy time a kernel of `length` really took on the device, spinning so the length is exact.
fn run_kernel(device: &Mutex<()>, length: Duration) -> u64 {
    let _held = device.lock().unwrap_or_else(|e| e.into_inner());
    let start = monotonic_ns();
    let end = start + u64::try_from(length.as_nanos()).unwrap_or(u64::MAX);
    while monotonic_ns() < end {
        std::thread::sleep(Duration::from_micros(50));
    }
    monotonic_ns() - start
}

/// The slot class the host publisher would claim for a tenant of `config`.
fn slot_class(config: &GateConfig) -> SlotClass {
    match (config.high_priority, config.cap_ppm < PPM) {
        (false, _) => SlotClass::Normal,
        (true, true) => SlotClass::HighCapped,
        (true, false) => SlotClass::High,
    }
}

/// Runs the tenants for `warmup + window` and returns each one's busy share of the window.
fn shares(tenants: &[Tenant], warmup: Duration, window: Duration) -> Vec<f64> {
    let device = Mutex::new(());
    let node = std::array::from_fn::<_, COMPUTE_WORDS, _>(|_| AtomicU64::new(0));
    let cell = ContentionCell::new(&node);
    let contention = cell.view();
    let stop = AtomicBool::new(false);
    let slots: Vec<ContentionSlot> = tenants
        .iter()
        .map(|t| {
            let slot = t
                .slot
                .unwrap_or_else(|| cell.claim_slot(slot_class(&t.config)));
            Budget::new(&t.cell).set_contention_slot(slot);
            slot
        })
        .collect();
    std::thread::scope(|s| {
        for tenant in tenants {
            for _ in 0..tenant.threads {
                s.spawn(|| {
                    let gate =
                        DeviceGate::new(Budget::new(&tenant.cell), Some(contention), tenant.config);
                    while !stop.load(Ordering::Relaxed) {
                        gate.admit();
                        let busy = run_kernel(&device, tenant.kernel);
                        tenant.busy_ns.fetch_add(busy, Ordering::Relaxed);
                        tenant.kernels.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        }
        // Host publisher and one measurer per tenant, in one thread: both are periodic.
        s.spawn(|| {
            let mut controllers = vec![Controller::default(); tenants.len()];
            while !stop.load(Ordering::Relaxed) {
                let now = monotonic_ns();
                for ((tenant, controller), slot) in tenants.iter().zip(&mut controllers).zip(&slots)
                {
                    let budget = Budget::new(&tenant.cell);
                    cell.publish_demand(
                        *slot,
                        tenant.config.high_priority,
                        budget.last_demand_ns(),
                    );
                    let step = controller.step(
                        budget,
                        Some(contention),
                        Some(tenant.busy_ns.load(Ordering::Relaxed)),
                        None,
                        0,
                        now,
                        tenant.config.cap_ppm,
                        tenant.config.burst,
                    );
                    if step.wake && budget.bump_wake_seq() {
                        wake_all(budget.wake_word());
                    }
                }
                std::thread::sleep(PERIOD);
            }
        });
        std::thread::sleep(warmup);
        let before: Vec<u64> = tenants
            .iter()
            .map(|t| t.busy_ns.load(Ordering::Relaxed))
            .collect();
        let start = monotonic_ns();
        std::thread::sleep(window);
        let wall = (monotonic_ns() - start) as f64;
        let result = tenants
            .iter()
            .zip(before)
            .map(|(t, b)| (t.busy_ns.load(Ordering::Relaxed) - b) as f64 / wall)
            .collect();
        stop.store(true, Ordering::Relaxed);
        result
    })
}

fn assert_near(measured: f64, cap_percent: u32, tolerance_pp: f64) {
    let error_pp = (measured * 100.0 - f64::from(cap_percent)).abs();
    eprintln!("cap {cap_percent}%: measured {:.2}%", measured * 100.0);
    assert!(
        error_pp <= tolerance_pp,
        "cap {cap_percent}% measured {:.1}% (error {error_pp:.1} pp)",
        measured * 100.0
    );
}

#[test]
fn one_tenant_gets_its_cap() {
    for cap in [25, 60] {
        let tenant = Tenant::new(cap, Duration::from_millis(1));
        let share = shares(
            &[tenant],
            Duration::from_millis(700),
            Duration::from_secs(2),
        );
        assert_near(share[0], cap, 4.0);
    }
}

#[test]
fn two_saturating_tenants_split_thirty_seventy() {
    let tenants = [
        Tenant::new(30, Duration::from_millis(1)),
        Tenant::new(70, Duration::from_millis(1)),
    ];
    let share = shares(&tenants, Duration::from_millis(700), Duration::from_secs(2));
    assert_near(share[0], 30, 4.0);
    assert_near(share[1], 70, 4.0);
}

#[test]
fn long_kernels_far_from_the_first_estimate_are_held_to_the_cap() {
    // 10 ms kernels are 5 times the estimate charged before anything was learned.
    let tenant = Tenant::new(30, Duration::from_millis(10));
    let share = shares(&[tenant], Duration::from_secs(1), Duration::from_secs(3));
    assert_near(share[0], 30, 5.0);
}

#[test]
fn burst_uses_the_idle_device_and_yields_to_a_neighbour() {
    let mut alone = Tenant::new(30, Duration::from_millis(1));
    alone.config.burst = true;
    let share = shares(&[alone], Duration::from_millis(500), Duration::from_secs(1));
    assert!(share[0] > 0.8, "burst tenant alone used {:.2}", share[0]);

    let mut bursty = Tenant::new(30, Duration::from_millis(1));
    bursty.config.burst = true;
    let neighbour = Tenant::new(70, Duration::from_millis(1));
    let share = shares(
        &[bursty, neighbour],
        Duration::from_millis(700),
        Duration::from_secs(2),
    );
    assert_near(share[0], 30, 5.0);
}

#[test]
fn high_priority_keeps_its_throughput_beside_a_saturating_low() {
    let solo = {
        let mut high = Tenant::new(100, Duration::from_millis(1));
        high.config.high_priority = true;
        high.threads = 1;
        shares(&[high], Duration::from_millis(300), Duration::from_secs(1))[0]
    };
    let mut high = Tenant::new(100, Duration::from_millis(1));
    high.config.high_priority = true;
    high.threads = 1;
    let low = Tenant::new(100, Duration::from_millis(1));
    let shared = shares(
        &[high, low],
        Duration::from_millis(300),
        Duration::from_secs(1),
    )[0];
    assert!(
        shared >= 0.9 * solo,
        "high tenant kept {:.2} of its solo share {solo:.2}",
        shared / solo
    );
}

#[test]
fn a_waiting_launch_is_never_blocked_past_the_liveness_bound() {
    let tenant = Tenant::new(1, Duration::from_millis(1));
    let budget = Budget::with_depth(&tenant.cell, 0);
    // A huge debt, as a crashed measurer's last true-up could leave behind.
    budget.debit_correction(PPM * 1_000_000);
    let gate = DeviceGate::new(budget, None, tenant.config);
    let passage = gate.admit();
    assert!(passage.waited_ns >= super::gate::MAX_WAIT_NS);
    assert!(passage.waited_ns < super::gate::MAX_WAIT_NS + 500_000_000);
}
