//! The cudarc client on the simulated device, set up exactly as a user does it:
//! `eval "$(hami sim env ...)"`, then the unmodified program. Needs the `hami` binary and
//! `libhami_fakegpu.so` built next to this test's profile (`cargo build --workspace`).

use std::path::PathBuf;
use std::process::{Command, Output};

const CLIENT: &str = env!("CARGO_BIN_EXE_hami-cuda-client");

/// `target/<profile>/hami`, built by `cargo build --workspace`.
fn hami() -> PathBuf {
    let path = PathBuf::from(CLIENT).with_file_name("hami");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` (with the same profile) before these tests",
        path.display()
    );
    path
}

/// Runs `client_args` after `eval "$(hami sim env --memory 2Gi --state-dir <dir>)"`.
fn on_simulated_device(state_dir: &std::path::Path, client_args: &str) -> Output {
    let script = format!(
        "set -e; eval \"$('{hami}' sim env --memory 2Gi --state-dir '{dir}')\"; '{client}' {client_args}",
        hami = hami().display(),
        dir = state_dir.display(),
        client = CLIENT,
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("run sh")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn demo_runs_on_the_simulated_device_and_says_what_it_did() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = stdout(&on_simulated_device(dir.path(), "demo"));
    assert!(
        out.contains("NVIDIA H200 (hami-fakegpu), 2048 MiB"),
        "{out}"
    );
    assert!(out.contains("bytes intact"), "{out}");
    assert!(
        out.contains("hami_fill wrote 1048576 values of 0xc0ffee, verified on the host"),
        "{out}"
    );
    assert!(out.contains("demo ok"), "{out}");
}

#[test]
fn fill_until_oom_reports_the_drivers_out_of_memory_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = stdout(&on_simulated_device(
        dir.path(),
        "fill-until-oom --step 64Mi",
    ));
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(report["error_code"], 2, "{report}");
    assert_eq!(report["allocated_bytes"], 2u64 << 30, "{report}");
    assert_eq!(report["mem_info_free"], 0, "{report}");
    assert_eq!(report["mem_info_total"], 2u64 << 30, "{report}");
}

#[test]
fn status_shows_the_device_a_program_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    stdout(&on_simulated_device(
        dir.path(),
        "spin --kernel-us 1000 --seconds 0.3",
    ));
    let output = Command::new(hami())
        .args(["sim", "status", "--json", "--state-dir"])
        .arg(dir.path())
        .output()
        .expect("hami sim status");
    let status: serde_json::Value = serde_json::from_str(stdout(&output).trim()).expect("JSON");
    let device = &status["devices"][0];
    assert_eq!(device["memory_total_bytes"], 2u64 << 30, "{status}");
    assert_eq!(device["name"], "NVIDIA H200 (hami-fakegpu)", "{status}");
}
