//! NUMA nodes of the devices, read the way the NVIDIA driver publishes them: each GPU has a
//! directory `/proc/driver/nvidia/gpus/<PCI bus id>/` whose `information` file names its
//! `GPU UUID`, and the PCI device `/sys/bus/pci/devices/<PCI bus id>/numa_node` says its NUMA
//! node (`-1` on machines without NUMA). Anything unreadable simply leaves the device without
//! a topology, which kubelet accepts.

use std::collections::BTreeMap;
use std::path::Path;

/// The driver's per-GPU directories.
pub const DRIVER_GPUS_DIR: &str = "/proc/driver/nvidia/gpus";
/// PCI devices in sysfs.
pub const PCI_DEVICES_DIR: &str = "/sys/bus/pci/devices";

/// NUMA node by device UUID on this host.
pub fn numa_nodes_of_host() -> BTreeMap<String, i64> {
    numa_nodes(Path::new(DRIVER_GPUS_DIR), Path::new(PCI_DEVICES_DIR))
}

/// NUMA node by device UUID, from a driver directory and a PCI device directory.
pub fn numa_nodes(driver_gpus: &Path, pci_devices: &Path) -> BTreeMap<String, i64> {
    let mut nodes = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(driver_gpus) else {
        return nodes;
    };
    for entry in entries.flatten() {
        let bus_id = entry.file_name();
        let Some(uuid) = std::fs::read_to_string(entry.path().join("information"))
            .ok()
            .and_then(|text| uuid_in(&text))
        else {
            continue;
        };
        let numa = std::fs::read_to_string(pci_devices.join(&bus_id).join("numa_node"))
            .ok()
            .and_then(|text| text.trim().parse::<i64>().ok())
            .filter(|node| *node >= 0);
        if let Some(node) = numa {
            nodes.insert(uuid, node);
        }
    }
    nodes
}

/// The value of the `GPU UUID:` line of a driver `information` file.
fn uuid_in(information: &str) -> Option<String> {
    information.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "GPU UUID")
            .then(|| value.trim().to_string())
            .filter(|uuid| !uuid.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(root: &Path, bus: &str, uuid: &str, numa: &str) {
        let driver = root.join("gpus").join(bus);
        std::fs::create_dir_all(&driver).unwrap();
        std::fs::write(
            driver.join("information"),
            format!(
                "Model: \t\t NVIDIA H200\nIRQ:   \t\t 35\nGPU UUID: \t {uuid}\nBus Type: \t PCIe\n"
            ),
        )
        .unwrap();
        let pci = root.join("pci").join(bus);
        std::fs::create_dir_all(&pci).unwrap();
        std::fs::write(pci.join("numa_node"), numa).unwrap();
    }

    #[test]
    fn numa_nodes_are_read_by_uuid_and_unknown_ones_left_out() {
        let root = tempfile::tempdir().unwrap();
        gpu(root.path(), "0000:3b:00.0", "GPU-aaaa", "1\n");
        gpu(root.path(), "0000:86:00.0", "GPU-bbbb", "-1\n");
        gpu(root.path(), "0000:af:00.0", "GPU-cccc", "garbage");
        let nodes = numa_nodes(&root.path().join("gpus"), &root.path().join("pci"));
        assert_eq!(nodes, BTreeMap::from([("GPU-aaaa".to_string(), 1)]));
        assert!(numa_nodes(&root.path().join("absent"), &root.path().join("pci")).is_empty());
    }
}
