//! `cuGetProcAddress` semantics as a pure function: which table row a caller gets for a base
//! name, a CUDA version and stream flags.
//!
//! The real driver serves the newest ABI variant whose version does not exceed the caller's
//! (`cudaVersion` 12000 asking for `cuMemAlloc` gets `cuMemAlloc_v2`), the `_ptsz`/`_ptds`
//! variant when the per-thread default stream is asked for, and tells "no such symbol" apart
//! from "symbol too new for your version".

use thiserror::Error;

use crate::cuda::{
    CU_GET_PROC_ADDRESS_LEGACY_STREAM, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM,
    CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT,
    CUDA_BASE_REDIRECTS, CUDA_ENTRY_POINTS, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_NOT_FOUND,
    CUdriverProcAddressQueryResult, CUresult, EntryPoint, entry_point,
};

/// Why `cuGetProcAddress` serves no entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ProcStatus {
    /// No entry point of that base name exists.
    #[error("symbol not found")]
    SymbolNotFound,
    /// The entry point exists, but every variant is newer than the caller's CUDA version.
    #[error("cuda version not sufficient for symbol")]
    VersionNotSufficient,
    /// Flags other than one of DEFAULT, LEGACY_STREAM and PER_THREAD_DEFAULT_STREAM.
    #[error("invalid cuGetProcAddress flags")]
    InvalidFlags,
}

impl ProcStatus {
    /// The `CUresult` the driver returns for this outcome.
    pub fn result(self) -> CUresult {
        match self {
            ProcStatus::SymbolNotFound | ProcStatus::VersionNotSufficient => CUDA_ERROR_NOT_FOUND,
            ProcStatus::InvalidFlags => CUDA_ERROR_INVALID_VALUE,
        }
    }

    /// The `symbolStatus` out-parameter of `cuGetProcAddress_v2` for this outcome.
    pub fn query_result(self) -> CUdriverProcAddressQueryResult {
        match self {
            ProcStatus::VersionNotSufficient => CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT,
            ProcStatus::SymbolNotFound | ProcStatus::InvalidFlags => {
                CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND
            }
        }
    }
}

/// The entry point `cuGetProcAddress(base, .., cuda_version, flags)` serves.
pub fn resolve(
    base: &str,
    cuda_version: i32,
    flags: u64,
) -> Result<&'static EntryPoint, ProcStatus> {
    let per_thread = match flags {
        0 | CU_GET_PROC_ADDRESS_LEGACY_STREAM => false,
        CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM => true,
        _ => return Err(ProcStatus::InvalidFlags),
    };
    let redirected = CUDA_BASE_REDIRECTS
        .iter()
        .filter(|redirect| redirect.base == base)
        .filter_map(|redirect| Some((redirect.since, entry_point(redirect.symbol)?)));
    let candidates: Vec<(i32, &'static EntryPoint)> = CUDA_ENTRY_POINTS
        .iter()
        .filter(|entry| entry.base == base)
        .map(|entry| (entry.since, entry))
        .chain(redirected)
        .collect();
    if candidates.is_empty() {
        return Err(ProcStatus::SymbolNotFound);
    }
    let newest = |want_per_thread: bool| {
        candidates
            .iter()
            .filter(|(since, entry)| *since <= cuda_version && entry.per_thread == want_per_thread)
            .max_by_key(|(since, _)| *since)
            .map(|(_, entry)| *entry)
    };
    let chosen = if per_thread {
        newest(true).or_else(|| newest(false))
    } else {
        newest(false)
    };
    chosen.ok_or(ProcStatus::VersionNotSufficient)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbol(base: &str, version: i32, flags: u64) -> Result<&'static str, ProcStatus> {
        resolve(base, version, flags).map(|entry| entry.symbol_str())
    }

    #[test]
    fn newest_variant_not_newer_than_the_caller() {
        assert_eq!(symbol("cuMemAlloc", 12000, 0), Ok("cuMemAlloc_v2"));
        assert_eq!(symbol("cuMemGetInfo", 12000, 0), Ok("cuMemGetInfo_v2"));
        assert_eq!(symbol("cuMemGetInfo", 3010, 0), Ok("cuMemGetInfo"));
        assert_eq!(symbol("cuCtxCreate", 3000, 0), Ok("cuCtxCreate"));
        assert_eq!(symbol("cuCtxCreate", 11000, 0), Ok("cuCtxCreate_v2"));
        assert_eq!(symbol("cuCtxCreate", 12000, 0), Ok("cuCtxCreate_v3"));
        assert_eq!(symbol("cuCtxCreate", 12080, 0), Ok("cuCtxCreate_v4"));
        assert_eq!(
            symbol("cuDevicePrimaryCtxRelease", 10020, 0),
            Ok("cuDevicePrimaryCtxRelease")
        );
        assert_eq!(
            symbol("cuDevicePrimaryCtxRelease", 12000, 0),
            Ok("cuDevicePrimaryCtxRelease_v2")
        );
        assert_eq!(
            symbol("cuStreamBeginCapture", 10000, 0),
            Ok("cuStreamBeginCapture")
        );
        assert_eq!(
            symbol("cuStreamBeginCapture", 12000, 0),
            Ok("cuStreamBeginCapture_v2")
        );
        assert_eq!(symbol("cuGetProcAddress", 11080, 0), Ok("cuGetProcAddress"));
        assert_eq!(
            symbol("cuGetProcAddress", 12000, 0),
            Ok("cuGetProcAddress_v2")
        );
        assert_eq!(
            symbol("cuEventElapsedTime", 12000, 0),
            Ok("cuEventElapsedTime")
        );
        assert_eq!(
            symbol("cuEventElapsedTime", 12080, 0),
            Ok("cuEventElapsedTime_v2")
        );
    }

    #[test]
    fn graph_instantiate_becomes_with_flags_in_cuda_12() {
        assert_eq!(
            symbol("cuGraphInstantiate", 10020, 0),
            Ok("cuGraphInstantiate")
        );
        assert_eq!(
            symbol("cuGraphInstantiate", 11080, 0),
            Ok("cuGraphInstantiate_v2")
        );
        assert_eq!(
            symbol("cuGraphInstantiate", 12000, 0),
            Ok("cuGraphInstantiateWithFlags")
        );
        assert_eq!(
            symbol("cuGraphInstantiateWithFlags", 12000, 0),
            Ok("cuGraphInstantiateWithFlags")
        );
    }

    #[test]
    fn per_thread_flag_picks_ptsz_and_ptds() {
        const PTDS: u64 = CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
        assert_eq!(
            symbol("cuLaunchKernel", 12000, PTDS),
            Ok("cuLaunchKernel_ptsz")
        );
        assert_eq!(symbol("cuLaunchKernel", 12000, 0), Ok("cuLaunchKernel"));
        assert_eq!(symbol("cuLaunchKernel", 12000, 1), Ok("cuLaunchKernel"));
        assert_eq!(
            symbol("cuMemcpyHtoD", 12000, PTDS),
            Ok("cuMemcpyHtoD_v2_ptds")
        );
        assert_eq!(
            symbol("cuStreamBeginCapture", 12000, PTDS),
            Ok("cuStreamBeginCapture_v2_ptsz")
        );
        // No per-thread variant exists for stream-less calls: the plain one is served.
        assert_eq!(symbol("cuMemAlloc", 12000, PTDS), Ok("cuMemAlloc_v2"));
        // Per-thread variants of old calls date from 7.0; older callers get the legacy one.
        assert_eq!(symbol("cuLaunchKernel", 6050, PTDS), Ok("cuLaunchKernel"));
    }

    #[test]
    fn unknown_and_too_new_are_told_apart() {
        assert_eq!(
            symbol("cuNoSuchThing", 12000, 0),
            Err(ProcStatus::SymbolNotFound)
        );
        assert_eq!(
            symbol("cuMemAlloc_v2", 12000, 0),
            Err(ProcStatus::SymbolNotFound)
        );
        assert_eq!(
            symbol("cuLaunchKernelEx", 11000, 0),
            Err(ProcStatus::VersionNotSufficient)
        );
        assert_eq!(
            symbol("cuMemCreate", 10010, 0),
            Err(ProcStatus::VersionNotSufficient)
        );
        assert_eq!(
            ProcStatus::VersionNotSufficient.result(),
            CUDA_ERROR_NOT_FOUND
        );
        assert_eq!(ProcStatus::VersionNotSufficient.query_result(), 2);
        assert_eq!(ProcStatus::SymbolNotFound.query_result(), 1);
    }

    #[test]
    fn bad_flags_are_invalid_value() {
        assert_eq!(
            symbol("cuMemAlloc", 12000, 3),
            Err(ProcStatus::InvalidFlags)
        );
        assert_eq!(
            symbol("cuMemAlloc", 12000, 8),
            Err(ProcStatus::InvalidFlags)
        );
        assert_eq!(ProcStatus::InvalidFlags.result(), CUDA_ERROR_INVALID_VALUE);
    }

    #[test]
    fn every_base_resolves_for_a_cuda_12_8_runtime() {
        for entry in CUDA_ENTRY_POINTS {
            let served = resolve(entry.base, 12080, 0).expect(entry.base);
            assert!(!served.per_thread);
            assert!(
                served.since >= entry.since || entry.per_thread,
                "{}",
                entry.base
            );
        }
    }
}
