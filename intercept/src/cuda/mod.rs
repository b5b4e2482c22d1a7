//! The CUDA driver entry points this library wraps, and the driver calls it makes itself.
//!
//! Each wrapper is exported under the driver's own symbol (for programs linked with `-lcuda`)
//! and handed out by `dlsym`/`cuGetProcAddress` when the caller's lookup yields the driver's
//! definition of that exact ABI variant. Signatures are checked against the `hami_hooks`
//! table at compile time (`const _: pfn::X = X;` per wrapper, in each module).

pub mod context;
pub mod devices;
pub mod info;
pub mod launch;
pub mod lookup;
pub mod memory;

use hami_hooks::cuda::{CUDA_ERROR_OUT_OF_MEMORY, CUDA_SUCCESS, CUresult};

use crate::engine::AllocError;
use crate::resolve::library::DriverLibrary;
use crate::resolve::registry::{Hook, Registry};

crate::hook_registry!(REGISTRY, Cuda, c"libcuda.so.1", [
    cuGetProcAddress (cuGetProcAddress) => lookup::cuGetProcAddress,
    cuGetProcAddress_v2 (cuGetProcAddress) => lookup::cuGetProcAddress_v2,
    cuMemAlloc_v2 (cuMemAlloc) => memory::cuMemAlloc_v2,
    cuMemAllocPitch_v2 (cuMemAllocPitch) => memory::cuMemAllocPitch_v2,
    cuMemAllocManaged (cuMemAllocManaged) => memory::cuMemAllocManaged,
    cuMemFree_v2 (cuMemFree) => memory::cuMemFree_v2,
    cuMemAllocAsync (cuMemAllocAsync) => memory::cuMemAllocAsync,
    cuMemAllocAsync_ptsz (cuMemAllocAsync) => memory::cuMemAllocAsync_ptsz,
    cuMemFreeAsync (cuMemFreeAsync) => memory::cuMemFreeAsync,
    cuMemFreeAsync_ptsz (cuMemFreeAsync) => memory::cuMemFreeAsync_ptsz,
    cuMemAllocFromPoolAsync (cuMemAllocFromPoolAsync) => memory::cuMemAllocFromPoolAsync,
    cuMemAllocFromPoolAsync_ptsz (cuMemAllocFromPoolAsync) => memory::cuMemAllocFromPoolAsync_ptsz,
    cuMemCreate (cuMemCreate) => memory::cuMemCreate,
    cuMemRelease (cuMemRelease) => memory::cuMemRelease,
    cuArrayCreate_v2 (cuArrayCreate) => memory::cuArrayCreate_v2,
    cuArray3DCreate_v2 (cuArray3DCreate) => memory::cuArray3DCreate_v2,
    cuArrayDestroy (cuArrayDestroy) => memory::cuArrayDestroy,
    cuMemGetInfo (cuMemGetInfo) => info::cuMemGetInfo,
    cuMemGetInfo_v2 (cuMemGetInfo) => info::cuMemGetInfo_v2,
    cuDeviceTotalMem (cuDeviceTotalMem) => info::cuDeviceTotalMem,
    cuDeviceTotalMem_v2 (cuDeviceTotalMem) => info::cuDeviceTotalMem_v2,
    cuDevicePrimaryCtxRetain (cuDevicePrimaryCtxRetain) => context::cuDevicePrimaryCtxRetain,
    cuCtxCreate (cuCtxCreate) => context::cuCtxCreate,
    cuCtxCreate_v2 (cuCtxCreate) => context::cuCtxCreate_v2,
    cuCtxCreate_v3 (cuCtxCreate) => context::cuCtxCreate_v3,
    cuCtxCreate_v4 (cuCtxCreate) => context::cuCtxCreate_v4,
    cuLaunchKernel (cuLaunchKernel) => launch::cuLaunchKernel,
    cuLaunchKernel_ptsz (cuLaunchKernel) => launch::cuLaunchKernel_ptsz,
    cuLaunchKernelEx (cuLaunchKernelEx) => launch::cuLaunchKernelEx,
    cuLaunchKernelEx_ptsz (cuLaunchKernelEx) => launch::cuLaunchKernelEx_ptsz,
    cuLaunchCooperativeKernel (cuLaunchCooperativeKernel) => launch::cuLaunchCooperativeKernel,
    cuLaunchCooperativeKernel_ptsz (cuLaunchCooperativeKernel) => launch::cuLaunchCooperativeKernel_ptsz,
    cuGraphLaunch (cuGraphLaunch) => launch::cuGraphLaunch,
    cuGraphLaunch_ptsz (cuGraphLaunch) => launch::cuGraphLaunch_ptsz,
]);

/// Driver entry points the library calls itself and never wraps.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
#[repr(usize)]
pub enum Helper {
    cuCtxGetDevice,
    cuDeviceGetCount,
    cuDeviceGetUuid,
    cuDeviceGetUuid_v2,
    cuMemGetAllocationGranularity,
}

static HELPER_ROWS: [Hook; 5] = [
    Hook::new(c"cuCtxGetDevice", "cuCtxGetDevice", std::ptr::null()),
    Hook::new(c"cuDeviceGetCount", "cuDeviceGetCount", std::ptr::null()),
    Hook::new(c"cuDeviceGetUuid", "cuDeviceGetUuid", std::ptr::null()),
    Hook::new(c"cuDeviceGetUuid_v2", "cuDeviceGetUuid", std::ptr::null()),
    Hook::new(
        c"cuMemGetAllocationGranularity",
        "cuMemGetAllocationGranularity",
        std::ptr::null(),
    ),
];

/// The helpers' real addresses (never consulted for wrapping).
pub static HELPERS: Registry = Registry::new(DriverLibrary::new(c"libcuda.so.1"), &HELPER_ROWS);

/// The code an accounted call returns: the exact out-of-memory code over the cap.
pub fn result_of(outcome: Result<u64, AllocError<CUresult>>) -> CUresult {
    match outcome {
        Ok(_) => CUDA_SUCCESS,
        Err(AllocError::OverCap(_) | AllocError::TableFull(_)) => CUDA_ERROR_OUT_OF_MEMORY,
        Err(AllocError::Driver(code)) => code,
    }
}

/// A driver code as a `Result`.
#[inline]
pub fn checked(code: CUresult) -> Result<(), CUresult> {
    if code == CUDA_SUCCESS {
        Ok(())
    } else {
        Err(code)
    }
}

#[cfg(test)]
mod tests {
    use hami_hooks::cuda::{CUDA_ENTRY_POINTS, Kind, entry_point};

    use super::*;

    #[test]
    fn every_row_is_a_table_entry_of_the_same_family() {
        for hook in REGISTRY.hooks().iter().chain(HELPERS.hooks()) {
            let name = hook.symbol.to_str().unwrap();
            let entry = entry_point(name).unwrap_or_else(|| panic!("{name} not in hami_hooks"));
            assert_eq!(entry.base, hook.base, "{name}");
        }
    }

    #[test]
    fn rows_of_one_family_are_adjacent() {
        let hooks = REGISTRY.hooks();
        for (i, hook) in hooks.iter().enumerate() {
            if let Some(later) = hooks[i + 1..].iter().position(|h| h.base == hook.base) {
                assert!(
                    later == 0 || hooks[i + 1].base == hook.base,
                    "{} split",
                    hook.base
                );
            }
        }
    }

    #[test]
    fn every_allocation_free_launch_and_memory_query_is_wrapped() {
        let skipped = ["cuMemGetAllocationGranularity"];
        for entry in CUDA_ENTRY_POINTS {
            let accounted = matches!(
                entry.kind,
                Kind::Alloc
                    | Kind::Free
                    | Kind::Launch
                    | Kind::GraphLaunch
                    | Kind::MemInfo
                    | Kind::Lookup
            );
            let name = entry.symbol.to_str().unwrap();
            if accounted && !skipped.contains(&name) {
                assert!(
                    REGISTRY.by_symbol(name.as_bytes()).is_some(),
                    "{name} is not wrapped"
                );
            }
        }
    }
}
