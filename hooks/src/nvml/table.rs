//! The NVML entry-point table: every NVML function the project hooks or simulates, once.

/// Calls `$cb! { ... }` with every NVML entry point.
///
/// Each entry reads `symbol { base: name, kind: Kind } extern "C" fn(args) -> Ret;`; the types
/// are the short names of [`crate::nvml`] (invoke where `hami_hooks::nvml::*` is in scope).
#[macro_export]
macro_rules! nvml_entry_points {
    ($cb:path) => {
        $crate::__extern_c_entry_points! { $cb;
            nvmlInit { base: nvmlInit, kind: Init }
                extern "C" fn() -> nvmlReturn_t;
            nvmlInit_v2 { base: nvmlInit, kind: Init }
                extern "C" fn() -> nvmlReturn_t;
            nvmlInitWithFlags { base: nvmlInitWithFlags, kind: Init }
                extern "C" fn(flags: c_uint) -> nvmlReturn_t;
            nvmlShutdown { base: nvmlShutdown, kind: Init }
                extern "C" fn() -> nvmlReturn_t;
            nvmlErrorString { base: nvmlErrorString, kind: Other }
                extern "C" fn(result: nvmlReturn_t) -> *const c_char;
            nvmlSystemGetDriverVersion { base: nvmlSystemGetDriverVersion, kind: Other }
                extern "C" fn(version: *mut c_char, length: c_uint) -> nvmlReturn_t;
            nvmlDeviceGetCount { base: nvmlDeviceGetCount, kind: Device }
                extern "C" fn(device_count: *mut c_uint) -> nvmlReturn_t;
            nvmlDeviceGetCount_v2 { base: nvmlDeviceGetCount, kind: Device }
                extern "C" fn(device_count: *mut c_uint) -> nvmlReturn_t;
            nvmlDeviceGetHandleByIndex { base: nvmlDeviceGetHandleByIndex, kind: Device }
                extern "C" fn(index: c_uint, device: *mut nvmlDevice_t) -> nvmlReturn_t;
            nvmlDeviceGetHandleByIndex_v2 { base: nvmlDeviceGetHandleByIndex, kind: Device }
                extern "C" fn(index: c_uint, device: *mut nvmlDevice_t) -> nvmlReturn_t;
            nvmlDeviceGetHandleByUUID { base: nvmlDeviceGetHandleByUUID, kind: Device }
                extern "C" fn(uuid: *const c_char, device: *mut nvmlDevice_t) -> nvmlReturn_t;
            nvmlDeviceGetIndex { base: nvmlDeviceGetIndex, kind: Device }
                extern "C" fn(device: nvmlDevice_t, index: *mut c_uint) -> nvmlReturn_t;
            nvmlDeviceGetUUID { base: nvmlDeviceGetUUID, kind: Device }
                extern "C" fn(device: nvmlDevice_t, uuid: *mut c_char, length: c_uint) -> nvmlReturn_t;
            nvmlDeviceGetName { base: nvmlDeviceGetName, kind: Device }
                extern "C" fn(device: nvmlDevice_t, name: *mut c_char, length: c_uint) -> nvmlReturn_t;
            nvmlDeviceGetMemoryInfo { base: nvmlDeviceGetMemoryInfo, kind: MemInfo }
                extern "C" fn(device: nvmlDevice_t, memory: *mut nvmlMemory_t) -> nvmlReturn_t;
            nvmlDeviceGetMemoryInfo_v2 { base: nvmlDeviceGetMemoryInfo, kind: MemInfo }
                extern "C" fn(device: nvmlDevice_t, memory: *mut nvmlMemory_v2_t) -> nvmlReturn_t;
            nvmlDeviceGetUtilizationRates { base: nvmlDeviceGetUtilizationRates, kind: Utilization }
                extern "C" fn(device: nvmlDevice_t, utilization: *mut nvmlUtilization_t) -> nvmlReturn_t;
            nvmlDeviceGetProcessUtilization { base: nvmlDeviceGetProcessUtilization, kind: Utilization }
                extern "C" fn(device: nvmlDevice_t, utilization: *mut nvmlProcessUtilizationSample_t, process_samples_count: *mut c_uint, last_seen_time_stamp: c_ulonglong) -> nvmlReturn_t;
            nvmlDeviceGetComputeRunningProcesses_v3 { base: nvmlDeviceGetComputeRunningProcesses, kind: Processes }
                extern "C" fn(device: nvmlDevice_t, info_count: *mut c_uint, infos: *mut nvmlProcessInfo_t) -> nvmlReturn_t;
        }
    };
}
