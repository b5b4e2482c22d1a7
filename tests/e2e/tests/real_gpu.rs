//! The same checks against this host's real NVIDIA driver. Ignored by default (no CI machine
//! has a GPU); `tests/e2e/run-gpu-checks.sh` runs them where one is lent.
//!
//! What only a real driver can tell: whether `cuGetProcAddress` hands out the exported
//! symbols' addresses (so wrappers are found by address), and whether every allocation path of
//! the real driver stops at the cap with code 2.

use hami_e2e::artifacts::c_program;
use hami_e2e::container::{Container, MIB, Machine};
use hami_e2e::program::{code, field, run_json};

const CAP: u64 = 1024 * MIB;
const STEP: u64 = 64 * MIB;

#[test]
#[ignore = "needs an NVIDIA GPU and driver; run by tests/e2e/run-gpu-checks.sh"]
fn real_driver_lookups_map_to_the_wrappers() {
    let machine = Machine::real_gpus();
    let container = Container::new("real-resolution", &[(machine.uuid(0), Some(CAP))]);
    let report = run_json(&mut container.command(&machine, c_program("resolution")));
    for (lookup, answer) in [
        ("handle:cuMemAlloc_v2", "libhami.so:cuMemAlloc_v2"),
        ("proc:cuMemAlloc@12080/0", "libhami.so:cuMemAlloc_v2"),
        ("proc:cuMemGetInfo@12080/0", "libhami.so:cuMemGetInfo_v2"),
        ("proc:cuLaunchKernel@12080/0", "libhami.so:cuLaunchKernel"),
        (
            "proc:cuLaunchKernel@12080/2",
            "libhami.so:cuLaunchKernel_ptsz",
        ),
        (
            "proc:cuMemAllocAsync@12080/2",
            "libhami.so:cuMemAllocAsync_ptsz",
        ),
        (
            "proc:cuGraphLaunch@12080/2",
            "libhami.so:cuGraphLaunch_ptsz",
        ),
        (
            "proc:cuGetProcAddress@12080/0",
            "libhami.so:cuGetProcAddress_v2",
        ),
        ("proc_v1:cuMemFree@12080/0", "libhami.so:cuMemFree_v2"),
        (
            "handle:nvmlDeviceGetMemoryInfo",
            "libhami.so:nvmlDeviceGetMemoryInfo",
        ),
    ] {
        assert_eq!(
            report[lookup].as_str(),
            Some(answer),
            "{lookup} in {report}"
        );
    }
    assert!(
        report["proc:cuStreamCreate@12080/0"]
            .as_str()
            .is_some_and(|s| !s.starts_with("libhami")),
        "unwrapped entry points stay the driver's: {report}"
    );
}

#[test]
#[ignore = "needs an NVIDIA GPU and driver; run by tests/e2e/run-gpu-checks.sh"]
fn real_driver_every_path_stops_at_the_cap() {
    let machine = Machine::real_gpus();
    assert!(
        machine.memory > 2 * CAP,
        "the GPU is smaller than the test assumes"
    );
    for path in [
        "alloc", "pitch", "managed", "async", "pool", "vmm", "array", "array3d",
    ] {
        let container = Container::new("real-paths", &[(machine.uuid(0), Some(CAP))]);
        let report = run_json(container.command(&machine, c_program("alloc_paths")).args([
            "fill",
            path,
            &STEP.to_string(),
        ]));
        let allocated = field(&report, "allocations") * STEP;
        assert!(
            allocated <= CAP && allocated + STEP > CAP,
            "{path}: {report}"
        );
        assert_eq!(code(&report, "code"), 2, "{path}: {report}");
        assert_eq!(field(&report, "total"), CAP, "{path}: {report}");
        assert_eq!(field(&report, "free"), CAP - allocated, "{path}: {report}");
        assert_eq!(field(&report, "free_after"), CAP, "{path}: {report}");
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU and driver; run by tests/e2e/run-gpu-checks.sh"]
fn real_driver_queries_report_the_slice() {
    let machine = Machine::real_gpus();
    let container = Container::new("real-view", &[(machine.uuid(0), Some(CAP))]);
    let report = run_json(
        container
            .command(&machine, c_program("alloc_paths"))
            .arg("info"),
    );
    assert_eq!(field(&report, "total"), CAP, "{report}");
    assert_eq!(field(&report, "device_total"), CAP, "{report}");
    assert_eq!(field(&report, "nvml_total"), CAP, "{report}");
    assert!(field(&report, "free") <= CAP, "{report}");
}
