//! Lazy, re-entrancy-safe, fork-aware initialization of the process's engine.
//!
//! Nothing runs at load time: a process that never reaches a wrapped entry point pays only
//! the loader's cost. The first wrapped call builds the engine (reads the environment once,
//! attaches the ledger, claims a process slot). The state is one atomic pointer plus a state
//! word — no `Once`, so a forked child can start over without resetting a `Once` in place
//! (which HAMi-core does, and which is undefined behaviour). A thread-local flag sends calls
//! made by the initializing thread itself straight to the driver.

use std::cell::Cell;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use hami_ledger::paths::{CONTAINER_LIBRARY_PATH, CONTAINER_LIMITS_PATH};
use hami_ledger::{OverCap, UsageLedger, limits};

use crate::config::confinement::Confinement;
use crate::config::{ENV_DEVICES, LimitSource, Settings};
use crate::engine::accounts::{Accounts, LedgerAccounts};
use crate::engine::{DevicePolicy, Engine};
use crate::hami_log;
use crate::log::{self, Level};

/// The accounts of this process: the ledger, or a refusal when the configuration could not
/// be enforced (fail closed: every reservation is over the cap).
pub enum ProcessAccounts {
    Ledger(LedgerAccounts),
    Refused,
}

impl Accounts for ProcessAccounts {
    #[inline]
    fn reserve(&self, device: usize, bytes: u64, limit: u64) -> Result<(), OverCap> {
        match self {
            ProcessAccounts::Ledger(ledger) => ledger.reserve(device, bytes, limit),
            ProcessAccounts::Refused if bytes == 0 => Ok(()),
            ProcessAccounts::Refused => Err(OverCap {
                device,
                requested: bytes,
                used: 0,
                limit: 0,
            }),
        }
    }

    #[inline]
    fn release(&self, device: usize, bytes: u64) {
        if let ProcessAccounts::Ledger(ledger) = self {
            ledger.release(device, bytes);
        }
    }

    #[inline]
    fn used(&self, device: usize) -> u64 {
        match self {
            ProcessAccounts::Ledger(ledger) => ledger.used(device),
            ProcessAccounts::Refused => 0,
        }
    }
}

/// The engine type every entry point uses.
pub type ProcessEngine = Engine<ProcessAccounts>;

const UNINIT: u8 = 0;
const INITIALIZING: u8 = 1;
const READY: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static ENGINE: AtomicPtr<ProcessEngine> = AtomicPtr::new(std::ptr::null_mut());
/// The engine a forked child inherited; dropped (closing its slot descriptor, which leaves
/// the parent's lock in place) when the child initializes its own.
static INHERITED: AtomicPtr<ProcessEngine> = AtomicPtr::new(std::ptr::null_mut());

thread_local! {
    static INITIALIZING_HERE: Cell<bool> = const { Cell::new(false) };
}

/// How long a thread waits for another thread's initialization before passing through.
const INIT_WAIT: Duration = Duration::from_secs(10);

/// The engine, or `None` when nothing is capped (or this thread is initializing it).
#[inline(always)]
pub fn engine() -> Option<&'static ProcessEngine> {
    let engine = ENGINE.load(Ordering::Acquire);
    if engine.is_null() {
        return slow_engine();
    }
    // SAFETY: a published engine is leaked (never freed while published); see `initialize`.
    Some(unsafe { &*engine })
}

#[cold]
fn slow_engine() -> Option<&'static ProcessEngine> {
    if INITIALIZING_HERE.with(Cell::get) {
        return None;
    }
    let deadline = Instant::now() + INIT_WAIT;
    loop {
        match STATE.compare_exchange(UNINIT, INITIALIZING, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                INITIALIZING_HERE.with(|flag| flag.set(true));
                // A bug in initialization fails closed, like a configuration that cannot be
                // enforced.
                let built = crate::boundary::guarded(initialize, || {
                    leak(refused(crate::config::DEFAULT_MAX_ALLOCATIONS))
                });
                ENGINE.store(built, Ordering::Release);
                STATE.store(READY, Ordering::Release);
                INITIALIZING_HERE.with(|flag| flag.set(false));
            }
            Err(READY) => {}
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(100));
                continue;
            }
            Err(_) => {
                // Initialization is stuck in another thread: refuse rather than run uncapped.
                hami_log!(
                    Level::Error,
                    "initialization still running after {INIT_WAIT:?}; refusing device memory"
                );
                return Some(stalled_refusal());
            }
        }
        let engine = ENGINE.load(Ordering::Acquire);
        // SAFETY: as in `engine`.
        return (!engine.is_null()).then(|| unsafe { &*engine });
    }
}

/// Builds and leaks the engine; null when nothing is capped.
fn initialize() -> *mut ProcessEngine {
    register_fork_handler();
    let inherited = INHERITED.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if !inherited.is_null() {
        // SAFETY: the pointer came from Box::into_raw in a parent's `initialize`; the child's
        // fork handler unpublished it before any child thread could load it, so this is the
        // only reference.
        drop(unsafe { Box::from_raw(inherited) });
    }
    let confinement = Confinement::current();
    if confinement == Confinement::LedgerMissing {
        hami_log!(
            Level::Error,
            "this container preloads {CONTAINER_LIBRARY_PATH} but no ledger entry is mounted at \
             {CONTAINER_LIMITS_PATH}: refusing device memory"
        );
        return leak(refused(crate::config::DEFAULT_MAX_ALLOCATIONS));
    }
    let settings = match Settings::from_env(confinement) {
        Ok(settings) => settings,
        Err(err) => {
            // Even the log level may be unreadable; refusals are printed at Error, on by default.
            hami_log!(
                Level::Error,
                "invalid configuration, refusing device memory: {err}"
            );
            return leak(refused(crate::config::DEFAULT_MAX_ALLOCATIONS));
        }
    };
    log::set_level(settings.log);
    let engine = match build(&settings) {
        Ok(Some(engine)) => engine,
        Ok(None) => return std::ptr::null_mut(),
        Err(err) => {
            hami_log!(
                Level::Error,
                "cannot enforce the memory caps, refusing device memory: {err}"
            );
            refused(settings.max_allocations)
        }
    };
    leak(engine)
}

/// The engine a thread uses when another thread's initialization never finishes.
fn stalled_refusal() -> &'static ProcessEngine {
    static REFUSAL: std::sync::OnceLock<ProcessEngine> = std::sync::OnceLock::new();
    REFUSAL.get_or_init(|| refused(crate::config::DEFAULT_MAX_ALLOCATIONS))
}

fn leak(engine: ProcessEngine) -> *mut ProcessEngine {
    Box::into_raw(Box::new(engine))
}

/// Why the configured caps cannot be enforced.
#[derive(Debug, thiserror::Error)]
enum BuildError {
    #[error(transparent)]
    Limits(#[from] limits::LimitsError),
    #[error(transparent)]
    Usage(#[from] hami_ledger::UsageError),
    #[error(transparent)]
    Register(#[from] hami_ledger::RegisterError),
    #[error("{usage} describes {have} devices but the limits list {want}")]
    DeviceCount {
        usage: String,
        have: usize,
        want: usize,
    },
    #[error("cannot create {path}: {err}")]
    Create { path: String, err: std::io::Error },
}

fn build(settings: &Settings) -> Result<Option<ProcessEngine>, BuildError> {
    let (devices, usage_path) = match &settings.source {
        LimitSource::Unlimited => return Ok(None),
        LimitSource::Ledger { limits, usage } => {
            let container = limits::read(limits)?;
            let devices = container
                .devices
                .iter()
                .map(|d| DevicePolicy {
                    uuid: Some(d.uuid.clone()),
                    limit: d.memory_limit.unwrap_or(u64::MAX),
                })
                .collect::<Vec<_>>();
            (devices, usage.clone())
        }
        LimitSource::Environment { limits, usage } => {
            create_if_missing(usage)?;
            let devices = limits
                .per_device
                .iter()
                .map(|limit| DevicePolicy {
                    uuid: None,
                    limit: limit.unwrap_or(u64::MAX),
                })
                .collect::<Vec<_>>();
            (devices, usage.clone())
        }
    };
    let usage = UsageLedger::attach(&usage_path)?;
    if usage.n_devices() < devices.len() {
        return Err(BuildError::DeviceCount {
            usage: usage_path.display().to_string(),
            have: usage.n_devices(),
            want: devices.len(),
        });
    }
    let slot = usage.register()?;
    hami_log!(
        Level::Info,
        "capping {} device(s) through {} (slot {})",
        devices.len(),
        usage_path.display(),
        slot.index()
    );
    let accounts = ProcessAccounts::Ledger(LedgerAccounts { usage, slot });
    Ok(Some(Engine::new(
        accounts,
        devices,
        settings.max_allocations,
        settings.context_overhead,
    )))
}

fn refused(max_allocations: usize) -> ProcessEngine {
    let devices = vec![
        DevicePolicy {
            uuid: None,
            limit: 0
        };
        ENV_DEVICES
    ];
    Engine::new(
        ProcessAccounts::Refused,
        devices,
        max_allocations.min(1 << 10),
        0,
    )
}

/// Creates the environment mode's usage file unless it exists, without ever replacing one
/// another process created first (create aside, then `link`, which fails if the name exists).
fn create_if_missing(path: &Path) -> Result<(), BuildError> {
    if path.exists() {
        return Ok(());
    }
    let create_err = |err: std::io::Error| BuildError::Create {
        path: path.display().to_string(),
        err,
    };
    // SAFETY: getpid has no preconditions.
    let aside = path.with_extension(format!("new.{}", unsafe { libc::getpid() }));
    UsageLedger::create(&aside, ENV_DEVICES)?;
    let from = CString::new(aside.as_os_str().as_bytes()).map_err(|e| create_err(e.into()))?;
    let to = CString::new(path.as_os_str().as_bytes()).map_err(|e| create_err(e.into()))?;
    // SAFETY: both are valid NUL-terminated paths.
    let linked = unsafe { libc::link(from.as_ptr(), to.as_ptr()) };
    let link_err = std::io::Error::last_os_error();
    let _ = std::fs::remove_file(&aside);
    if linked != 0 && link_err.kind() != std::io::ErrorKind::AlreadyExists {
        return Err(create_err(link_err));
    }
    Ok(())
}

/// After `fork`, the child must not charge through the parent's slot: unpublish the engine
/// (only atomic stores: async-signal-safe) so the child's next wrapped call initializes anew.
extern "C" fn after_fork_in_child() {
    let inherited = ENGINE.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if !inherited.is_null() {
        INHERITED.store(inherited, Ordering::Release);
    }
    STATE.store(UNINIT, Ordering::Release);
}

fn register_fork_handler() {
    static REGISTERED: AtomicU8 = AtomicU8::new(0);
    if REGISTERED.swap(1, Ordering::AcqRel) == 0 {
        // SAFETY: the handler only performs atomic stores, which is allowed in a forked child.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::config::DEFAULT_MAX_ALLOCATIONS;

    fn ledger_settings(dir: &Path) -> Settings {
        Settings {
            log: Level::Error,
            source: LimitSource::Ledger {
                limits: dir.join("limits.ledger"),
                usage: dir.join("usage.ledger"),
            },
            context_overhead: 0,
            max_allocations: 64,
        }
    }

    fn valid_limits(path: &Path) {
        let entry = hami_ledger::ContainerLimits {
            container_id: "prop".into(),
            devices: vec![hami_ledger::DeviceLimit {
                uuid: "GPU-00000000-0000-0000-0000-000000000001".into(),
                memory_limit: Some(1 << 30),
                compute_percent: None,
                policy: hami_ledger::ComputePolicy::Hard,
                priority: hami_ledger::Priority::Normal,
            }],
        };
        limits::write(path, &entry).unwrap();
    }

    #[test]
    fn a_sound_entry_builds_a_capped_engine() {
        let dir = tempfile::tempdir().unwrap();
        valid_limits(&dir.path().join("limits.ledger"));
        UsageLedger::create(dir.path().join("usage.ledger"), 1).unwrap();
        let engine = build(&ledger_settings(dir.path()))
            .unwrap()
            .expect("capped");
        assert_eq!(engine.limit(0), Some(1 << 30));
        assert_eq!(
            engine.index_of_uuid("gpu-00000000-0000-0000-0000-000000000001"),
            Some(0)
        );
    }

    #[test]
    fn missing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(build(&ledger_settings(dir.path())).is_err());
        valid_limits(&dir.path().join("limits.ledger"));
        let err = build(&ledger_settings(dir.path()))
            .err()
            .expect("no usage file");
        assert!(err.to_string().contains("usage.ledger"), "{err}");
    }

    #[test]
    fn refused_accounts_refuse_every_byte() {
        let engine = refused(DEFAULT_MAX_ALLOCATIONS);
        assert!(engine.reserve(0, 1).is_err());
        assert!(engine.reserve(0, 0).is_ok());
        assert_eq!(engine.limit(0), Some(0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn a_damaged_usage_file_is_refused_never_trusted(
            bytes in prop::collection::vec(any::<u8>(), 0..100_000),
        ) {
            let dir = tempfile::tempdir().unwrap();
            valid_limits(&dir.path().join("limits.ledger"));
            std::fs::write(dir.path().join("usage.ledger"), &bytes).unwrap();
            prop_assert!(build(&ledger_settings(dir.path())).is_err());
        }

        #[test]
        fn a_damaged_limits_file_is_refused_never_trusted(
            bytes in prop::collection::vec(any::<u8>(), 0..4096),
        ) {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("limits.ledger"), &bytes).unwrap();
            UsageLedger::create(dir.path().join("usage.ledger"), 1).unwrap();
            prop_assert!(build(&ledger_settings(dir.path())).is_err());
        }

        #[test]
        fn a_sound_file_with_flipped_bytes_is_refused(offset in 0usize..512, flip in 1u8..=255) {
            let dir = tempfile::tempdir().unwrap();
            let limits_path = dir.path().join("limits.ledger");
            valid_limits(&limits_path);
            UsageLedger::create(dir.path().join("usage.ledger"), 1).unwrap();
            let mut image = std::fs::read(&limits_path).unwrap();
            image[offset] ^= flip;
            std::fs::write(&limits_path, &image).unwrap();
            prop_assert!(build(&ledger_settings(dir.path())).is_err());
        }
    }
}
