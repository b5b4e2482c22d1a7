//! Stream-ordered memory pools: the default pool of each device and pools the application
//! creates. Pool memory is charged to the device like any allocation; a pool keeps nothing
//! cached after a free, so device usage always equals what is allocated.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use hami_hooks::cuda::*;

use super::registry::Registry;
use crate::config::MAX_DEVICES;

/// One pool.
pub struct Pool {
    pub device: usize,
    pub default: bool,
    used: AtomicU64,
    used_high: AtomicU64,
    release_threshold: AtomicU64,
    reuse: [AtomicI32; 3],
}

static POOLS: Registry<Pool> = Registry::new(0x3_0000_0000);
static DEFAULT_POOLS: Mutex<[usize; MAX_DEVICES]> = Mutex::new([0; MAX_DEVICES]);

fn new_pool(device: usize, default: bool) -> Pool {
    Pool {
        device,
        default,
        used: AtomicU64::new(0),
        used_high: AtomicU64::new(0),
        release_threshold: AtomicU64::new(0),
        reuse: [AtomicI32::new(1), AtomicI32::new(1), AtomicI32::new(1)],
    }
}

/// The default pool of `device` (created on first use).
pub fn default_pool(device: usize) -> usize {
    let mut defaults = DEFAULT_POOLS.lock().unwrap_or_else(PoisonError::into_inner);
    if defaults[device] == 0 {
        defaults[device] = POOLS.insert(new_pool(device, true)).0;
    }
    defaults[device]
}

/// `cuMemPoolCreate`.
pub fn create(device: usize) -> usize {
    POOLS.insert(new_pool(device, false)).0
}

/// `cuMemPoolDestroy`: the default pool cannot be destroyed.
pub fn destroy(handle: usize) -> Result<(), CUresult> {
    match POOLS.get(handle) {
        Some(pool) if !pool.default => {
            POOLS.remove(handle);
            Ok(())
        }
        Some(_) => Err(CUDA_ERROR_INVALID_VALUE),
        None => Err(CUDA_ERROR_INVALID_VALUE),
    }
}

/// The pool behind `handle`.
pub fn get(handle: usize) -> Result<std::sync::Arc<Pool>, CUresult> {
    POOLS.get(handle).ok_or(CUDA_ERROR_INVALID_VALUE)
}

/// Accounts `charged` bytes allocated from the pool `handle`.
pub fn allocated(handle: usize, charged: u64) {
    if let Some(pool) = POOLS.get(handle) {
        let used = pool.used.fetch_add(charged, Ordering::AcqRel) + charged;
        pool.used_high.fetch_max(used, Ordering::AcqRel);
    }
}

/// Accounts `charged` bytes returned to the pool `handle`.
pub fn freed(handle: usize, charged: u64) {
    if let Some(pool) = POOLS.get(handle) {
        let _ = pool
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(charged))
            });
    }
}

/// Value of a pool attribute: `int` attributes widen to i64, the rest are `cuuint64_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttributeValue {
    Int(i32),
    U64(u64),
}

fn reuse_index(attribute: CUmemPool_attribute) -> Option<usize> {
    match attribute {
        CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES => Some(0),
        CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC => Some(1),
        CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES => Some(2),
        _ => None,
    }
}

impl Pool {
    /// `cuMemPoolGetAttribute`.
    pub fn attribute(&self, attribute: CUmemPool_attribute) -> Result<AttributeValue, CUresult> {
        if let Some(index) = reuse_index(attribute) {
            return Ok(AttributeValue::Int(
                self.reuse[index].load(Ordering::Relaxed),
            ));
        }
        let value = match attribute {
            CU_MEMPOOL_ATTR_RELEASE_THRESHOLD => self.release_threshold.load(Ordering::Relaxed),
            CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT | CU_MEMPOOL_ATTR_USED_MEM_CURRENT => {
                self.used.load(Ordering::Acquire)
            }
            CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH | CU_MEMPOOL_ATTR_USED_MEM_HIGH => {
                self.used_high.load(Ordering::Acquire)
            }
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        };
        Ok(AttributeValue::U64(value))
    }

    /// `cuMemPoolSetAttribute`; the high-water marks may only be reset to zero.
    pub fn set_attribute(
        &self,
        attribute: CUmemPool_attribute,
        value: AttributeValue,
    ) -> Result<(), CUresult> {
        match (reuse_index(attribute), value) {
            (Some(index), AttributeValue::Int(v)) => {
                self.reuse[index].store(v, Ordering::Relaxed);
                return Ok(());
            }
            (Some(_), AttributeValue::U64(_)) => return Err(CUDA_ERROR_INVALID_VALUE),
            (None, _) => {}
        }
        let AttributeValue::U64(value) = value else {
            return Err(CUDA_ERROR_INVALID_VALUE);
        };
        match attribute {
            CU_MEMPOOL_ATTR_RELEASE_THRESHOLD => {
                self.release_threshold.store(value, Ordering::Relaxed)
            }
            CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH | CU_MEMPOOL_ATTR_USED_MEM_HIGH if value == 0 => self
                .used_high
                .store(self.used.load(Ordering::Acquire), Ordering::Release),
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        }
        Ok(())
    }

    /// Whether `attribute` is an `int` attribute (the others are 64-bit).
    pub fn is_int_attribute(attribute: CUmemPool_attribute) -> bool {
        reuse_index(attribute).is_some()
    }
}
