//! Rendering against a ledger written here: names, labels and figures.

use std::time::Duration;

use hami_ledger::{
    ComputePolicy, ContainerLimits, DeviceInfo, DeviceLimit, NodeLedger, Priority, UsageLedger,
    Vendor, compute::usage_word, limits,
};

use super::*;

const MIB: u64 = 1 << 20;
const UUID: &str = "GPU-metric00-0000-4000-8000-000000000007";

struct Backstop;

impl ScrapeExtras for Backstop {
    fn over_cap(&self) -> Vec<OverCapSample> {
        vec![OverCapSample {
            container_id: "web".into(),
            device_uuid: UUID.into(),
            pid: 4242,
            used_bytes: 300 * MIB,
            limit_bytes: 256 * MIB,
        }]
    }

    fn kills(&self) -> u64 {
        3
    }
}

/// The value of the sample whose line starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[test]
fn renders_devices_containers_and_the_backstop() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = LedgerDir::new(dir.path());
    NodeLedger::create(
        ledger.node(),
        &[DeviceInfo {
            uuid: UUID.into(),
            index: 7,
            vendor: Vendor::Nvidia,
            total_memory: 1024 * MIB,
            compute_units: 132,
        }],
    )
    .unwrap();
    std::fs::create_dir_all(ledger.container_dir("web").unwrap()).unwrap();
    limits::write(
        ledger.limits("web").unwrap(),
        &ContainerLimits {
            container_id: "web".into(),
            devices: vec![DeviceLimit {
                uuid: UUID.into(),
                memory_limit: Some(256 * MIB),
                compute_percent: Some(25),
                policy: ComputePolicy::Hard,
                priority: Priority::Normal,
            }],
        },
    )
    .unwrap();
    let usage_path = ledger.usage("web").unwrap();
    UsageLedger::create(&usage_path, 1).unwrap();
    let usage = UsageLedger::attach(&usage_path).unwrap();
    let slot = usage.register().unwrap();
    usage.reserve(&slot, 0, 40 * MIB, u64::MAX).unwrap();
    let cell = usage.compute_cell(0).unwrap();
    cell.words[usage_word::THROTTLED_NS].store(1_500_000_000, std::sync::atomic::Ordering::Relaxed);
    cell.words[usage_word::LAUNCHES].store(99, std::sync::atomic::Ordering::Relaxed);

    let scraper = Scraper::new(ledger.clone(), Arc::new(Backstop));
    let text = scraper.scrape().unwrap();
    eprintln!("{text}");
    let device = format!("{{device_uuid=\"{UUID}\",device_index=\"7\"}}");
    let container = format!(
        "{{container_id=\"web\",device_uuid=\"{UUID}\",device_index=\"7\",pod_namespace=\"\",pod_name=\"\",container_name=\"\"}}"
    );
    let mib = MIB as f64;
    for (name, labels, value) in [
        ("hami_device_memory_total_bytes", &device, 1024.0 * mib),
        ("hami_device_memory_committed_bytes", &device, 256.0 * mib),
        ("hami_device_memory_used_bytes", &device, 40.0 * mib),
        ("hami_device_containers", &device, 1.0),
        ("hami_vgpu_memory_used_bytes", &container, 40.0 * mib),
        ("hami_vgpu_memory_limit_bytes", &container, 256.0 * mib),
        ("hami_vgpu_core_allocated_ratio", &container, 0.25),
        (
            "hami_container_compute_throttled_seconds_total",
            &container,
            1.5,
        ),
        ("hami_container_kernel_launches_total", &container, 99.0),
    ] {
        assert_eq!(
            sample(&text, &format!("{name}{labels} ")),
            Some(value),
            "{name}"
        );
    }
    assert_eq!(
        sample(&text, "hami_container_processes{container_id=\"web\""),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                "hami_backstop_over_cap_bytes{{container_id=\"web\",device_uuid=\"{UUID}\",pid=\"4242\"}} "
            )
        ),
        Some(44.0 * mib)
    );
    assert_eq!(sample(&text, "hami_backstop_kills_total "), Some(3.0));
    assert!(text.contains("# TYPE hami_vgpu_memory_used_bytes gauge"));
    assert!(text.trim_end().ends_with("# EOF"));
    // No earlier scrape: no utilization yet.
    assert_eq!(
        sample(&text, "hami_container_device_utilization_ratio{"),
        None
    );

    // The measurer records 50 ms of busy time; the next scrape has a share in 0..=1.
    std::thread::sleep(Duration::from_millis(100));
    cell.words[usage_word::MEASURED_NS].store(50_000_000, std::sync::atomic::Ordering::Relaxed);
    let text = scraper.scrape().unwrap();
    let share = sample(
        &text,
        &format!("hami_container_device_utilization_ratio{container} "),
    )
    .expect("a utilization sample after two scrapes");
    assert!(share > 0.0 && share <= 1.0, "{share}");
    drop(slot);
}

#[test]
fn a_missing_ledger_renders_its_problem() {
    let dir = tempfile::tempdir().unwrap();
    let scraper = Scraper::new(LedgerDir::new(dir.path()), Arc::new(NoExtras));
    let text = scraper.scrape().unwrap();
    assert_eq!(sample(&text, "hami_node_ledger_problem "), Some(1.0));
    assert_eq!(sample(&text, "hami_backstop_kills_total "), Some(0.0));
}
