//! Device memory: every allocation is charged to the shared device at 2 MiB granularity and
//! backed by host pages (`MAP_NORESERVE`, so untouched memory costs nothing), and the device
//! address is the host address, so copies and kernels move real bytes.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use hami_hooks::cuda::{CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_OUT_OF_MEMORY, CUresult};

use super::Driver;
use super::registry::Registry;
use super::vmm;

/// The unit in which device memory is consumed (and `cuMemGetAllocationGranularity`).
pub const GRANULARITY: u64 = 2 << 20;
/// Row alignment of `cuMemAllocPitch`.
pub const PITCH_ALIGNMENT: usize = 512;

/// Where an allocation came from, so that its release is accounted to the right place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Plain,
    Pitch,
    Managed,
    /// Stream-ordered, from the pool with this handle.
    Pool(usize),
    /// The storage of a CUDA array.
    Array,
}

/// One live allocation.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    pub base: u64,
    pub len: u64,
    pub charged: u64,
    pub device: usize,
    pub origin: Origin,
}

static REGIONS: Mutex<BTreeMap<u64, Region>> = Mutex::new(BTreeMap::new());

/// CUDA arrays: handle → base address of their storage region.
pub static ARRAYS: Registry<u64> = Registry::new(0xa_0000_0000);

fn regions() -> MutexGuard<'static, BTreeMap<u64, Region>> {
    REGIONS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What `bytes` costs on the device.
pub fn charge_for(bytes: u64) -> Option<u64> {
    bytes.checked_next_multiple_of(GRANULARITY)
}

/// Allocates `bytes` on `device`; `CUDA_ERROR_OUT_OF_MEMORY` when the device is full.
pub fn allocate(
    driver: &Driver,
    device: usize,
    bytes: u64,
    origin: Origin,
) -> Result<Region, CUresult> {
    if bytes == 0 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let charged = charge_for(bytes).ok_or(CUDA_ERROR_OUT_OF_MEMORY)?;
    let slot = driver.slot()?;
    if !driver.state.reserve(slot, device, charged) {
        return Err(CUDA_ERROR_OUT_OF_MEMORY);
    }
    let Some(base) = take_spare(bytes).or_else(|| host_map(bytes)) else {
        driver.state.release(slot, device, charged);
        return Err(CUDA_ERROR_OUT_OF_MEMORY);
    };
    let region = Region {
        base,
        len: bytes,
        charged,
        device,
        origin,
    };
    regions().insert(base, region);
    Ok(region)
}

/// Frees the allocation that starts at `base`.
pub fn free(driver: &Driver, base: u64) -> Result<Region, CUresult> {
    let region = regions().remove(&base).ok_or(CUDA_ERROR_INVALID_VALUE)?;
    if !keep_spare(region.base, region.len) {
        host_unmap(region.base, region.len);
    }
    let slot = driver.slot()?;
    driver.state.release(slot, region.device, region.charged);
    Ok(region)
}

/// The host address of `[address, address + len)` if it lies inside one allocation or one
/// mapped VMM range; `CUDA_ERROR_INVALID_VALUE` otherwise.
pub fn host_range(address: u64, len: u64) -> Result<*mut u8, CUresult> {
    let end = address.checked_add(len).ok_or(CUDA_ERROR_INVALID_VALUE)?;
    let inside = regions()
        .range(..=address)
        .next_back()
        .is_some_and(|(_, region)| end <= region.base + region.len);
    if inside || vmm::is_mapped(address, len) {
        Ok(address as usize as *mut u8)
    } else {
        Err(CUDA_ERROR_INVALID_VALUE)
    }
}

/// Largest mapping kept for reuse, and how many are kept.
const SPARE_MAX_LEN: u64 = 16 << 20;
const SPARE_SLOTS: usize = 16;

/// Freed host mappings kept for reuse as `(len, base)`: mmap and munmap are syscalls, which
/// are costly on VMs, and programs free and allocate the same sizes over and over. Like
/// device memory, a reused block keeps its old contents.
static SPARE: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

fn take_spare(len: u64) -> Option<u64> {
    let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
    let index = spare.iter().position(|(l, _)| *l == len)?;
    Some(spare.swap_remove(index).1)
}

fn keep_spare(base: u64, len: u64) -> bool {
    let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
    if len > SPARE_MAX_LEN || spare.len() >= SPARE_SLOTS {
        return false;
    }
    spare.push((len, base));
    true
}

/// Reserves host pages for `bytes` without committing them.
pub fn host_map(bytes: u64) -> Option<u64> {
    let len = usize::try_from(bytes).ok()?;
    // SAFETY: a fresh anonymous private mapping at a kernel-chosen address; it replaces
    // nothing, and NORESERVE leaves pages uncommitted until written.
    let address = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    (address != libc::MAP_FAILED).then_some(address as usize as u64)
}

/// Returns pages obtained from [`host_map`].
pub fn host_unmap(base: u64, bytes: u64) {
    let Ok(len) = usize::try_from(bytes) else {
        return;
    };
    // SAFETY: `base`/`len` describe exactly one mapping made by `host_map` and removed from
    // the region table before this call, so no copy can reach it any more.
    unsafe { libc::munmap(base as usize as *mut libc::c_void, len) };
}

/// Copies `len` bytes between two validated host ranges (they may overlap).
///
/// # Safety
/// Both ranges must be valid for `len` bytes (checked with [`host_range`] or owned by the
/// caller).
pub unsafe fn copy_bytes(dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: the caller guarantees both ranges; `copy` tolerates overlap.
    unsafe { std::ptr::copy(src, dst, len) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_round_up_to_the_granularity() {
        assert_eq!(charge_for(1), Some(GRANULARITY));
        assert_eq!(charge_for(GRANULARITY), Some(GRANULARITY));
        assert_eq!(charge_for(GRANULARITY + 1), Some(2 * GRANULARITY));
        assert_eq!(charge_for(u64::MAX), None);
    }

    #[test]
    fn host_ranges_outside_allocations_are_refused() {
        assert_eq!(host_range(0x10, 4), Err(CUDA_ERROR_INVALID_VALUE));
        assert_eq!(host_range(u64::MAX, 4), Err(CUDA_ERROR_INVALID_VALUE));
    }
}
