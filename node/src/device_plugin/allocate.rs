//! `Allocate`: kubelet tells the plugin which shares a container got. The scheduler's device
//! decision reaches the shim through the pod's `hami.io/*` annotations (containerd passes them
//! to the runtime), so the plugin neither looks the pod up nor takes a node lock: it checks the
//! shares and names them in the container's environment for diagnostics. A share this plugin
//! never advertised, or two shares of one device in one container (one container never gets
//! one device twice in HAMi), is refused, naming the IDs.

use std::collections::BTreeMap;

use thiserror::Error;

use super::api;
use super::shares::Inventory;

/// Environment variable naming, comma-separated, the shares kubelet gave the container.
pub const SHARES_ENV: &str = "HAMI_KUBELET_SHARES";

/// Why kubelet's allocation is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AllocateError {
    #[error("unknown device IDs {}: this plugin advertises `<device UUID>::<share>` for its devices only", .0.join(", "))]
    UnknownIds(Vec<String>),
    #[error("device IDs {} are shares of one device ({uuid}); a container gets each device once", .ids.join(", "))]
    SameDevice { uuid: String, ids: Vec<String> },
}

/// The response for one container, or why its shares are refused.
pub fn allocate_container(
    inventory: &Inventory,
    request: &api::ContainerAllocateRequest,
) -> Result<api::ContainerAllocateResponse, AllocateError> {
    let unknown: Vec<String> = request
        .devices_ids
        .iter()
        .filter(|id| inventory.parse(id).is_none())
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(AllocateError::UnknownIds(unknown));
    }
    let mut by_device: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for id in &request.devices_ids {
        if let Some(share) = inventory.parse(id) {
            by_device.entry(share.device).or_default().push(id.clone());
        }
    }
    if let Some((device, ids)) = by_device.into_iter().find(|(_, ids)| ids.len() > 1) {
        return Err(AllocateError::SameDevice {
            uuid: inventory.uuid(device).unwrap_or_default().to_string(),
            ids,
        });
    }
    Ok(api::ContainerAllocateResponse {
        envs: [(SHARES_ENV.to_string(), request.devices_ids.join(","))].into(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use hami_ledger::{DeviceInfo, Vendor};

    use super::*;

    fn inventory() -> Inventory {
        let devices: Vec<DeviceInfo> = (0..2)
            .map(|i| DeviceInfo {
                uuid: format!("GPU-{i}"),
                index: i,
                vendor: Vendor::Nvidia,
                total_memory: 1 << 30,
                compute_units: 0,
            })
            .collect();
        Inventory::new(&devices, 3, &BTreeMap::new()).unwrap()
    }

    fn request(ids: &[&str]) -> api::ContainerAllocateRequest {
        api::ContainerAllocateRequest {
            devices_ids: ids.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn shares_of_distinct_devices_are_named_in_the_environment_and_nothing_else() {
        let response =
            allocate_container(&inventory(), &request(&["GPU-1::2", "GPU-0::0"])).unwrap();
        assert_eq!(
            response.envs,
            [(SHARES_ENV.to_string(), "GPU-1::2,GPU-0::0".to_string())].into()
        );
        assert!(response.mounts.is_empty() && response.devices.is_empty());
        assert!(response.cdi_devices.is_empty() && response.annotations.is_empty());
    }

    #[test]
    fn unknown_ids_and_two_shares_of_one_device_are_refused_by_name() {
        assert_eq!(
            allocate_container(
                &inventory(),
                &request(&["GPU-0::0", "GPU-9::0", "GPU-1::3"])
            ),
            Err(AllocateError::UnknownIds(vec![
                "GPU-9::0".into(),
                "GPU-1::3".into()
            ]))
        );
        let error = allocate_container(
            &inventory(),
            &request(&["GPU-1::0", "GPU-0::0", "GPU-1::2"]),
        )
        .unwrap_err();
        assert_eq!(
            error,
            AllocateError::SameDevice {
                uuid: "GPU-1".into(),
                ids: vec!["GPU-1::0".into(), "GPU-1::2".into()]
            }
        );
        assert!(error.to_string().contains("GPU-1::0, GPU-1::2"), "{error}");
    }
}
