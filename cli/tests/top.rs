//! `hami top --once` against a ledger written here: every device and container row, with the
//! figures the ledger holds, and a broken container shown with its problem beside the others.

use std::process::Command;

use hami_ledger::paths::LedgerDir;
use hami_ledger::{
    ComputePolicy, ContainerLimits, DeviceInfo, DeviceLimit, NodeLedger, Priority, UsageLedger,
    Vendor, limits,
};

const MIB: u64 = 1 << 20;

fn device(index: u32) -> DeviceInfo {
    DeviceInfo {
        uuid: format!("GPU-top00000-0000-4000-8000-{index:012x}"),
        index,
        vendor: Vendor::Nvidia,
        total_memory: 1024 * MIB,
        compute_units: 132,
    }
}

fn entry(ledger: &LedgerDir, id: &str, devices: &[(u32, Option<u64>, Option<u32>)]) {
    std::fs::create_dir_all(ledger.container_dir(id).unwrap()).unwrap();
    let limits = ContainerLimits {
        container_id: id.into(),
        devices: devices
            .iter()
            .map(|&(index, memory_limit, compute_percent)| DeviceLimit {
                uuid: device(index).uuid,
                memory_limit,
                compute_percent,
                policy: ComputePolicy::Hard,
                priority: Priority::Normal,
            })
            .collect(),
    };
    limits::write(ledger.limits(id).unwrap(), &limits).unwrap();
    UsageLedger::create(ledger.usage(id).unwrap(), devices.len()).unwrap();
}

/// The whitespace-separated words of the first line that starts with `start`.
fn row(text: &str, start: &str) -> Vec<String> {
    text.lines()
        .find(|line| line.starts_with(start))
        .unwrap_or_else(|| panic!("no row starting with {start:?} in\n{text}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn once_prints_devices_and_containers_with_the_ledgers_figures() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = LedgerDir::new(dir.path());
    NodeLedger::create(ledger.node(), &[device(0), device(1)]).unwrap();
    let long_id = "4f1c2a9b7d3e88aa01";
    entry(&ledger, long_id, &[(1, Some(256 * MIB), Some(30))]);
    entry(
        &ledger,
        "uncapped",
        &[(0, None, None), (1, Some(64 * MIB), None)],
    );
    entry(&ledger, "broken", &[(0, Some(MIB), None)]);
    std::fs::write(ledger.usage("broken").unwrap(), b"short").unwrap();

    // This test process is the containers' process: its slots are live while it runs.
    let usage = UsageLedger::attach(ledger.usage(long_id).unwrap()).unwrap();
    let slot = usage.register().unwrap();
    usage.reserve(&slot, 0, 40 * MIB, u64::MAX).unwrap();
    let other = UsageLedger::attach(ledger.usage("uncapped").unwrap()).unwrap();
    let other_slot = other.register().unwrap();
    other.reserve(&other_slot, 0, 10 * MIB, u64::MAX).unwrap();
    other.reserve(&other_slot, 1, 4 * MIB, u64::MAX).unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_hami"))
        .args(["top", "--once", "--ledger-dir"])
        .arg(dir.path())
        .output()
        .expect("run hami top");
    let text = String::from_utf8_lossy(&output.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success());
    assert!(text.contains("2 devices  3 containers"), "{text}");
    assert!(
        row(&text, "DEV ")
            .join(" ")
            .starts_with("DEV UUID MODEL MEMORY USED / TOTAL COMMITTED CONTAINERS"),
        "{text}"
    );
    assert!(
        row(&text, "CONTAINER").join(" ")
            == "CONTAINER DEV MEMORY USED / CAP COMPUTE BUSY THROTTLED PROCESSES",
        "{text}"
    );

    // Devices: index, uuid, model, used / total, committed, containers.
    let dev0 = row(&text, "0    ");
    assert_eq!(dev0[1], device(0).uuid);
    assert_eq!(
        &dev0[3..],
        ["10", "MiB", "/", "1024", "MiB", "1", "MiB", "2"]
    );
    let dev1 = row(&text, "1    ");
    assert_eq!(
        &dev1[3..],
        ["44", "MiB", "/", "1024", "MiB", "320", "MiB", "2"]
    );

    // Containers: the id shortened to 12 characters, one row per device.
    let pid = std::process::id().to_string();
    let capped = row(&text, "4f1c2a9b7d3e ");
    assert_eq!(
        capped,
        [
            "4f1c2a9b7d3e",
            "1",
            "40",
            "MiB",
            "/",
            "256",
            "MiB",
            "30%",
            "-",
            "0.0s",
            "1:",
            &pid
        ]
    );
    let uncapped = row(&text, "uncapped ");
    assert_eq!(
        uncapped,
        [
            "uncapped", "0", "10", "MiB", "/", "-", "-", "-", "0.0s", "1:", &pid
        ]
    );
    let second_device = text
        .lines()
        .skip_while(|line| !line.starts_with("uncapped "))
        .nth(1)
        .unwrap();
    assert_eq!(
        second_device.split_whitespace().collect::<Vec<_>>(),
        ["1", "4", "MiB", "/", "64", "MiB", "-", "-", "0.0s"]
    );
    // The broken entry is listed with its problem; the others are unaffected.
    let problem = text
        .lines()
        .find(|line| line.trim_start().starts_with("broken:"))
        .unwrap_or_else(|| panic!("no problem line for the broken entry in\n{text}"));
    assert!(problem.contains("truncated"), "{problem}");
    drop((slot, other_slot));
}
