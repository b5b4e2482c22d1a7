//! Symbol resolution honours what the caller asked: the handle, `RTLD_NEXT`/`RTLD_DEFAULT`,
//! and `cuGetProcAddress`'s version and flags. Wrapped entry points come back as the wrapper of
//! exactly that ABI variant; everything else comes back untouched.

use hami_e2e::artifacts::c_program;
use hami_e2e::container::{Container, MIB, Machine};
use hami_e2e::program::run_json;

#[test]
fn lookups_map_to_the_wrapper_of_exactly_the_variant_asked_for() {
    let machine = Machine::new(1, 1024 * MIB);
    let container = Container::new("resolution", &[(machine.uuid(0), Some(256 * MIB))]);
    let report = run_json(&mut container.command(&machine, c_program("resolution")));
    let expect = |lookup: &str, answer: &str| {
        assert_eq!(
            report[lookup].as_str(),
            Some(answer),
            "{lookup} in {report}"
        );
    };
    // The simulated driver is one object, loaded under its first name.
    let driver = "libcuda.so.1";
    expect("handle:cuMemAlloc_v2", "libhami.so:cuMemAlloc_v2");
    expect("handle:cuStreamCreate", &format!("{driver}:cuStreamCreate"));
    expect("handle:cuNoSuchThing", "null:null");
    expect(
        "handle:nvmlDeviceGetMemoryInfo",
        "libhami.so:nvmlDeviceGetMemoryInfo",
    );
    expect(
        "handle:nvmlDeviceGetCount_v2",
        &format!("{driver}:nvmlDeviceGetCount_v2"),
    );
    expect("default:cuMemAlloc_v2", "libhami.so:cuMemAlloc_v2");
    // The definition after the main program is this library's export (it is preloaded).
    expect("next:cuMemAlloc_v2", "libhami.so:cuMemAlloc_v2");
    assert!(
        report["next:malloc"]
            .as_str()
            .is_some_and(|s| s.starts_with("libc.so")),
        "RTLD_NEXT must be answered for the real caller: {report}"
    );
    expect(
        "handle:cuGetProcAddress_v2",
        "libhami.so:cuGetProcAddress_v2",
    );
    expect("proc:cuMemAlloc@12080/0", "libhami.so:cuMemAlloc_v2");
    expect("proc:cuMemGetInfo@3010/0", "libhami.so:cuMemGetInfo");
    expect("proc:cuMemGetInfo@12080/0", "libhami.so:cuMemGetInfo_v2");
    expect("proc:cuLaunchKernel@12080/0", "libhami.so:cuLaunchKernel");
    expect(
        "proc:cuLaunchKernel@12080/2",
        "libhami.so:cuLaunchKernel_ptsz",
    );
    expect(
        "proc:cuMemAllocAsync@12080/2",
        "libhami.so:cuMemAllocAsync_ptsz",
    );
    expect(
        "proc:cuGraphLaunch@12080/2",
        "libhami.so:cuGraphLaunch_ptsz",
    );
    expect("proc:cuCtxCreate@11000/0", "libhami.so:cuCtxCreate_v2");
    expect("proc:cuCtxCreate@12080/0", "libhami.so:cuCtxCreate_v4");
    expect(
        "proc:cuStreamCreate@12080/0",
        &format!("{driver}:cuStreamCreate"),
    );
    expect(
        "proc:cuGetProcAddress@12080/0",
        "libhami.so:cuGetProcAddress_v2",
    );
    expect(
        "proc:cuGetProcAddress@11080/0",
        "libhami.so:cuGetProcAddress",
    );
    expect("proc_v1:cuMemFree@12080/0", "libhami.so:cuMemFree_v2");
}

#[test]
fn without_the_library_every_lookup_is_the_driver() {
    let machine = Machine::new(1, 1024 * MIB);
    let report = run_json(&mut machine.command(c_program("resolution")));
    for (lookup, answer) in report.as_object().expect("object") {
        let answer = answer.as_str().unwrap_or_default();
        assert!(!answer.starts_with("libhami.so"), "{lookup}: {answer}");
    }
}
