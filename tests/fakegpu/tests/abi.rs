//! The simulated driver through its real C ABI, loaded with `dlopen` in this process: what
//! a CUDA program relies on — exact error codes, `cuGetProcAddress` semantics, real bytes,
//! kernels, events, graphs, VMM, pools, NVML. Each test uses its own device.

mod support;

use std::ffi::{CStr, c_void};
use std::ptr::null_mut;

use hami_hooks::cuda::{self, *};
use hami_hooks::nvml::{self, *};
use support::{DEVICE_MEMORY, c, kernels_ptx, machine};

const MIB: usize = 1 << 20;

fn load_kernels() -> (CUfunction, CUfunction) {
    let m = machine();
    let load: cuda::pfn::cuModuleLoadData = m.sym("cuModuleLoadData");
    let get: cuda::pfn::cuModuleGetFunction = m.sym("cuModuleGetFunction");
    let ptx = c(&std::fs::read_to_string(kernels_ptx()).unwrap());
    let (mut module, mut spin, mut fill) = (null_mut(), null_mut(), null_mut());
    // SAFETY: valid out-pointers and NUL-terminated strings.
    unsafe {
        assert_eq!(load(&mut module, ptx.as_ptr().cast()), 0);
        assert_eq!(get(&mut spin, module, c"hami_spin".as_ptr()), 0);
        assert_eq!(get(&mut fill, module, c"hami_fill".as_ptr()), 0);
        let mut missing = null_mut();
        assert_eq!(
            get(&mut missing, module, c"no_such_kernel".as_ptr()),
            CUDA_ERROR_NOT_FOUND
        );
    }
    (spin, fill)
}

fn launch(f: CUfunction, stream: CUstream, params: &mut [*mut c_void]) -> CUresult {
    let launch: cuda::pfn::cuLaunchKernel = machine().sym("cuLaunchKernel");
    // SAFETY: `params` holds one pointer per kernel parameter.
    unsafe {
        launch(
            f,
            1,
            1,
            1,
            32,
            1,
            1,
            0,
            stream,
            params.as_mut_ptr(),
            null_mut(),
        )
    }
}

#[test]
fn allocation_beyond_capacity_returns_out_of_memory_on_every_path() {
    let m = machine();
    m.use_device(0);
    let alloc: cuda::pfn::cuMemAlloc_v2 = m.sym("cuMemAlloc_v2");
    let free: cuda::pfn::cuMemFree_v2 = m.sym("cuMemFree_v2");
    let pitch: cuda::pfn::cuMemAllocPitch_v2 = m.sym("cuMemAllocPitch_v2");
    let managed: cuda::pfn::cuMemAllocManaged = m.sym("cuMemAllocManaged");
    let alloc_async: cuda::pfn::cuMemAllocAsync = m.sym("cuMemAllocAsync");
    let create: cuda::pfn::cuMemCreate = m.sym("cuMemCreate");
    let array: cuda::pfn::cuArrayCreate_v2 = m.sym("cuArrayCreate_v2");
    let too_big = DEVICE_MEMORY as usize + 1;
    let mut ptr = 0u64;
    // SAFETY: valid out-pointers and descriptors throughout.
    unsafe {
        assert_eq!(alloc(&mut ptr, too_big), CUDA_ERROR_OUT_OF_MEMORY);
        let mut p = 0usize;
        assert_eq!(
            pitch(&mut ptr, &mut p, 4096, too_big / 4096 + 1, 4),
            CUDA_ERROR_OUT_OF_MEMORY
        );
        assert_eq!(
            managed(&mut ptr, too_big, CU_MEM_ATTACH_GLOBAL),
            CUDA_ERROR_OUT_OF_MEMORY
        );
        assert_eq!(
            alloc_async(&mut ptr, too_big, null_mut()),
            CUDA_ERROR_OUT_OF_MEMORY
        );
        let prop = CUmemAllocationProp {
            type_: CU_MEM_ALLOCATION_TYPE_PINNED,
            requestedHandleTypes: 0,
            location: CUmemLocation {
                type_: CU_MEM_LOCATION_TYPE_DEVICE,
                id: 0,
            },
            win32HandleMetaData: null_mut(),
            allocFlags: Default::default(),
        };
        let mut handle = 0u64;
        assert_eq!(
            create(&mut handle, DEVICE_MEMORY as usize + 2 * MIB, &prop, 0),
            CUDA_ERROR_OUT_OF_MEMORY
        );
        let desc = CUDA_ARRAY_DESCRIPTOR {
            Width: 8192,
            Height: 32769,
            Format: CU_AD_FORMAT_FLOAT,
            NumChannels: 1,
        };
        let mut arr = null_mut();
        assert_eq!(array(&mut arr, &desc), CUDA_ERROR_OUT_OF_MEMORY);

        // Filling the device exactly leaves nothing: the next byte is out of memory.
        let mut held = Vec::new();
        for _ in 0..(DEVICE_MEMORY as usize / (64 * MIB)) {
            assert_eq!(alloc(&mut ptr, 64 * MIB), 0);
            held.push(ptr);
        }
        assert_eq!(m.mem_info().0, 0);
        assert_eq!(alloc(&mut ptr, 1), CUDA_ERROR_OUT_OF_MEMORY);
        for p in held {
            assert_eq!(free(p), 0);
        }
        assert_eq!(
            m.mem_info(),
            (DEVICE_MEMORY as usize, DEVICE_MEMORY as usize)
        );
        assert_eq!(alloc(&mut ptr, 0), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(free(0xdead_0000), CUDA_ERROR_INVALID_VALUE);
    }
}

#[test]
fn get_proc_address_v2_serves_what_the_cuda_12_runtime_asks_for() {
    let m = machine();
    let get: cuda::pfn::cuGetProcAddress_v2 = m.sym("cuGetProcAddress_v2");
    let lookup = |name: &str, version: i32, flags: u64| {
        let mut pfn = null_mut();
        let mut status = -1;
        let name = c(name);
        // SAFETY: valid C string and out-pointers.
        let rc = unsafe { get(name.as_ptr(), &mut pfn, version, flags, &mut status) };
        (rc, pfn, status)
    };
    let expected = [
        ("cuMemAlloc", 0, "cuMemAlloc_v2"),
        ("cuMemFree", 0, "cuMemFree_v2"),
        ("cuMemGetInfo", 0, "cuMemGetInfo_v2"),
        ("cuCtxCreate", 0, "cuCtxCreate_v3"),
        (
            "cuDevicePrimaryCtxRelease",
            0,
            "cuDevicePrimaryCtxRelease_v2",
        ),
        ("cuStreamDestroy", 0, "cuStreamDestroy_v2"),
        ("cuEventDestroy", 0, "cuEventDestroy_v2"),
        ("cuStreamBeginCapture", 0, "cuStreamBeginCapture_v2"),
        ("cuGraphInstantiate", 0, "cuGraphInstantiateWithFlags"),
        ("cuGetProcAddress", 0, "cuGetProcAddress_v2"),
        ("cuLaunchKernel", 0, "cuLaunchKernel"),
        (
            "cuLaunchKernel",
            CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM,
            "cuLaunchKernel_ptsz",
        ),
        (
            "cuMemcpyHtoDAsync",
            CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM,
            "cuMemcpyHtoDAsync_v2_ptsz",
        ),
        (
            "cuMemcpyDtoH",
            CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM,
            "cuMemcpyDtoH_v2_ptds",
        ),
        (
            "cuMemAllocAsync",
            CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM,
            "cuMemAllocAsync_ptsz",
        ),
    ];
    for (base, flags, symbol) in expected {
        let (rc, pfn, status) = lookup(base, 12000, flags);
        assert_eq!((rc, status), (0, CU_GET_PROC_ADDRESS_SUCCESS), "{base}");
        // SAFETY: looking up an exported symbol's address.
        let direct = unsafe { *m.lib.get::<*mut c_void>(symbol.as_bytes()).unwrap() };
        assert_eq!(pfn, direct, "{base} with flags {flags} must be {symbol}");
    }
    // Every entry point of the table is reachable for a CUDA 12.8 runtime.
    for entry in cuda::CUDA_ENTRY_POINTS {
        let (rc, pfn, _) = lookup(entry.base, 12080, 0);
        assert!(rc == 0 && !pfn.is_null(), "{}", entry.base);
    }
    assert_eq!(
        lookup("cuMemCreate", 10010, 0),
        (
            CUDA_ERROR_NOT_FOUND,
            null_mut(),
            CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT
        )
    );
    assert_eq!(
        lookup("cuNoSuchCall", 12000, 0),
        (
            CUDA_ERROR_NOT_FOUND,
            null_mut(),
            CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND
        )
    );
    assert_eq!(lookup("cuMemAlloc", 12000, 7).0, CUDA_ERROR_INVALID_VALUE);

    // The pointer served works: call cuDriverGetVersion through it.
    let (_, pfn, _) = lookup("cuDriverGetVersion", 12000, 0);
    // SAFETY: the table says cuDriverGetVersion has this signature.
    let version_fn: cuda::pfn::cuDriverGetVersion = unsafe { std::mem::transmute(pfn) };
    let mut version = 0;
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { version_fn(&mut version) }, 0);
    assert!(version >= 12000);
}

#[test]
fn copies_memsets_and_the_fill_kernel_move_real_bytes() {
    let m = machine();
    m.use_device(1);
    let (_, fill) = load_kernels();
    let alloc: cuda::pfn::cuMemAlloc_v2 = m.sym("cuMemAlloc_v2");
    let htod: cuda::pfn::cuMemcpyHtoD_v2 = m.sym("cuMemcpyHtoD_v2");
    let dtoh: cuda::pfn::cuMemcpyDtoH_v2 = m.sym("cuMemcpyDtoH_v2");
    let dtod: cuda::pfn::cuMemcpyDtoD_v2 = m.sym("cuMemcpyDtoD_v2");
    let memset: cuda::pfn::cuMemsetD32_v2 = m.sym("cuMemsetD32_v2");
    let sync: cuda::pfn::cuCtxSynchronize = m.sym("cuCtxSynchronize");
    let count = 1024usize;
    let (mut a, mut b) = (0u64, 0u64);
    let input: Vec<u32> = (0..count as u32).collect();
    let mut output = vec![0u32; count];
    // SAFETY: buffers of `count` u32 on both sides.
    unsafe {
        assert_eq!(alloc(&mut a, count * 4), 0);
        assert_eq!(alloc(&mut b, count * 4), 0);
        assert_eq!(htod(a, input.as_ptr().cast(), count * 4), 0);
        assert_eq!(dtod(b, a, count * 4), 0);
        assert_eq!(dtoh(output.as_mut_ptr().cast(), b, count * 4), 0);
        assert_eq!(output, input);

        let (mut dst, mut value, mut n) = (a, 0xabcd_1234u32, (count / 2) as u64);
        let mut params = [
            (&mut dst as *mut u64).cast(),
            (&mut value as *mut u32).cast(),
            (&mut n as *mut u64).cast(),
        ];
        assert_eq!(launch(fill, null_mut(), &mut params), 0);
        assert_eq!(sync(), 0);
        assert_eq!(dtoh(output.as_mut_ptr().cast(), a, count * 4), 0);
        assert!(output[..count / 2].iter().all(|v| *v == 0xabcd_1234));
        assert_eq!(&output[count / 2..], &input[count / 2..]);

        assert_eq!(memset(b, 7, count), 0);
        assert_eq!(dtoh(output.as_mut_ptr().cast(), b, count * 4), 0);
        assert!(output.iter().all(|v| *v == 7));

        // Out of bounds: refused, not a crash.
        assert_eq!(
            dtoh(output.as_mut_ptr().cast(), b, count * 4 + 4),
            CUDA_ERROR_INVALID_VALUE
        );
        let mut huge = 1u64 << 40;
        let mut params = [
            (&mut dst as *mut u64).cast(),
            (&mut value as *mut u32).cast(),
            (&mut huge as *mut u64).cast(),
        ];
        assert_eq!(
            launch(fill, null_mut(), &mut params),
            CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            launch(0x1234 as CUfunction, null_mut(), &mut params),
            CUDA_ERROR_INVALID_HANDLE
        );
    }
}

#[test]
fn events_time_kernels_queued_on_a_stream() {
    let m = machine();
    m.use_device(2);
    let (spin, _) = load_kernels();
    let create_stream: cuda::pfn::cuStreamCreate = m.sym("cuStreamCreate");
    let create_event: cuda::pfn::cuEventCreate = m.sym("cuEventCreate");
    let record: cuda::pfn::cuEventRecord = m.sym("cuEventRecord");
    let elapsed: cuda::pfn::cuEventElapsedTime = m.sym("cuEventElapsedTime");
    let query: cuda::pfn::cuStreamQuery = m.sym("cuStreamQuery");
    let sync: cuda::pfn::cuEventSynchronize = m.sym("cuEventSynchronize");
    let (mut stream, mut start, mut end) = (null_mut(), null_mut(), null_mut());
    let mut ns = 30_000_000u64;
    let mut ms = 0f32;
    // SAFETY: valid out-pointers and handles from the driver.
    unsafe {
        assert_eq!(create_stream(&mut stream, CU_STREAM_NON_BLOCKING), 0);
        assert_eq!(create_event(&mut start, 0), 0);
        assert_eq!(create_event(&mut end, 0), 0);
        assert_eq!(record(start, stream), 0);
        assert_eq!(launch(spin, stream, &mut [(&mut ns as *mut u64).cast()]), 0);
        assert_eq!(record(end, stream), 0);
        // The launch returned before the kernel ran: the stream is still busy.
        assert_eq!(query(stream), CUDA_ERROR_NOT_READY);
        assert_eq!(elapsed(&mut ms, start, end), CUDA_ERROR_NOT_READY);
        assert_eq!(sync(end), 0);
        assert_eq!(query(stream), 0);
        assert_eq!(elapsed(&mut ms, start, end), 0);
    }
    assert!(ms >= 30.0, "a 30 ms kernel took {ms} ms");
}

#[test]
fn stream_capture_records_a_graph_that_replays_on_launch() {
    let m = machine();
    m.use_device(3);
    let (_, fill) = load_kernels();
    let alloc: cuda::pfn::cuMemAlloc_v2 = m.sym("cuMemAlloc_v2");
    let memset: cuda::pfn::cuMemsetD32_v2 = m.sym("cuMemsetD32_v2");
    let dtoh: cuda::pfn::cuMemcpyDtoH_v2 = m.sym("cuMemcpyDtoH_v2");
    let create_stream: cuda::pfn::cuStreamCreate = m.sym("cuStreamCreate");
    let begin: cuda::pfn::cuStreamBeginCapture_v2 = m.sym("cuStreamBeginCapture_v2");
    let end: cuda::pfn::cuStreamEndCapture = m.sym("cuStreamEndCapture");
    let instantiate: cuda::pfn::cuGraphInstantiateWithFlags = m.sym("cuGraphInstantiateWithFlags");
    let graph_launch: cuda::pfn::cuGraphLaunch = m.sym("cuGraphLaunch");
    let sync: cuda::pfn::cuStreamSynchronize = m.sym("cuStreamSynchronize");
    let (mut stream, mut graph, mut exec) = (null_mut(), null_mut(), null_mut());
    let mut buffer = 0u64;
    let mut host = [0u32; 16];
    // SAFETY: valid out-pointers, handles and buffers.
    unsafe {
        assert_eq!(alloc(&mut buffer, 64), 0);
        assert_eq!(memset(buffer, 0, 16), 0);
        assert_eq!(create_stream(&mut stream, 0), 0);
        assert_eq!(
            begin(null_mut(), CU_STREAM_CAPTURE_MODE_GLOBAL),
            CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
        );
        assert_eq!(begin(stream, CU_STREAM_CAPTURE_MODE_GLOBAL), 0);
        let (mut dst, mut value, mut count) = (buffer, 42u32, 16u64);
        let mut params = [
            (&mut dst as *mut u64).cast(),
            (&mut value as *mut u32).cast(),
            (&mut count as *mut u64).cast(),
        ];
        assert_eq!(launch(fill, stream, &mut params), 0);
        assert_eq!(end(stream, &mut graph), 0);
        // Captured, not run.
        assert_eq!(dtoh(host.as_mut_ptr().cast(), buffer, 64), 0);
        assert_eq!(host, [0; 16]);
        assert_eq!(instantiate(&mut exec, graph, 0), 0);
        assert_eq!(graph_launch(exec, stream), 0);
        assert_eq!(sync(stream), 0);
        assert_eq!(dtoh(host.as_mut_ptr().cast(), buffer, 64), 0);
        assert_eq!(host, [42; 16]);
    }
}

#[test]
fn vmm_charges_physical_memory_and_maps_real_bytes() {
    let m = machine();
    m.use_device(4);
    let granularity: cuda::pfn::cuMemGetAllocationGranularity =
        m.sym("cuMemGetAllocationGranularity");
    let create: cuda::pfn::cuMemCreate = m.sym("cuMemCreate");
    let release: cuda::pfn::cuMemRelease = m.sym("cuMemRelease");
    let reserve: cuda::pfn::cuMemAddressReserve = m.sym("cuMemAddressReserve");
    let address_free: cuda::pfn::cuMemAddressFree = m.sym("cuMemAddressFree");
    let map: cuda::pfn::cuMemMap = m.sym("cuMemMap");
    let unmap: cuda::pfn::cuMemUnmap = m.sym("cuMemUnmap");
    let access: cuda::pfn::cuMemSetAccess = m.sym("cuMemSetAccess");
    let htod: cuda::pfn::cuMemcpyHtoD_v2 = m.sym("cuMemcpyHtoD_v2");
    let dtoh: cuda::pfn::cuMemcpyDtoH_v2 = m.sym("cuMemcpyDtoH_v2");
    let prop = CUmemAllocationProp {
        type_: CU_MEM_ALLOCATION_TYPE_PINNED,
        requestedHandleTypes: 0,
        location: CUmemLocation {
            type_: CU_MEM_LOCATION_TYPE_DEVICE,
            id: 4,
        },
        win32HandleMetaData: null_mut(),
        allocFlags: Default::default(),
    };
    let (mut gran, mut handle, mut va) = (0usize, 0u64, 0u64);
    let size = 4 * MIB;
    // SAFETY: valid out-pointers, descriptors and buffers.
    unsafe {
        assert_eq!(
            granularity(&mut gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM),
            0
        );
        assert_eq!(gran, 2 * MIB);
        assert_eq!(create(&mut handle, MIB, &prop, 0), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(create(&mut handle, size, &prop, 0), 0);
        assert_eq!(m.mem_info().0, DEVICE_MEMORY as usize - size);
        assert_eq!(reserve(&mut va, size, 0, 0, 0), 0);
        assert_eq!(map(va, size, 0, handle, 0), 0);
        assert_eq!(map(va, size, 0, handle, 0), CUDA_ERROR_ALREADY_MAPPED);
        let desc = CUmemAccessDesc {
            location: prop.location,
            flags: CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
        };
        assert_eq!(access(va, size, &desc, 1), 0);
        let data = [9u8; 4096];
        let mut back = [0u8; 4096];
        assert_eq!(htod(va + MIB as u64, data.as_ptr().cast(), data.len()), 0);
        assert_eq!(
            dtoh(back.as_mut_ptr().cast(), va + MIB as u64, back.len()),
            0
        );
        assert_eq!(back, data);
        // Released while mapped: the memory stays until the mapping goes.
        assert_eq!(release(handle), 0);
        assert_eq!(m.mem_info().0, DEVICE_MEMORY as usize - size);
        assert_eq!(unmap(va, size), 0);
        assert_eq!(m.mem_info().0, DEVICE_MEMORY as usize);
        assert_eq!(address_free(va, size), 0);
    }
}

#[test]
fn pools_charge_the_device_and_report_their_usage() {
    let m = machine();
    m.use_device(5);
    let create: cuda::pfn::cuMemPoolCreate = m.sym("cuMemPoolCreate");
    let destroy: cuda::pfn::cuMemPoolDestroy = m.sym("cuMemPoolDestroy");
    let alloc: cuda::pfn::cuMemAllocFromPoolAsync = m.sym("cuMemAllocFromPoolAsync");
    let free_async: cuda::pfn::cuMemFreeAsync = m.sym("cuMemFreeAsync");
    let get_attr: cuda::pfn::cuMemPoolGetAttribute = m.sym("cuMemPoolGetAttribute");
    let default_pool: cuda::pfn::cuDeviceGetDefaultMemPool = m.sym("cuDeviceGetDefaultMemPool");
    let sync: cuda::pfn::cuCtxSynchronize = m.sym("cuCtxSynchronize");
    let props = CUmemPoolProps {
        allocType: CU_MEM_ALLOCATION_TYPE_PINNED,
        handleTypes: 0,
        location: CUmemLocation {
            type_: CU_MEM_LOCATION_TYPE_DEVICE,
            id: 5,
        },
        win32SecurityAttributes: null_mut(),
        maxSize: 0,
        usage: 0,
        reserved: [0; 54],
    };
    let (mut pool, mut fallback, mut ptr, mut used) = (null_mut(), null_mut(), 0u64, 0u64);
    // SAFETY: valid out-pointers and handles from the driver.
    unsafe {
        assert_eq!(create(&mut pool, &props), 0);
        assert_eq!(alloc(&mut ptr, 3 * MIB, pool, null_mut()), 0);
        assert_eq!(m.mem_info().0, DEVICE_MEMORY as usize - 4 * MIB);
        assert_eq!(
            get_attr(
                pool,
                CU_MEMPOOL_ATTR_USED_MEM_CURRENT,
                (&mut used as *mut u64).cast()
            ),
            0
        );
        assert_eq!(used, 4 * MIB as u64);
        assert_eq!(
            alloc(&mut ptr, DEVICE_MEMORY as usize, pool, null_mut()),
            CUDA_ERROR_OUT_OF_MEMORY
        );
        let mut first = 0u64;
        assert_eq!(alloc(&mut first, MIB, pool, null_mut()), 0);
        assert_eq!(free_async(first, null_mut()), 0);
        assert_eq!(
            free_async(0xdead_0000, null_mut()),
            CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(free_async(ptr, null_mut()), 0);
        assert_eq!(sync(), 0);
        assert_eq!(m.mem_info().0, DEVICE_MEMORY as usize);
        assert_eq!(default_pool(&mut fallback, 5), 0);
        assert_eq!(destroy(fallback), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(destroy(pool), 0);
    }
}

#[test]
fn nvml_sees_the_memory_and_the_process_the_cuda_side_holds() {
    let m = machine();
    m.use_device(6);
    let alloc: cuda::pfn::cuMemAlloc_v2 = m.sym("cuMemAlloc_v2");
    let init: nvml::pfn::nvmlInit_v2 = m.sym("nvmlInit_v2");
    let by_index: nvml::pfn::nvmlDeviceGetHandleByIndex_v2 = m.sym("nvmlDeviceGetHandleByIndex_v2");
    let by_uuid: nvml::pfn::nvmlDeviceGetHandleByUUID = m.sym("nvmlDeviceGetHandleByUUID");
    let uuid_of: nvml::pfn::nvmlDeviceGetUUID = m.sym("nvmlDeviceGetUUID");
    let memory: nvml::pfn::nvmlDeviceGetMemoryInfo = m.sym("nvmlDeviceGetMemoryInfo");
    let memory_v2: nvml::pfn::nvmlDeviceGetMemoryInfo_v2 = m.sym("nvmlDeviceGetMemoryInfo_v2");
    let processes: nvml::pfn::nvmlDeviceGetComputeRunningProcesses_v3 =
        m.sym("nvmlDeviceGetComputeRunningProcesses_v3");
    let error_string: nvml::pfn::nvmlErrorString = m.sym("nvmlErrorString");
    let mut ptr = 0u64;
    let mut device = null_mut();
    let mut again = null_mut();
    let mut uuid = [0i8; 96];
    // SAFETY: valid out-pointers, buffers and handles.
    unsafe {
        assert_eq!(alloc(&mut ptr, 100 * MIB), 0);
        assert_eq!(init(), NVML_SUCCESS);
        assert_eq!(by_index(6, &mut device), NVML_SUCCESS);
        assert_eq!(by_index(99, &mut device), NVML_ERROR_INVALID_ARGUMENT);
        assert_eq!(by_index(6, &mut device), NVML_SUCCESS);
        assert_eq!(uuid_of(device, uuid.as_mut_ptr(), 96), NVML_SUCCESS);
        assert_eq!(by_uuid(uuid.as_ptr(), &mut again), NVML_SUCCESS);
        assert_eq!(again, device);

        let mut v1 = nvmlMemory_t::default();
        assert_eq!(memory(device, &mut v1), NVML_SUCCESS);
        assert_eq!(v1.total, DEVICE_MEMORY);
        assert_eq!(v1.used, 100 * MIB as u64);
        assert_eq!(v1.free, m.mem_info().0 as u64);
        let mut v2 = nvmlMemory_v2_t::default();
        assert_eq!(
            memory_v2(device, &mut v2),
            NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        );
        v2.version = NVML_MEMORY_V2;
        assert_eq!(memory_v2(device, &mut v2), NVML_SUCCESS);
        assert_eq!((v2.total, v2.used, v2.free), (v1.total, v1.used, v1.free));

        let mut count = 0u32;
        assert_eq!(
            processes(device, &mut count, null_mut()),
            NVML_ERROR_INSUFFICIENT_SIZE
        );
        assert_eq!(count, 1);
        let mut infos = [nvmlProcessInfo_t::default(); 4];
        count = 4;
        assert_eq!(
            processes(device, &mut count, infos.as_mut_ptr()),
            NVML_SUCCESS
        );
        assert_eq!(infos[0].pid, std::process::id());
        assert_eq!(infos[0].usedGpuMemory, 100 * MIB as u64);
        let text = CStr::from_ptr(error_string(NVML_ERROR_INSUFFICIENT_SIZE));
        assert_eq!(text, c"Insufficient Size");
    }
}

#[test]
fn a_device_marked_lost_answers_gpu_is_lost_in_nvml_until_marked_healthy() {
    let m = machine();
    let init: nvml::pfn::nvmlInit_v2 = m.sym("nvmlInit_v2");
    let by_index: nvml::pfn::nvmlDeviceGetHandleByIndex_v2 = m.sym("nvmlDeviceGetHandleByIndex_v2");
    let by_uuid: nvml::pfn::nvmlDeviceGetHandleByUUID = m.sym("nvmlDeviceGetHandleByUUID");
    let uuid_of: nvml::pfn::nvmlDeviceGetUUID = m.sym("nvmlDeviceGetUUID");
    let memory: nvml::pfn::nvmlDeviceGetMemoryInfo = m.sym("nvmlDeviceGetMemoryInfo");
    let health = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hami-fakegpu-health"))
            .arg(&m.state_dir)
            .args(args)
            .status()
            .expect("hami-fakegpu-health")
    };
    let mut device = null_mut();
    let mut again = null_mut();
    let mut uuid = [0i8; 96];
    let mut info = nvmlMemory_t::default();
    // SAFETY: valid out-pointers, buffers and handles.
    unsafe {
        assert_eq!(init(), NVML_SUCCESS);
        assert_eq!(by_index(7, &mut device), NVML_SUCCESS);
        assert_eq!(uuid_of(device, uuid.as_mut_ptr(), 96), NVML_SUCCESS);

        assert!(health(&["7", "lost"]).success());
        assert_eq!(by_index(7, &mut again), NVML_ERROR_GPU_IS_LOST);
        assert_eq!(by_uuid(uuid.as_ptr(), &mut again), NVML_ERROR_GPU_IS_LOST);
        assert_eq!(memory(device, &mut info), NVML_ERROR_GPU_IS_LOST);

        assert!(health(&["7", "healthy"]).success());
        assert_eq!(by_uuid(uuid.as_ptr(), &mut again), NVML_SUCCESS);
        assert_eq!(again, device);
        assert_eq!(memory(device, &mut info), NVML_SUCCESS);
    }
    assert_eq!(health(&["8", "lost"]).code(), Some(1), "no device 8");
    assert_eq!(health(&["7", "sick"]).code(), Some(2));
}

#[test]
fn error_names_and_strings_read_like_the_driver() {
    let m = machine();
    let name: cuda::pfn::cuGetErrorName = m.sym("cuGetErrorName");
    let string: cuda::pfn::cuGetErrorString = m.sym("cuGetErrorString");
    let mut text = std::ptr::null();
    // SAFETY: valid out-pointer; returned strings are static C strings.
    unsafe {
        assert_eq!(name(CUDA_ERROR_OUT_OF_MEMORY, &mut text), 0);
        assert_eq!(CStr::from_ptr(text), c"CUDA_ERROR_OUT_OF_MEMORY");
        assert_eq!(string(CUDA_ERROR_OUT_OF_MEMORY, &mut text), 0);
        assert_eq!(CStr::from_ptr(text), c"out of memory");
        assert_eq!(name(-5, &mut text), CUDA_ERROR_INVALID_VALUE);
    }
}

#[test]
fn a_thread_without_a_context_gets_invalid_context() {
    let m = machine();
    let alloc: cuda::pfn::cuMemAlloc_v2 = m.sym("cuMemAlloc_v2");
    let attribute: cuda::pfn::cuDeviceGetAttribute = m.sym("cuDeviceGetAttribute");
    let mut ptr = 0u64;
    let mut sms = 0;
    // SAFETY: valid out-pointers.
    unsafe {
        assert_eq!(alloc(&mut ptr, MIB), CUDA_ERROR_INVALID_CONTEXT);
        assert_eq!(
            attribute(&mut sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, 7),
            0
        );
        assert_eq!(sms, 16);
        assert_eq!(
            attribute(&mut sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, 8),
            CUDA_ERROR_INVALID_DEVICE
        );
    }
}
