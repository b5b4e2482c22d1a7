//! Many processes on one usage part: the cap is never overshot, and processes killed with
//! SIGKILL at random moments are reclaimed exactly.
//!
//! The binary re-executes itself as the container's processes (`HAMI_LEDGER_WORKER` set):
//! each worker registers, waits for "go", runs random reservations and releases, reports the
//! bytes it still holds, and stays alive (holding them) until its stdin closes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hami_ledger::{SlotState, UsageLedger};

const MIB: u64 = 1 << 20;
const DEVICES: usize = 2;
const LIMIT: u64 = 256 * MIB;
const MAX_ALLOCATION: u64 = 8 * MIB;
/// Kills every worker if a scenario runs longer than this (a hang fails, it never blocks CI).
const WATCHDOG: Duration = Duration::from_secs(60);

const ENV_ROLE: &str = "HAMI_LEDGER_WORKER";
const ENV_USAGE: &str = "HAMI_LEDGER_WORKER_USAGE";
const ENV_SEED: &str = "HAMI_LEDGER_WORKER_SEED";
const ENV_OPS: &str = "HAMI_LEDGER_WORKER_OPS";

fn main() {
    if std::env::var_os(ENV_ROLE).is_some() {
        worker();
        return;
    }
    let seed = std::env::var("HAMI_LEDGER_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 | 1)
        });
    println!("multiprocess: seed {seed} (set HAMI_LEDGER_TEST_SEED to replay)");
    run("32 processes never overshoot the cap", || {
        never_overshoots(seed)
    });
    run("SIGKILL during load, then reclaim", || {
        sigkill_then_reclaim(seed)
    });
    println!("multiprocess: 2 passed");
}

fn run(name: &str, scenario: impl FnOnce()) {
    let started = Instant::now();
    scenario();
    println!(
        "test {name} ... ok ({:.2} s)",
        started.elapsed().as_secs_f64()
    );
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("worker needs {name}"))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number"))
}

/// The container process: random reservations and releases on random devices.
fn worker() {
    let usage =
        UsageLedger::attach(std::env::var_os(ENV_USAGE).expect("worker needs a usage path"))
            .expect("attach");
    let slot = usage.register().expect("register");
    let mut rng = XorShift(env_u64(ENV_SEED) | 1);
    let ops = env_u64(ENV_OPS);
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY {} {}", slot.index(), slot.generation()).unwrap();
    out.flush().unwrap();
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    stdin.read_line(&mut line).unwrap();

    let mut live: Vec<(usize, u64)> = Vec::new();
    for op in 0..ops {
        if live.is_empty() || rng.below(2) == 0 {
            let dev = rng.below(DEVICES as u64) as usize;
            let bytes = 1 + rng.below(MAX_ALLOCATION);
            if usage.reserve(&slot, dev, bytes, LIMIT).is_ok() {
                live.push((dev, bytes));
            }
        } else {
            let (dev, bytes) = live.swap_remove(rng.below(live.len() as u64) as usize);
            usage.release(&slot, dev, bytes);
        }
        if op % 16 == 0 {
            // Interleave with the other processes even on a machine with few cores.
            std::thread::yield_now();
        }
    }
    let held: Vec<String> = (0..DEVICES)
        .map(|dev| {
            live.iter()
                .filter(|(d, _)| *d == dev)
                .map(|(_, b)| b)
                .sum::<u64>()
                .to_string()
        })
        .collect();
    writeln!(out, "DONE {}", held.join(" ")).unwrap();
    out.flush().unwrap();
    // Stay alive, holding the bytes, until the parent closes stdin.
    while stdin.read_line(&mut line).is_ok_and(|n| n > 0) {}
}

struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    slot: usize,
    generation: u64,
}

impl Worker {
    fn spawn(usage: &Path, seed: u64, ops: u64) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ENV_ROLE, "1")
            .env(ENV_USAGE, usage)
            .env(ENV_SEED, seed.to_string())
            .env(ENV_OPS, ops.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn worker");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut worker = Self {
            child,
            stdin,
            stdout,
            slot: 0,
            generation: 0,
        };
        let ready = worker.expect_line("READY");
        worker.slot = ready[0] as usize;
        worker.generation = ready[1];
        worker
    }

    fn expect_line(&mut self, tag: &str) -> Vec<u64> {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let mut words = line.split_whitespace();
        assert_eq!(
            words.next(),
            Some(tag),
            "worker {} said {line:?}",
            self.child.id()
        );
        words.map(|w| w.parse().unwrap()).collect()
    }

    fn go(&mut self) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "worker exited with {status}");
    }
}

/// Kills every listed pid with SIGKILL when dropped late: a hung scenario fails instead of
/// hanging the test run.
struct Watchdog {
    done: Arc<AtomicBool>,
}

impl Watchdog {
    fn arm(pids: Vec<u32>) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        std::thread::spawn(move || {
            let start = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                if start.elapsed() > WATCHDOG {
                    eprintln!("multiprocess: watchdog fired, killing workers");
                    for pid in pids {
                        // The pids are our children and not yet reaped (the scenario holds
                        // their `Child`), so they cannot have been reused.
                        let _ = Command::new("kill")
                            .args(["-KILL", &pid.to_string()])
                            .status();
                    }
                    std::process::exit(1);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Samples the device totals until stopped; returns the highest seen per device.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u64>>,
}

impl Sampler {
    fn start(path: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let usage = UsageLedger::attach(path).unwrap();
            let mut max = vec![0u64; DEVICES];
            while !flag.load(Ordering::Relaxed) {
                for (dev, seen) in max.iter_mut().enumerate() {
                    *seen = (*seen).max(usage.used(dev));
                }
            }
            max
        });
        Self { stop, thread }
    }

    fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Runs reclaim passes during the load, as the node agent does, until stopped.
struct Janitor {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl Janitor {
    fn start(path: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let usage = UsageLedger::attach(path).unwrap();
            let mut freed = 0;
            while !flag.load(Ordering::Relaxed) {
                freed += usage.reclaim_dead().unwrap().freed_slots;
                std::thread::sleep(Duration::from_micros(500));
            }
            freed
        });
        Self { stop, thread }
    }

    /// Returns the slots its passes freed.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn fresh_usage() -> (tempfile::TempDir, PathBuf, UsageLedger) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.ledger");
    UsageLedger::create(&path, DEVICES).unwrap();
    let usage = UsageLedger::attach(&path).unwrap();
    (dir, path, usage)
}

fn spawn_workers(path: &Path, rng: &mut XorShift, count: usize, ops: u64) -> Vec<Worker> {
    (0..count)
        .map(|_| Worker::spawn(path, rng.next(), ops))
        .collect()
}

/// Runs reclaim passes until one finds nothing dead (bounded).
fn reclaim_all(usage: &UsageLedger) -> usize {
    let mut freed = 0;
    for _ in 0..1000 {
        let report = usage.reclaim_dead().unwrap();
        freed += report.freed_slots;
        if !report.busy && !report.gave_up && report.dead_slots == 0 {
            return freed;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("dead slots still not reclaimed after 1000 passes");
}

fn sum_by_device(reports: &[Vec<u64>]) -> Vec<u64> {
    (0..DEVICES)
        .map(|dev| reports.iter().map(|r| r[dev]).sum())
        .collect()
}

fn never_overshoots(seed: u64) {
    let mut rng = XorShift(seed);
    let (_dir, path, usage) = fresh_usage();
    let mut workers = spawn_workers(&path, &mut rng, 32, 4000);
    let _watchdog = Watchdog::arm(workers.iter().map(|w| w.child.id()).collect());
    let sampler = Sampler::start(path.clone());
    workers.iter_mut().for_each(Worker::go);
    let held: Vec<Vec<u64>> = workers.iter_mut().map(|w| w.expect_line("DONE")).collect();
    let max = sampler.stop();
    assert!(
        max.iter().all(|&m| m <= LIMIT),
        "sampled totals {max:?} over the cap {LIMIT}"
    );
    assert!(
        max.iter().all(|&m| m > LIMIT / 2),
        "the load never came near the cap: {max:?}"
    );

    let expected = sum_by_device(&held);
    let snapshot = usage.snapshot();
    assert_eq!(
        snapshot.devices, expected,
        "totals differ from the live bytes"
    );
    let by_slot: HashMap<usize, &Vec<u64>> =
        snapshot.slots.iter().map(|s| (s.index, &s.used)).collect();
    for (worker, held) in workers.iter().zip(&held) {
        assert_eq!(
            by_slot[&worker.slot], held,
            "slot {} misattributed",
            worker.slot
        );
    }
    assert_eq!(snapshot.underflows, 0);

    workers.into_iter().for_each(Worker::finish);
    assert_eq!(reclaim_all(&usage), 32);
    assert_eq!(usage.snapshot().devices, vec![0; DEVICES]);
}

fn sigkill_then_reclaim(seed: u64) {
    let mut rng = XorShift(seed ^ 0x5151_5151);
    let (_dir, path, usage) = fresh_usage();
    let mut workers = spawn_workers(&path, &mut rng, 32, 20_000);
    let watchdog = Watchdog::arm(workers.iter().map(|w| w.child.id()).collect());
    let sampler = Sampler::start(path.clone());
    let janitor = Janitor::start(path.clone());
    workers.iter_mut().for_each(Worker::go);

    let victims = 12;
    let mut killed = Vec::new();
    for _ in 0..victims {
        std::thread::sleep(Duration::from_micros(rng.below(5_000)));
        let mut victim = workers.swap_remove(rng.below(workers.len() as u64) as usize);
        victim.child.kill().unwrap();
        victim.child.wait().unwrap();
        killed.push((victim.slot, victim.generation));
    }
    let held: Vec<Vec<u64>> = workers.iter_mut().map(|w| w.expect_line("DONE")).collect();
    let max = sampler.stop();
    assert!(
        max.iter().all(|&m| m <= LIMIT),
        "sampled totals {max:?} over the cap {LIMIT}"
    );

    let freed_by_janitor = janitor.stop();
    let freed_before = usage.snapshot().reclaimed_slots;
    let freed_now = reclaim_all(&usage) as u64;
    let snapshot = usage.snapshot();
    assert_eq!(
        snapshot.reclaimed_slots,
        freed_before + freed_now,
        "a slot was freed without being counted, or counted twice"
    );
    assert_eq!(
        snapshot.reclaimed_slots, victims as u64,
        "each dead slot freed exactly once"
    );
    println!(
        "  {victims} killed; freed by the janitor during the load: {freed_by_janitor}, \
         by the workers' passes: {}, after the load: {freed_now}; bypasses: {}",
        freed_before - freed_by_janitor as u64,
        snapshot.bypasses
    );
    assert_eq!(
        snapshot.devices,
        sum_by_device(&held),
        "totals differ from survivors' bytes"
    );
    for (slot, generation) in &killed {
        let seen = snapshot.slots.iter().find(|s| s.index == *slot).unwrap();
        assert_eq!(
            (seen.state, seen.generation),
            (SlotState::Free, generation + 1),
            "slot {slot} of a killed worker"
        );
    }
    drop(watchdog);

    // Later processes register and run normally.
    let mut late = spawn_workers(&path, &mut rng, 8, 500);
    let _watchdog = Watchdog::arm(late.iter().map(|w| w.child.id()).collect());
    late.iter_mut().for_each(Worker::go);
    let late_held: Vec<Vec<u64>> = late.iter_mut().map(|w| w.expect_line("DONE")).collect();
    let expected: Vec<u64> = sum_by_device(&held)
        .iter()
        .zip(sum_by_device(&late_held))
        .map(|(a, b)| a + b)
        .collect();
    assert_eq!(usage.snapshot().devices, expected);
    workers.into_iter().chain(late).for_each(Worker::finish);
    reclaim_all(&usage);
    assert_eq!(usage.snapshot().devices, vec![0; DEVICES]);
}
