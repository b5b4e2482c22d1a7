//! The simulated driver inside one process: attachment to the shared state, this process's
//! slot, contexts, memory, streams, kernels and graphs. The `extern "C"` layer in
//! `cuda_api` and `nvml_api` is a thin translation onto this.

pub mod context;
pub mod errors;
pub mod event;
pub mod graph;
pub mod memory;
pub mod module;
pub mod ops;
pub mod pool;
pub mod registry;
pub mod stream;
pub mod vmm;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use hami_hooks::cuda::{
    CUDA_ERROR_NO_DEVICE, CUDA_ERROR_NOT_INITIALIZED, CUDA_ERROR_UNKNOWN, CUresult,
};

use crate::config::Config;
use crate::state::{SharedState, Slot};

/// This process's view of the simulated machine.
pub struct Driver {
    pub state: SharedState,
    slot: OnceLock<Slot>,
}

static DRIVER: OnceLock<Result<Driver, String>> = OnceLock::new();
static CUDA_INITIALISED: AtomicBool = AtomicBool::new(false);

/// Attaches to the shared state on first use (the configuration is read once).
pub fn attach() -> Result<&'static Driver, String> {
    DRIVER
        .get_or_init(|| {
            let result = Config::from_env()
                .map_err(|e| e.to_string())
                .and_then(|config| SharedState::attach(&config).map_err(|e| e.to_string()));
            match result {
                Ok(state) => {
                    // Processes that died holding memory are noticed by the next one to come.
                    state.reclaim_dead(None);
                    Ok(Driver {
                        state,
                        slot: OnceLock::new(),
                    })
                }
                Err(message) => {
                    // The one diagnostic of the library: without it a misconfigured
                    // environment would only show up as "no device".
                    eprintln!("hami-fakegpu: {message}");
                    Err(message)
                }
            }
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// `cuInit`: attaches and marks the CUDA API usable.
pub fn init() -> Result<(), CUresult> {
    attach().map_err(|_| CUDA_ERROR_NO_DEVICE)?;
    CUDA_INITIALISED.store(true, Ordering::Release);
    Ok(())
}

/// The driver, once `cuInit` succeeded.
pub fn initialised() -> Result<&'static Driver, CUresult> {
    if !CUDA_INITIALISED.load(Ordering::Acquire) {
        return Err(CUDA_ERROR_NOT_INITIALIZED);
    }
    attach().map_err(|_| CUDA_ERROR_NO_DEVICE)
}

impl Driver {
    /// This process's slot, claimed the first time it needs one (its first context).
    pub fn slot(&self) -> Result<&Slot, CUresult> {
        if let Some(slot) = self.slot.get() {
            return Ok(slot);
        }
        // NVML reports processes under their host PIDs, as the real driver does.
        let host_pid = crate::host_pid::host_pid(self.state.dir()).map_err(|e| {
            eprintln!("hami-fakegpu: {e}");
            CUDA_ERROR_UNKNOWN
        })?;
        let claimed = self.state.claim_slot(host_pid).map_err(|e| {
            eprintln!("hami-fakegpu: {e}");
            CUDA_ERROR_UNKNOWN
        })?;
        // A concurrent claim may have won; the loser's slot is dropped and later reclaimed.
        if self.slot.set(claimed).is_ok() {
            // SAFETY: registers a plain `extern "C" fn()` that never unwinds.
            unsafe { libc::atexit(release_at_exit) };
        }
        self.slot.get().ok_or(CUDA_ERROR_UNKNOWN)
    }

    /// Number of devices.
    pub fn device_count(&self) -> usize {
        self.state.device_count() as usize
    }
}

/// On a normal exit, gives this process's memory and contexts back at once (a killed process
/// is cleaned up by the next one that notices). A forked child that inherited the slot
/// leaves it to its parent.
extern "C" fn release_at_exit() {
    let _ = std::panic::catch_unwind(|| {
        if let Some(Ok(driver)) = DRIVER.get()
            && let Some(slot) = driver.slot.get()
            && slot.claimed_by() == std::process::id()
        {
            driver.state.release_slot(slot);
        }
    });
}
