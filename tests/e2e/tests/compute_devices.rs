//! Each device of a container has its own budget, and a job with one process per device (the
//! shape of an NCCL job) progresses on every rank under a cap: the cap slows each rank to its
//! device's share, it never stalls one.

mod compute_common;

use std::process::Command;

use compute_common::{hami, simulated_machine};
use serde_json::Value;

#[test]
fn one_rank_per_device_each_progresses_at_its_own_devices_cap() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = simulated_machine(&dir.path().join("device"), 2);
    let hami = hami();
    // 600 kernels of 1 ms per rank: 0.6 s of device time, 2 s at a 30 % cap on its own device;
    // one budget shared by both devices would need 4 s.
    let rank = |device: u32| {
        format!(
            "'{}' bench limiter load --device {device} --kernel-us 1000 --kernels 600",
            hami.display()
        )
    };
    let output = Command::new(&hami)
        .args(["run", "--cores", "30", "--ledger-dir"])
        .arg(dir.path().join("ledger"))
        .args(["--container-id", "ranks", "--", "sh", "-c"])
        .arg(format!("{} & {} & wait", rank(0), rank(1)))
        .envs(env)
        .output()
        .expect("running hami run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the job failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reports: Vec<Value> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v.get("kernels").is_some())
        .collect();
    assert_eq!(reports.len(), 2, "both ranks must finish: {stdout}");
    for report in &reports {
        assert_eq!(report["kernels"].as_u64(), Some(600));
        let seconds = report["seconds"].as_f64().expect("seconds");
        assert!(
            (1.3..3.2).contains(&seconds),
            "a rank took {seconds:.2} s for 0.6 s of work at a 30 % cap (2 s expected)"
        );
    }
}
