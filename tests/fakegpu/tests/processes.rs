//! Several processes on one simulated device, each a `runtime_like` C program that reaches
//! the driver as the CUDA runtime does: they contend for memory and for execution time,
//! and NVML (queried from this process) reports what they do.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use hami_hooks::nvml::{self, *};
use support::{DEVICE_MEMORY, json, kernels_ptx, machine, runtime_like};

const MIB: u64 = 1 << 20;

/// Starts `runtime_like hold` and returns once it holds its memory.
fn hold(device: u32, bytes: u64) -> (Child, serde_json::Value) {
    let mut child = machine()
        .command(&runtime_like())
        .args([
            "hold",
            "--device",
            &device.to_string(),
            "--bytes",
            &bytes.to_string(),
            "--seconds",
            "60",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn runtime_like hold");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("hold line");
    let value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
    (child, value)
}

fn run(args: &[&str]) -> serde_json::Value {
    let output = machine()
        .command(&runtime_like())
        .args(args)
        .output()
        .expect("run runtime_like");
    json(&output)
}

fn nvml_device(index: u32) -> nvmlDevice_t {
    let m = machine();
    let init: nvml::pfn::nvmlInit_v2 = m.sym("nvmlInit_v2");
    let by_index: nvml::pfn::nvmlDeviceGetHandleByIndex_v2 = m.sym("nvmlDeviceGetHandleByIndex_v2");
    let mut device = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    unsafe {
        assert_eq!(init(), NVML_SUCCESS);
        assert_eq!(by_index(index, &mut device), NVML_SUCCESS);
    }
    device
}

fn compute_pids(device: nvmlDevice_t) -> Vec<(u32, u64)> {
    let processes: nvml::pfn::nvmlDeviceGetComputeRunningProcesses_v3 =
        machine().sym("nvmlDeviceGetComputeRunningProcesses_v3");
    let mut infos = [nvmlProcessInfo_t::default(); 16];
    let mut count = infos.len() as u32;
    // SAFETY: a buffer of `count` entries.
    let rc = unsafe { processes(device, &mut count, infos.as_mut_ptr()) };
    assert_eq!(rc, NVML_SUCCESS);
    infos[..count as usize]
        .iter()
        .map(|i| (i.pid, i.usedGpuMemory))
        .collect()
}

/// The samples newer than `last_seen` (µs, 0 = the last second): each process's newest.
fn process_samples(device: nvmlDevice_t, last_seen: u64) -> Vec<nvmlProcessUtilizationSample_t> {
    let utilization: nvml::pfn::nvmlDeviceGetProcessUtilization =
        machine().sym("nvmlDeviceGetProcessUtilization");
    let mut count = 0u32;
    // SAFETY: a size query with a null buffer.
    let rc = unsafe { utilization(device, std::ptr::null_mut(), &mut count, last_seen) };
    if rc == NVML_ERROR_NOT_FOUND {
        return Vec::new();
    }
    assert_eq!(rc, NVML_ERROR_INSUFFICIENT_SIZE);
    // Room for processes that appear between the two calls, as NVML users leave.
    let mut samples = vec![nvmlProcessUtilizationSample_t::default(); count as usize + 8];
    count = samples.len() as u32;
    // SAFETY: a buffer of `count` samples.
    let rc = unsafe { utilization(device, samples.as_mut_ptr(), &mut count, last_seen) };
    if rc == NVML_ERROR_NOT_FOUND {
        return Vec::new();
    }
    assert_eq!(rc, NVML_SUCCESS);
    samples.truncate(count as usize);
    samples
}

/// Utilization per pid of the newest samples since `last_seen`.
fn process_utilization(device: nvmlDevice_t, last_seen: u64) -> Vec<(u32, u32)> {
    nvml::samples::utilization_by_pid(&mut process_samples(device, last_seen), last_seen)
}

fn realtime_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64
}

fn share_of(samples: &[(u32, u32)], pid: u32) -> u32 {
    samples
        .iter()
        .find(|(p, _)| *p == pid)
        .map(|(_, u)| *u)
        .unwrap_or_else(|| panic!("pid {pid} not in {samples:?}"))
}

#[test]
fn two_processes_spinning_back_to_back_each_get_half_the_device() {
    let device = nvml_device(0);
    let spin = || {
        machine()
            .command(&runtime_like())
            .args([
                "spin",
                "--device",
                "0",
                "--kernel-us",
                "1000",
                "--seconds",
                "2",
                "--ptx",
            ])
            .arg(kernels_ptx())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn spinner")
    };
    let (a, b) = (spin(), spin());
    let (pid_a, pid_b) = (a.id(), b.id());
    // Read as the limiter reads: every 50 ms, what is newer than the newest sample counted.
    let counting_from = realtime_us();
    let mut cursor = nvml::samples::SampleCursor::starting_at(counting_from);
    let mut busy: std::collections::HashMap<u32, u64> = Default::default();
    let mut settled = None;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(50));
        let mut samples = process_samples(device, cursor.since_us());
        settled = cursor
            .read(&mut samples, |pid, ns| *busy.entry(pid).or_insert(0) += ns)
            .or(settled);
    }
    let live = process_utilization(device, 0);
    let utilization: nvml::pfn::nvmlDeviceGetUtilizationRates =
        machine().sym("nvmlDeviceGetUtilizationRates");
    let mut rates = nvmlUtilization_t::default();
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { utilization(device, &mut rates) }, NVML_SUCCESS);
    let (out_a, out_b) = (
        a.wait_with_output().expect("spinner a"),
        b.wait_with_output().expect("spinner b"),
    );

    for pid in [pid_a, pid_b] {
        let share = share_of(&live, pid);
        assert!(
            (40..=60).contains(&share),
            "newest samples: pid {pid} got {share}% of the device: {live:?}"
        );
    }
    let counted_us = settled.expect("samples came").saturating_sub(counting_from);
    for pid in [pid_a, pid_b] {
        let share = busy.get(&pid).copied().unwrap_or(0) as f64 / (counted_us as f64 * 1e3);
        assert!(
            (0.3..=0.6).contains(&share),
            "samples read through a cursor: pid {pid} got {share:.2} of {counted_us} us: {busy:?}"
        );
    }
    assert!(
        rates.gpu >= 90,
        "the device is busy all the time, NVML says {}%",
        rates.gpu
    );
    for output in [&out_a, &out_b] {
        let report = json(output);
        let busy =
            report["launches"].as_f64().unwrap() * 1e-3 / report["elapsed_s"].as_f64().unwrap();
        assert!(
            (0.4..=0.6).contains(&busy),
            "each spinner ran about half the time: {report}"
        );
    }
}

#[test]
fn memory_is_one_view_across_processes_and_freed_when_a_holder_is_killed() {
    let m = machine();
    m.use_device(1);
    let device = nvml_device(1);
    let (mut holder, report) = hold(1, 256 * MIB);
    assert_eq!(report["error_code"], 0);
    let holder_pid = holder.id();

    let expected_free = (DEVICE_MEMORY - 256 * MIB) as usize;
    assert_eq!(m.mem_info(), (expected_free, DEVICE_MEMORY as usize));
    assert_eq!(
        run(&["info", "--device", "1"])["free"],
        expected_free as u64
    );
    let pids = compute_pids(device);
    assert!(pids.contains(&(holder_pid, 256 * MIB)), "{pids:?}");
    assert!(pids.contains(&(std::process::id(), 0)), "{pids:?}");

    holder.kill().expect("SIGKILL the holder");
    holder.wait().expect("reap");
    // The next process to attach notices the dead holder and gives its memory back.
    assert_eq!(run(&["info", "--device", "1"])["free"], DEVICE_MEMORY);
    assert_eq!(m.mem_info().0, DEVICE_MEMORY as usize);
    assert!(
        !compute_pids(device)
            .iter()
            .any(|(pid, _)| *pid == holder_pid)
    );
}

#[test]
fn out_of_memory_is_code_2_on_every_path_when_another_process_holds_memory() {
    let (mut holder, report) = hold(2, 768 * MIB);
    assert_eq!(report["error_code"], 0);
    let mut runs: Vec<Vec<&str>> = ["plain", "pitch", "managed", "async", "pool", "vmm", "array"]
        .into_iter()
        .map(|path| {
            vec![
                "fill-until-oom",
                "--device",
                "2",
                "--step",
                "67108864",
                "--path",
                path,
            ]
        })
        .collect();
    runs.push(vec![
        "fill-until-oom",
        "--device",
        "2",
        "--step",
        "67108864",
        "--path",
        "async",
        "--ptsz",
    ]);
    for args in runs {
        let result = run(&args);
        assert_eq!(result["error_code"], 2, "{result}");
        assert_eq!(result["allocated_bytes"], 256 * MIB, "{result}");
        assert_eq!(result["mem_info_free"], 0, "{result}");
        assert_eq!(result["mem_info_free_after_release"], 256 * MIB, "{result}");
    }
    holder.kill().expect("kill holder");
    holder.wait().expect("reap");
}

#[test]
fn a_process_that_exits_without_freeing_gives_its_memory_back_at_exit() {
    let m = machine();
    m.use_device(3);
    let output = m
        .command(&runtime_like())
        .args([
            "hold",
            "--device",
            "3",
            "--bytes",
            &(512 * MIB).to_string(),
            "--seconds",
            "0",
            "--leak",
        ])
        .output()
        .expect("run hold --leak");
    let report = json(&output);
    assert!(output.status.success(), "{report}");
    assert_eq!(
        report["mem_info_free"],
        DEVICE_MEMORY - 512 * MIB,
        "{report}"
    );
    // No other process attached or ran out of memory since: the exit itself released it.
    assert_eq!(m.mem_info().0, DEVICE_MEMORY as usize);
}

/// The children of process `pid` (host PIDs), from `/proc/PID/task/PID/children`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn a_process_in_its_own_pid_namespace_is_listed_under_its_host_pid() {
    // A new PID namespace needs root, or a user namespace where the kernel allows those.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let namespace: &[&str] = if root {
        &["--pid", "--fork", "--kill-child"]
    } else {
        &[
            "--user",
            "--map-root-user",
            "--pid",
            "--fork",
            "--kill-child",
        ]
    };
    let probe = std::process::Command::new("unshare")
        .args(namespace)
        .arg("true")
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "unshare {namespace:?} does not work here"
        );
        eprintln!("SKIPPED: unshare {namespace:?} does not work here");
        return;
    }
    // Device 4: no other test of this binary uses it, so its 4 MiB skews no one's free figure.
    let device = nvml_device(4);
    let mut unshare = machine()
        .command(Path::new("unshare"))
        .args(namespace)
        .arg(runtime_like())
        .args([
            "hold",
            "--device",
            "4",
            "--bytes",
            "4194304",
            "--seconds",
            "60",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn unshare");
    let mut line = String::new();
    BufReader::new(unshare.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("hold line");
    let report: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
    let host_pids = children_of(unshare.id());
    let listed = compute_pids(device);
    let _ = unshare.kill();
    let _ = unshare.wait();

    assert_eq!(
        report["pid"], 1,
        "the holder runs as PID 1 of its namespace: {report}"
    );
    assert_eq!(
        host_pids.len(),
        1,
        "unshare forked one child: {host_pids:?}"
    );
    assert!(
        listed.iter().any(|(pid, _)| *pid == host_pids[0]),
        "NVML lists the holder under its host PID {}: {listed:?}",
        host_pids[0]
    );
    assert!(
        listed.iter().all(|(pid, _)| *pid != 1),
        "NVML never lists a namespace PID: {listed:?}"
    );
}
