//! Compute shares through the `hami` runtime: CUDA programs (`hami-cuda-client spin`) in
//! containers on one simulated device, each capped by `hami.io/gpu-cores`, each in its own PID
//! namespace as users run them. A program's share is the device time its kernels took (each
//! keeps the device busy `KERNEL_US`) over the time it ran, so nothing here trusts the limiter's
//! own view.

mod support;

use std::process::{Child, Stdio};
use std::time::Duration;

use support::gpu::{Setup, setup_with_devices};
use support::{text, unique};

const HAMI: &str = "io.containerd.hami.v2";
const KERNEL_US: u64 = 1_000;
/// How long each program spins, as in the issue that found the defect.
const RUN_S: f64 = 8.0;
/// Between two containers' starts, so the start order is the one named.
const STAGGER: Duration = Duration::from_millis(1_000);
const TOLERANCE_PP: f64 = 3.0;

/// What `hami-cuda-client spin --every-ms` printed.
#[derive(Debug)]
struct SpinReport {
    launches: u64,
    elapsed_s: f64,
    started_unix_ns: u128,
    /// `(wall-clock ns, launches so far)` about every 100 ms.
    progress: Vec<(u128, u64)>,
}

impl SpinReport {
    fn parse(out: &std::process::Output, what: &str) -> SpinReport {
        assert!(out.status.success(), "{what}: {}", text(out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut progress = Vec::new();
        let mut summary = None;
        for line in stdout.lines().filter(|l| l.starts_with('{')) {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(at) = value["at_unix_ns"].as_u64() {
                progress.push((u128::from(at), value["launches"].as_u64().unwrap()));
            } else {
                summary = Some(value);
            }
        }
        let summary = summary.unwrap_or_else(|| panic!("{what}: no summary in {stdout}"));
        SpinReport {
            launches: summary["launches"].as_u64().unwrap(),
            elapsed_s: summary["elapsed_s"].as_f64().unwrap(),
            started_unix_ns: u128::from(summary["started_unix_ns"].as_u64().unwrap()),
            progress,
        }
    }

    /// The share of the device over the whole run.
    fn share(&self) -> f64 {
        self.launches as f64 * KERNEL_US as f64 * 1e-6 / self.elapsed_s
    }

    /// The share between two wall-clock instants, from the progress lines closest inside them.
    fn share_between(&self, from_ns: u128, to_ns: u128) -> f64 {
        let inside: Vec<&(u128, u64)> = self
            .progress
            .iter()
            .filter(|(at, _)| (from_ns..=to_ns).contains(at))
            .collect();
        let (Some(first), Some(last)) = (inside.first(), inside.last()) else {
            panic!("no progress between {from_ns} and {to_ns}: {self:?}");
        };
        assert!(last.0 > first.0, "one progress line only: {self:?}");
        (last.1 - first.1) as f64 * KERNEL_US as f64 * 1e3 / (last.0 - first.0) as f64
    }
}

/// A container running `hami-cuda-client spin` for `seconds`, capped by `annotations`.
fn spin(s: &Setup, annotations: &[String], seconds: f64) -> Child {
    let id = unique("spin");
    let annotations: Vec<&str> = annotations.iter().map(String::as_str).collect();
    let seconds = seconds.to_string();
    let kernel_us = KERNEL_US.to_string();
    let mut args = s.rootfs.run_args(false, HAMI, &annotations);
    args.extend([
        id.as_str(),
        &s.client,
        "spin",
        "--kernel-us",
        &kernel_us,
        "--seconds",
        &seconds,
        "--every-ms",
        "100",
    ]);
    s.lab
        .ctr_command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ctr runs")
}

fn cores(percent: u32) -> Vec<String> {
    vec![
        format!("hami.io/gpu-cores={percent}"),
        "hami.io/gpu-memory=512Mi".to_owned(),
    ]
}

/// Starts one container per cap in the order given, `STAGGER` apart; their shares by cap.
fn run_together(s: &Setup, caps: &[u32]) -> Vec<(u32, f64)> {
    let mut children = Vec::new();
    for (n, &cap) in caps.iter().enumerate() {
        if n > 0 {
            std::thread::sleep(STAGGER);
        }
        children.push((cap, spin(s, &cores(cap), RUN_S)));
    }
    children
        .into_iter()
        .map(|(cap, child)| {
            let out = child.wait_with_output().unwrap();
            let report = SpinReport::parse(&out, &format!("the {cap}% container"));
            (cap, report.share())
        })
        .collect()
}

fn assert_shares(order: &[u32], shares: &[(u32, f64)]) {
    eprintln!("start order {order:?}: shares {shares:?}");
    for &(cap, share) in shares {
        let error_pp = (share * 100.0 - f64::from(cap)).abs();
        assert!(
            error_pp <= TOLERANCE_PP,
            "start order {order:?}: the {cap}% container got {:.1}% ({shares:?})",
            share * 100.0
        );
    }
}

fn permutations(caps: &[u32]) -> Vec<Vec<u32>> {
    if caps.len() <= 1 {
        return vec![caps.to_vec()];
    }
    let mut all = Vec::new();
    for (n, &first) in caps.iter().enumerate() {
        let mut rest = caps.to_vec();
        rest.remove(n);
        for mut tail in permutations(&rest) {
            tail.insert(0, first);
            all.push(tail);
        }
    }
    all
}

#[test]
fn two_containers_at_25_and_50_percent_each_get_their_cap_in_either_start_order() {
    let Some(s) = setup_with_devices(
        "two_containers_at_25_and_50_percent_each_get_their_cap_in_either_start_order",
        1,
    ) else {
        return;
    };
    for order in permutations(&[25, 50]) {
        assert_shares(&order, &run_together(&s, &order));
    }
    assert!(s.lab.ledger_entries().is_empty());
}

#[test]
fn three_containers_at_20_30_and_40_percent_each_get_their_cap_in_every_start_order() {
    let Some(s) = setup_with_devices(
        "three_containers_at_20_30_and_40_percent_each_get_their_cap_in_every_start_order",
        1,
    ) else {
        return;
    };
    for order in permutations(&[20, 30, 40]) {
        assert_shares(&order, &run_together(&s, &order));
    }
    assert!(s.lab.ledger_entries().is_empty());
}

#[test]
fn a_burst_container_uses_the_idle_device_and_gives_it_back_when_a_neighbour_starts() {
    let Some(s) = setup_with_devices(
        "a_burst_container_uses_the_idle_device_and_gives_it_back_when_a_neighbour_starts",
        1,
    ) else {
        return;
    };
    let mut bursty = cores(30);
    bursty.push("hami.io/gpu-compute-policy=burst".to_owned());
    let alone_s = 4.0;
    let together_s = 4.0;
    let burst = spin(&s, &bursty, alone_s + together_s);
    std::thread::sleep(Duration::from_secs_f64(alone_s));
    let neighbour = spin(&s, &cores(70), together_s);
    let neighbour = SpinReport::parse(&neighbour.wait_with_output().unwrap(), "the neighbour");
    let burst = SpinReport::parse(&burst.wait_with_output().unwrap(), "the burst container");

    let second = 1_000_000_000u128;
    let neighbour_starts = neighbour.started_unix_ns;
    // Alone: the idle device is used well beyond the cap (not yet settled in the first second).
    let alone = burst.share_between(burst.started_unix_ns + second, neighbour_starts);
    assert!(alone > 0.8, "alone, the burst container got {alone:.3}");
    // From half a second after the neighbour starts, back at the cap.
    let after = burst.share_between(neighbour_starts + second / 2, neighbour_starts + 3 * second);
    eprintln!("burst 30%: alone {alone:.3}, beside a 70% neighbour {after:.3}");
    assert!(
        (after * 100.0 - 30.0).abs() <= TOLERANCE_PP,
        "0.5 s after the neighbour started the burst container still got {after:.3}"
    );
    let beside = neighbour.share();
    assert!(
        (beside * 100.0 - 70.0).abs() <= TOLERANCE_PP + 2.0,
        "the neighbour got {beside:.3} of its 70% cap"
    );
    assert!(s.lab.ledger_entries().is_empty());
}

#[test]
fn a_high_priority_container_keeps_its_throughput_beside_a_batch_one() {
    let Some(s) = setup_with_devices(
        "a_high_priority_container_keeps_its_throughput_beside_a_batch_one",
        1,
    ) else {
        return;
    };
    let mut high = cores(30);
    high.push("hami.io/gpu-priority=high".to_owned());
    let mut batch = cores(70);
    batch.push("hami.io/gpu-compute-policy=burst".to_owned());

    let solo = SpinReport::parse(
        &spin(&s, &high, 4.0).wait_with_output().unwrap(),
        "the high-priority container alone",
    )
    .share();
    let batch_child = spin(&s, &batch, RUN_S);
    std::thread::sleep(STAGGER);
    let beside = SpinReport::parse(
        &spin(&s, &high, 4.0).wait_with_output().unwrap(),
        "the high-priority container beside the batch one",
    );
    let batch = SpinReport::parse(
        &batch_child.wait_with_output().unwrap(),
        "the batch container",
    );
    let high_ran = (
        beside.started_unix_ns + 500_000_000,
        beside.started_unix_ns + (beside.elapsed_s * 1e9) as u128,
    );
    let left = batch.share_between(high_ran.0, high_ran.1);
    let beside = beside.share();
    eprintln!(
        "high 30%: solo {solo:.3}, beside a batch one {beside:.3}; batch (burst 70%) {left:.3}"
    );
    assert!(
        beside >= 0.95 * solo,
        "beside the batch container the high-priority one got {beside:.3}, solo {solo:.3}"
    );
    // What the high one leaves, up to the batch one's cap.
    let expected = (1.0 - beside).min(0.70);
    assert!(
        (left - expected).abs() * 100.0 <= TOLERANCE_PP + 2.0,
        "while the high-priority one ran the batch container got {left:.3}, expected {expected:.3}"
    );
    assert!(s.lab.ledger_entries().is_empty());
}

/// Lists the compute processes of device 0 through NVML, as a monitoring tool would (ctypes:
/// `dlopen` + handle-scoped `dlsym`).
const LIST_PROCESSES: &str = r#"
import ctypes, json
nvml = ctypes.CDLL("libnvidia-ml.so.1")
assert nvml.nvmlInit_v2() == 0
device = ctypes.c_void_p()
assert nvml.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(device)) == 0
class Info(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_uint), ("used", ctypes.c_ulonglong),
                ("gpu_instance", ctypes.c_uint), ("compute_instance", ctypes.c_uint)]
count = ctypes.c_uint(64)
infos = (Info * 64)()
code = nvml.nvmlDeviceGetComputeRunningProcesses_v3(device, ctypes.byref(count), infos)
assert code == 0, code
print(json.dumps(sorted(infos[i].pid for i in range(count.value))))
"#;

fn listed_pids(out: &std::process::Output, what: &str) -> Vec<u32> {
    assert!(out.status.success(), "{what}: {}", text(out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('['));
    serde_json::from_str(line.unwrap_or_else(|| panic!("{what}: no list in {stdout}"))).unwrap()
}

#[test]
fn nvml_inside_a_container_lists_only_its_own_processes() {
    let Some(s) = setup_with_devices("nvml_inside_a_container_lists_only_its_own_processes", 1)
    else {
        return;
    };
    let ids = [unique("mine"), unique("neighbour")];
    for id in &ids {
        let annotations = cores(40);
        let annotations: Vec<&str> = annotations.iter().map(String::as_str).collect();
        let mut args = s.rootfs.run_args(true, HAMI, &annotations);
        args.extend([id.as_str(), &s.client, "spin", "--seconds", "30"]);
        s.lab.ctr_ok(&args);
    }
    let host_pids: Vec<u32> = ids
        .iter()
        .map(|id| support::ctr::task_pid(&s.lab, id) as u32)
        .collect();
    // On the host, without the library: the device's every compute process, by host PID.
    let on_host = || {
        let out = std::process::Command::new("python3")
            .args(["-c", LIST_PROCESSES])
            .envs(s.gpu.env())
            .output()
            .expect("python3 runs");
        listed_pids(&out, "NVML on the host")
    };
    let mut expected_all = host_pids.clone();
    expected_all.sort_unstable();
    assert!(
        support::eventually(Duration::from_secs(10), || on_host() == expected_all),
        "the host lists both containers' programs by host PID: {:?}, expected {expected_all:?}",
        on_host()
    );
    // Inside the first container, through the library: its own program only.
    let exec_id = unique("nvml");
    let args = [
        "tasks",
        "exec",
        "--exec-id",
        &exec_id,
        &ids[0],
        "/usr/bin/python3",
        "-c",
        LIST_PROCESSES,
    ];
    let inside = listed_pids(&s.lab.ctr(&args), "NVML inside the container");
    assert_eq!(inside, vec![host_pids[0]], "host PIDs {host_pids:?}");
    for id in &ids {
        support::ctr::remove(&s.lab, id);
    }
    assert!(s.lab.ledger_entries().is_empty());
}

/// `hami bench limiter --containerd`: the harness's scenarios with every tenant a container
/// through the shim, judged by the device's own per-process busy time (by host PID).
#[test]
fn the_limiter_harness_runs_its_scenarios_in_containers_through_the_shim() {
    let test = "the_limiter_harness_runs_its_scenarios_in_containers_through_the_shim";
    let Some(s) = setup_with_devices(test, 1) else {
        return;
    };
    let hami = support::profile_dir().join("hami");
    assert!(
        hami.is_file(),
        "{} (cargo build --workspace)",
        hami.display()
    );
    let out = std::process::Command::new(&hami)
        .args(["bench", "limiter", "--quick", "--json"])
        .args([
            "--scenario",
            "pair",
            "--scenario",
            "trio",
            "--scenario",
            "burst",
        ])
        .arg("--scenario")
        .arg("priority")
        .arg("--containerd")
        .arg(s.lab.address())
        .arg("--ctr")
        .arg(support::tool("ctr").expect("ctr"))
        .stdin(Stdio::null())
        .output()
        .expect("hami runs");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["device"], "simulated, tenants in containers");
    let max_error = report["max_error_pp"].as_f64().unwrap();
    assert!(
        max_error <= TOLERANCE_PP + 2.0,
        "max error {max_error} pp: {report}"
    );
    let alone = report["burst_alone_share"].as_f64().unwrap();
    assert!(alone > 0.8, "burst alone {alone}");
    let ratio = report["priority_throughput_ratio"].as_f64().unwrap();
    assert!(
        ratio >= 0.9,
        "high priority kept {ratio} of its solo throughput"
    );
    assert!(s.lab.ledger_entries().is_empty());
}
