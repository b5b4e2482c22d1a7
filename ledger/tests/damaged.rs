//! Random byte flips and truncations of valid part files: opening never panics, and either
//! refuses the file with an error naming it or returns validated content.

use std::fs;
use std::path::Path;

use hami_ledger::limits;
use hami_ledger::{
    ComputePolicy, ContainerLimits, DeviceInfo, DeviceLimit, NodeLedger, Priority, UsageLedger,
    Vendor,
};
use proptest::prelude::*;

/// Bytes of a node part that are live cells, not checksummed records (header + 16 records).
const NODE_IMMUTABLE: usize = 64 + 16 * 128;
const HEADER: usize = 64;

fn devices() -> Vec<DeviceInfo> {
    (0..3)
        .map(|i| DeviceInfo {
            uuid: format!("GPU-{i:04}-abcd"),
            index: i,
            vendor: Vendor::Nvidia,
            total_memory: 24 << 30,
            compute_units: 84,
        })
        .collect()
}

fn container_limits() -> ContainerLimits {
    ContainerLimits {
        container_id: "c0ffee".into(),
        devices: vec![DeviceLimit {
            uuid: "GPU-0000-abcd".into(),
            memory_limit: Some(1 << 30),
            compute_percent: Some(50),
            policy: ComputePolicy::Burst,
            priority: Priority::Normal,
        }],
    }
}

#[derive(Debug, Clone)]
struct Damage {
    flips: Vec<(usize, u8)>,
    /// New length as a fraction of the original (in 1/1000), when the file is cut or extended.
    resize: Option<u32>,
}

fn damage() -> impl Strategy<Value = Damage> {
    (
        prop::collection::vec((any::<usize>(), 1u8..=255), 0..6),
        prop::option::weighted(0.3, 0u32..=1010),
    )
        .prop_map(|(flips, resize)| Damage { flips, resize })
}

fn apply(good: &[u8], damage: &Damage) -> Vec<u8> {
    let mut image = good.to_vec();
    for &(at, xor) in &damage.flips {
        let at = at % image.len();
        image[at] ^= xor;
    }
    if let Some(permille) = damage.resize {
        image.resize(good.len() * permille as usize / 1000, 0);
    }
    image
}

fn assert_names(err: &dyn std::error::Error, path: &Path) -> Result<(), TestCaseError> {
    let message = err.to_string();
    prop_assert!(message.contains(&path.display().to_string()), "{}", message);
    Ok(())
}

/// Writes a damaged copy of `good` and returns (path, image).
fn damaged_file(dir: &Path, good: &[u8], damage: &Damage) -> (std::path::PathBuf, Vec<u8>) {
    let image = apply(good, damage);
    let path = dir.join("damaged.ledger");
    fs::write(&path, &image).unwrap();
    (path, image)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn damaged_node_parts_are_refused_or_intact(damage in damage()) {
        let dir = tempfile::tempdir().unwrap();
        let good_path = dir.path().join("node.ledger");
        drop(NodeLedger::create(&good_path, &devices()).unwrap());
        let good = fs::read(&good_path).unwrap();
        let (path, image) = damaged_file(dir.path(), &good, &damage);
        let records_changed =
            image.len() != good.len() || image[..NODE_IMMUTABLE] != good[..NODE_IMMUTABLE];
        match NodeLedger::open(&path) {
            Ok(node) => {
                prop_assert!(!records_changed, "damaged records were accepted");
                prop_assert_eq!(node.devices(), devices());
            }
            Err(err) => {
                prop_assert!(records_changed, "intact records refused: {}", err);
                assert_names(&err, &path)?;
            }
        }
    }

    #[test]
    fn damaged_limits_parts_are_refused(damage in damage()) {
        let dir = tempfile::tempdir().unwrap();
        let good_path = dir.path().join("limits.ledger");
        limits::write(&good_path, &container_limits()).unwrap();
        let good = fs::read(&good_path).unwrap();
        let (path, image) = damaged_file(dir.path(), &good, &damage);
        match limits::read(&path) {
            Ok(read) => {
                prop_assert_eq!(&image, &good, "a changed limits file was accepted");
                prop_assert_eq!(read, container_limits());
            }
            Err(err) => {
                prop_assert_ne!(&image, &good, "an intact limits file was refused: {}", err);
                assert_names(&err, &path)?;
            }
        }
    }

    #[test]
    fn damaged_usage_parts_are_refused_or_usable(damage in damage(), bytes in 1u64..1 << 30) {
        let dir = tempfile::tempdir().unwrap();
        let good_path = dir.path().join("usage.ledger");
        UsageLedger::create(&good_path, 2).unwrap();
        let good = fs::read(&good_path).unwrap();
        let (path, image) = damaged_file(dir.path(), &good, &damage);
        let header_changed = image.len() != good.len() || image[..HEADER] != good[..HEADER];
        match UsageLedger::attach(&path) {
            Ok(usage) => {
                prop_assert!(!header_changed, "a damaged header was accepted");
                // Counters are the container's to write: garbage in them must stay harmless.
                let snapshot = usage.snapshot();
                prop_assert_eq!(snapshot.devices.len(), 2);
                let _ = usage.reclaim_dead().unwrap();
                if let Ok(slot) = usage.register() {
                    let limit = 1u64 << 31;
                    if usage.try_reserve(&slot, 1, bytes, limit).is_ok() {
                        prop_assert!(usage.used(1) <= limit);
                        usage.release(&slot, 1, bytes);
                    }
                }
            }
            Err(err) => {
                prop_assert!(header_changed, "an intact header was refused: {}", err);
                assert_names(&err, &path)?;
            }
        }
    }

    #[test]
    fn arbitrary_files_never_panic(content in prop::collection::vec(any::<u8>(), 0..5000)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.ledger");
        fs::write(&path, &content).unwrap();
        prop_assert!(NodeLedger::open(&path).is_err());
        prop_assert!(limits::read(&path).is_err());
        prop_assert!(UsageLedger::attach(&path).is_err());
    }
}
