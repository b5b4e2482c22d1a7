//! Added cost of libhami.so per driver call: the same loop against the same driver, run once
//! plainly and once under the library, in alternating child processes.
//!
//! The worker calls the driver the way the CUDA runtime does: `dlopen("libcuda.so.1")`, `dlsym`
//! of `cuGetProcAddress_v2` only, then every other entry point through it with CUDA version
//! 12000. Under the library that `dlsym` and `cuGetProcAddress_v2` are the hooked ones, so the
//! worker gets the same wrappers an application gets. Single calls are too short to time one by
//! one (a clock read costs about as much as a hooked launch), so each sample is the mean over a
//! batch of calls; the report gives the median and the 99th percentile of those samples.

use std::ffi::{CStr, c_int, c_void};
use std::time::Instant;

use hami_hooks::cuda::{self, CUcontext, CUdevice, CUdeviceptr, CUfunction, CUmodule, pfn};
use libloading::Library;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// PTX of the test kernels; `hami_spin(0)` is an empty kernel on any device.
const KERNELS_PTX: &str = include_str!("../../tests/fakegpu/kernels/hami_kernels.ptx");

/// The CUDA version the worker claims, as the CUDA 12.0 runtime does.
const CUDA_VERSION: c_int = 12000;

/// Why the worker could not measure.
#[derive(Debug, Error)]
pub enum WorkerError {
    #[error("cannot load libcuda.so.1: {0}")]
    Load(#[from] libloading::Error),
    #[error("cuGetProcAddress_v2({symbol}) failed with {code}")]
    Lookup { symbol: String, code: c_int },
    #[error("{call} failed with CUDA error {code}")]
    Call { call: &'static str, code: c_int },
}

/// How much to measure in one worker process.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct WorkerPlan {
    /// Calls per timed sample.
    pub batch: u32,
    /// Timed samples per entry point.
    pub samples: u32,
    /// Bytes per allocation in the alloc/free pairs.
    pub alloc_bytes: u64,
}

impl Default for WorkerPlan {
    fn default() -> Self {
        Self {
            batch: 1000,
            samples: 200,
            alloc_bytes: 1 << 20,
        }
    }
}

/// Nanoseconds per call, from batch means.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CallCost {
    pub p50_ns: f64,
    pub p99_ns: f64,
}

/// One worker process's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerReport {
    pub launch: CallCost,
    pub alloc_free: CallCost,
    pub mem_info: CallCost,
}

/// The driver entry points the worker times, fetched as the runtime fetches them.
struct Driver {
    _library: Library,
    init: pfn::cuInit,
    device_get: pfn::cuDeviceGet,
    retain: pfn::cuDevicePrimaryCtxRetain,
    set_current: pfn::cuCtxSetCurrent,
    synchronize: pfn::cuCtxSynchronize,
    load_data: pfn::cuModuleLoadData,
    get_function: pfn::cuModuleGetFunction,
    launch: pfn::cuLaunchKernel,
    alloc: pfn::cuMemAlloc_v2,
    free: pfn::cuMemFree_v2,
    mem_info: pfn::cuMemGetInfo_v2,
}

macro_rules! fetch {
    ($get:expr, $base:literal => $symbol:ident) => {{
        let pointer = $get(concat!($base, "\0"))?;
        // SAFETY: the driver returned the entry point for `$base` at CUDA_VERSION, whose ABI is
        // the table's `$symbol` (the hooks table maps base name and version to that symbol).
        unsafe { std::mem::transmute::<*mut c_void, pfn::$symbol>(pointer) }
    }};
}

impl Driver {
    fn open() -> Result<Self, WorkerError> {
        // SAFETY: loading the driver runs its initializers, the documented way to use it.
        let library = unsafe { Library::new("libcuda.so.1") }?;
        // SAFETY: `cuGetProcAddress_v2` has the table's signature in every CUDA 12 driver.
        let get_proc: pfn::cuGetProcAddress_v2 =
            *unsafe { library.get::<pfn::cuGetProcAddress_v2>(b"cuGetProcAddress_v2\0") }?;
        let get = |name: &'static str| -> Result<*mut c_void, WorkerError> {
            let symbol = CStr::from_bytes_with_nul(name.as_bytes()).expect("literal ends in NUL");
            let mut pointer: *mut c_void = std::ptr::null_mut();
            let mut status = 0;
            // SAFETY: `symbol` is NUL-terminated, both out-pointers are valid for the call.
            let code = unsafe {
                get_proc(
                    symbol.as_ptr(),
                    &mut pointer,
                    CUDA_VERSION,
                    cuda::CU_GET_PROC_ADDRESS_DEFAULT,
                    &mut status,
                )
            };
            if code != cuda::CUDA_SUCCESS || pointer.is_null() {
                return Err(WorkerError::Lookup {
                    symbol: name.trim_end_matches('\0').to_owned(),
                    code,
                });
            }
            Ok(pointer)
        };
        Ok(Self {
            init: fetch!(get, "cuInit" => cuInit),
            device_get: fetch!(get, "cuDeviceGet" => cuDeviceGet),
            retain: fetch!(get, "cuDevicePrimaryCtxRetain" => cuDevicePrimaryCtxRetain),
            set_current: fetch!(get, "cuCtxSetCurrent" => cuCtxSetCurrent),
            synchronize: fetch!(get, "cuCtxSynchronize" => cuCtxSynchronize),
            load_data: fetch!(get, "cuModuleLoadData" => cuModuleLoadData),
            get_function: fetch!(get, "cuModuleGetFunction" => cuModuleGetFunction),
            launch: fetch!(get, "cuLaunchKernel" => cuLaunchKernel),
            alloc: fetch!(get, "cuMemAlloc" => cuMemAlloc_v2),
            free: fetch!(get, "cuMemFree" => cuMemFree_v2),
            mem_info: fetch!(get, "cuMemGetInfo" => cuMemGetInfo_v2),
            _library: library,
        })
    }
}

fn check(call: &'static str, code: c_int) -> Result<(), WorkerError> {
    match code {
        cuda::CUDA_SUCCESS => Ok(()),
        code => Err(WorkerError::Call { call, code }),
    }
}

/// Times launches, alloc/free pairs and memory queries in this process.
pub fn run_worker(plan: WorkerPlan) -> Result<WorkerReport, WorkerError> {
    let driver = Driver::open()?;
    let mut device: CUdevice = 0;
    let mut context: CUcontext = std::ptr::null_mut();
    let mut module: CUmodule = std::ptr::null_mut();
    let mut function: CUfunction = std::ptr::null_mut();
    let ptx = std::ffi::CString::new(KERNELS_PTX).expect("PTX has no NUL byte");
    // SAFETY: each call gets valid out-pointers and NUL-terminated strings that outlive it; the
    // context is made current before any call that needs one.
    unsafe {
        check("cuInit", (driver.init)(0))?;
        check("cuDeviceGet", (driver.device_get)(&mut device, 0))?;
        check(
            "cuDevicePrimaryCtxRetain",
            (driver.retain)(&mut context, device),
        )?;
        check("cuCtxSetCurrent", (driver.set_current)(context))?;
        check(
            "cuModuleLoadData",
            (driver.load_data)(&mut module, ptx.as_ptr().cast()),
        )?;
        check(
            "cuModuleGetFunction",
            (driver.get_function)(&mut function, module, c"hami_spin".as_ptr()),
        )?;
    }

    let mut spin_ns: u64 = 0;
    let mut params = [(&raw mut spin_ns).cast::<c_void>()];
    let launch = time_batches(
        plan,
        || {
            // SAFETY: `function` takes one u64 parameter, `params` points at it and outlives the
            // launch (the batch is synchronized before `params` goes away).
            let code = unsafe {
                (driver.launch)(
                    function,
                    1,
                    1,
                    1,
                    1,
                    1,
                    1,
                    0,
                    std::ptr::null_mut(),
                    params.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            };
            check("cuLaunchKernel", code)
        },
        || {
            // SAFETY: no arguments; waits for this context's queued launches.
            check("cuCtxSynchronize", unsafe { (driver.synchronize)() })
        },
    )?;

    let alloc_free = time_batches(
        plan,
        || {
            let mut pointer: CUdeviceptr = 0;
            let bytes = usize::try_from(plan.alloc_bytes).unwrap_or(usize::MAX);
            // SAFETY: `pointer` is a valid out-pointer; it is freed right after a successful alloc.
            unsafe {
                check("cuMemAlloc_v2", (driver.alloc)(&mut pointer, bytes))?;
                check("cuMemFree_v2", (driver.free)(pointer))
            }
        },
        || Ok(()),
    )?;

    let mem_info = time_batches(
        plan,
        || {
            let (mut free, mut total) = (0usize, 0usize);
            // SAFETY: both out-pointers are valid for the call.
            check("cuMemGetInfo_v2", unsafe {
                (driver.mem_info)(&mut free, &mut total)
            })
        },
        || Ok(()),
    )?;

    Ok(WorkerReport {
        launch,
        alloc_free,
        mem_info,
    })
}

/// Runs `call` in `plan.samples` timed batches of `plan.batch`, calling `settle` untimed after
/// each batch, and summarizes the per-call means. The first tenth of the batches warms up.
fn time_batches(
    plan: WorkerPlan,
    mut call: impl FnMut() -> Result<(), WorkerError>,
    mut settle: impl FnMut() -> Result<(), WorkerError>,
) -> Result<CallCost, WorkerError> {
    let warm_up = plan.samples / 10;
    let mut means = Vec::with_capacity(plan.samples as usize);
    for sample in 0..plan.samples + warm_up {
        let start = Instant::now();
        for _ in 0..plan.batch {
            call()?;
        }
        let elapsed = start.elapsed();
        settle()?;
        if sample >= warm_up {
            means.push(elapsed.as_nanos() as f64 / f64::from(plan.batch));
        }
    }
    Ok(CallCost {
        p50_ns: percentile(&mut means, 0.50),
        p99_ns: percentile(&mut means, 0.99),
    })
}

/// The `q` quantile (nearest rank) of `values`; 0 for none.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// The library's added cost: medians over rounds of (hooked − plain), per statistic.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HooksReport {
    pub launch_overhead_ns_p50: f64,
    pub launch_overhead_ns_p99: f64,
    pub alloc_free_overhead_ns_p50: f64,
    pub alloc_free_overhead_ns_p99: f64,
    pub mem_info_overhead_ns_p50: f64,
    pub baseline: WorkerReport,
    pub hooked: WorkerReport,
    pub rounds: usize,
}

/// Pairs the rounds' plain and hooked reports (run alternately, so drift hits both alike).
pub fn summarize(plain: &[WorkerReport], hooked: &[WorkerReport]) -> HooksReport {
    let median_of = |pick: &dyn Fn(&WorkerReport) -> f64, reports: &[WorkerReport]| {
        let mut values: Vec<f64> = reports.iter().map(pick).collect();
        percentile(&mut values, 0.5)
    };
    let diff = |pick: &dyn Fn(&WorkerReport) -> f64| {
        let mut values: Vec<f64> = plain
            .iter()
            .zip(hooked)
            .map(|(p, h)| pick(h) - pick(p))
            .collect();
        percentile(&mut values, 0.5)
    };
    let typical = |reports: &[WorkerReport]| WorkerReport {
        launch: CallCost {
            p50_ns: median_of(&|r| r.launch.p50_ns, reports),
            p99_ns: median_of(&|r| r.launch.p99_ns, reports),
        },
        alloc_free: CallCost {
            p50_ns: median_of(&|r| r.alloc_free.p50_ns, reports),
            p99_ns: median_of(&|r| r.alloc_free.p99_ns, reports),
        },
        mem_info: CallCost {
            p50_ns: median_of(&|r| r.mem_info.p50_ns, reports),
            p99_ns: median_of(&|r| r.mem_info.p99_ns, reports),
        },
    };
    HooksReport {
        launch_overhead_ns_p50: diff(&|r| r.launch.p50_ns),
        launch_overhead_ns_p99: diff(&|r| r.launch.p99_ns),
        alloc_free_overhead_ns_p50: diff(&|r| r.alloc_free.p50_ns),
        alloc_free_overhead_ns_p99: diff(&|r| r.alloc_free.p99_ns),
        mem_info_overhead_ns_p50: diff(&|r| r.mem_info.p50_ns),
        baseline: typical(plain),
        hooked: typical(hooked),
        rounds: plain.len().min(hooked.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let mut values = vec![5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&mut values, 0.5), 3.0);
        assert_eq!(percentile(&mut values, 0.99), 5.0);
        assert_eq!(percentile(&mut values, 0.0), 1.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
    }

    fn report(launch: f64, alloc: f64) -> WorkerReport {
        let cost = |v: f64| CallCost {
            p50_ns: v,
            p99_ns: v * 2.0,
        };
        WorkerReport {
            launch: cost(launch),
            alloc_free: cost(alloc),
            mem_info: cost(1.0),
        }
    }

    #[test]
    fn overhead_is_the_median_paired_difference() {
        let plain = [report(6.0, 30.0), report(7.0, 31.0), report(6.5, 29.0)];
        let hooked = [report(9.0, 60.0), report(10.0, 70.0), report(8.5, 59.0)];
        let summary = summarize(&plain, &hooked);
        assert_eq!(summary.launch_overhead_ns_p50, 3.0);
        assert_eq!(summary.alloc_free_overhead_ns_p50, 30.0);
        assert_eq!(summary.alloc_free_overhead_ns_p99, 60.0);
        assert_eq!(summary.rounds, 3);
    }
}
