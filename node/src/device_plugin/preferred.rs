//! `GetPreferredAllocation`: which shares kubelet should give a container. In HAMi a container
//! asking `nvidia.com/gpu: k` wants k *devices*, so the preference is one share on each of k
//! distinct devices, the devices with the most free shares first (spreading share use evenly,
//! so no device runs out of shares while others have many). Shares kubelet must include are
//! kept; unknown IDs are ignored. With fewer distinct devices than asked the answer is filled
//! with further shares of devices already chosen, because kubelet expects `allocation_size`
//! IDs; `Allocate` then refuses two shares of one device, which is the honest answer.

use std::collections::{BTreeMap, BTreeSet};

use super::api;
use super::shares::{Inventory, Share};

/// The preferred shares for one container's request.
pub fn preferred_shares(
    inventory: &Inventory,
    request: &api::ContainerPreferredAllocationRequest,
) -> Vec<String> {
    let size = usize::try_from(request.allocation_size).unwrap_or(0);
    let mut free: BTreeMap<usize, BTreeSet<u32>> = BTreeMap::new();
    for share in request
        .available_device_i_ds
        .iter()
        .filter_map(|id| inventory.parse(id))
    {
        free.entry(share.device).or_default().insert(share.number);
    }
    // Free counts as kubelet sees them, before this container takes anything.
    let free_count: BTreeMap<usize, usize> = free
        .iter()
        .map(|(device, shares)| (*device, shares.len()))
        .collect();

    let mut chosen: Vec<String> = Vec::with_capacity(size);
    let mut used_devices = BTreeSet::new();
    for id in &request.must_include_device_i_ds {
        if chosen.contains(id) {
            continue;
        }
        chosen.push(id.clone());
        if let Some(share) = inventory.parse(id) {
            used_devices.insert(share.device);
            if let Some(shares) = free.get_mut(&share.device) {
                shares.remove(&share.number);
            }
        }
    }

    while chosen.len() < size {
        // A device not used yet if there is one, else any; most free shares first, then the
        // device's order on the node.
        let pick = free
            .iter()
            .filter(|(_, shares)| !shares.is_empty())
            .map(|(device, _)| *device)
            .min_by_key(|device| {
                (
                    used_devices.contains(device),
                    std::cmp::Reverse(free_count.get(device).copied().unwrap_or(0)),
                    *device,
                )
            });
        let Some(device) = pick else { break };
        let Some(number) = free.get_mut(&device).and_then(|shares| shares.pop_first()) else {
            break;
        };
        used_devices.insert(device);
        if let Some(id) = inventory.id(Share { device, number }) {
            chosen.push(id);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hami_ledger::{DeviceInfo, Vendor};

    use super::*;

    fn inventory(devices: usize, shares: u32) -> Inventory {
        let devices: Vec<DeviceInfo> = (0..devices)
            .map(|i| DeviceInfo {
                uuid: format!("GPU-{i}"),
                index: i as u32,
                vendor: Vendor::Nvidia,
                total_memory: 1 << 30,
                compute_units: 0,
            })
            .collect();
        Inventory::new(&devices, shares, &BTreeMap::new()).unwrap()
    }

    fn request(
        available: &[&str],
        must: &[&str],
        size: i32,
    ) -> api::ContainerPreferredAllocationRequest {
        api::ContainerPreferredAllocationRequest {
            available_device_i_ds: available.iter().map(|s| s.to_string()).collect(),
            must_include_device_i_ds: must.iter().map(|s| s.to_string()).collect(),
            allocation_size: size,
        }
    }

    #[test]
    fn shares_come_from_distinct_devices_with_the_most_free_shares_first() {
        let inventory = inventory(3, 4);
        // GPU-0 has 1 free share, GPU-1 has 3, GPU-2 has 2.
        let available = [
            "GPU-0::3", "GPU-1::0", "GPU-1::2", "GPU-1::3", "GPU-2::1", "GPU-2::2",
        ];
        assert_eq!(
            preferred_shares(&inventory, &request(&available, &[], 2)),
            vec!["GPU-1::0", "GPU-2::1"]
        );
        assert_eq!(
            preferred_shares(&inventory, &request(&available, &[], 3)),
            vec!["GPU-1::0", "GPU-2::1", "GPU-0::3"]
        );
    }

    #[test]
    fn must_include_is_kept_and_its_device_not_chosen_twice() {
        let inventory = inventory(3, 4);
        let available = ["GPU-0::0", "GPU-1::0", "GPU-1::1", "GPU-1::2", "GPU-2::0"];
        assert_eq!(
            preferred_shares(&inventory, &request(&available, &["GPU-1::2"], 2)),
            vec!["GPU-1::2", "GPU-0::0"]
        );
    }

    #[test]
    fn fewer_devices_than_asked_fills_with_shares_of_chosen_devices() {
        let inventory = inventory(2, 4);
        let available = ["GPU-0::0", "GPU-0::1", "GPU-1::0", "GPU-1::1", "GPU-1::2"];
        assert_eq!(
            preferred_shares(&inventory, &request(&available, &[], 3)),
            vec!["GPU-1::0", "GPU-0::0", "GPU-1::1"]
        );
        // Never more than is available, and unknown IDs are ignored.
        assert_eq!(
            preferred_shares(&inventory, &request(&["GPU-0::0", "other::0"], &[], 2)),
            vec!["GPU-0::0"]
        );
    }
}
