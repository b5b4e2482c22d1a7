//! Shared by the `compute_*` tests: run `hami bench limiter` (real processes under `hami run`
//! on the simulated device) and read its JSON report.
//!
//! The `hami` executable, `libhami.so` and the simulated driver are found in the target
//! profile directory of the running test (CI builds the workspace first), or `hami` through
//! `HAMI_E2E_HAMI`; a missing one fails the test with what to build. The scenarios run one at
//! a time: each one measures shares of a device, which a parallel one would disturb.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The `hami` executable of this build.
pub fn hami() -> PathBuf {
    if let Some(path) = std::env::var_os("HAMI_E2E_HAMI") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    let deps = exe.parent().expect("deps directory");
    let profile = deps.parent().unwrap_or(deps);
    let hami = profile.join("hami");
    assert!(
        hami.is_file() && profile.join("libhami.so").is_file(),
        "{} or libhami.so not found: build the workspace with the same profile first \
         (`cargo build --release --workspace`), or set HAMI_E2E_HAMI",
        hami.display()
    );
    hami
}

/// Runs the quick limiter scenarios whose names start with `prefixes`; returns the report.
pub fn limiter_report(prefixes: &[&str]) -> Value {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut command = Command::new(hami());
    command.args(["bench", "limiter", "--json", "--quick"]);
    for prefix in prefixes {
        command.args(["--scenario", prefix]);
    }
    let output = command.output().expect("running hami bench limiter");
    assert!(
        output.status.success(),
        "hami bench limiter failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value =
        serde_json::from_slice(&output.stdout).expect("hami bench limiter --json prints JSON");
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    report
}

/// Every (scenario/tenant, cap %, share %) of capped tenants in share scenarios.
pub fn capped_shares(report: &Value) -> Vec<(String, f64, f64)> {
    let mut out = Vec::new();
    for scenario in report["scenarios"].as_array().expect("scenarios") {
        for tenant in scenario["tenants"].as_array().expect("tenants") {
            if let (Some(cap), Some(_)) =
                (tenant["cap_percent"].as_f64(), tenant["error_pp"].as_f64())
            {
                out.push((
                    format!(
                        "{}/{}",
                        scenario["name"].as_str().unwrap_or("?"),
                        tenant["name"].as_str().unwrap_or("?")
                    ),
                    cap,
                    tenant["share"].as_f64().expect("share") * 100.0,
                ));
            }
        }
    }
    out
}

/// Asserts every capped share is within `tolerance_pp` of its cap.
pub fn assert_shares_within(report: &Value, tolerance_pp: f64) {
    let shares = capped_shares(report);
    assert!(!shares.is_empty(), "the report has no capped tenant");
    for (name, cap, share) in shares {
        assert!(
            (share - cap).abs() <= tolerance_pp,
            "{name}: capped at {cap}% but used {share:.1}% of the device"
        );
    }
}

/// `hami sim env` for a private simulated machine with `devices` devices in `state_dir`.
pub fn simulated_machine(state_dir: &std::path::Path, devices: u32) -> Vec<(String, String)> {
    let output = Command::new(hami())
        .args([
            "sim",
            "env",
            "--devices",
            &devices.to_string(),
            "--state-dir",
        ])
        .arg(state_dir)
        .output()
        .expect("running hami sim env");
    assert!(output.status.success(), "hami sim env failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.trim().strip_prefix("export ")?.split_once('='))
        .map(|(name, value)| {
            // `'literal'${VAR:+...}` and `'literal'` keep the literal; bare values stay.
            let value = match value.strip_prefix('\'').and_then(|v| v.split_once('\'')) {
                Some((literal, _)) => literal.to_owned(),
                None => value.to_owned(),
            };
            (name.to_owned(), value)
        })
        .collect()
}
