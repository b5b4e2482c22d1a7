//! Processes killed with SIGKILL at random moments of a random allocation load: after a
//! reclaim pass the ledger equals the live bytes of the survivors, and later processes
//! neither hang nor find the cap eaten by the dead.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hami_e2e::artifacts::c_program;
use hami_e2e::container::{Container, MIB, Machine};
use hami_e2e::program::{Holder, code, field};

const PROCESSES: usize = 16;
const CAP: u64 = 1024 * MIB;

/// A small LCG: the kill schedule differs per run, and the seed is printed for replay.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

#[test]
fn killed_processes_are_reclaimed_exactly() {
    let seed = std::env::var("HAMI_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("kill schedule seed: {seed} (HAMI_E2E_SEED to replay)");
    let mut rng = Lcg(seed);

    let machine = Machine::new(1, 8192 * MIB);
    let container = Container::new("sigkill", &[(machine.uuid(0), Some(CAP))]);
    let program = c_program("alloc_paths");
    let mut started: Vec<_> = (0..PROCESSES)
        .map(|i| {
            Holder::start(container.command(&machine, &program).args([
                "stress",
                &(i + 100).to_string(),
                "40000",
                &(48 * MIB).to_string(),
            ]))
        })
        .collect();

    // Kill every other process at a random moment of its load.
    let start = Instant::now();
    let mut schedule: Vec<(Duration, usize)> = (0..PROCESSES)
        .step_by(2)
        .map(|i| (Duration::from_millis(rng.next(1000)), i))
        .collect();
    schedule.sort();
    for (at, index) in &schedule {
        std::thread::sleep(at.saturating_sub(start.elapsed()));
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        unsafe { libc::kill(started[*index].child.id() as libc::pid_t, libc::SIGKILL) };
    }

    let mut survivors = Vec::new();
    let mut killed_mid_load = 0;
    for (index, process) in started.drain(..).enumerate() {
        if index % 2 == 0 {
            let mut child = process.child;
            let mut report = String::new();
            if let Some(mut stdout) = child.stdout.take() {
                let _ = std::io::Read::read_to_string(&mut stdout, &mut report);
            }
            killed_mid_load += usize::from(report.is_empty());
            let _ = child.wait();
        } else {
            survivors.push(process.report());
        }
    }
    assert!(
        killed_mid_load > 0,
        "every kill landed after the load: the test proved nothing"
    );
    let live: u64 = survivors.iter().map(|h| field(&h.report, "live")).sum();

    let ledger = container.ledger();
    let report = ledger.reclaim_dead().expect("reclaim pass");
    eprintln!("reclaim: {report:?}");
    assert_eq!(
        ledger.used(0),
        live,
        "after reclaim the ledger equals the survivors' live bytes"
    );

    // Once the survivors are gone too, a newcomer gets the whole cap, promptly: nothing the
    // dead held is lost, nobody waits on them.
    for survivor in survivors {
        survivor.release();
    }
    let begun = Instant::now();
    let newcomer = Holder::spawn(
        container
            .command(&machine, &program)
            .args(["hold", &CAP.to_string()]),
    );
    assert_eq!(
        code(&newcomer.report, "code"),
        0,
        "the whole cap is free again: {}",
        newcomer.report
    );
    assert!(
        begun.elapsed() < Duration::from_secs(10),
        "a later process waited too long"
    );
    newcomer.release();
    ledger.reclaim_dead().expect("reclaim pass");
    assert_eq!(ledger.used(0), 0);
}
