//! The host side of the contention view: copies one container's demand into the node part.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use thiserror::Error;

use super::budget::Budget;
use super::contention::{ContentionCell, ContentionSlot, SlotClass};

/// Period of the host publisher: demand reaches the node view this fast.
pub const PUBLISH_PERIOD: Duration = Duration::from_millis(2);

/// The host publisher cannot serve a container.
#[derive(Debug, Error)]
pub enum PublishError {
    #[error("node part {path}: {source}")]
    Node {
        path: PathBuf,
        #[source]
        source: crate::NodeError,
    },
    #[error("device {uuid} of container {container_id} is not in the node part {path}")]
    UnknownDevice {
        uuid: String,
        container_id: String,
        path: PathBuf,
    },
    #[error("usage part {path} has no compute cell for the container's device {dev}")]
    MissingCell { path: PathBuf, dev: usize },
}

/// Host side: copies one container's demand into the node part's contention cells, so that
/// `burst` neighbours fall back to their caps and normal-priority neighbours yield to it.
///
/// Slots are claimed on [`ContentionPublisher::new`] and given back on drop; the slot number
/// is also written into the container's compute cell so its limiter can tell itself apart.
pub struct ContentionPublisher<'a> {
    devices: Vec<PublishedDevice<'a>>,
}

struct PublishedDevice<'a> {
    cell: ContentionCell<'a>,
    budget: Budget<'a>,
    slot: ContentionSlot,
    high: bool,
}

impl<'a> ContentionPublisher<'a> {
    /// Claims a contention slot on every device of `limits` (node part opened writable).
    pub fn new(
        node: &'a crate::NodeLedger,
        usage: &'a crate::UsageLedger,
        limits: &crate::ContainerLimits,
    ) -> Result<Self, PublishError> {
        let mut devices = Vec::with_capacity(limits.devices.len());
        for (dev, limit) in limits.devices.iter().enumerate() {
            let node_dev =
                node.device_by_uuid(&limit.uuid)
                    .ok_or_else(|| PublishError::UnknownDevice {
                        uuid: limit.uuid.clone(),
                        container_id: limits.container_id.clone(),
                        path: node.path().to_owned(),
                    })?;
            let contention = node
                .contention_cell(node_dev)
                .map_err(|source| PublishError::Node {
                    path: node.path().to_owned(),
                    source,
                })?
                .ok_or_else(|| PublishError::UnknownDevice {
                    uuid: limit.uuid.clone(),
                    container_id: limits.container_id.clone(),
                    path: node.path().to_owned(),
                })?;
            let compute = usage
                .compute_cell(dev)
                .ok_or_else(|| PublishError::MissingCell {
                    path: usage.path().to_owned(),
                    dev,
                })?;
            let class = SlotClass::of(limit.priority, limit.compute_percent);
            let high = class.is_high();
            let cell = ContentionCell::new(&contention.words);
            let slot = cell.claim_slot(class);
            let budget = Budget::new(&compute.words);
            budget.set_contention_slot(slot);
            devices.push(PublishedDevice {
                cell,
                budget,
                slot,
                high,
            });
        }
        Ok(Self { devices })
    }

    /// Copies the container's current demand into the node view (a few atomics per device).
    pub fn publish_once(&self) {
        for d in &self.devices {
            let last = d.budget.last_demand_ns();
            if last != 0 {
                d.cell.publish_demand(d.slot, d.high, last);
            }
        }
    }

    /// Publishes every [`PUBLISH_PERIOD`] until `stop` is set (run it in a thread).
    pub fn run_until(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            self.publish_once();
            std::thread::sleep(PUBLISH_PERIOD);
        }
        self.publish_once();
    }
}

impl Drop for ContentionPublisher<'_> {
    fn drop(&mut self) {
        for d in &self.devices {
            d.cell.release_slot(d.slot);
        }
    }
}

/// Host side, one call: publishes `limits`' container's demand until `stop` is set, then gives
/// its slots back. What `hami run` and the shim run in a thread beside the container.
pub fn publish_contention(
    node: &crate::NodeLedger,
    usage: &crate::UsageLedger,
    limits: &crate::ContainerLimits,
    stop: &AtomicBool,
) -> Result<(), PublishError> {
    ContentionPublisher::new(node, usage, limits)?.run_until(stop);
    Ok(())
}
