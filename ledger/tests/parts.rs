//! Creating, opening and refusing node, limits and usage parts through the public API.

use std::fs;
use std::path::Path;

use hami_ledger::header::{LAYOUT_VERSION, LayoutError, PartKind};
use hami_ledger::limits::{self, LimitsError};
use hami_ledger::{
    ComputePolicy, ContainerLimits, DeviceInfo, DeviceLimit, FileError, InputError, NodeError,
    NodeLedger, Priority, UsageError, UsageLedger, Vendor,
};

fn devices() -> Vec<DeviceInfo> {
    vec![
        DeviceInfo {
            uuid: "GPU-8f2c0000-1111-2222-3333-444455556666".into(),
            index: 0,
            vendor: Vendor::Nvidia,
            total_memory: 80 << 30,
            compute_units: 132,
        },
        DeviceInfo {
            uuid: "NPU-ascend-0001".into(),
            index: 3,
            vendor: Vendor::Ascend,
            total_memory: 64 << 30,
            compute_units: 32,
        },
    ]
}

fn container_limits() -> ContainerLimits {
    ContainerLimits {
        container_id: "0f1e2d3c4b5a".into(),
        devices: vec![
            DeviceLimit {
                uuid: "GPU-b".into(),
                memory_limit: Some(3 << 30),
                compute_percent: Some(30),
                policy: ComputePolicy::Hard,
                priority: Priority::High,
            },
            DeviceLimit {
                uuid: "GPU-a".into(),
                memory_limit: None,
                compute_percent: None,
                policy: ComputePolicy::Burst,
                priority: Priority::Normal,
            },
        ],
    }
}

fn invalid_problem(err: &FileError) -> LayoutError {
    err.layout_problem()
        .cloned()
        .unwrap_or_else(|| panic!("expected a layout problem: {err}"))
}

fn node_problem(path: &Path) -> LayoutError {
    match NodeLedger::open(path) {
        Err(NodeError::File(err)) => {
            let message = err.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            invalid_problem(&err)
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("{} was accepted", path.display()),
    }
}

#[test]
fn node_round_trips_and_finds_devices_by_uuid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.ledger");
    NodeLedger::create(&path, &devices()).unwrap();
    let node = NodeLedger::open(&path).unwrap();
    assert_eq!(node.devices(), devices());
    assert_eq!(node.device_by_uuid("NPU-ascend-0001"), Some(1));
    assert_eq!(node.device_by_uuid("GPU-none"), None);
}

#[test]
fn node_replace_is_atomic_for_new_readers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.ledger");
    let old = NodeLedger::create(&path, &devices()).unwrap();
    NodeLedger::create(&path, &devices()[..1]).unwrap();
    assert_eq!(NodeLedger::open(&path).unwrap().devices().len(), 1);
    // The old mapping still reads the file it opened.
    assert_eq!(old.devices().len(), 2);
    let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temporary files left behind");
}

#[test]
fn contention_cells_are_writable_by_host_tools_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.ledger");
    let host = NodeLedger::create(&path, &devices()).unwrap();
    let cell = host.contention_cell(1).unwrap().expect("device 1 exists");
    cell.words[5].store(77, std::sync::atomic::Ordering::Release);
    let reader = NodeLedger::open(&path).unwrap();
    assert_eq!(reader.contention_word(1, 5), Some(77));
    assert_eq!(reader.contention_word(2, 0), None);
    assert!(matches!(
        reader.contention_cell(0),
        Err(NodeError::ReadOnly { .. })
    ));
}

#[test]
fn node_refuses_bad_devices() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.ledger");
    let mut bad = devices();
    bad[1].uuid = bad[0].uuid.clone();
    assert!(matches!(
        NodeLedger::create(&path, &bad),
        Err(NodeError::Input(InputError::DuplicateUuid { .. }))
    ));
    let mut long = devices();
    long[0].uuid = "G".repeat(65);
    assert!(matches!(
        NodeLedger::create(&path, &long),
        Err(NodeError::Input(InputError::BadUuid { .. }))
    ));
    let many: Vec<DeviceInfo> = (0..17)
        .map(|i| DeviceInfo {
            uuid: format!("GPU-{i}"),
            ..devices()[0].clone()
        })
        .collect();
    assert!(matches!(
        NodeLedger::create(&path, &many),
        Err(NodeError::Input(InputError::TooManyDevices {
            count: 17,
            ..
        }))
    ));
    assert!(!path.exists(), "a refused node part was written");
}

#[test]
fn open_names_the_file_and_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.ledger");
    NodeLedger::create(&path, &devices()).unwrap();
    let good = fs::read(&path).unwrap();

    let mut image = good.clone();
    image[0] ^= 0xff;
    fs::write(&path, &image).unwrap();
    assert!(matches!(node_problem(&path), LayoutError::BadMagic { .. }));

    let mut image = good.clone();
    image[8..12].copy_from_slice(&(LAYOUT_VERSION + 1).to_ne_bytes());
    fs::write(&path, &image).unwrap();
    assert_eq!(
        node_problem(&path),
        LayoutError::UnsupportedVersion {
            found: LAYOUT_VERSION + 1,
            supported: LAYOUT_VERSION
        }
    );

    let mut image = good.clone();
    image[16..24].copy_from_slice(&1234u64.to_ne_bytes());
    fs::write(&path, &image).unwrap();
    assert!(matches!(
        node_problem(&path),
        LayoutError::SizeMismatch { found: 1234, .. }
    ));

    fs::write(&path, &good[..good.len() - 1]).unwrap();
    assert!(matches!(node_problem(&path), LayoutError::Truncated { .. }));
    fs::write(&path, &good[..10]).unwrap();
    assert!(matches!(
        node_problem(&path),
        LayoutError::Truncated { found: 10, .. }
    ));
    fs::write(&path, b"").unwrap();
    assert!(matches!(
        node_problem(&path),
        LayoutError::Truncated { found: 0, .. }
    ));

    let mut longer = good.clone();
    longer.push(0);
    fs::write(&path, &longer).unwrap();
    assert!(matches!(node_problem(&path), LayoutError::Oversized { .. }));

    let mut image = good.clone();
    image[100] ^= 1; // inside device record 0
    fs::write(&path, &image).unwrap();
    assert!(matches!(
        node_problem(&path),
        LayoutError::ChecksumMismatch { .. }
    ));

    let missing = dir.path().join("missing.ledger");
    let err = NodeLedger::open(&missing).err().unwrap().to_string();
    assert!(err.contains("missing.ledger"), "{err}");
}

#[test]
fn each_part_refuses_the_other_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node.ledger");
    let lim = dir.path().join("limits.ledger");
    let usage = dir.path().join("usage.ledger");
    NodeLedger::create(&node, &devices()).unwrap();
    limits::write(&lim, &container_limits()).unwrap();
    UsageLedger::create(&usage, 2).unwrap();

    assert_eq!(
        node_problem(&lim),
        LayoutError::WrongKind {
            found: PartKind::Limits as u32,
            expected: PartKind::Node
        }
    );
    match limits::read(&usage) {
        Err(LimitsError::File(err)) => assert_eq!(
            invalid_problem(&err),
            LayoutError::WrongKind {
                found: PartKind::Usage as u32,
                expected: PartKind::Limits
            }
        ),
        other => panic!("usage read as limits: {other:?}"),
    }
    match UsageLedger::attach(&node) {
        Err(UsageError::File(err)) => assert_eq!(
            invalid_problem(&err),
            LayoutError::WrongKind {
                found: PartKind::Node as u32,
                expected: PartKind::Usage
            }
        ),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("node attached as usage"),
    }
}

#[test]
fn limits_round_trip_in_container_device_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limits.ledger");
    limits::write(&path, &container_limits()).unwrap();
    assert_eq!(limits::read(&path).unwrap(), container_limits());
    let mode = fs::metadata(&path).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o644
    );
}

#[test]
fn limits_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limits.ledger");
    for percent in [0, 101] {
        let mut bad = container_limits();
        bad.devices[0].compute_percent = Some(percent);
        assert!(matches!(
            limits::write(&path, &bad),
            Err(LimitsError::Input(InputError::ComputePercentOutOfRange { value, .. })) if value == percent
        ));
    }
    let mut bad = container_limits();
    bad.container_id = String::new();
    assert!(matches!(
        limits::write(&path, &bad),
        Err(LimitsError::Input(InputError::BadContainerId { .. }))
    ));
    let mut bad = container_limits();
    bad.devices[1].uuid = "GPU-b".into();
    assert!(matches!(
        limits::write(&path, &bad),
        Err(LimitsError::Input(InputError::DuplicateUuid { .. }))
    ));
    assert!(!path.exists());
}

#[test]
fn limits_refuse_any_changed_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limits.ledger");
    limits::write(&path, &container_limits()).unwrap();
    let good = fs::read(&path).unwrap();
    for at in [40, 64, 200, 256, 1000, good.len() - 1] {
        let mut image = good.clone();
        image[at] ^= 0x10;
        fs::write(&path, &image).unwrap();
        let err = limits::read(&path).expect_err("a changed byte was accepted");
        assert!(err.to_string().contains("limits.ledger"), "{err}");
    }
}

#[test]
fn usage_create_checks_device_count_and_is_world_writable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.ledger");
    for n in [0, 17] {
        assert!(matches!(
            UsageLedger::create(&path, n),
            Err(UsageError::Input(InputError::DeviceCountOutOfRange { .. }))
        ));
    }
    UsageLedger::create(&path, 3).unwrap();
    let usage = UsageLedger::attach(&path).unwrap();
    assert_eq!(usage.n_devices(), 3);
    assert_eq!(
        (0..4).map(|d| usage.used(d)).collect::<Vec<_>>(),
        [0, 0, 0, 0]
    );
    assert!(usage.compute_cell(2).is_some());
    assert!(usage.compute_cell(3).is_none());
    let mode = fs::metadata(&path).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o666
    );
}

#[test]
fn usage_attach_refuses_truncated_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.ledger");
    UsageLedger::create(&path, 1).unwrap();
    let good = fs::read(&path).unwrap();
    fs::write(&path, &good[..good.len() / 2]).unwrap();
    match UsageLedger::attach(&path) {
        Err(UsageError::File(err)) => {
            assert!(matches!(
                invalid_problem(&err),
                LayoutError::Truncated { .. }
            ));
            assert!(err.to_string().contains("usage.ledger"), "{err}");
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("truncated usage attached"),
    }
}

#[test]
fn reclaim_refuses_a_usage_file_shrunk_after_attach() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.ledger");
    UsageLedger::create(&path, 1).unwrap();
    let usage = UsageLedger::attach(&path).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100)
        .unwrap();
    let err = usage
        .reclaim_dead()
        .expect_err("a shrunk file was reclaimed");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn writers_create_the_container_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = hami_ledger::paths::LedgerDir::new(dir.path().join("hami"));
    limits::write(root.limits("ctr-1").unwrap(), &container_limits()).unwrap();
    UsageLedger::create(root.usage("ctr-1").unwrap(), 2).unwrap();
    NodeLedger::create(root.node(), &devices()).unwrap();
    assert_eq!(
        limits::read(root.limits("ctr-1").unwrap()).unwrap(),
        container_limits()
    );
    assert_eq!(
        UsageLedger::attach(root.usage("ctr-1").unwrap())
            .unwrap()
            .n_devices(),
        2
    );
}
