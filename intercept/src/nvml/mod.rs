//! NVML memory queries report the container's slice, like their CUDA counterparts, and its
//! process lists the container's own processes ([`processes`]).
//!
//! An NVML device handle is matched to the container's device by UUID (`nvmlDeviceGetUUID`),
//! never by index: NVML orders devices by PCI bus, CUDA by speed unless told otherwise, and
//! HAMi-core's index mix-up silently lost enforcement (HAMi#1381). In environment mode (caps
//! per CUDA ordinal) the UUID is matched against the visible CUDA devices.

#![allow(non_snake_case)]

pub mod processes;

use std::sync::atomic::{AtomicU64, Ordering};

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
    nvmlDeviceGetComputeRunningProcesses_v3 (nvmlDeviceGetComputeRunningProcesses)
        => processes::nvmlDeviceGetComputeRunningProcesses_v3,
    nvmlDeviceGetProcessUtilization (nvmlDeviceGetProcessUtilization)
        => processes::nvmlDeviceGetProcessUtilization,
]);

static HELPER_ROWS: [Hook; 1] = [Hook::new(
    c"nvmlDeviceGetUUID",
    "nvmlDeviceGetUUID",
    std::ptr::null(),
)];
static HELPERS: Registry = Registry::new(DriverLibrary::new(c"libnvidia-ml.so.1"), &HELPER_ROWS);

const CACHED_HANDLES: usize = 64;
const HANDLE_BITS: u32 = 48;
const HANDLE_MASK: u64 = (1 << HANDLE_BITS) - 1;
/// Upper 16 bits: 0 for "outside the container", else index + 1; lower 48 bits: the handle
/// (user-space addresses fit). One word per entry, so a reader never sees a handle with another
/// handle's answer.
static CACHE: [AtomicU64; CACHED_HANDLES] = [const { AtomicU64::new(0) }; CACHED_HANDLES];

/// The container device index of an NVML handle (cached per handle once settled).
fn container_index(device: nvmlDevice_t) -> Option<usize> {
    let key = device as usize as u64;
    if key == 0 || key > HANDLE_MASK {
        return resolve(device).0;
    }
    let decode = |word: u64| match word >> HANDLE_BITS {
        0 => None,
        encoded => Some(encoded as usize - 1),
    };
    for entry in &CACHE {
        let word = entry.load(Ordering::Acquire);
        if word & HANDLE_MASK == key {
            return decode(word);
        }
        if word == 0 {
            let (index, settled) = resolve(device);
            if settled {
                let encoded = index.map_or(0, |i| i as u64 + 1);
                // Losing the race only means this answer is not cached.
                let _ = entry.compare_exchange(
                    0,
                    (encoded << HANDLE_BITS) | key,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            return index;
        }
    }
    resolve(device).0
}

/// The container index of an NVML device, and whether the answer is final (cacheable).
fn resolve(device: nvmlDevice_t) -> (Option<usize>, bool) {
    let Some(engine) = engine() else {
        return (None, false);
    };
    let get_uuid = HELPERS.real(0);
    if get_uuid.is_null() {
        return (None, false);
    }
    // SAFETY: the driver's nvmlDeviceGetUUID, typed as the table says.
    let get_uuid =
        unsafe { std::mem::transmute::<*mut std::ffi::c_void, pfn::nvmlDeviceGetUUID>(get_uuid) };
    let mut buffer = [0 as c_char; 96];
    // SAFETY: the buffer is valid for its length.
    if unsafe { get_uuid(device, buffer.as_mut_ptr(), buffer.len() as c_uint) } != NVML_SUCCESS {
        return (None, false);
    }
    let bytes: Vec<u8> = buffer
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    let Ok(uuid) = String::from_utf8(bytes) else {
        return (None, true);
    };
    if engine.devices().iter().any(|d| d.uuid.is_some()) {
        return (engine.index_of_uuid(&uuid), true);
    }
    // Environment mode: caps are per CUDA ordinal, so find the CUDA device with this UUID
    // (possible only once the process has initialized CUDA; until then, ask again next time).
    let Some(bytes) = devices::parse_uuid(&uuid) else {
        return (None, true);
    };
    match devices::ordinal_of_uuid(&bytes) {
        Some(ordinal) => (devices::of_ordinal(engine, ordinal).index, true),
        None => (None, false),
    }
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

/// Replaces what NVML reported for `device` with the container's slice (both memory layouts
/// share these three fields); on a panic the driver's figures stay.
fn report_slice(device: nvmlDevice_t, total: &mut u64, free: &mut u64, used: &mut u64) {
    guarded(
        || {
            if let Some(v) = view(device, *total, *free) {
                *total = v.total;
                *free = v.free;
                *used = v.used;
            }
        },
        || {},
    );
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
    // SAFETY: non-null and just written by NVML.
    let memory = unsafe { &mut *memory };
    report_slice(
        device,
        &mut memory.total,
        &mut memory.free,
        &mut memory.used,
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
    // SAFETY: non-null and just written by NVML.
    let memory = unsafe { &mut *memory };
    report_slice(
        device,
        &mut memory.total,
        &mut memory.free,
        &mut memory.used,
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
