//! The CUDA driver entry-point table: every entry point the project hooks or simulates, once.
//!
//! `since` is the CUDA version that introduced this ABI variant, as in the `PFN_cuX_vNNNNN`
//! names of `cudaTypedefs.h`; `cuGetProcAddress` picks the newest variant whose `since` does
//! not exceed the caller's version. `per_thread` marks the `_ptsz`/`_ptds` variants that
//! `CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM` selects.

/// Calls `$cb! { ... }` with every CUDA driver entry point.
///
/// Each entry reads
/// `symbol { base: name, since: N, per_thread: bool, kind: Kind } extern "C" fn(args) -> CUresult;`.
/// The types are the short names of [`crate::cuda`]: invoke this where `hami_hooks::cuda::*`
/// is in scope. Every entry goes through [`__extern_c_entry_points!`](crate::__extern_c_entry_points)
/// first, so a signature that is not `extern "C"` does not compile.
#[macro_export]
macro_rules! cuda_entry_points {
    ($cb:path) => {
        $crate::__extern_c_entry_points! { $cb;
            // Init, version, lookup, errors.
            cuInit { base: cuInit, since: 2000, per_thread: false, kind: Init }
                extern "C" fn(flags: c_uint) -> CUresult;
            cuDriverGetVersion { base: cuDriverGetVersion, since: 2020, per_thread: false, kind: Other }
                extern "C" fn(driver_version: *mut c_int) -> CUresult;
            cuGetProcAddress { base: cuGetProcAddress, since: 11030, per_thread: false, kind: Lookup }
                extern "C" fn(symbol: *const c_char, pfn: *mut *mut c_void, cuda_version: c_int, flags: cuuint64_t) -> CUresult;
            cuGetProcAddress_v2 { base: cuGetProcAddress, since: 12000, per_thread: false, kind: Lookup }
                extern "C" fn(symbol: *const c_char, pfn: *mut *mut c_void, cuda_version: c_int, flags: cuuint64_t, symbol_status: *mut CUdriverProcAddressQueryResult) -> CUresult;
            cuGetErrorName { base: cuGetErrorName, since: 6000, per_thread: false, kind: Other }
                extern "C" fn(error: CUresult, p_str: *mut *const c_char) -> CUresult;
            cuGetErrorString { base: cuGetErrorString, since: 6000, per_thread: false, kind: Other }
                extern "C" fn(error: CUresult, p_str: *mut *const c_char) -> CUresult;

            // Devices.
            cuDeviceGet { base: cuDeviceGet, since: 2000, per_thread: false, kind: Device }
                extern "C" fn(device: *mut CUdevice, ordinal: c_int) -> CUresult;
            cuDeviceGetCount { base: cuDeviceGetCount, since: 2000, per_thread: false, kind: Device }
                extern "C" fn(count: *mut c_int) -> CUresult;
            cuDeviceGetName { base: cuDeviceGetName, since: 2000, per_thread: false, kind: Device }
                extern "C" fn(name: *mut c_char, len: c_int, dev: CUdevice) -> CUresult;
            cuDeviceGetUuid { base: cuDeviceGetUuid, since: 9020, per_thread: false, kind: Device }
                extern "C" fn(uuid: *mut CUuuid, dev: CUdevice) -> CUresult;
            cuDeviceGetUuid_v2 { base: cuDeviceGetUuid, since: 11040, per_thread: false, kind: Device }
                extern "C" fn(uuid: *mut CUuuid, dev: CUdevice) -> CUresult;
            cuDeviceGetAttribute { base: cuDeviceGetAttribute, since: 2000, per_thread: false, kind: Device }
                extern "C" fn(pi: *mut c_int, attrib: CUdevice_attribute, dev: CUdevice) -> CUresult;
            cuDeviceTotalMem { base: cuDeviceTotalMem, since: 2000, per_thread: false, kind: MemInfo }
                extern "C" fn(bytes: *mut c_uint, dev: CUdevice) -> CUresult;
            cuDeviceTotalMem_v2 { base: cuDeviceTotalMem, since: 3020, per_thread: false, kind: MemInfo }
                extern "C" fn(bytes: *mut usize, dev: CUdevice) -> CUresult;

            // Contexts.
            cuDevicePrimaryCtxRetain { base: cuDevicePrimaryCtxRetain, since: 7000, per_thread: false, kind: Context }
                extern "C" fn(pctx: *mut CUcontext, dev: CUdevice) -> CUresult;
            cuDevicePrimaryCtxRelease { base: cuDevicePrimaryCtxRelease, since: 7000, per_thread: false, kind: Context }
                extern "C" fn(dev: CUdevice) -> CUresult;
            cuDevicePrimaryCtxRelease_v2 { base: cuDevicePrimaryCtxRelease, since: 11000, per_thread: false, kind: Context }
                extern "C" fn(dev: CUdevice) -> CUresult;
            cuDevicePrimaryCtxGetState { base: cuDevicePrimaryCtxGetState, since: 7000, per_thread: false, kind: Context }
                extern "C" fn(dev: CUdevice, flags: *mut c_uint, active: *mut c_int) -> CUresult;
            cuDevicePrimaryCtxSetFlags { base: cuDevicePrimaryCtxSetFlags, since: 7000, per_thread: false, kind: Context }
                extern "C" fn(dev: CUdevice, flags: c_uint) -> CUresult;
            cuDevicePrimaryCtxSetFlags_v2 { base: cuDevicePrimaryCtxSetFlags, since: 11000, per_thread: false, kind: Context }
                extern "C" fn(dev: CUdevice, flags: c_uint) -> CUresult;
            cuCtxCreate { base: cuCtxCreate, since: 2000, per_thread: false, kind: Context }
                extern "C" fn(pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) -> CUresult;
            cuCtxCreate_v2 { base: cuCtxCreate, since: 3020, per_thread: false, kind: Context }
                extern "C" fn(pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) -> CUresult;
            cuCtxCreate_v3 { base: cuCtxCreate, since: 11040, per_thread: false, kind: Context }
                extern "C" fn(pctx: *mut CUcontext, params: *mut CUexecAffinityParam, num_params: c_int, flags: c_uint, dev: CUdevice) -> CUresult;
            cuCtxCreate_v4 { base: cuCtxCreate, since: 12050, per_thread: false, kind: Context }
                extern "C" fn(pctx: *mut CUcontext, params: *mut CUctxCreateParams, flags: c_uint, dev: CUdevice) -> CUresult;
            cuCtxDestroy { base: cuCtxDestroy, since: 2000, per_thread: false, kind: Context }
                extern "C" fn(ctx: CUcontext) -> CUresult;
            cuCtxDestroy_v2 { base: cuCtxDestroy, since: 4000, per_thread: false, kind: Context }
                extern "C" fn(ctx: CUcontext) -> CUresult;
            cuCtxGetCurrent { base: cuCtxGetCurrent, since: 4000, per_thread: false, kind: Context }
                extern "C" fn(pctx: *mut CUcontext) -> CUresult;
            cuCtxSetCurrent { base: cuCtxSetCurrent, since: 4000, per_thread: false, kind: Context }
                extern "C" fn(ctx: CUcontext) -> CUresult;
            cuCtxPushCurrent { base: cuCtxPushCurrent, since: 2000, per_thread: false, kind: Context }
                extern "C" fn(ctx: CUcontext) -> CUresult;
            cuCtxPushCurrent_v2 { base: cuCtxPushCurrent, since: 4000, per_thread: false, kind: Context }
                extern "C" fn(ctx: CUcontext) -> CUresult;
            cuCtxPopCurrent { base: cuCtxPopCurrent, since: 2000, per_thread: false, kind: Context }
                extern "C" fn(pctx: *mut CUcontext) -> CUresult;
            cuCtxPopCurrent_v2 { base: cuCtxPopCurrent, since: 4000, per_thread: false, kind: Context }
                extern "C" fn(pctx: *mut CUcontext) -> CUresult;
            cuCtxGetDevice { base: cuCtxGetDevice, since: 2000, per_thread: false, kind: Context }
                extern "C" fn(device: *mut CUdevice) -> CUresult;
            cuCtxSynchronize { base: cuCtxSynchronize, since: 2000, per_thread: false, kind: Context }
                extern "C" fn() -> CUresult;

            // Memory: allocation, release and queries.
            cuMemGetInfo { base: cuMemGetInfo, since: 2000, per_thread: false, kind: MemInfo }
                extern "C" fn(free: *mut c_uint, total: *mut c_uint) -> CUresult;
            cuMemGetInfo_v2 { base: cuMemGetInfo, since: 3020, per_thread: false, kind: MemInfo }
                extern "C" fn(free: *mut usize, total: *mut usize) -> CUresult;
            cuMemAlloc_v2 { base: cuMemAlloc, since: 3020, per_thread: false, kind: Alloc }
                extern "C" fn(dptr: *mut CUdeviceptr, bytesize: usize) -> CUresult;
            cuMemAllocPitch_v2 { base: cuMemAllocPitch, since: 3020, per_thread: false, kind: Alloc }
                extern "C" fn(dptr: *mut CUdeviceptr, p_pitch: *mut usize, width_in_bytes: usize, height: usize, element_size_bytes: c_uint) -> CUresult;
            cuMemAllocManaged { base: cuMemAllocManaged, since: 6000, per_thread: false, kind: Alloc }
                extern "C" fn(dptr: *mut CUdeviceptr, bytesize: usize, flags: c_uint) -> CUresult;
            cuMemFree_v2 { base: cuMemFree, since: 3020, per_thread: false, kind: Free }
                extern "C" fn(dptr: CUdeviceptr) -> CUresult;
            cuMemAllocAsync { base: cuMemAllocAsync, since: 11020, per_thread: false, kind: Alloc }
                extern "C" fn(dptr: *mut CUdeviceptr, bytesize: usize, h_stream: CUstream) -> CUresult;
            cuMemAllocAsync_ptsz { base: cuMemAllocAsync, since: 11020, per_thread: true, kind: Alloc }
                extern "C" fn(dptr: *mut CUdeviceptr, bytesize: usize, h_stream: CUstream) -> CUresult;
            cuMemFreeAsync { base: cuMemFreeAsync, since: 11020, per_thread: false, kind: Free }
                extern "C" fn(dptr: CUdeviceptr, h_stream: CUstream) -> CUresult;
            cuMemFreeAsync_ptsz { base: cuMemFreeAsync, since: 11020, per_thread: true, kind: Free }
                extern "C" fn(dptr: CUdeviceptr, h_stream: CUstream) -> CUresult;
            cuMemAllocFromPoolAsync { base: cuMemAllocFromPoolAsync, since: 11020, per_thread: false, kind: Alloc }
                extern "C" fn(dptr: *mut CUdeviceptr, bytesize: usize, pool: CUmemoryPool, h_stream: CUstream) -> CUresult;
            cuMemAllocFromPoolAsync_ptsz { base: cuMemAllocFromPoolAsync, since: 11020, per_thread: true, kind: Alloc }
                extern "C" fn(dptr: *mut CUdeviceptr, bytesize: usize, pool: CUmemoryPool, h_stream: CUstream) -> CUresult;

            // Memory pools.
            cuMemPoolCreate { base: cuMemPoolCreate, since: 11020, per_thread: false, kind: Pool }
                extern "C" fn(pool: *mut CUmemoryPool, pool_props: *const CUmemPoolProps) -> CUresult;
            cuMemPoolDestroy { base: cuMemPoolDestroy, since: 11020, per_thread: false, kind: Pool }
                extern "C" fn(pool: CUmemoryPool) -> CUresult;
            cuMemPoolSetAttribute { base: cuMemPoolSetAttribute, since: 11020, per_thread: false, kind: Pool }
                extern "C" fn(pool: CUmemoryPool, attr: CUmemPool_attribute, value: *mut c_void) -> CUresult;
            cuMemPoolGetAttribute { base: cuMemPoolGetAttribute, since: 11020, per_thread: false, kind: Pool }
                extern "C" fn(pool: CUmemoryPool, attr: CUmemPool_attribute, value: *mut c_void) -> CUresult;
            cuMemPoolTrimTo { base: cuMemPoolTrimTo, since: 11020, per_thread: false, kind: Pool }
                extern "C" fn(pool: CUmemoryPool, min_bytes_to_keep: usize) -> CUresult;
            cuDeviceGetDefaultMemPool { base: cuDeviceGetDefaultMemPool, since: 11020, per_thread: false, kind: Pool }
                extern "C" fn(pool_out: *mut CUmemoryPool, dev: CUdevice) -> CUresult;
            cuDeviceGetMemPool { base: cuDeviceGetMemPool, since: 11020, per_thread: false, kind: Pool }
                extern "C" fn(pool: *mut CUmemoryPool, dev: CUdevice) -> CUresult;

            // Virtual memory management.
            cuMemCreate { base: cuMemCreate, since: 10020, per_thread: false, kind: Alloc }
                extern "C" fn(handle: *mut CUmemGenericAllocationHandle, size: usize, prop: *const CUmemAllocationProp, flags: u64) -> CUresult;
            cuMemRelease { base: cuMemRelease, since: 10020, per_thread: false, kind: Free }
                extern "C" fn(handle: CUmemGenericAllocationHandle) -> CUresult;
            cuMemAddressReserve { base: cuMemAddressReserve, since: 10020, per_thread: false, kind: VirtualAddress }
                extern "C" fn(ptr: *mut CUdeviceptr, size: usize, alignment: usize, addr: CUdeviceptr, flags: u64) -> CUresult;
            cuMemAddressFree { base: cuMemAddressFree, since: 10020, per_thread: false, kind: VirtualAddress }
                extern "C" fn(ptr: CUdeviceptr, size: usize) -> CUresult;
            cuMemMap { base: cuMemMap, since: 10020, per_thread: false, kind: VirtualAddress }
                extern "C" fn(ptr: CUdeviceptr, size: usize, offset: usize, handle: CUmemGenericAllocationHandle, flags: u64) -> CUresult;
            cuMemUnmap { base: cuMemUnmap, since: 10020, per_thread: false, kind: VirtualAddress }
                extern "C" fn(ptr: CUdeviceptr, size: usize) -> CUresult;
            cuMemSetAccess { base: cuMemSetAccess, since: 10020, per_thread: false, kind: VirtualAddress }
                extern "C" fn(ptr: CUdeviceptr, size: usize, desc: *const CUmemAccessDesc, count: usize) -> CUresult;
            cuMemGetAllocationGranularity { base: cuMemGetAllocationGranularity, since: 10020, per_thread: false, kind: MemInfo }
                extern "C" fn(granularity: *mut usize, prop: *const CUmemAllocationProp, option: CUmemAllocationGranularity_flags) -> CUresult;

            // Arrays.
            cuArrayCreate_v2 { base: cuArrayCreate, since: 3020, per_thread: false, kind: Alloc }
                extern "C" fn(p_handle: *mut CUarray, p_allocate_array: *const CUDA_ARRAY_DESCRIPTOR) -> CUresult;
            cuArray3DCreate_v2 { base: cuArray3DCreate, since: 3020, per_thread: false, kind: Alloc }
                extern "C" fn(p_handle: *mut CUarray, p_allocate_array: *const CUDA_ARRAY3D_DESCRIPTOR) -> CUresult;
            cuArrayDestroy { base: cuArrayDestroy, since: 2000, per_thread: false, kind: Free }
                extern "C" fn(h_array: CUarray) -> CUresult;

            // Copies and memset.
            cuMemcpy { base: cuMemcpy, since: 4000, per_thread: false, kind: Copy }
                extern "C" fn(dst: CUdeviceptr, src: CUdeviceptr, byte_count: usize) -> CUresult;
            cuMemcpy_ptds { base: cuMemcpy, since: 7000, per_thread: true, kind: Copy }
                extern "C" fn(dst: CUdeviceptr, src: CUdeviceptr, byte_count: usize) -> CUresult;
            cuMemcpyAsync { base: cuMemcpyAsync, since: 4000, per_thread: false, kind: Copy }
                extern "C" fn(dst: CUdeviceptr, src: CUdeviceptr, byte_count: usize, h_stream: CUstream) -> CUresult;
            cuMemcpyAsync_ptsz { base: cuMemcpyAsync, since: 7000, per_thread: true, kind: Copy }
                extern "C" fn(dst: CUdeviceptr, src: CUdeviceptr, byte_count: usize, h_stream: CUstream) -> CUresult;
            cuMemcpyHtoD_v2 { base: cuMemcpyHtoD, since: 3020, per_thread: false, kind: Copy }
                extern "C" fn(dst_device: CUdeviceptr, src_host: *const c_void, byte_count: usize) -> CUresult;
            cuMemcpyHtoD_v2_ptds { base: cuMemcpyHtoD, since: 7000, per_thread: true, kind: Copy }
                extern "C" fn(dst_device: CUdeviceptr, src_host: *const c_void, byte_count: usize) -> CUresult;
            cuMemcpyDtoH_v2 { base: cuMemcpyDtoH, since: 3020, per_thread: false, kind: Copy }
                extern "C" fn(dst_host: *mut c_void, src_device: CUdeviceptr, byte_count: usize) -> CUresult;
            cuMemcpyDtoH_v2_ptds { base: cuMemcpyDtoH, since: 7000, per_thread: true, kind: Copy }
                extern "C" fn(dst_host: *mut c_void, src_device: CUdeviceptr, byte_count: usize) -> CUresult;
            cuMemcpyDtoD_v2 { base: cuMemcpyDtoD, since: 3020, per_thread: false, kind: Copy }
                extern "C" fn(dst_device: CUdeviceptr, src_device: CUdeviceptr, byte_count: usize) -> CUresult;
            cuMemcpyDtoD_v2_ptds { base: cuMemcpyDtoD, since: 7000, per_thread: true, kind: Copy }
                extern "C" fn(dst_device: CUdeviceptr, src_device: CUdeviceptr, byte_count: usize) -> CUresult;
            cuMemcpyHtoDAsync_v2 { base: cuMemcpyHtoDAsync, since: 3020, per_thread: false, kind: Copy }
                extern "C" fn(dst_device: CUdeviceptr, src_host: *const c_void, byte_count: usize, h_stream: CUstream) -> CUresult;
            cuMemcpyHtoDAsync_v2_ptsz { base: cuMemcpyHtoDAsync, since: 7000, per_thread: true, kind: Copy }
                extern "C" fn(dst_device: CUdeviceptr, src_host: *const c_void, byte_count: usize, h_stream: CUstream) -> CUresult;
            cuMemcpyDtoHAsync_v2 { base: cuMemcpyDtoHAsync, since: 3020, per_thread: false, kind: Copy }
                extern "C" fn(dst_host: *mut c_void, src_device: CUdeviceptr, byte_count: usize, h_stream: CUstream) -> CUresult;
            cuMemcpyDtoHAsync_v2_ptsz { base: cuMemcpyDtoHAsync, since: 7000, per_thread: true, kind: Copy }
                extern "C" fn(dst_host: *mut c_void, src_device: CUdeviceptr, byte_count: usize, h_stream: CUstream) -> CUresult;
            cuMemcpyDtoDAsync_v2 { base: cuMemcpyDtoDAsync, since: 3020, per_thread: false, kind: Copy }
                extern "C" fn(dst_device: CUdeviceptr, src_device: CUdeviceptr, byte_count: usize, h_stream: CUstream) -> CUresult;
            cuMemcpyDtoDAsync_v2_ptsz { base: cuMemcpyDtoDAsync, since: 7000, per_thread: true, kind: Copy }
                extern "C" fn(dst_device: CUdeviceptr, src_device: CUdeviceptr, byte_count: usize, h_stream: CUstream) -> CUresult;
            cuMemsetD8_v2 { base: cuMemsetD8, since: 3020, per_thread: false, kind: Copy }
                extern "C" fn(dst_device: CUdeviceptr, uc: u8, n: usize) -> CUresult;
            cuMemsetD8_v2_ptds { base: cuMemsetD8, since: 7000, per_thread: true, kind: Copy }
                extern "C" fn(dst_device: CUdeviceptr, uc: u8, n: usize) -> CUresult;
            cuMemsetD32_v2 { base: cuMemsetD32, since: 3020, per_thread: false, kind: Copy }
                extern "C" fn(dst_device: CUdeviceptr, ui: c_uint, n: usize) -> CUresult;
            cuMemsetD32_v2_ptds { base: cuMemsetD32, since: 7000, per_thread: true, kind: Copy }
                extern "C" fn(dst_device: CUdeviceptr, ui: c_uint, n: usize) -> CUresult;
            cuMemsetD8Async { base: cuMemsetD8Async, since: 3020, per_thread: false, kind: Copy }
                extern "C" fn(dst_device: CUdeviceptr, uc: u8, n: usize, h_stream: CUstream) -> CUresult;
            cuMemsetD8Async_ptsz { base: cuMemsetD8Async, since: 7000, per_thread: true, kind: Copy }
                extern "C" fn(dst_device: CUdeviceptr, uc: u8, n: usize, h_stream: CUstream) -> CUresult;
            cuMemsetD32Async { base: cuMemsetD32Async, since: 3020, per_thread: false, kind: Copy }
                extern "C" fn(dst_device: CUdeviceptr, ui: c_uint, n: usize, h_stream: CUstream) -> CUresult;
            cuMemsetD32Async_ptsz { base: cuMemsetD32Async, since: 7000, per_thread: true, kind: Copy }
                extern "C" fn(dst_device: CUdeviceptr, ui: c_uint, n: usize, h_stream: CUstream) -> CUresult;

            // Modules and functions.
            cuModuleLoad { base: cuModuleLoad, since: 2000, per_thread: false, kind: Module }
                extern "C" fn(module: *mut CUmodule, fname: *const c_char) -> CUresult;
            cuModuleLoadData { base: cuModuleLoadData, since: 2000, per_thread: false, kind: Module }
                extern "C" fn(module: *mut CUmodule, image: *const c_void) -> CUresult;
            cuModuleLoadDataEx { base: cuModuleLoadDataEx, since: 2010, per_thread: false, kind: Module }
                extern "C" fn(module: *mut CUmodule, image: *const c_void, num_options: c_uint, options: *mut CUjit_option, option_values: *mut *mut c_void) -> CUresult;
            cuModuleUnload { base: cuModuleUnload, since: 2000, per_thread: false, kind: Module }
                extern "C" fn(hmod: CUmodule) -> CUresult;
            cuModuleGetFunction { base: cuModuleGetFunction, since: 2000, per_thread: false, kind: Module }
                extern "C" fn(hfunc: *mut CUfunction, hmod: CUmodule, name: *const c_char) -> CUresult;

            // Launches.
            cuLaunchKernel { base: cuLaunchKernel, since: 4000, per_thread: false, kind: Launch }
                extern "C" fn(f: CUfunction, grid_dim_x: c_uint, grid_dim_y: c_uint, grid_dim_z: c_uint, block_dim_x: c_uint, block_dim_y: c_uint, block_dim_z: c_uint, shared_mem_bytes: c_uint, h_stream: CUstream, kernel_params: *mut *mut c_void, extra: *mut *mut c_void) -> CUresult;
            cuLaunchKernel_ptsz { base: cuLaunchKernel, since: 7000, per_thread: true, kind: Launch }
                extern "C" fn(f: CUfunction, grid_dim_x: c_uint, grid_dim_y: c_uint, grid_dim_z: c_uint, block_dim_x: c_uint, block_dim_y: c_uint, block_dim_z: c_uint, shared_mem_bytes: c_uint, h_stream: CUstream, kernel_params: *mut *mut c_void, extra: *mut *mut c_void) -> CUresult;
            cuLaunchKernelEx { base: cuLaunchKernelEx, since: 11060, per_thread: false, kind: Launch }
                extern "C" fn(config: *const CUlaunchConfig, f: CUfunction, kernel_params: *mut *mut c_void, extra: *mut *mut c_void) -> CUresult;
            cuLaunchKernelEx_ptsz { base: cuLaunchKernelEx, since: 11060, per_thread: true, kind: Launch }
                extern "C" fn(config: *const CUlaunchConfig, f: CUfunction, kernel_params: *mut *mut c_void, extra: *mut *mut c_void) -> CUresult;
            cuLaunchCooperativeKernel { base: cuLaunchCooperativeKernel, since: 9000, per_thread: false, kind: Launch }
                extern "C" fn(f: CUfunction, grid_dim_x: c_uint, grid_dim_y: c_uint, grid_dim_z: c_uint, block_dim_x: c_uint, block_dim_y: c_uint, block_dim_z: c_uint, shared_mem_bytes: c_uint, h_stream: CUstream, kernel_params: *mut *mut c_void) -> CUresult;
            cuLaunchCooperativeKernel_ptsz { base: cuLaunchCooperativeKernel, since: 9000, per_thread: true, kind: Launch }
                extern "C" fn(f: CUfunction, grid_dim_x: c_uint, grid_dim_y: c_uint, grid_dim_z: c_uint, block_dim_x: c_uint, block_dim_y: c_uint, block_dim_z: c_uint, shared_mem_bytes: c_uint, h_stream: CUstream, kernel_params: *mut *mut c_void) -> CUresult;

            // Streams and capture.
            cuStreamCreate { base: cuStreamCreate, since: 2000, per_thread: false, kind: Stream }
                extern "C" fn(ph_stream: *mut CUstream, flags: c_uint) -> CUresult;
            cuStreamCreateWithPriority { base: cuStreamCreateWithPriority, since: 5050, per_thread: false, kind: Stream }
                extern "C" fn(ph_stream: *mut CUstream, flags: c_uint, priority: c_int) -> CUresult;
            cuStreamDestroy { base: cuStreamDestroy, since: 2000, per_thread: false, kind: Stream }
                extern "C" fn(h_stream: CUstream) -> CUresult;
            cuStreamDestroy_v2 { base: cuStreamDestroy, since: 4000, per_thread: false, kind: Stream }
                extern "C" fn(h_stream: CUstream) -> CUresult;
            cuStreamSynchronize { base: cuStreamSynchronize, since: 2000, per_thread: false, kind: Stream }
                extern "C" fn(h_stream: CUstream) -> CUresult;
            cuStreamSynchronize_ptsz { base: cuStreamSynchronize, since: 7000, per_thread: true, kind: Stream }
                extern "C" fn(h_stream: CUstream) -> CUresult;
            cuStreamQuery { base: cuStreamQuery, since: 2000, per_thread: false, kind: Stream }
                extern "C" fn(h_stream: CUstream) -> CUresult;
            cuStreamQuery_ptsz { base: cuStreamQuery, since: 7000, per_thread: true, kind: Stream }
                extern "C" fn(h_stream: CUstream) -> CUresult;
            cuStreamWaitEvent { base: cuStreamWaitEvent, since: 3020, per_thread: false, kind: Stream }
                extern "C" fn(h_stream: CUstream, h_event: CUevent, flags: c_uint) -> CUresult;
            cuStreamWaitEvent_ptsz { base: cuStreamWaitEvent, since: 7000, per_thread: true, kind: Stream }
                extern "C" fn(h_stream: CUstream, h_event: CUevent, flags: c_uint) -> CUresult;
            cuStreamBeginCapture { base: cuStreamBeginCapture, since: 10000, per_thread: false, kind: Stream }
                extern "C" fn(h_stream: CUstream) -> CUresult;
            cuStreamBeginCapture_ptsz { base: cuStreamBeginCapture, since: 10000, per_thread: true, kind: Stream }
                extern "C" fn(h_stream: CUstream) -> CUresult;
            cuStreamBeginCapture_v2 { base: cuStreamBeginCapture, since: 10010, per_thread: false, kind: Stream }
                extern "C" fn(h_stream: CUstream, mode: CUstreamCaptureMode) -> CUresult;
            cuStreamBeginCapture_v2_ptsz { base: cuStreamBeginCapture, since: 10010, per_thread: true, kind: Stream }
                extern "C" fn(h_stream: CUstream, mode: CUstreamCaptureMode) -> CUresult;
            cuStreamEndCapture { base: cuStreamEndCapture, since: 10000, per_thread: false, kind: Stream }
                extern "C" fn(h_stream: CUstream, ph_graph: *mut CUgraph) -> CUresult;
            cuStreamEndCapture_ptsz { base: cuStreamEndCapture, since: 10000, per_thread: true, kind: Stream }
                extern "C" fn(h_stream: CUstream, ph_graph: *mut CUgraph) -> CUresult;
            cuStreamIsCapturing { base: cuStreamIsCapturing, since: 10000, per_thread: false, kind: Stream }
                extern "C" fn(h_stream: CUstream, capture_status: *mut CUstreamCaptureStatus) -> CUresult;
            cuStreamIsCapturing_ptsz { base: cuStreamIsCapturing, since: 10000, per_thread: true, kind: Stream }
                extern "C" fn(h_stream: CUstream, capture_status: *mut CUstreamCaptureStatus) -> CUresult;

            // Events.
            cuEventCreate { base: cuEventCreate, since: 2000, per_thread: false, kind: Event }
                extern "C" fn(ph_event: *mut CUevent, flags: c_uint) -> CUresult;
            cuEventRecord { base: cuEventRecord, since: 2000, per_thread: false, kind: Event }
                extern "C" fn(h_event: CUevent, h_stream: CUstream) -> CUresult;
            cuEventRecord_ptsz { base: cuEventRecord, since: 7000, per_thread: true, kind: Event }
                extern "C" fn(h_event: CUevent, h_stream: CUstream) -> CUresult;
            cuEventQuery { base: cuEventQuery, since: 2000, per_thread: false, kind: Event }
                extern "C" fn(h_event: CUevent) -> CUresult;
            cuEventSynchronize { base: cuEventSynchronize, since: 2000, per_thread: false, kind: Event }
                extern "C" fn(h_event: CUevent) -> CUresult;
            cuEventElapsedTime { base: cuEventElapsedTime, since: 2000, per_thread: false, kind: Event }
                extern "C" fn(p_milliseconds: *mut f32, h_start: CUevent, h_end: CUevent) -> CUresult;
            cuEventElapsedTime_v2 { base: cuEventElapsedTime, since: 12080, per_thread: false, kind: Event }
                extern "C" fn(p_milliseconds: *mut f32, h_start: CUevent, h_end: CUevent) -> CUresult;
            cuEventDestroy { base: cuEventDestroy, since: 2000, per_thread: false, kind: Event }
                extern "C" fn(h_event: CUevent) -> CUresult;
            cuEventDestroy_v2 { base: cuEventDestroy, since: 4000, per_thread: false, kind: Event }
                extern "C" fn(h_event: CUevent) -> CUresult;

            // Graphs.
            cuGraphCreate { base: cuGraphCreate, since: 10000, per_thread: false, kind: Graph }
                extern "C" fn(ph_graph: *mut CUgraph, flags: c_uint) -> CUresult;
            cuGraphDestroy { base: cuGraphDestroy, since: 10000, per_thread: false, kind: Graph }
                extern "C" fn(h_graph: CUgraph) -> CUresult;
            cuGraphInstantiate { base: cuGraphInstantiate, since: 10000, per_thread: false, kind: Graph }
                extern "C" fn(ph_graph_exec: *mut CUgraphExec, h_graph: CUgraph, ph_error_node: *mut CUgraphNode, log_buffer: *mut c_char, buffer_size: usize) -> CUresult;
            cuGraphInstantiate_v2 { base: cuGraphInstantiate, since: 11000, per_thread: false, kind: Graph }
                extern "C" fn(ph_graph_exec: *mut CUgraphExec, h_graph: CUgraph, ph_error_node: *mut CUgraphNode, log_buffer: *mut c_char, buffer_size: usize) -> CUresult;
            cuGraphInstantiateWithFlags { base: cuGraphInstantiateWithFlags, since: 11040, per_thread: false, kind: Graph }
                extern "C" fn(ph_graph_exec: *mut CUgraphExec, h_graph: CUgraph, flags: u64) -> CUresult;
            cuGraphLaunch { base: cuGraphLaunch, since: 10000, per_thread: false, kind: GraphLaunch }
                extern "C" fn(h_graph_exec: CUgraphExec, h_stream: CUstream) -> CUresult;
            cuGraphLaunch_ptsz { base: cuGraphLaunch, since: 10000, per_thread: true, kind: GraphLaunch }
                extern "C" fn(h_graph_exec: CUgraphExec, h_stream: CUstream) -> CUresult;
            cuGraphExecDestroy { base: cuGraphExecDestroy, since: 10000, per_thread: false, kind: Graph }
                extern "C" fn(h_graph_exec: CUgraphExec) -> CUresult;
        }
    };
}
