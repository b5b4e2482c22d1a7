//! Priority: a `high` container running a fixed job beside a saturating `normal` one keeps
//! nearly its solo throughput (the full harness aims at ≥ 95 %; CI allows 90 % on a loaded box).
//!
//! Containers see each other only through the node part's contention cells, which a host
//! component writes (`hami_ledger::compute::publish_contention`). The first test plays that
//! host component itself, as the shim does for real containers; the second runs the harness,
//! which relies on `hami run` doing it.

mod compute_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use compute_common::{hami, limiter_report, simulated_machine};
use hami_ledger::compute::ContentionPublisher;
use hami_ledger::paths::LedgerDir;
use hami_ledger::{NodeLedger, UsageLedger, limits};
use serde_json::Value;

/// Starts `hami run --priority <priority> … -- hami bench limiter load <load>` and waits for
/// the worker's first line (its ledger entry exists from then on).
fn tenant(
    env: &[(String, String)],
    ledger: &Path,
    id: &str,
    priority: &str,
    load: &[&str],
) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(hami())
        .args(["run", "--priority", priority, "--ledger-dir"])
        .arg(ledger)
        .args(["--container-id", id, "--"])
        .arg(hami())
        .args(["bench", "limiter", "load", "--kernel-us", "1000"])
        .args(load)
        .envs(env.iter().cloned())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting hami run");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("the worker's first line");
    assert!(first.contains("pid"), "unexpected first line {first:?}");
    (child, out)
}

/// The worker's final report: kernels per second.
fn throughput(mut child: Child, mut out: BufReader<std::process::ChildStdout>) -> f64 {
    let mut rest = String::new();
    for line in (&mut out).lines().map_while(Result::ok) {
        rest = line;
    }
    assert!(child.wait().expect("waiting for hami run").success());
    let report: Value = serde_json::from_str(&rest).expect("the worker's report");
    report["kernels"].as_f64().expect("kernels") / report["seconds"].as_f64().expect("seconds")
}

/// Runs the high job (2000 kernels of 1 ms), alone or beside a saturating low tenant, with
/// this test publishing both containers' demand into the node part.
fn high_job_throughput(beside_low: bool) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = simulated_machine(&dir.path().join("device"), 1);
    let ledger = dir.path().join("ledger");
    std::fs::create_dir_all(&ledger).expect("ledger dir");
    let stop = AtomicBool::new(false);
    let paths = LedgerDir::new(&ledger);
    let publish = |id: &str| {
        let node = NodeLedger::open_writable(paths.node()).expect("node part");
        let usage = UsageLedger::attach(paths.usage(id).expect("usage path")).expect("usage part");
        let limits = limits::read(paths.limits(id).expect("limits path")).expect("limits");
        (node, usage, limits)
    };
    std::thread::scope(|s| {
        let low = beside_low.then(|| {
            let low = tenant(&env, &ledger, "low", "normal", &["--seconds", "8"]);
            let (node, usage, limits) = publish("low");
            let stop = &stop;
            s.spawn(move || {
                ContentionPublisher::new(&node, &usage, &limits)
                    .expect("publisher")
                    .run_until(stop);
            });
            std::thread::sleep(std::time::Duration::from_millis(500));
            low
        });
        let high = tenant(&env, &ledger, "high", "high", &["--kernels", "2000"]);
        let (node, usage, limits) = publish("high");
        let stop_ref = &stop;
        s.spawn(move || {
            ContentionPublisher::new(&node, &usage, &limits)
                .expect("publisher")
                .run_until(stop_ref);
        });
        let result = throughput(high.0, high.1);
        stop.store(true, Ordering::Relaxed);
        if let Some((mut child, _)) = low {
            // The low tenant is ours and saturates for 8 s: stop it now that the job is done.
            let _ = child.kill();
            let _ = child.wait();
        }
        result
    })
}

#[test]
fn high_priority_keeps_its_throughput_when_the_host_publishes_contention() {
    let solo = high_job_throughput(false);
    let beside = high_job_throughput(true);
    eprintln!(
        "high job: {solo:.0} kernels/s solo, {beside:.0} beside a saturating low tenant ({:.1} %)",
        100.0 * beside / solo
    );
    assert!(
        beside >= 0.90 * solo,
        "beside a saturating low tenant the high one ran {beside:.0} kernels/s, solo {solo:.0}"
    );
}

#[test]
fn high_priority_keeps_its_throughput_under_hami_run_alone() {
    let report = limiter_report(&["priority"]);
    let ratio = report["priority_throughput_ratio"]
        .as_f64()
        .expect("priority_throughput_ratio");
    assert!(
        ratio >= 0.90,
        "the high container kept {:.1} % of its solo throughput",
        ratio * 100.0
    );
}
