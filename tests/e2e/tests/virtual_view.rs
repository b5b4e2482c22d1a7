//! Memory queries (CUDA and NVML) report the container's slice, keyed by device UUID.

use hami_e2e::artifacts::c_program;
use hami_e2e::container::{Container, MIB, Machine};
use hami_e2e::program::{Holder, code, field, run_json};

#[test]
fn cuda_and_nvml_report_the_cap_and_the_container_usage() {
    let machine = Machine::new(1, 4096 * MIB);
    let cap = 512 * MIB;
    let container = Container::new("view", &[(machine.uuid(0), Some(cap))]);
    let program = c_program("alloc_paths");
    // Another process of the same container holds 100 MiB (charged 100 MiB: 2 MiB granules).
    let holder = Holder::spawn(
        container
            .command(&machine, &program)
            .args(["hold", &(100 * MIB).to_string()]),
    );
    assert_eq!(code(&holder.report, "code"), 0);
    let report = run_json(container.command(&machine, &program).arg("info"));
    assert_eq!(field(&report, "total"), cap, "{report}");
    assert_eq!(field(&report, "free"), cap - 100 * MIB, "{report}");
    assert_eq!(field(&report, "device_total"), cap, "{report}");
    assert_eq!(field(&report, "nvml_total"), cap, "{report}");
    assert_eq!(field(&report, "nvml_free"), cap - 100 * MIB, "{report}");
    assert_eq!(
        code(&report, "null_free_code"),
        0,
        "a NULL free pointer is accepted"
    );
    holder.release();
}

#[test]
fn free_never_exceeds_what_the_device_really_has() {
    let machine = Machine::new(1, 1024 * MIB);
    let container = Container::new("small-device", &[(machine.uuid(0), Some(800 * MIB))]);
    let program = c_program("alloc_paths");
    // A process outside any container takes 600 MiB of the real device.
    let outsider = Holder::spawn(
        machine
            .command(&program)
            .args(["hold", &(600 * MIB).to_string()]),
    );
    let report = run_json(container.command(&machine, &program).arg("info"));
    assert_eq!(field(&report, "total"), 800 * MIB, "{report}");
    assert_eq!(field(&report, "free"), 424 * MIB, "{report}");
    outsider.release();
}

#[test]
fn caps_follow_device_uuids_not_indices() {
    let machine = Machine::new(2, 4096 * MIB);
    // The limits list device 1 first: container index 0 is CUDA/NVML device 1.
    let container = Container::new(
        "uuid-order",
        &[
            (machine.uuid(1), Some(128 * MIB)),
            (machine.uuid(0), Some(256 * MIB)),
        ],
    );
    let program = c_program("alloc_paths");
    for (device, cap) in [("0", 256 * MIB), ("1", 128 * MIB)] {
        let report = run_json(
            container
                .command(&machine, &program)
                .env("ALLOC_DEVICE", device)
                .env("NVML_INDEX", device)
                .args(["fill", "alloc", &(64 * MIB).to_string()]),
        );
        assert_eq!(
            field(&report, "allocations") * 64 * MIB,
            cap,
            "device {device}: {report}"
        );
        let info = run_json(
            container
                .command(&machine, &program)
                .env("ALLOC_DEVICE", device)
                .env("NVML_INDEX", device)
                .arg("info"),
        );
        assert_eq!(field(&info, "total"), cap, "device {device}: {info}");
        assert_eq!(field(&info, "nvml_total"), cap, "device {device}: {info}");
    }
}

#[test]
fn a_device_outside_the_container_has_no_memory_to_give() {
    let machine = Machine::new(2, 4096 * MIB);
    let container = Container::new("one-device", &[(machine.uuid(1), Some(256 * MIB))]);
    let report = run_json(
        container
            .command(&machine, c_program("alloc_paths"))
            .env("ALLOC_DEVICE", "0")
            .args(["fill", "alloc", &(64 * MIB).to_string()]),
    );
    assert_eq!(field(&report, "allocations"), 0, "{report}");
    assert_eq!(code(&report, "code"), 2);
}

#[test]
fn an_uncapped_device_of_the_container_is_accounted_but_not_limited() {
    let machine = Machine::new(1, 1024 * MIB);
    let container = Container::new("uncapped", &[(machine.uuid(0), None)]);
    let report = run_json(container.command(&machine, c_program("alloc_paths")).args([
        "fill",
        "alloc",
        &(64 * MIB).to_string(),
    ]));
    assert_eq!(
        field(&report, "allocations"),
        16,
        "the device itself is the limit: {report}"
    );
    assert_eq!(field(&report, "total"), 1024 * MIB);
}
