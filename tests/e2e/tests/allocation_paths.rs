//! Every allocation path stops at the cap with `CUDA_ERROR_OUT_OF_MEMORY`, never above it and
//! within one step of it; memory info then reports the cap; frees give everything back.
//! The program fetches every entry point through `cuGetProcAddress_v2`, as the runtime does.

use hami_e2e::artifacts::c_program;
use hami_e2e::container::{Container, MIB, Machine};
use hami_e2e::program::{code, field, run_json};

const CAP: u64 = 256 * MIB;
const STEP: u64 = 64 * MIB;

fn fill(path: &str) {
    let machine = Machine::new(1, 4096 * MIB);
    let container = Container::new("paths", &[(machine.uuid(0), Some(CAP))]);
    let report = run_json(container.command(&machine, c_program("alloc_paths")).args([
        "fill",
        path,
        &STEP.to_string(),
    ]));
    let allocated = field(&report, "allocations") * STEP;
    assert!(
        allocated <= CAP,
        "{path}: {allocated} bytes allocated over a cap of {CAP}: {report}"
    );
    assert!(
        allocated + STEP > CAP,
        "{path}: stopped more than one step below the cap: {report}"
    );
    assert_eq!(
        code(&report, "code"),
        2,
        "{path}: refusal must be CUDA_ERROR_OUT_OF_MEMORY"
    );
    assert_eq!(
        field(&report, "total"),
        CAP,
        "{path}: total must be the cap: {report}"
    );
    assert_eq!(field(&report, "free"), CAP - allocated, "{path}: {report}");
    assert_eq!(code(&report, "free_code"), 0, "{path}: frees must succeed");
    assert_eq!(
        field(&report, "free_after"),
        CAP,
        "{path}: frees must give the bytes back"
    );
    assert_eq!(
        container.ledger().used(0),
        0,
        "{path}: ledger must be empty after the frees"
    );
}

#[test]
fn cu_mem_alloc() {
    fill("alloc");
}

#[test]
fn cu_mem_alloc_pitch_charges_the_real_pitch() {
    fill("pitch");
}

#[test]
fn cu_mem_alloc_managed() {
    fill("managed");
}

#[test]
fn cu_mem_alloc_async() {
    fill("async");
}

#[test]
fn cu_mem_alloc_from_pool_async() {
    fill("pool");
}

#[test]
fn cu_mem_create_vmm() {
    fill("vmm");
}

#[test]
fn cu_array_create() {
    fill("array");
}

#[test]
fn cu_array_3d_create() {
    fill("array3d");
}

#[test]
fn small_allocations_are_charged_whole_granules() {
    let machine = Machine::new(1, 4096 * MIB);
    let container = Container::new("granules", &[(machine.uuid(0), Some(16 * MIB))]);
    // One byte each: 2 MiB granules, so eight fit under 16 MiB, not sixteen million.
    let report = run_json(
        container
            .command(&machine, c_program("alloc_paths"))
            .args(["fill", "alloc", "1"]),
    );
    assert_eq!(field(&report, "allocations"), 8, "{report}");
    assert_eq!(code(&report, "code"), 2);
}

#[test]
fn a_call_before_cu_init_does_not_change_the_cap() {
    let machine = Machine::new(1, 4096 * MIB);
    let container = Container::new("early", &[(machine.uuid(0), Some(CAP))]);
    let report = run_json(
        container
            .command(&machine, c_program("alloc_paths"))
            .env("RETAIN_BEFORE_INIT", "1")
            .env("HAMI_CONTEXT_OVERHEAD", "2Mi")
            .args(["fill", "alloc", &STEP.to_string()]),
    );
    // 2 MiB of context overhead: three 64 MiB steps fit, the fourth does not.
    assert_eq!(field(&report, "allocations"), 3, "{report}");
    assert_eq!(code(&report, "code"), 2);
}
