//! The janitor under SIGKILL: entry owners (processes holding an entry's owner lock, as the
//! shim and `hami run` do) and container processes (which register a slot and reserve bytes
//! through the ledger API) are killed at random moments, some while they are still writing
//! their entry or registering. After every janitor pass, every entry and slot is checked:
//! dead entries are gone, dead slots are free and their bytes returned, and everything live
//! is untouched.
//!
//! The test binary re-runs itself as those processes (`HAMI_JANITOR_TEST_ROLE`). The seed is
//! printed; `HAMI_JANITOR_TEST_SEED` replays a run.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use hami_ledger::owner::OwnerLock;
use hami_ledger::paths::LedgerDir;
use hami_ledger::{
    ComputePolicy, ContainerLimits, DeviceLimit, Priority, SlotState, UsageCopy, UsageLedger,
    limits,
};
use hami_node::janitor::Janitor;
use hami_node::reclaimer::Reclaimer;

const ROLE_ENV: &str = "HAMI_JANITOR_TEST_ROLE";
const SEED_ENV: &str = "HAMI_JANITOR_TEST_SEED";
/// Entries kept on the node at any time.
const ENTRIES: usize = 6;
/// Slot processes per entry at most.
const SLOTS_PER_ENTRY: usize = 3;
const MIN_KILLS: usize = 120;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match std::env::var(ROLE_ENV).ok().as_deref() {
        Some("owner") => role_owner(Path::new(&args[1]), &args[2]),
        Some("slot") => role_slot(Path::new(&args[1]), args[2].parse().expect("bytes")),
        Some(other) => panic!("unknown role {other}"),
        None => {
            janitor_reclaims_only_the_dead_under_random_kills();
            println!("test janitor_reclaims_only_the_dead_under_random_kills ... ok");
        }
    }
}

/// An entry owner: takes the owner lock, writes the entry as the shim does, then waits.
fn role_owner(dir: &Path, id: &str) {
    let _owner = OwnerLock::acquire(dir).expect("owner lock");
    let limits = ContainerLimits {
        container_id: id.to_owned(),
        devices: vec![DeviceLimit {
            uuid: "GPU-janitor-test".into(),
            memory_limit: Some(1 << 40),
            compute_percent: None,
            policy: ComputePolicy::Hard,
            priority: Priority::Normal,
        }],
    };
    limits::write(dir.join("limits.ledger"), &limits).expect("limits");
    UsageLedger::create(dir.join("usage.ledger"), 1).expect("usage");
    ready("ready");
}

/// A container process: registers a slot, reserves `bytes`, then waits.
fn role_slot(usage: &Path, bytes: u64) {
    let ledger = UsageLedger::attach(usage).expect("attach");
    let slot = ledger.register().expect("register");
    ledger.reserve(&slot, 0, bytes, u64::MAX).expect("reserve");
    ready(&format!("ready {}", slot.index()));
}

fn ready(line: &str) -> ! {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .expect("stdout");
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// xorshift64*: enough randomness for kill moments, replayable from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct Proc {
    child: Child,
    /// The slot index it registered (slot processes that reached `ready`).
    slot: Option<usize>,
    bytes: u64,
}

impl Proc {
    fn spawn(role: &str, args: &[&str], bytes: u64) -> (Self, BufReader<ChildStdout>) {
        let mut child = Command::new(std::env::current_exe().expect("test executable"))
            .env(ROLE_ENV, role)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        (
            Self {
                child,
                slot: None,
                bytes,
            },
            stdout,
        )
    }

    /// Waits for the `ready` line; returns the slot index it names, if any.
    fn wait_ready(&mut self, mut stdout: BufReader<ChildStdout>) {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read");
        assert!(line.starts_with("ready"), "a test process failed: {line:?}");
        self.slot = line.split_whitespace().nth(1).and_then(|i| i.parse().ok());
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

struct Entry {
    id: String,
    dir: PathBuf,
    owner: Option<Proc>,
    slots: Vec<Proc>,
}

impl Entry {
    fn expected_alive(&self) -> bool {
        self.owner.is_some() || !self.slots.is_empty()
    }
}

fn janitor_reclaims_only_the_dead_under_random_kills() {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    println!("janitor test seed {seed} ({SEED_ENV}={seed} replays it)");
    let mut rng = Rng(seed);
    let root = tempfile::tempdir().expect("tempdir");
    let ledger = LedgerDir::new(root.path());
    let janitor = Janitor::new(
        ledger.clone(),
        Reclaimer::new(env!("CARGO_BIN_EXE_hami-node")),
    );
    let mut entries: Vec<Entry> = Vec::new();
    let (mut kills, mut next_id, mut rounds, mut removed, mut freed) = (0, 0, 0, 0, 0);
    while kills < MIN_KILLS || rounds < 40 {
        rounds += 1;
        // Top the node up to ENTRIES entries; some owners die while writing theirs.
        while entries.len() < ENTRIES {
            let id = format!("c{next_id}");
            next_id += 1;
            let dir = ledger.container_dir(&id).expect("entry dir");
            let dir_arg = dir.to_string_lossy().into_owned();
            let (mut owner, stdout) = Proc::spawn("owner", &[&dir_arg, &id], 0);
            let owner = if rng.chance(15) {
                std::thread::sleep(Duration::from_micros(rng.below(3000)));
                owner.kill();
                kills += 1;
                None
            } else {
                owner.wait_ready(stdout);
                Some(owner)
            };
            entries.push(Entry {
                id,
                dir,
                owner,
                slots: Vec::new(),
            });
        }
        // New container processes; some die while registering or reserving.
        for _ in 0..2 {
            let index = rng.below(ENTRIES as u64) as usize;
            let entry = &mut entries[index];
            if !entry.dir.join("usage.ledger").exists()
                || entry.slots.len() >= SLOTS_PER_ENTRY
                || !entry.expected_alive()
            {
                continue;
            }
            let bytes = (1 + rng.below(64)) << 20;
            let usage = entry
                .dir
                .join("usage.ledger")
                .to_string_lossy()
                .into_owned();
            let (mut proc, stdout) = Proc::spawn("slot", &[&usage, &bytes.to_string()], bytes);
            if rng.chance(25) {
                std::thread::sleep(Duration::from_micros(rng.below(4000)));
                proc.kill();
                kills += 1;
            } else {
                proc.wait_ready(stdout);
                entry.slots.push(proc);
            }
        }
        // Kill two live processes, owners or container processes.
        for _ in 0..2 {
            let index = rng.below(ENTRIES as u64) as usize;
            let entry = &mut entries[index];
            let choices = entry.slots.len() + usize::from(entry.owner.is_some());
            if choices == 0 {
                continue;
            }
            std::thread::sleep(Duration::from_micros(rng.below(2000)));
            let pick = rng.below(choices as u64) as usize;
            match pick.checked_sub(entry.slots.len()) {
                None => entry.slots.swap_remove(pick).kill(),
                Some(_) => entry.owner.take().expect("owner").kill(),
            }
            kills += 1;
        }

        let report = janitor.pass().expect("janitor pass");
        assert!(report.problems.is_empty(), "round {rounds}: {report:?}");
        removed += report.removed.len();
        freed += report.freed_slots;
        for entry in &entries {
            check_entry(entry, &report.removed, rounds);
        }
        entries.retain(Entry::expected_alive);
    }
    println!(
        "{rounds} rounds, {kills} kills, {removed} dead entries removed, {freed} dead slots freed"
    );
    assert!(
        removed > 0 && freed > 0,
        "the run exercised both kinds of reclaim"
    );
    for entry in entries {
        entry
            .owner
            .into_iter()
            .chain(entry.slots)
            .for_each(Proc::kill);
    }
}

/// One entry after a pass: gone iff dead; if live, exactly its live processes' slots are
/// taken and the device total is exactly what they reserved.
fn check_entry(entry: &Entry, removed: &[String], round: usize) {
    let context = format!("round {round}, entry {}", entry.id);
    if !entry.expected_alive() {
        assert!(!entry.dir.exists(), "{context}: a dead entry was left");
        return;
    }
    assert!(entry.dir.exists(), "{context}: a live entry was removed");
    assert!(!removed.contains(&entry.id), "{context}: reported removed");
    let usage = entry.dir.join("usage.ledger");
    if entry.owner.is_some() && entry.slots.is_empty() && !usage.exists() {
        return;
    }
    let copy = UsageCopy::read(&usage).unwrap_or_else(|e| panic!("{context}: {e}"));
    let taken: BTreeSet<usize> = copy
        .snapshot
        .slots
        .iter()
        .filter(|s| s.state != SlotState::Free)
        .map(|s| {
            assert_eq!(s.state, SlotState::Live, "{context}: slot {}", s.index);
            assert_eq!(s.alive, Some(true), "{context}: dead slot {} left", s.index);
            s.index
        })
        .collect();
    let live: BTreeSet<usize> = entry.slots.iter().filter_map(|p| p.slot).collect();
    assert_eq!(taken, live, "{context}: slots taken vs live processes");
    let reserved: u64 = entry.slots.iter().map(|p| p.bytes).sum();
    assert_eq!(
        copy.snapshot.devices[0], reserved,
        "{context}: device total vs live reservations"
    );
}
