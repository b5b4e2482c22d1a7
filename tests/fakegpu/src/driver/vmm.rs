//! Virtual memory management: physical allocations (`cuMemCreate`) are sparse memfds charged
//! to the device; address reservations are `PROT_NONE` host ranges; mapping puts the memfd
//! at the reserved address, so bytes written through one mapping are real.
//!
//! Like the driver, physical memory is freed when its handle is released *and* the last
//! mapping of it is gone.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use hami_hooks::cuda::{
    CUDA_ERROR_ALREADY_MAPPED, CUDA_ERROR_INVALID_HANDLE, CUDA_ERROR_INVALID_VALUE,
    CUDA_ERROR_NOT_MAPPED, CUDA_ERROR_OUT_OF_MEMORY, CUresult,
};

use super::Driver;
use super::memory::GRANULARITY;
use super::registry::Registry;

/// A physical allocation.
pub struct Physical {
    fd: OwnedFd,
    pub size: u64,
    pub device: usize,
    /// The handle itself plus one per mapping.
    references: AtomicU32,
}

static PHYSICAL: Registry<Physical> = Registry::new(0x2_0000_0000);

struct Reservation {
    raw: u64,
    raw_len: u64,
    size: u64,
}

struct Mapping {
    size: u64,
    handle: usize,
}

static RESERVATIONS: Mutex<BTreeMap<u64, Reservation>> = Mutex::new(BTreeMap::new());
static MAPPINGS: Mutex<BTreeMap<u64, Mapping>> = Mutex::new(BTreeMap::new());

fn lock<T>(mutex: &'static Mutex<T>) -> MutexGuard<'static, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn check_granular(size: u64) -> Result<(), CUresult> {
    if size == 0 || !size.is_multiple_of(GRANULARITY) {
        Err(CUDA_ERROR_INVALID_VALUE)
    } else {
        Ok(())
    }
}

/// `cuMemCreate`.
pub fn create(driver: &Driver, device: usize, size: u64) -> Result<usize, CUresult> {
    check_granular(size)?;
    let slot = driver.slot()?;
    if !driver.state.reserve(slot, device, size) {
        return Err(CUDA_ERROR_OUT_OF_MEMORY);
    }
    match memfd(size) {
        Some(fd) => {
            let (handle, _) = PHYSICAL.insert(Physical {
                fd,
                size,
                device,
                references: AtomicU32::new(1),
            });
            Ok(handle)
        }
        None => {
            driver.state.release(slot, device, size);
            Err(CUDA_ERROR_OUT_OF_MEMORY)
        }
    }
}

fn memfd(size: u64) -> Option<OwnedFd> {
    // SAFETY: memfd_create with a static NUL-terminated name; the result is checked.
    let raw = unsafe { libc::memfd_create(c"hami-fakegpu-vmm".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a new descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ftruncate on the descriptor just created; a sparse file costs no memory.
    let rc = unsafe { libc::ftruncate(fd.as_raw_fd(), libc::off_t::try_from(size).ok()?) };
    (rc == 0).then_some(fd)
}

fn unreference(driver: &Driver, handle: usize) -> Result<(), CUresult> {
    let physical = PHYSICAL.get(handle).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
    if physical.references.fetch_sub(1, Ordering::AcqRel) == 1 {
        PHYSICAL.remove(handle);
        let slot = driver.slot()?;
        driver.state.release(slot, physical.device, physical.size);
    }
    Ok(())
}

/// `cuMemRelease`.
pub fn release(driver: &Driver, handle: usize) -> Result<(), CUresult> {
    unreference(driver, handle)
}

/// `cuMemAddressReserve`: a `PROT_NONE` range aligned to the granularity (or `alignment`).
pub fn reserve_address(size: u64, alignment: u64) -> Result<u64, CUresult> {
    check_granular(size)?;
    let alignment = alignment.max(GRANULARITY);
    if !alignment.is_power_of_two() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let raw_len = size
        .checked_add(alignment)
        .ok_or(CUDA_ERROR_OUT_OF_MEMORY)?;
    let len = usize::try_from(raw_len).map_err(|_| CUDA_ERROR_OUT_OF_MEMORY)?;
    // SAFETY: a fresh inaccessible anonymous mapping at a kernel-chosen address.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return Err(CUDA_ERROR_OUT_OF_MEMORY);
    }
    let raw = raw as usize as u64;
    let base = raw.next_multiple_of(alignment);
    lock(&RESERVATIONS).insert(base, Reservation { raw, raw_len, size });
    Ok(base)
}

/// `cuMemAddressFree`.
pub fn free_address(base: u64, size: u64) -> Result<(), CUresult> {
    let mut reservations = lock(&RESERVATIONS);
    match reservations.get(&base) {
        Some(reservation) if reservation.size == size => {}
        _ => return Err(CUDA_ERROR_INVALID_VALUE),
    }
    let end = base + size;
    if lock(&MAPPINGS).range(base..end).next().is_some() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    if let Some(reservation) = reservations.remove(&base) {
        // SAFETY: unmaps exactly the range created in `reserve_address`; nothing is mapped
        // inside it any more (checked above).
        unsafe {
            libc::munmap(
                reservation.raw as usize as *mut libc::c_void,
                reservation.raw_len as usize,
            )
        };
    }
    Ok(())
}

fn inside_reservation(address: u64, size: u64) -> bool {
    lock(&RESERVATIONS)
        .range(..=address)
        .next_back()
        .is_some_and(|(base, r)| address + size <= base + r.size)
}

/// `cuMemMap`: maps `size` bytes of `handle` from `offset` at `address`.
pub fn map(address: u64, size: u64, offset: u64, handle: usize) -> Result<(), CUresult> {
    check_granular(size)?;
    if !offset.is_multiple_of(GRANULARITY) {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let physical = PHYSICAL.get(handle).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
    if offset
        .checked_add(size)
        .is_none_or(|end| end > physical.size)
    {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    if !inside_reservation(address, size) {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let mut mappings = lock(&MAPPINGS);
    let overlaps_before = mappings
        .range(..address)
        .next_back()
        .is_some_and(|(base, m)| base + m.size > address);
    if overlaps_before || mappings.range(address..address + size).next().is_some() {
        return Err(CUDA_ERROR_ALREADY_MAPPED);
    }
    // SAFETY: MAP_FIXED over part of our own PROT_NONE reservation (checked above, and not
    // mapped yet), backed by the physical allocation's memfd which is at least offset + size.
    let mapped = unsafe {
        libc::mmap(
            address as usize as *mut libc::c_void,
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_FIXED,
            physical.fd.as_raw_fd(),
            libc::off_t::try_from(offset).map_err(|_| CUDA_ERROR_INVALID_VALUE)?,
        )
    };
    if mapped == libc::MAP_FAILED {
        return Err(CUDA_ERROR_OUT_OF_MEMORY);
    }
    physical.references.fetch_add(1, Ordering::AcqRel);
    mappings.insert(address, Mapping { size, handle });
    Ok(())
}

/// `cuMemUnmap`: the range goes back to being reserved.
pub fn unmap(driver: &Driver, address: u64, size: u64) -> Result<(), CUresult> {
    if let Ok(context) = super::context::current() {
        super::stream::synchronize_device(context.device)?;
    }
    let mapping = {
        let mut mappings = lock(&MAPPINGS);
        match mappings.get(&address) {
            Some(mapping) if mapping.size == size => {}
            _ => return Err(CUDA_ERROR_NOT_MAPPED),
        }
        mappings.remove(&address).ok_or(CUDA_ERROR_NOT_MAPPED)?
    };
    // SAFETY: replaces our own mapping (just removed from the table) with PROT_NONE again.
    unsafe {
        libc::mmap(
            address as usize as *mut libc::c_void,
            size as usize,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    unreference(driver, mapping.handle)
}

/// Whether `[address, address + len)` lies in one mapped range.
pub fn is_mapped(address: u64, len: u64) -> bool {
    lock(&MAPPINGS)
        .range(..=address)
        .next_back()
        .is_some_and(|(base, m)| address.saturating_add(len) <= base + m.size)
}
