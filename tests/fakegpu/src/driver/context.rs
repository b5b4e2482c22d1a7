//! Contexts: primary (retained/released, one per device) and created ones, the per-thread
//! current-context stack, and what a context costs on the shared device.
//!
//! A process becomes a compute process of a device (visible to NVML) when it opens its first
//! context there, as with the real driver, not at `cuInit`.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hami_hooks::cuda::{
    CUDA_ERROR_INVALID_CONTEXT, CUDA_ERROR_INVALID_DEVICE, CUDA_ERROR_OUT_OF_MEMORY, CUresult,
};

use super::registry::Registry;
use super::{Driver, initialised};
use crate::config::MAX_DEVICES;

/// A context on one device.
pub struct Context {
    pub device: usize,
    pub primary: bool,
    destroyed: AtomicBool,
}

static CONTEXTS: Registry<Context> = Registry::new(0x1_0000_0000);

struct PrimaryState {
    handle: usize,
    retains: u32,
}

static PRIMARY: [Mutex<PrimaryState>; MAX_DEVICES] = [const {
    Mutex::new(PrimaryState {
        handle: 0,
        retains: 0,
    })
}; MAX_DEVICES];

thread_local! {
    static CURRENT: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    /// The last context `current()` looked up, so the launch path skips the table.
    static LAST: RefCell<Option<(usize, Arc<Context>)>> = const { RefCell::new(None) };
}

/// Checks that `device` exists.
pub fn check_device(driver: &Driver, device: i32) -> Result<usize, CUresult> {
    usize::try_from(device)
        .ok()
        .filter(|d| *d < driver.device_count())
        .ok_or(CUDA_ERROR_INVALID_DEVICE)
}

fn open(driver: &Driver, device: usize, primary: bool) -> Result<usize, CUresult> {
    let slot = driver.slot()?;
    let cost = driver.state.context_memory();
    if cost > 0 && !driver.state.reserve(slot, device, cost) {
        return Err(CUDA_ERROR_OUT_OF_MEMORY);
    }
    driver.state.context_opened(slot.index(), device);
    let (handle, _) = CONTEXTS.insert(Context {
        device,
        primary,
        destroyed: AtomicBool::new(false),
    });
    Ok(handle)
}

fn close(driver: &Driver, handle: usize) -> Result<(), CUresult> {
    let context = CONTEXTS.remove(handle).ok_or(CUDA_ERROR_INVALID_CONTEXT)?;
    context.destroyed.store(true, Ordering::Release);
    let slot = driver.slot()?;
    driver.state.context_closed(slot.index(), context.device);
    let cost = driver.state.context_memory();
    if cost > 0 {
        driver.state.release(slot, context.device, cost);
    }
    CURRENT.with(|stack| {
        for entry in stack.borrow_mut().iter_mut() {
            if *entry == handle {
                *entry = 0;
            }
        }
    });
    Ok(())
}

/// `cuDevicePrimaryCtxRetain`.
pub fn primary_retain(device: i32) -> Result<usize, CUresult> {
    let driver = initialised()?;
    let device = check_device(driver, device)?;
    let mut primary = PRIMARY[device]
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if primary.retains == 0 {
        primary.handle = open(driver, device, true)?;
    }
    primary.retains += 1;
    Ok(primary.handle)
}

/// `cuDevicePrimaryCtxRelease`: the context goes away with the last release.
pub fn primary_release(device: i32) -> Result<(), CUresult> {
    let driver = initialised()?;
    let device = check_device(driver, device)?;
    let mut primary = PRIMARY[device]
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if primary.retains == 0 {
        return Err(CUDA_ERROR_INVALID_CONTEXT);
    }
    primary.retains -= 1;
    if primary.retains == 0 {
        close(driver, primary.handle)?;
        primary.handle = 0;
    }
    Ok(())
}

/// `cuDevicePrimaryCtxGetState`: whether the primary context is active.
pub fn primary_active(device: i32) -> Result<bool, CUresult> {
    let driver = initialised()?;
    let device = check_device(driver, device)?;
    Ok(PRIMARY[device]
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retains
        > 0)
}

/// `cuCtxCreate*`: a new context, made current.
pub fn create(device: i32) -> Result<usize, CUresult> {
    let driver = initialised()?;
    let device = check_device(driver, device)?;
    let handle = open(driver, device, false)?;
    push(handle);
    Ok(handle)
}

/// `cuCtxDestroy*`.
pub fn destroy(handle: usize) -> Result<(), CUresult> {
    let driver = initialised()?;
    match CONTEXTS.get(handle) {
        Some(context) if !context.primary => close(driver, handle),
        _ => Err(CUDA_ERROR_INVALID_CONTEXT),
    }
}

/// The calling thread's current context.
pub fn current() -> Result<Arc<Context>, CUresult> {
    let handle = current_handle();
    let cached = LAST.with(|last| match &*last.borrow() {
        Some((h, context)) if *h == handle => Some(context.clone()),
        _ => None,
    });
    let context = match cached {
        Some(context) => context,
        None => {
            let context = CONTEXTS.get(handle).ok_or(CUDA_ERROR_INVALID_CONTEXT)?;
            LAST.with(|last| *last.borrow_mut() = Some((handle, context.clone())));
            context
        }
    };
    if context.destroyed.load(Ordering::Acquire) {
        return Err(CUDA_ERROR_INVALID_CONTEXT);
    }
    Ok(context)
}

/// The handle of the calling thread's current context (0 when none).
pub fn current_handle() -> usize {
    CURRENT.with(|stack| stack.borrow().last().copied().unwrap_or(0))
}

/// `cuCtxSetCurrent`: replaces the top of the stack (null unbinds).
pub fn set_current(handle: usize) -> Result<(), CUresult> {
    initialised()?;
    if handle != 0 && CONTEXTS.get(handle).is_none() {
        return Err(CUDA_ERROR_INVALID_CONTEXT);
    }
    CURRENT.with(|stack| {
        let mut stack = stack.borrow_mut();
        match stack.last_mut() {
            Some(top) => *top = handle,
            None => stack.push(handle),
        }
    });
    Ok(())
}

/// `cuCtxPushCurrent`.
pub fn push_current(handle: usize) -> Result<(), CUresult> {
    initialised()?;
    if CONTEXTS.get(handle).is_none() {
        return Err(CUDA_ERROR_INVALID_CONTEXT);
    }
    push(handle);
    Ok(())
}

fn push(handle: usize) {
    CURRENT.with(|stack| stack.borrow_mut().push(handle));
}

/// `cuCtxPopCurrent`: returns the popped context.
pub fn pop_current() -> Result<usize, CUresult> {
    initialised()?;
    CURRENT
        .with(|stack| stack.borrow_mut().pop())
        .filter(|h| *h != 0)
        .ok_or(CUDA_ERROR_INVALID_CONTEXT)
}
