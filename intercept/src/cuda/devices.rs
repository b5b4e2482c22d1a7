//! Which container device a CUDA device is, keyed by UUID.
//!
//! HAMi-core wrote counters at the NVML index and read them at the CUDA index, losing
//! enforcement when the orders differ, and parsed `CUDA_VISIBLE_DEVICES` with `atoi`. Here a
//! CUDA device is identified by the UUID the driver reports for it, and that UUID is looked up
//! in the container's limits, so index orders and `CUDA_VISIBLE_DEVICES` (indices or UUIDs)
//! cannot mix up caps. Results are cached per ordinal in atomics: the hot path pays one
//! `cuCtxGetDevice` and two loads.
//!
//! In environment mode (no ledger entry, caps per CUDA ordinal as HAMi defines them) the
//! container device index is the ordinal itself.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hami_hooks::cuda::{
    CU_MEM_ALLOC_GRANULARITY_MINIMUM, CU_MEM_ALLOCATION_TYPE_PINNED, CU_MEM_LOCATION_TYPE_DEVICE,
    CUDA_ERROR_NOT_INITIALIZED, CUDA_SUCCESS, CUdevice, CUmemAllocationProp, CUresult, CUuuid,
    c_int, pfn,
};

use super::{HELPERS, Helper};
use crate::engine::Engine;
use crate::engine::accounts::Accounts;

/// CUDA ordinals cached; a device beyond is resolved on every call (never seen in practice).
const CACHED_ORDINALS: usize = 64;
/// What every current NVIDIA GPU uses; assumed when the driver cannot say.
pub const DEFAULT_GRANULARITY: u64 = 2 << 20;

const UNKNOWN: u32 = 0;
const OUTSIDE: u32 = u32::MAX;

static INDEX: [AtomicU32; CACHED_ORDINALS] = [const { AtomicU32::new(UNKNOWN) }; CACHED_ORDINALS];
static GRANULARITY: [AtomicU64; CACHED_ORDINALS] = [const { AtomicU64::new(0) }; CACHED_ORDINALS];
static UUID_HI: [AtomicU64; CACHED_ORDINALS] = [const { AtomicU64::new(0) }; CACHED_ORDINALS];
static UUID_LO: [AtomicU64; CACHED_ORDINALS] = [const { AtomicU64::new(0) }; CACHED_ORDINALS];

/// The container device index of ordinal 0 (encoded as in `INDEX`) once the driver is known to
/// show exactly one device; `SEVERAL` when it shows more; `UNKNOWN` until a launch found out.
static SOLE_INDEX: AtomicU32 = AtomicU32::new(UNKNOWN);
const SEVERAL: u32 = u32::MAX - 1;

/// A CUDA device as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRef {
    /// The container device index; `None` when the device is not the container's.
    pub index: Option<usize>,
    /// The driver's allocation granularity on this device.
    pub granularity: u64,
}

/// The device of the calling thread's current context (an error code when there is none,
/// the same code the driver would return for the allocation).
#[inline]
pub fn current<A: Accounts>(engine: &Engine<A>) -> Result<DeviceRef, CUresult> {
    let ordinal = current_ordinal()?;
    Ok(of_ordinal(engine, ordinal))
}

/// The container device index of the current context's device, for a launch.
///
/// With exactly one visible device every context is on it, so once that is known (the first
/// launch asks the driver) the answer costs one load instead of a `cuCtxGetDevice` per launch;
/// the device count of a process never changes. The one difference: a launch made with no
/// current context, which the driver rejects, is then gated as if it ran on that device.
#[inline]
pub fn current_index<A: Accounts>(engine: &Engine<A>) -> Result<Option<usize>, CUresult> {
    match SOLE_INDEX.load(Ordering::Relaxed) {
        SEVERAL => Ok(current(engine)?.index),
        UNKNOWN => learn_sole_index(engine),
        OUTSIDE => Ok(None),
        encoded => Ok(Some(encoded as usize - 1)),
    }
}

/// Answers through the driver and records whether the process sees a single device.
#[cold]
fn learn_sole_index<A: Accounts>(engine: &Engine<A>) -> Result<Option<usize>, CUresult> {
    let device = current(engine)?;
    match device_count() {
        Some(1) => {
            // Cached only once the device was resolved for good (see `of_ordinal`).
            let encoded = INDEX[0].load(Ordering::Acquire);
            if encoded != UNKNOWN {
                SOLE_INDEX.store(encoded, Ordering::Relaxed);
            }
        }
        Some(_) => SOLE_INDEX.store(SEVERAL, Ordering::Relaxed),
        None => {}
    }
    Ok(device.index)
}

/// How many devices the driver shows (`None` when it cannot say yet).
fn device_count() -> Option<c_int> {
    let get_count = crate::real_or!(
        HELPERS,
        Helper::cuDeviceGetCount,
        pfn::cuDeviceGetCount,
        None
    );
    let mut count: c_int = 0;
    // SAFETY: the out-pointer is a valid local.
    (unsafe { get_count(&mut count) } == CUDA_SUCCESS).then_some(count)
}

/// The ordinal of the current context's device.
#[inline]
pub fn current_ordinal() -> Result<CUdevice, CUresult> {
    let get_device = crate::real_or!(
        HELPERS,
        Helper::cuCtxGetDevice,
        pfn::cuCtxGetDevice,
        Err(hami_hooks::cuda::CUDA_ERROR_NOT_SUPPORTED)
    );
    let mut device: CUdevice = 0;
    // SAFETY: the out-pointer is a valid local.
    let code = unsafe { get_device(&mut device) };
    if code == CUDA_SUCCESS {
        Ok(device)
    } else {
        Err(code)
    }
}

/// A device by ordinal.
#[inline]
pub fn of_ordinal<A: Accounts>(engine: &Engine<A>, ordinal: CUdevice) -> DeviceRef {
    let Some(slot) = usize::try_from(ordinal)
        .ok()
        .filter(|o| *o < CACHED_ORDINALS)
    else {
        return resolve(engine, ordinal).0;
    };
    match INDEX[slot].load(Ordering::Acquire) {
        UNKNOWN => {
            let (device, settled) = resolve(engine, ordinal);
            // A driver that could not answer yet (called before cuInit) is asked again next
            // time: caching that answer would refuse the device for the process's life.
            if settled {
                GRANULARITY[slot].store(device.granularity, Ordering::Relaxed);
                let encoded = device.index.map_or(OUTSIDE, |i| i as u32 + 1);
                INDEX[slot].store(encoded, Ordering::Release);
            }
            device
        }
        encoded => DeviceRef {
            index: (encoded != OUTSIDE).then(|| encoded as usize - 1),
            granularity: GRANULARITY[slot].load(Ordering::Relaxed),
        },
    }
}

/// The device and whether the driver answered every question (only then is it cached).
#[cold]
fn resolve<A: Accounts>(engine: &Engine<A>, ordinal: CUdevice) -> (DeviceRef, bool) {
    let by_uuid = engine.devices().iter().any(|d| d.uuid.is_some());
    let (index, identified) = if by_uuid {
        match uuid_of(ordinal) {
            Some(bytes) => (engine.index_of_uuid(&format_uuid(&bytes)), true),
            None => (None, false),
        }
    } else {
        let index = usize::try_from(ordinal)
            .ok()
            .filter(|o| *o < engine.devices().len());
        (index, true)
    };
    if index.is_none() && identified {
        crate::hami_log!(
            crate::log::Level::Warn,
            "CUDA device {ordinal} is not a device of this container"
        );
    }
    let granularity = granularity_of(ordinal);
    (
        DeviceRef {
            index,
            granularity: granularity.unwrap_or(DEFAULT_GRANULARITY),
        },
        identified && granularity.is_some(),
    )
}

/// The 16-byte UUID of a CUDA device (cached).
pub fn uuid_of(ordinal: CUdevice) -> Option<[u8; 16]> {
    let slot = usize::try_from(ordinal)
        .ok()
        .filter(|o| *o < CACHED_ORDINALS);
    if let Some(slot) = slot {
        let (hi, lo) = (
            UUID_HI[slot].load(Ordering::Acquire),
            UUID_LO[slot].load(Ordering::Acquire),
        );
        if hi != 0 || lo != 0 {
            return Some(join(hi, lo));
        }
    }
    let mut uuid = CUuuid::default();
    let code = match HELPERS.real(Helper::cuDeviceGetUuid_v2 as usize) {
        address if !address.is_null() => {
            // SAFETY: the driver's cuDeviceGetUuid_v2, typed as the table says.
            let f = unsafe {
                std::mem::transmute::<*mut std::ffi::c_void, pfn::cuDeviceGetUuid_v2>(address)
            };
            // SAFETY: the out-pointer is a valid local.
            unsafe { f(&mut uuid, ordinal) }
        }
        _ => {
            let f = crate::real_or!(HELPERS, Helper::cuDeviceGetUuid, pfn::cuDeviceGetUuid, None);
            // SAFETY: as above.
            unsafe { f(&mut uuid, ordinal) }
        }
    };
    if code != CUDA_SUCCESS {
        return None;
    }
    let bytes: [u8; 16] = uuid.bytes.map(|b| b as u8);
    if let Some(slot) = slot {
        let (hi, lo) = split(&bytes);
        UUID_LO[slot].store(lo, Ordering::Release);
        UUID_HI[slot].store(hi, Ordering::Release);
    }
    Some(bytes)
}

fn split(bytes: &[u8; 16]) -> (u64, u64) {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&bytes[..8]);
    lo.copy_from_slice(&bytes[8..]);
    (u64::from_be_bytes(hi), u64::from_be_bytes(lo))
}

fn join(hi: u64, lo: u64) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    bytes
}

/// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, the form NVML and `nvidia-smi -L` print.
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let hex = |range: std::ops::Range<usize>| -> String {
        bytes[range].iter().map(|b| format!("{b:02x}")).collect()
    };
    format!(
        "GPU-{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

/// Parses a UUID string (`GPU-` prefix and dashes optional) into 16 bytes.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text
        .trim()
        .strip_prefix("GPU-")
        .unwrap_or(text.trim())
        .bytes()
        .filter(|b| *b != b'-')
        .collect();
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (index, byte) in bytes.iter_mut().enumerate() {
        let pair = std::str::from_utf8(&hex[index * 2..index * 2 + 2]).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(bytes)
}

/// The ordinal of the visible CUDA device with this UUID (scans visible devices).
pub fn ordinal_of_uuid(uuid: &[u8; 16]) -> Option<CUdevice> {
    let count = device_count()?;
    (0..count).find(|ordinal| uuid_of(*ordinal).as_ref() == Some(uuid))
}

/// The device's allocation granularity; `None` only while the driver is not initialized (the
/// answer will come later). Any other failure means the device cannot say: 2 MiB is assumed.
fn granularity_of(ordinal: CUdevice) -> Option<u64> {
    let get = crate::real_or!(
        HELPERS,
        Helper::cuMemGetAllocationGranularity,
        pfn::cuMemGetAllocationGranularity,
        // A driver without VMM (before CUDA 10.2) cannot say: every current GPU uses 2 MiB.
        Some(DEFAULT_GRANULARITY)
    );
    // SAFETY: an all-zero CUmemAllocationProp is a valid value (plain integers and a null pointer).
    let mut prop: CUmemAllocationProp = unsafe { std::mem::zeroed() };
    prop.type_ = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type_ = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = ordinal;
    let mut granularity = 0usize;
    // SAFETY: both pointers are valid locals.
    let code = unsafe { get(&mut granularity, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM) };
    match code {
        CUDA_SUCCESS if granularity > 0 => Some(granularity as u64),
        CUDA_ERROR_NOT_INITIALIZED => None,
        _ => Some(DEFAULT_GRANULARITY),
    }
}

/// `size` rounded up to a multiple of `granularity` (saturating).
#[inline]
pub fn round_up(size: u64, granularity: u64) -> u64 {
    let granularity = granularity.max(1);
    size.div_ceil(granularity).saturating_mul(granularity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_round_trip_in_the_nvml_form() {
        let text = "GPU-8f2c1a00-1234-5678-9abc-def012345678";
        let bytes = parse_uuid(text).unwrap();
        assert_eq!(format_uuid(&bytes), text);
        assert_eq!(parse_uuid("8f2c1a00123456789abcdef012345678"), Some(bytes));
        assert_eq!(parse_uuid("GPU-xyz"), None);
        let (hi, lo) = split(&bytes);
        assert_eq!(join(hi, lo), bytes);
    }

    #[test]
    fn rounding_charges_whole_granules() {
        assert_eq!(round_up(1, 2 << 20), 2 << 20);
        assert_eq!(round_up(2 << 20, 2 << 20), 2 << 20);
        assert_eq!(round_up((2 << 20) + 1, 2 << 20), 4 << 20);
        assert_eq!(round_up(0, 2 << 20), 0);
        assert_eq!(
            round_up(u64::MAX, 2 << 20),
            u64::MAX,
            "saturates, never wraps"
        );
    }
}
