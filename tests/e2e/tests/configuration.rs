//! Limits without a shim (environment variables), and refusals: garbage limits and damaged
//! ledger files fail closed with a message, never "no limit".

use hami_e2e::artifacts::c_program;
use hami_e2e::container::{Container, MIB, Machine};
use hami_e2e::program::{code, field};

fn fill(command: &mut std::process::Command) -> (serde_json::Value, String) {
    let output = command
        .args(["fill", "alloc", &(64 * MIB).to_string()])
        .output()
        .expect("run the test program");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = hami_e2e::program::parse_line(stdout.trim());
    (report, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn hami_style_environment_limits_cap_without_a_shim() {
    let machine = Machine::new(1, 4096 * MIB);
    let dir = tempfile::tempdir().unwrap();
    let usage = dir.path().join("usage.ledger");
    for spelling in ["256Mi", "256m", "268435456", "0.25Gi"] {
        let (report, stderr) = fill(
            machine
                .command(c_program("alloc_paths"))
                .env("LD_PRELOAD", hami_e2e::artifacts::libhami())
                .env("CUDA_DEVICE_MEMORY_LIMIT", spelling)
                .env("HAMI_LEDGER_USAGE", &usage),
        );
        assert_eq!(field(&report, "allocations"), 4, "{spelling}: {report}");
        assert_eq!(field(&report, "total"), 256 * MIB, "{spelling}: {report}");
        assert_eq!(stderr, "", "silent by default");
    }
}

#[test]
fn per_device_environment_limits_apply_to_their_device() {
    let machine = Machine::new(2, 4096 * MIB);
    let dir = tempfile::tempdir().unwrap();
    let (report, _) = fill(
        machine
            .command(c_program("alloc_paths"))
            .env("LD_PRELOAD", hami_e2e::artifacts::libhami())
            .env("CUDA_DEVICE_MEMORY_LIMIT", "1Gi")
            .env("HAMI_MEMORY_LIMIT_1", "128Mi")
            .env("ALLOC_DEVICE", "1")
            .env("HAMI_LEDGER_USAGE", dir.path().join("usage.ledger")),
    );
    assert_eq!(field(&report, "allocations"), 2, "{report}");
}

#[test]
fn a_garbage_limit_refuses_device_memory_and_says_why() {
    let machine = Machine::new(1, 4096 * MIB);
    let dir = tempfile::tempdir().unwrap();
    let (report, stderr) = fill(
        machine
            .command(c_program("alloc_paths"))
            .env("LD_PRELOAD", hami_e2e::artifacts::libhami())
            .env("CUDA_DEVICE_MEMORY_LIMIT", "8Gx")
            .env("HAMI_LEDGER_USAGE", dir.path().join("usage.ledger")),
    );
    assert_eq!(field(&report, "allocations"), 0, "{report}");
    assert_eq!(code(&report, "code"), 2);
    assert!(
        stderr.contains("CUDA_DEVICE_MEMORY_LIMIT"),
        "stderr: {stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "one message, not one per call: {stderr}"
    );
}

#[test]
fn a_damaged_ledger_refuses_device_memory_and_says_why() {
    let machine = Machine::new(1, 4096 * MIB);
    let container = Container::new("damaged", &[(machine.uuid(0), Some(256 * MIB))]);
    let original = std::fs::read(&container.usage).unwrap();
    let damages: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", original[..original.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("bad magic", {
            let mut bytes = original.clone();
            bytes[0] ^= 0xff;
            bytes
        }),
    ];
    for (what, bytes) in damages {
        std::fs::write(&container.usage, &bytes).unwrap();
        let (report, stderr) = fill(&mut container.command(&machine, c_program("alloc_paths")));
        assert_eq!(field(&report, "allocations"), 0, "{what}: {report}");
        assert_eq!(code(&report, "code"), 2, "{what}");
        assert!(
            stderr.contains(&*container.usage.to_string_lossy()),
            "{what}: {stderr}"
        );
    }
}

#[test]
fn logs_only_when_asked() {
    let machine = Machine::new(1, 4096 * MIB);
    let container = Container::new("logs", &[(machine.uuid(0), Some(256 * MIB))]);
    let (_, quiet) = fill(&mut container.command(&machine, c_program("alloc_paths")));
    assert_eq!(quiet, "");
    let (_, chatty) = fill(
        container
            .command(&machine, c_program("alloc_paths"))
            .env("HAMI_LOG", "info"),
    );
    assert!(chatty.contains("[hami info"), "{chatty}");
}

#[test]
fn without_any_cap_everything_passes_through() {
    let machine = Machine::new(1, 1024 * MIB);
    let (report, stderr) = fill(
        machine
            .command(c_program("alloc_paths"))
            .env("LD_PRELOAD", hami_e2e::artifacts::libhami()),
    );
    assert_eq!(field(&report, "allocations"), 16, "{report}");
    assert_eq!(field(&report, "total"), 1024 * MIB);
    assert_eq!(stderr, "");
}

#[test]
fn the_context_overhead_is_charged_once_per_process() {
    let machine = Machine::new(1, 4096 * MIB);
    let container = Container::new("context", &[(machine.uuid(0), Some(256 * MIB))]);
    let (report, _) = fill(
        container
            .command(&machine, c_program("alloc_paths"))
            .env("HAMI_FAKEGPU_CONTEXT_MEMORY", (64 * MIB).to_string())
            .env("HAMI_CONTEXT_OVERHEAD", "64Mi"),
    );
    // 64 MiB of context + three 64 MiB allocations fill the 256 MiB cap.
    assert_eq!(field(&report, "allocations"), 3, "{report}");
    assert_eq!(field(&report, "free"), 0, "{report}");
    assert_eq!(
        field(&report, "free_after"),
        192 * MIB,
        "the context stays charged: {report}"
    );
}

#[test]
fn environment_caps_show_in_cuda_and_nvml_queries() {
    let machine = Machine::new(2, 4096 * MIB);
    let dir = tempfile::tempdir().unwrap();
    for (device, cap) in [("0", 512 * MIB), ("1", 128 * MIB)] {
        let report = hami_e2e::program::run_json(
            machine
                .command(c_program("alloc_paths"))
                .env("LD_PRELOAD", hami_e2e::artifacts::libhami())
                .env("CUDA_DEVICE_MEMORY_LIMIT", "512Mi")
                .env("CUDA_DEVICE_MEMORY_LIMIT_1", "128Mi")
                .env("HAMI_LEDGER_USAGE", dir.path().join("usage.ledger"))
                .env("ALLOC_DEVICE", device)
                .env("NVML_INDEX", device)
                .arg("info"),
        );
        assert_eq!(field(&report, "total"), cap, "device {device}: {report}");
        assert_eq!(
            field(&report, "nvml_total"),
            cap,
            "device {device}: {report}"
        );
    }
}

#[test]
fn a_garbage_compute_limit_refuses_kernel_launches_and_says_why() {
    let machine = Machine::new(1, 4096 * MIB);
    let dir = tempfile::tempdir().unwrap();
    let output = machine
        .command(hami_e2e::artifacts::cuda_client())
        .args(["spin", "--seconds", "0.2"])
        .env("LD_PRELOAD", hami_e2e::artifacts::libhami())
        .env("CUDA_DEVICE_SM_LIMIT", "lots")
        .env("HAMI_LEDGER_USAGE", dir.path().join("usage.ledger"))
        .output()
        .expect("run the client");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a cap that cannot be read must not run uncapped: {stderr}"
    );
    assert!(stderr.contains("CUDA_ERROR_NOT_PERMITTED"), "{stderr}");
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("CUDA_DEVICE_SM_LIMIT"))
        .collect();
    assert_eq!(ours.len(), 1, "one line naming the variable: {stderr}");
}
