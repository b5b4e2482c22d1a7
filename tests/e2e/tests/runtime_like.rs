//! The simulated device's own runtime-like C program (`tests/fakegpu/cprog/runtime_like.c`:
//! only `cuGetProcAddress_v2` from dlsym, everything else through it) is capped on every
//! allocation path, with legacy and per-thread-stream lookups alike.

use std::path::Path;

use hami_e2e::container::{Container, MIB, Machine};
use hami_e2e::program::{code, field, parse_line};

const CAP: u64 = 256 * MIB;
const STEP: u64 = 64 * MIB;

fn runtime_like() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<(tempfile::TempDir, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let output = dir.path().join("runtime_like");
            let source =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../fakegpu/cprog/runtime_like.c");
            hami_e2e::artifacts::compile(&source, &output);
            (dir, output)
        })
        .1
        .clone()
}

fn fill(path: &str, ptsz: bool) {
    let machine = Machine::new(1, 4096 * MIB);
    let container = Container::new("runtime-like", &[(machine.uuid(0), Some(CAP))]);
    let mut command = container.command(&machine, runtime_like());
    command.args([
        "fill-until-oom",
        "--path",
        path,
        "--step",
        &STEP.to_string(),
    ]);
    if ptsz {
        command.arg("--ptsz");
    }
    let output = command.output().expect("run runtime_like");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{path}: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = parse_line(stdout.trim());
    let allocated = field(&report, "allocated_bytes");
    assert!(
        allocated <= CAP && allocated + STEP > CAP,
        "{path}: {report}"
    );
    assert_eq!(code(&report, "error_code"), 2, "{path}: {report}");
    assert_eq!(field(&report, "mem_info_total"), CAP, "{path}: {report}");
    assert_eq!(
        field(&report, "mem_info_free"),
        CAP - allocated,
        "{path}: {report}"
    );
    assert_eq!(
        field(&report, "mem_info_free_after_release"),
        CAP,
        "{path}: {report}"
    );
}

#[test]
fn every_path_is_capped() {
    for path in ["plain", "pitch", "managed", "async", "pool", "vmm", "array"] {
        fill(path, false);
    }
}

#[test]
fn every_path_is_capped_with_per_thread_streams() {
    for path in ["plain", "async", "pool"] {
        fill(path, true);
    }
}
