//! 32 processes of one container allocating and freeing at random, concurrently: the device
//! never holds more than the cap at any sampled instant, the ledger never exceeds it, and at
//! the end the ledger equals the bytes the processes hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hami_e2e::artifacts::c_program;
use hami_e2e::container::{Container, MIB, Machine};
use hami_e2e::program::{Holder, field, run_json};

const PROCESSES: usize = 32;
const CAP: u64 = 1024 * MIB;

#[test]
fn thirty_two_processes_never_exceed_the_shared_cap() {
    let machine = Arc::new(Machine::new(1, 8192 * MIB));
    let container = Container::new("stress", &[(machine.uuid(0), Some(CAP))]);
    let program = c_program("alloc_paths");

    // Samples the simulated device's real usage (outside the container, no library) and the
    // ledger while the load runs.
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (machine, running, program) =
            (Arc::clone(&machine), Arc::clone(&running), program.clone());
        let ledger = container.ledger();
        std::thread::spawn(move || {
            let mut samples = 0;
            while running.load(Ordering::Relaxed) {
                let info = run_json(machine.command(&program).arg("info"));
                let device_used = field(&info, "nvml_total") - field(&info, "nvml_free");
                assert!(
                    device_used <= CAP,
                    "device holds {device_used} bytes over a {CAP} cap"
                );
                assert!(ledger.used(0) <= CAP, "ledger over the cap");
                samples += 1;
            }
            samples
        })
    };

    let started: Vec<_> = (0..PROCESSES)
        .map(|seed| {
            Holder::start(container.command(&machine, &program).args([
                "stress",
                &(seed + 1).to_string(),
                "3000",
                &(48 * MIB).to_string(),
            ]))
        })
        .collect();
    let holders: Vec<Holder> = started.into_iter().map(|s| s.report()).collect();
    running.store(false, Ordering::Relaxed);
    let samples = sampler.join().expect("sampler saw the cap exceeded");
    assert!(samples > 3, "the sampler ran {samples} times only");

    let mut live = 0;
    let mut refused = 0;
    for holder in &holders {
        assert_eq!(field(&holder.report, "failed"), 0, "{}", holder.report);
        live += field(&holder.report, "live");
        refused += field(&holder.report, "refused");
    }
    let ledger = container.ledger();
    assert_eq!(
        ledger.used(0),
        live,
        "ledger must equal the live bytes of the processes"
    );
    assert!(
        refused > 0,
        "the load never reached the cap, so the test proved nothing"
    );
    for holder in holders {
        holder.release();
    }
    ledger.reclaim_dead().expect("reclaim");
    assert_eq!(
        ledger.used(0),
        0,
        "exited processes' bytes must be reclaimed"
    );
}
