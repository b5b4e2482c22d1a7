//! The shares the plugin advertises: each device is listed `shares_per_device` times, as
//! `<uuid>::<n>`, so kubelet can hand one device to that many containers. The share number
//! means nothing beyond making the ID unique; which device a container really uses, and how
//! much of it, comes from the scheduler's pod annotations (see `docs/device-plugin.md`).

use std::collections::{BTreeMap, BTreeSet};

use hami_ledger::DeviceInfo;
use thiserror::Error;

use super::api;
use super::health::HealthReport;

/// Kubelet's limit on a device ID.
pub const MAX_DEVICE_ID_LEN: usize = 63;
/// Between the device UUID and the share number in a share ID.
pub const SHARE_SEPARATOR: &str = "::";

/// Why the node's devices cannot be advertised.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InventoryError {
    #[error("device {index} has an empty UUID; every device needs one to be advertised")]
    EmptyUuid { index: u32 },
    #[error(
        "device UUID {uuid:?} contains `{SHARE_SEPARATOR}`, which separates UUID and share number in share IDs"
    )]
    SeparatorInUuid { uuid: String },
    #[error("device UUID {uuid:?} is listed twice")]
    DuplicateUuid { uuid: String },
    #[error(
        "share ID {id:?} is {length} characters long, kubelet accepts at most {MAX_DEVICE_ID_LEN}: this device cannot be advertised (a UUID of at most {} characters fits with these shares)",
        MAX_DEVICE_ID_LEN - (.length - .uuid_length)
    )]
    IdTooLong {
        id: String,
        length: usize,
        uuid_length: usize,
    },
}

/// One share of one device, by position in the inventory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Share {
    /// Position of the device in the inventory (its order of advertisement).
    pub device: usize,
    /// Share number, `0..shares_per_device`.
    pub number: u32,
}

/// A device as advertised.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AdvertisedDevice {
    uuid: String,
    numa_node: Option<i64>,
}

/// The node's devices and their shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventory {
    devices: Vec<AdvertisedDevice>,
    shares_per_device: u32,
}

impl Inventory {
    /// Checks that every share of every device has a valid, unique ID.
    pub fn new(
        devices: &[DeviceInfo],
        shares_per_device: u32,
        numa_nodes: &BTreeMap<String, i64>,
    ) -> Result<Self, InventoryError> {
        let mut seen = BTreeSet::new();
        let mut advertised = Vec::with_capacity(devices.len());
        for device in devices {
            let uuid = device.uuid.as_str();
            if uuid.is_empty() {
                return Err(InventoryError::EmptyUuid {
                    index: device.index,
                });
            }
            if uuid.contains(SHARE_SEPARATOR) {
                return Err(InventoryError::SeparatorInUuid {
                    uuid: uuid.to_string(),
                });
            }
            if !seen.insert(uuid) {
                return Err(InventoryError::DuplicateUuid {
                    uuid: uuid.to_string(),
                });
            }
            // The last share has the longest ID.
            let longest = share_id(uuid, shares_per_device.saturating_sub(1));
            if longest.len() > MAX_DEVICE_ID_LEN {
                return Err(InventoryError::IdTooLong {
                    length: longest.len(),
                    uuid_length: uuid.len(),
                    id: longest,
                });
            }
            advertised.push(AdvertisedDevice {
                uuid: uuid.to_string(),
                numa_node: numa_nodes.get(uuid).copied(),
            });
        }
        Ok(Self {
            devices: advertised,
            shares_per_device,
        })
    }

    /// UUID of the device at `position`.
    pub fn uuid(&self, position: usize) -> Option<&str> {
        self.devices.get(position).map(|d| d.uuid.as_str())
    }

    /// The ID kubelet knows `share` by.
    pub fn id(&self, share: Share) -> Option<String> {
        let uuid = self.uuid(share.device)?;
        (share.number < self.shares_per_device).then(|| share_id(uuid, share.number))
    }

    /// The share an ID names; `None` for an ID this plugin never advertised.
    pub fn parse(&self, id: &str) -> Option<Share> {
        let (uuid, number) = id.rsplit_once(SHARE_SEPARATOR)?;
        // Exactly the decimal form we print: no sign, no leading zeros.
        if number.is_empty()
            || !number.bytes().all(|b| b.is_ascii_digit())
            || (number.len() > 1 && number.starts_with('0'))
        {
            return None;
        }
        let number: u32 = number.parse().ok()?;
        let device = self.devices.iter().position(|d| d.uuid == uuid)?;
        (number < self.shares_per_device).then_some(Share { device, number })
    }

    /// The list kubelet is sent: every share of every device, unhealthy shares of unhealthy devices.
    pub fn list(&self, health: &HealthReport) -> Vec<api::Device> {
        let mut list = Vec::with_capacity(self.devices.len() * self.shares_per_device as usize);
        for device in &self.devices {
            let health = if health.is_healthy(&device.uuid) {
                api::HEALTHY
            } else {
                api::UNHEALTHY
            };
            let topology = device.numa_node.map(|id| api::TopologyInfo {
                nodes: vec![api::NumaNode { id }],
            });
            for number in 0..self.shares_per_device {
                list.push(api::Device {
                    id: share_id(&device.uuid, number),
                    health: health.to_string(),
                    topology: topology.clone(),
                });
            }
        }
        list
    }
}

fn share_id(uuid: &str, number: u32) -> String {
    format!("{uuid}{SHARE_SEPARATOR}{number}")
}

#[cfg(test)]
mod tests {
    use hami_ledger::Vendor;

    use super::*;

    fn device(index: u32, uuid: &str) -> DeviceInfo {
        DeviceInfo {
            uuid: uuid.to_string(),
            index,
            vendor: Vendor::Nvidia,
            total_memory: 1 << 30,
            compute_units: 0,
        }
    }

    const A: &str = "GPU-fa4e0000-0000-0000-0000-000000000001";
    const B: &str = "GPU-fa4e0000-0000-0000-0000-000000000002";

    #[test]
    fn ids_name_the_device_and_the_share_and_read_back() {
        let inventory = Inventory::new(&[device(0, A), device(1, B)], 3, &BTreeMap::new()).unwrap();
        let share = Share {
            device: 1,
            number: 2,
        };
        let id = inventory.id(share).unwrap();
        assert_eq!(id, format!("{B}::2"));
        assert_eq!(inventory.parse(&id), Some(share));
        for foreign in [
            format!("{B}::3"),
            format!("{B}::02"),
            format!("{B}::+1"),
            format!("{B}::"),
            "GPU-other::0".to_string(),
            B.to_string(),
        ] {
            assert_eq!(inventory.parse(&foreign), None, "{foreign}");
        }
    }

    #[test]
    fn the_list_has_every_share_with_its_devices_health_and_numa_node() {
        let numa = BTreeMap::from([(B.to_string(), 1)]);
        let inventory = Inventory::new(&[device(0, A), device(1, B)], 2, &numa).unwrap();
        let health = HealthReport::default().with_unhealthy(A, "lost");
        let list = inventory.list(&health);
        let summary: Vec<(String, String, Option<i64>)> = list
            .iter()
            .map(|d| {
                (
                    d.id.clone(),
                    d.health.clone(),
                    d.topology.as_ref().map(|t| t.nodes[0].id),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (format!("{A}::0"), "Unhealthy".into(), None),
                (format!("{A}::1"), "Unhealthy".into(), None),
                (format!("{B}::0"), "Healthy".into(), Some(1)),
                (format!("{B}::1"), "Healthy".into(), Some(1)),
            ]
        );
    }

    #[test]
    fn a_uuid_too_long_for_kubelet_is_refused_naming_the_id() {
        let uuid = format!("GPU-{}", "f".repeat(57));
        let error = Inventory::new(&[device(0, &uuid)], 10, &BTreeMap::new()).unwrap_err();
        assert_eq!(
            error,
            InventoryError::IdTooLong {
                id: format!("{uuid}::9"),
                length: 64,
                uuid_length: 61,
            }
        );
        assert!(
            error.to_string().contains("at most 60 characters"),
            "{error}"
        );
        // One character shorter fits.
        let uuid = format!("GPU-{}", "f".repeat(56));
        assert!(Inventory::new(&[device(0, &uuid)], 10, &BTreeMap::new()).is_ok());
    }

    #[test]
    fn empty_duplicate_and_ambiguous_uuids_are_refused() {
        let none = BTreeMap::new();
        assert_eq!(
            Inventory::new(&[device(3, "")], 1, &none),
            Err(InventoryError::EmptyUuid { index: 3 })
        );
        assert_eq!(
            Inventory::new(&[device(0, A), device(1, A)], 1, &none),
            Err(InventoryError::DuplicateUuid { uuid: A.into() })
        );
        assert_eq!(
            Inventory::new(&[device(0, "GPU::x")], 1, &none),
            Err(InventoryError::SeparatorInUuid {
                uuid: "GPU::x".into()
            })
        );
    }
}
