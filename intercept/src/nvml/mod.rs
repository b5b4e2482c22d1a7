//! NVML memory queries report the container's slice, like their CUDA counterparts.
//!
//! An NVML device handle is matched to the container's device by UUID (`nvmlDeviceGetUUID`),
//! never by index: NVML orders devices by PCI bus, CUDA by speed unless told otherwise, and
//! HAMi-core's index mix-up silently lost enforcement (HAMi#1381). In environment mode (caps
//! per CUDA ordinal) the UUID is matched against the visible CUDA devices.

#![allow(non_snake_case)]

use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use hami_hooks::nvml::{
    NVML_ERROR_FUNCTION_NOT_FOUND, NVML_SUCCESS, c_char, c_uint, nvmlDevice_t, nvmlMemory_t,
    nvmlMemory_v2_t, nvmlReturn_t, pfn,
};

use crate::boundary::guarded;
use crate::cuda::devices;
use crate::engine::view::{MemoryView, memory_view};
use crate::resolve::library::DriverLibrary;
use crate::resolve::registry::{Hook, Registry};
use crate::runtime::engine;

crate::hook_registry!(REGISTRY, Nvml, c"libnvidia-ml.so.1", [
    nvmlDeviceGetMemoryInfo (nvmlDeviceGetMemoryInfo) => nvmlDeviceGetMemoryInfo,
    nvmlDeviceGetMemoryInfo_v2 (nvmlDeviceGetMemoryInfo) => nvmlDeviceGetMemoryInfo_v2,
]);

static HELPER_ROWS: [Hook; 1] = [Hook::new(
    c"nvmlDeviceGetUUID",
    "nvmlDeviceGetUUID",
    std::ptr::null(),
)];
static HELPERS: Registry = Registry::new(DriverLibrary::new(c"libnvidia-ml.so.1"), &HELPER_ROWS);

const CACHED_HANDLES: usize = 64;
const OUTSIDE: u32 = u32::MAX;
static HANDLES: [AtomicPtr<hami_hooks::nvml::nvmlDevice_st>; CACHED_HANDLES] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; CACHED_HANDLES];
static INDEXES: [AtomicU32; CACHED_HANDLES] = [const { AtomicU32::new(0) }; CACHED_HANDLES];

/// The container device index of an NVML handle (cached per handle).
fn container_index(device: nvmlDevice_t) -> Option<usize> {
    let decode = |encoded: u32| (encoded != OUTSIDE).then_some(encoded as usize);
    for (slot, handle) in HANDLES.iter().enumerate() {
        let cached = handle.load(Ordering::Acquire);
        if cached == device {
            return decode(INDEXES[slot].load(Ordering::Acquire));
        }
        if cached.is_null() {
            let index = resolve(device);
            INDEXES[slot].store(index.map_or(OUTSIDE, |i| i as u32), Ordering::Release);
            // A racing thread may take this slot; then the result is simply not cached.
            let _ = handle.compare_exchange(
                std::ptr::null_mut(),
                device,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            return index;
        }
    }
    resolve(device)
}

fn resolve(device: nvmlDevice_t) -> Option<usize> {
    let engine = engine()?;
    let get_uuid = HELPERS.real(0);
    if get_uuid.is_null() {
        return None;
    }
    // SAFETY: the driver's nvmlDeviceGetUUID, typed as the table says.
    let get_uuid =
        unsafe { std::mem::transmute::<*mut std::ffi::c_void, pfn::nvmlDeviceGetUUID>(get_uuid) };
    let mut buffer = [0 as c_char; 96];
    // SAFETY: the buffer is valid for its length.
    if unsafe { get_uuid(device, buffer.as_mut_ptr(), buffer.len() as c_uint) } != NVML_SUCCESS {
        return None;
    }
    let bytes: Vec<u8> = buffer
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    let uuid = String::from_utf8(bytes).ok()?;
    if engine.devices().iter().any(|d| d.uuid.is_some()) {
        return engine.index_of_uuid(&uuid);
    }
    let ordinal = devices::ordinal_of_uuid(&devices::parse_uuid(&uuid)?)?;
    devices::of_ordinal(engine, ordinal).index
}

fn view(device: nvmlDevice_t, real_total: u64, real_free: u64) -> Option<MemoryView> {
    let engine = engine()?;
    let index = container_index(device)?;
    let limit = engine.limit(index)?;
    Some(memory_view(
        limit,
        engine.used(index),
        real_total,
        real_free,
    ))
}

/// `nvmlDeviceGetMemoryInfo`.
///
/// # Safety
/// NVML's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_t,
) -> nvmlReturn_t {
    let real = crate::real_or!(
        REGISTRY,
        Nvml::nvmlDeviceGetMemoryInfo,
        pfn::nvmlDeviceGetMemoryInfo,
        NVML_ERROR_FUNCTION_NOT_FOUND
    );
    // SAFETY: forwarded unchanged.
    let code = unsafe { real(device, memory) };
    if code != NVML_SUCCESS || memory.is_null() {
        return code;
    }
    guarded(
        || {
            // SAFETY: non-null and just written by NVML.
            let memory = unsafe { &mut *memory };
            if let Some(v) = view(device, memory.total, memory.free) {
                memory.total = v.total;
                memory.free = v.free;
                memory.used = v.used;
            }
        },
        || {},
    );
    code
}
const _: pfn::nvmlDeviceGetMemoryInfo = nvmlDeviceGetMemoryInfo;

/// `nvmlDeviceGetMemoryInfo_v2` (`reserved` is kept: it is the driver's, inside `used`).
///
/// # Safety
/// NVML's contract for this entry point.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_v2_t,
) -> nvmlReturn_t {
    let real = crate::real_or!(
        REGISTRY,
        Nvml::nvmlDeviceGetMemoryInfo_v2,
        pfn::nvmlDeviceGetMemoryInfo_v2,
        NVML_ERROR_FUNCTION_NOT_FOUND
    );
    // SAFETY: forwarded unchanged.
    let code = unsafe { real(device, memory) };
    if code != NVML_SUCCESS || memory.is_null() {
        return code;
    }
    guarded(
        || {
            // SAFETY: non-null and just written by NVML.
            let memory = unsafe { &mut *memory };
            if let Some(v) = view(device, memory.total, memory.free) {
                memory.total = v.total;
                memory.free = v.free;
                memory.used = v.used;
            }
        },
        || {},
    );
    code
}
const _: pfn::nvmlDeviceGetMemoryInfo_v2 = nvmlDeviceGetMemoryInfo_v2;

#[cfg(test)]
mod tests {
    use hami_hooks::nvml::{Kind, NVML_ENTRY_POINTS};

    use super::*;

    #[test]
    fn every_memory_query_is_wrapped() {
        for entry in NVML_ENTRY_POINTS.iter().filter(|e| e.kind == Kind::MemInfo) {
            let name = entry.symbol.to_str().unwrap();
            assert!(
                REGISTRY.by_symbol(name.as_bytes()).is_some(),
                "{name} is not wrapped"
            );
        }
    }
}
