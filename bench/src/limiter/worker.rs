//! The load the limiter harness puts on a device: a process that launches the `hami_spin`
//! kernel through the CUDA driver API as fast as the device (and its cap) lets it.
//!
//! It is a driver-API program like any other under `hami run`: the driver is opened with
//! `dlopen("libcuda.so.1")` and its entry points looked up with `dlsym`, so `libhami.so` sees
//! every launch. The kernel is shipped as PTX (`tests/fakegpu/kernels/hami_kernels.ptx`), which
//! a real GPU JIT-compiles and the simulated device recognises by name, so the same worker
//! serves both. It keeps at most `depth` launches in flight (events recorded after each
//! launch), as real frameworks do, so the queue cannot hide seconds of work from the cap.

use std::ffi::c_void;
use std::time::{Duration, Instant};

use hami_hooks::cuda::{
    CU_EVENT_DISABLE_TIMING, CU_STREAM_CAPTURE_MODE_GLOBAL, CU_STREAM_PER_THREAD, CUDA_SUCCESS,
    CUcontext, CUdevice, CUdeviceptr, CUevent, CUfunction, CUgraph, CUgraphExec, CUlaunchConfig,
    CUmodule, CUresult, CUstream, pfn,
};
use libloading::Library;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The built-in kernels, NUL-terminated for `cuModuleLoadData`.
const KERNELS_PTX: &str = concat!(
    include_str!("../../../tests/fakegpu/kernels/hami_kernels.ptx"),
    "\0"
);

/// Which driver entry point launches the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Launch {
    /// `cuLaunchKernel` on a created stream.
    Kernel,
    /// `cuLaunchKernelEx`.
    Ex,
    /// `cuLaunchCooperativeKernel`.
    Cooperative,
    /// `cuLaunchKernel_ptsz` on the per-thread default stream.
    PerThread,
    /// `cuGraphLaunch` of a captured graph of [`WorkerSpec::graph_kernels`] spins.
    Graph,
}

impl Launch {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Launch::Kernel => "kernel",
            Launch::Ex => "ex",
            Launch::Cooperative => "cooperative",
            Launch::PerThread => "per-thread",
            Launch::Graph => "graph",
        }
    }
}

/// What one worker process does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// CUDA ordinal of the device.
    pub device: i32,
    /// Length of one spin kernel, µs.
    pub kernel_us: u64,
    /// Run this long (ignored when `kernels` is set).
    pub seconds: f64,
    /// A fixed job: this many kernels, then stop.
    pub kernels: Option<u64>,
    pub launch: Launch,
    /// Spins per graph (graph launches only).
    pub graph_kernels: u32,
    /// Launches in flight at most.
    pub depth: usize,
    /// Device memory to allocate and hold, MiB (0: none).
    pub memory_mib: u64,
}

/// What the worker did, printed as one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub kernels: u64,
    pub seconds: f64,
    /// Bytes the worker holds (allocation stops at the first refusal, e.g. the cap).
    pub memory_bytes: u64,
    /// The driver's last answer to an allocation (0: success; 2: out of memory).
    pub memory_status: i32,
}

/// The worker cannot drive the device.
#[derive(Debug, Error)]
pub enum WorkerError {
    #[error("cannot load libcuda.so.1: {0}")]
    Load(#[from] libloading::Error),
    #[error("{call} failed with CUDA error {code}")]
    Driver { call: &'static str, code: CUresult },
}

fn check(call: &'static str, code: CUresult) -> Result<(), WorkerError> {
    if code == CUDA_SUCCESS {
        Ok(())
    } else {
        Err(WorkerError::Driver { call, code })
    }
}

/// The driver entry points the worker uses, looked up once.
struct Driver {
    _library: Library,
    init: pfn::cuInit,
    device_get: pfn::cuDeviceGet,
    ctx_create: pfn::cuCtxCreate_v2,
    module_load_data: pfn::cuModuleLoadData,
    module_get_function: pfn::cuModuleGetFunction,
    stream_create: pfn::cuStreamCreate,
    stream_synchronize: pfn::cuStreamSynchronize,
    event_create: pfn::cuEventCreate,
    event_record: pfn::cuEventRecord,
    event_synchronize: pfn::cuEventSynchronize,
    launch_kernel: pfn::cuLaunchKernel,
    launch_kernel_ptsz: pfn::cuLaunchKernel_ptsz,
    launch_kernel_ex: pfn::cuLaunchKernelEx,
    launch_cooperative: pfn::cuLaunchCooperativeKernel,
    begin_capture: pfn::cuStreamBeginCapture_v2,
    end_capture: pfn::cuStreamEndCapture,
    graph_instantiate: pfn::cuGraphInstantiateWithFlags,
    graph_launch: pfn::cuGraphLaunch,
    mem_alloc: pfn::cuMemAlloc_v2,
}

impl Driver {
    fn open() -> Result<Self, WorkerError> {
        // SAFETY: loading the CUDA driver runs its initializers, which have no preconditions.
        let library = unsafe { Library::new("libcuda.so.1") }?;
        macro_rules! entry {
            ($name:ident) => {{
                let symbol = concat!(stringify!($name), "\0");
                // SAFETY: the symbol is the driver entry point of that name, whose type is the
                // one the hooks table spells for it.
                *unsafe { library.get::<pfn::$name>(symbol.as_bytes()) }?
            }};
        }
        Ok(Self {
            init: entry!(cuInit),
            device_get: entry!(cuDeviceGet),
            ctx_create: entry!(cuCtxCreate_v2),
            module_load_data: entry!(cuModuleLoadData),
            module_get_function: entry!(cuModuleGetFunction),
            stream_create: entry!(cuStreamCreate),
            stream_synchronize: entry!(cuStreamSynchronize),
            event_create: entry!(cuEventCreate),
            event_record: entry!(cuEventRecord),
            event_synchronize: entry!(cuEventSynchronize),
            launch_kernel: entry!(cuLaunchKernel),
            launch_kernel_ptsz: entry!(cuLaunchKernel_ptsz),
            launch_kernel_ex: entry!(cuLaunchKernelEx),
            launch_cooperative: entry!(cuLaunchCooperativeKernel),
            begin_capture: entry!(cuStreamBeginCapture_v2),
            end_capture: entry!(cuStreamEndCapture),
            graph_instantiate: entry!(cuGraphInstantiateWithFlags),
            graph_launch: entry!(cuGraphLaunch),
            mem_alloc: entry!(cuMemAlloc_v2),
            _library: library,
        })
    }
}

/// A context, the spin kernel and a stream, ready to launch.
struct Session {
    driver: Driver,
    spin: CUfunction,
    stream: CUstream,
    graph: Option<CUgraphExec>,
}

impl Session {
    fn new(spec: &WorkerSpec) -> Result<Self, WorkerError> {
        let driver = Driver::open()?;
        let mut device: CUdevice = 0;
        let mut context: CUcontext = std::ptr::null_mut();
        let mut module: CUmodule = std::ptr::null_mut();
        let mut spin: CUfunction = std::ptr::null_mut();
        let mut stream: CUstream = std::ptr::null_mut();
        // SAFETY: each call gets valid out-pointers to locals and NUL-terminated strings, in
        // the order the driver API requires (init, device, context, module, function, stream).
        unsafe {
            check("cuInit", (driver.init)(0))?;
            check("cuDeviceGet", (driver.device_get)(&mut device, spec.device))?;
            check("cuCtxCreate", (driver.ctx_create)(&mut context, 0, device))?;
            check(
                "cuModuleLoadData",
                (driver.module_load_data)(&mut module, KERNELS_PTX.as_ptr().cast()),
            )?;
            check(
                "cuModuleGetFunction",
                (driver.module_get_function)(&mut spin, module, c"hami_spin".as_ptr()),
            )?;
            check("cuStreamCreate", (driver.stream_create)(&mut stream, 0))?;
        }
        let mut session = Self {
            driver,
            spin,
            stream,
            graph: None,
        };
        if spec.launch == Launch::Graph {
            session.graph = Some(session.capture_graph(spec)?);
        }
        Ok(session)
    }

    fn capture_graph(&self, spec: &WorkerSpec) -> Result<CUgraphExec, WorkerError> {
        let mut graph: CUgraph = std::ptr::null_mut();
        let mut exec: CUgraphExec = std::ptr::null_mut();
        let d = &self.driver;
        // SAFETY: the stream is ours; capture brackets plain launches on it; out-pointers are
        // valid locals.
        unsafe {
            check(
                "cuStreamBeginCapture",
                (d.begin_capture)(self.stream, CU_STREAM_CAPTURE_MODE_GLOBAL),
            )?;
            for _ in 0..spec.graph_kernels.max(1) {
                self.launch_plain(spec.kernel_us * 1_000, self.stream)?;
            }
            check(
                "cuStreamEndCapture",
                (d.end_capture)(self.stream, &mut graph),
            )?;
            check(
                "cuGraphInstantiateWithFlags",
                (d.graph_instantiate)(&mut exec, graph, 0),
            )?;
        }
        Ok(exec)
    }

    /// # Safety
    /// `stream` must be a stream of the current context (or a special handle).
    unsafe fn launch_plain(&self, ns: u64, stream: CUstream) -> Result<(), WorkerError> {
        let mut ns = ns;
        let mut params = [(&raw mut ns).cast::<c_void>()];
        // SAFETY: hami_spin takes one u64 parameter, passed by pointer as the API requires.
        let code = unsafe {
            (self.driver.launch_kernel)(
                self.spin,
                1,
                1,
                1,
                1,
                1,
                1,
                0,
                stream,
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        check("cuLaunchKernel", code)
    }

    /// Launches one unit of work (one kernel, or one graph) the way `launch` says.
    fn launch(&self, launch: Launch, ns: u64) -> Result<(), WorkerError> {
        let mut ns = ns;
        let mut params = [(&raw mut ns).cast::<c_void>()];
        let d = &self.driver;
        // SAFETY: every variant launches hami_spin (one u64 parameter, by pointer) with a
        // 1×1×1 grid and block on our stream or the per-thread default stream.
        let (call, code) = unsafe {
            match launch {
                Launch::Kernel => return self.launch_plain(ns, self.stream),
                Launch::PerThread => (
                    "cuLaunchKernel_ptsz",
                    (d.launch_kernel_ptsz)(
                        self.spin,
                        1,
                        1,
                        1,
                        1,
                        1,
                        1,
                        0,
                        CU_STREAM_PER_THREAD as CUstream,
                        params.as_mut_ptr(),
                        std::ptr::null_mut(),
                    ),
                ),
                Launch::Ex => {
                    let config = CUlaunchConfig {
                        gridDimX: 1,
                        gridDimY: 1,
                        gridDimZ: 1,
                        blockDimX: 1,
                        blockDimY: 1,
                        blockDimZ: 1,
                        sharedMemBytes: 0,
                        hStream: self.stream,
                        attrs: std::ptr::null_mut(),
                        numAttrs: 0,
                    };
                    (
                        "cuLaunchKernelEx",
                        (d.launch_kernel_ex)(
                            &config,
                            self.spin,
                            params.as_mut_ptr(),
                            std::ptr::null_mut(),
                        ),
                    )
                }
                Launch::Cooperative => (
                    "cuLaunchCooperativeKernel",
                    (d.launch_cooperative)(
                        self.spin,
                        1,
                        1,
                        1,
                        1,
                        1,
                        1,
                        0,
                        self.stream,
                        params.as_mut_ptr(),
                    ),
                ),
                Launch::Graph => (
                    "cuGraphLaunch",
                    (d.graph_launch)(self.graph.unwrap_or(std::ptr::null_mut()), self.stream),
                ),
            }
        };
        check(call, code)
    }

    /// The stream completion is tracked on: ours, or the per-thread default stream.
    fn tracked_stream(&self, launch: Launch) -> CUstream {
        match launch {
            Launch::PerThread => CU_STREAM_PER_THREAD as CUstream,
            _ => self.stream,
        }
    }
}

/// Allocates up to `mib` MiB in 64 MiB steps, stopping at the first refusal, and keeps it
/// until the process exits. Returns the bytes obtained and the last driver answer.
fn hold_memory(d: &Driver, mib: u64) -> (u64, CUresult) {
    const STEP: u64 = 64 << 20;
    let want = mib << 20;
    let mut held = 0u64;
    while held < want {
        let bytes = STEP.min(want - held);
        let mut pointer: CUdeviceptr = 0;
        // SAFETY: a valid out-pointer; the allocation is deliberately never freed.
        let code = unsafe { (d.mem_alloc)(&mut pointer, usize::try_from(bytes).unwrap_or(0)) };
        if code != CUDA_SUCCESS {
            return (held, code);
        }
        held += bytes;
    }
    (held, CUDA_SUCCESS)
}

/// Runs the worker: launches until the time or the job is done, then reports.
pub fn run_worker(spec: &WorkerSpec) -> Result<WorkerReport, WorkerError> {
    let session = Session::new(spec)?;
    let d = &session.driver;
    let (memory_bytes, memory_status) = hold_memory(d, spec.memory_mib);
    let depth = spec.depth.max(1);
    let stream = session.tracked_stream(spec.launch);
    let mut events: Vec<CUevent> = vec![std::ptr::null_mut(); depth];
    for event in &mut events {
        // SAFETY: a valid out-pointer; timing is not needed, only completion.
        check("cuEventCreate", unsafe {
            (d.event_create)(event, CU_EVENT_DISABLE_TIMING)
        })?;
    }
    let per_unit = if spec.launch == Launch::Graph {
        u64::from(spec.graph_kernels.max(1))
    } else {
        1
    };
    let ns = spec.kernel_us * 1_000;
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(spec.seconds.max(0.0));
    let mut launched = 0u64;
    loop {
        let done = match spec.kernels {
            Some(job) => launched * per_unit >= job,
            None => Instant::now() >= until,
        };
        if done {
            break;
        }
        let slot = usize::try_from(launched).unwrap_or(0) % depth;
        if launched >= depth as u64 {
            // SAFETY: the event was recorded `depth` launches ago on our stream.
            check("cuEventSynchronize", unsafe {
                (d.event_synchronize)(events[slot])
            })?;
        }
        session.launch(spec.launch, ns)?;
        // SAFETY: our event and stream.
        check("cuEventRecord", unsafe {
            (d.event_record)(events[slot], stream)
        })?;
        launched += 1;
    }
    // SAFETY: our stream.
    check("cuStreamSynchronize", unsafe {
        (d.stream_synchronize)(stream)
    })?;
    Ok(WorkerReport {
        kernels: launched * per_unit,
        seconds: start.elapsed().as_secs_f64(),
        memory_bytes,
        memory_status,
    })
}

/// The first line a worker prints: its pid, which the device's records are keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStarted {
    pub pid: u32,
}
