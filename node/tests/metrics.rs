//! `GET /metrics` while a real `hami run` holds memory on the simulated device: the
//! per-container figures are the ledger's, the per-device used memory is what the device
//! itself says (through its NVML, `hami sim status --json`), and the entry is gone from the
//! metrics once the run ends.
//!
//! `hami`, `libhami.so` and the simulated driver are found in the target profile directory
//! of this test (CI builds the workspace first; `HAMI_E2E_HAMI` names another `hami`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

use hami_e2e::artifacts;
use hami_e2e::container::{MIB, Machine};
use hami_e2e::program::{Holder, code};
use hami_ledger::UsageCopy;
use hami_ledger::paths::LedgerDir;
use hami_node::metrics::{CONTENT_TYPE, NoExtras, serve};

const CONTAINER: &str = "metrics-e2e";

fn hami() -> PathBuf {
    if let Some(path) = std::env::var_os("HAMI_E2E_HAMI") {
        return PathBuf::from(path);
    }
    let hami = artifacts::libhami().with_file_name("hami");
    assert!(
        hami.is_file(),
        "{} not found: build the workspace with the same profile first \
         (`cargo build --release --workspace`), or set HAMI_E2E_HAMI",
        hami.display()
    );
    hami
}

/// One plain HTTP/1.0 GET; returns (head, body).
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics server");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").expect("send request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    (head.to_owned(), body.to_owned())
}

/// The value of the sample whose line starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<u64> {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
        .map(|value| value as u64)
}

#[test]
fn scraped_memory_is_the_ledgers_and_the_devices() {
    let machine = Machine::new(1, 1024 * MIB);
    let ledger_dir = tempfile::tempdir().expect("temp dir");
    let ledger = LedgerDir::new(ledger_dir.path());
    let held = 96 * MIB;
    let mut run = machine.command(hami());
    run.env("HAMI_LIBRARY", artifacts::libhami())
        .arg("run")
        .args([
            "--memory",
            "256Mi",
            "--cores",
            "40",
            "--container-id",
            CONTAINER,
        ])
        .arg("--ledger-dir")
        .arg(ledger_dir.path())
        .arg("--")
        .arg(artifacts::c_program("alloc_paths"))
        .args(["hold", &held.to_string()]);
    let holder = Holder::spawn(&mut run);
    assert_eq!(
        code(&holder.report, "code"),
        0,
        "the allocation under the cap succeeds"
    );

    let server = serve(
        "127.0.0.1:0".parse().expect("an address"),
        ledger.clone(),
        Arc::new(NoExtras),
    )
    .expect("serve metrics");
    let (head, text) = get(server.local_addr(), "/metrics");
    eprintln!("{head}\n{text}");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case(&format!("content-type: {CONTENT_TYPE}"))),
        "{head}"
    );

    // Per container: exactly what the ledger holds.
    let usage = UsageCopy::read(ledger.usage(CONTAINER).expect("a valid id")).expect("usage");
    let uuid = machine.uuid(0);
    let labels = format!(
        "{{container_id=\"{CONTAINER}\",device_uuid=\"{uuid}\",device_index=\"0\",pod_namespace=\"\",pod_name=\"\",container_name=\"\"}} "
    );
    let used = sample(&text, &format!("hami_vgpu_memory_used_bytes{labels}"));
    assert_eq!(used, Some(usage.snapshot.devices[0]));
    assert!(
        usage.snapshot.devices[0] >= held,
        "the ledger counts the allocation"
    );
    assert_eq!(
        sample(&text, &format!("hami_vgpu_memory_limit_bytes{labels}")),
        Some(256 * MIB)
    );
    assert_eq!(
        sample(
            &text,
            &format!("hami_container_processes{{container_id=\"{CONTAINER}\"")
        ),
        Some(1)
    );

    // Per device: what the simulated device says is used (only this run uses it).
    let status = machine
        .command(hami())
        .args(["sim", "status", "--json", "--state-dir"])
        .arg(machine.dir.path())
        .output()
        .expect("run hami sim status");
    assert!(status.status.success(), "{status:?}");
    let status: serde_json::Value =
        serde_json::from_slice(&status.stdout).expect("hami sim status --json prints JSON");
    let device_used = status["devices"][0]["memory_used_bytes"]
        .as_u64()
        .expect("memory_used_bytes");
    let device_labels = format!("{{device_uuid=\"{uuid}\",device_index=\"0\"}} ");
    assert_eq!(
        sample(
            &text,
            &format!("hami_device_memory_used_bytes{device_labels}")
        ),
        Some(device_used)
    );
    assert_eq!(
        sample(
            &text,
            &format!("hami_device_memory_total_bytes{device_labels}")
        ),
        Some(1024 * MIB)
    );
    assert_eq!(
        sample(
            &text,
            &format!("hami_device_memory_committed_bytes{device_labels}")
        ),
        Some(256 * MIB)
    );

    // The run ends and removes its entry: the next scrape no longer shows the container.
    holder.release();
    let (_, text) = get(server.local_addr(), "/metrics");
    assert!(!text.contains(CONTAINER), "{text}");
    assert_eq!(
        sample(
            &text,
            &format!("hami_device_memory_used_bytes{device_labels}")
        ),
        Some(0)
    );
    let (head, _) = get(server.local_addr(), "/other");
    assert!(head.contains(" 404"), "{head}");
}
