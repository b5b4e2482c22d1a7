//! The per-container contention publisher runs as a child process of the shim binary: it claims
//! the container's slot in the node part while the container lives, gives it back at release,
//! and a container that truncates its own usage file can kill only that child.

use std::path::Path;
use std::time::{Duration, Instant};

use hami_ledger::compute::{Contention, NodeContentionWords};
use hami_ledger::{
    ComputePolicy, ContainerLimits, DeviceInfo, DeviceLimit, NodeLedger, Priority, Vendor,
};
use hami_shim::contention::ContentionPublishers;
use hami_shim::ledger_entry::{EntryPaths, node_path, write_entry};

fn claimed_slots(root: &Path) -> u32 {
    let node = NodeLedger::open(node_path(root)).unwrap();
    Contention::new(&NodeContentionWords::new(&node, 0)).claimed_slots()
}

fn entry(root: &Path, id: &str) -> EntryPaths {
    let limits = ContainerLimits {
        container_id: id.into(),
        devices: vec![DeviceLimit {
            uuid: "GPU-a".into(),
            memory_limit: Some(1 << 30),
            compute_percent: Some(30),
            policy: ComputePolicy::Hard,
            priority: Priority::High,
        }],
    };
    write_entry(root, &limits).unwrap()
}

fn node(root: &Path) {
    let device = DeviceInfo {
        uuid: "GPU-a".into(),
        index: 0,
        vendor: Vendor::Nvidia,
        total_memory: 8 << 30,
        compute_units: 0,
    };
    NodeLedger::create(node_path(root), &[device]).unwrap();
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn publishers() -> ContentionPublishers {
    ContentionPublishers::with_program(env!("CARGO_BIN_EXE_containerd-shim-hami-v2").into())
}

#[test]
fn a_capped_container_holds_a_contention_slot_until_it_is_released() {
    let root = tempfile::tempdir().unwrap();
    node(root.path());
    let paths = entry(root.path(), "c1");
    let publishers = publishers();
    publishers.start("c1", root.path(), &paths);
    wait_for("the publisher claims a slot", || {
        claimed_slots(root.path()) == 1
    });
    publishers.stop("c1");
    assert_eq!(
        claimed_slots(root.path()),
        0,
        "the slot is given back at release"
    );
}

#[test]
fn a_truncated_usage_file_kills_only_the_publisher() {
    let root = tempfile::tempdir().unwrap();
    node(root.path());
    let paths = entry(root.path(), "hostile");
    let publishers = publishers();
    publishers.start("hostile", root.path(), &paths);
    wait_for("the publisher claims a slot", || {
        claimed_slots(root.path()) == 1
    });
    // What a container can do to the usage part mounted read-write into it.
    std::fs::File::options()
        .write(true)
        .open(&paths.usage)
        .unwrap()
        .set_len(0)
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    // This process (standing in for the shim) is still here, and release still returns.
    publishers.stop("hostile");
}
