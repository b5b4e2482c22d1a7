//! Prometheus metrics of a node, rendered from a fresh [`NodeView`] at every scrape, and the
//! HTTP endpoint that serves them (`GET /metrics`, OpenMetrics text).
//!
//! Names follow HAMi v2.10's where the meaning is the same (`hami_vgpu_memory_used_bytes`,
//! `hami_vgpu_memory_limit_bytes`, `hami_vgpu_core_allocated_ratio`,
//! `hami_container_device_utilization_ratio`); the rest are ours (`docs/metrics.md` lists every
//! one). Labels name the container by its ledger id and the device by UUID and node index; the
//! pod namespace, pod name and container name labels are there for HAMi dashboards and are
//! empty until the node agent learns them from the kubelet.

mod http;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hami_ledger::SlotState;
use hami_ledger::paths::LedgerDir;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use thiserror::Error;

pub use self::http::{CONTENT_TYPE, MetricsServer, serve};
use crate::view::NodeView;

/// One process the enforcement backstop found holding more device memory than its container's
/// cap, as the driver reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverCapSample {
    pub container_id: String,
    pub device_uuid: String,
    pub pid: u32,
    pub used_bytes: u64,
    pub limit_bytes: u64,
}

/// Figures that come from outside the ledger (the enforcement backstop), asked at each scrape.
pub trait ScrapeExtras: Send + Sync {
    fn over_cap(&self) -> Vec<OverCapSample>;
    fn kills(&self) -> u64;
}

/// No backstop: nothing over cap, no kills.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoExtras;

impl ScrapeExtras for NoExtras {
    fn over_cap(&self) -> Vec<OverCapSample> {
        Vec::new()
    }

    fn kills(&self) -> u64 {
        0
    }
}

/// The metrics could not be rendered or served.
#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("cannot encode the metrics: {0}")]
    Encode(#[from] std::fmt::Error),
    #[error("cannot serve metrics on {addr}: {message}")]
    Bind {
        addr: std::net::SocketAddr,
        message: String,
    },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabels {
    device_uuid: String,
    device_index: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerLabels {
    container_id: String,
    pod_namespace: String,
    pod_name: String,
    container_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerDeviceLabels {
    container_id: String,
    device_uuid: String,
    device_index: String,
    pod_namespace: String,
    pod_name: String,
    container_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OverCapLabels {
    container_id: String,
    device_uuid: String,
    pid: String,
}

type Ratio = Gauge<f64, AtomicU64>;
type Seconds = Counter<f64, AtomicU64>;

/// Renders the node's metrics; keeps the previous scrape's busy counters, so the utilization
/// ratio is the share of the device a container used between two scrapes.
pub struct Scraper {
    ledger: LedgerDir,
    extras: Arc<dyn ScrapeExtras>,
    /// (container id, device uuid) -> (when, cumulative measured busy ns) at the last scrape.
    previous: Mutex<HashMap<(String, String), (Instant, u64)>>,
}

impl Scraper {
    pub fn new(ledger: LedgerDir, extras: Arc<dyn ScrapeExtras>) -> Self {
        Self {
            ledger,
            extras,
            previous: Mutex::new(HashMap::new()),
        }
    }

    /// Reads the ledger afresh and renders OpenMetrics text.
    pub fn scrape(&self) -> Result<String, MetricsError> {
        let view = NodeView::read(&self.ledger);
        let mut previous = self
            .previous
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        render(&view, self.extras.as_ref(), &mut previous, Instant::now())
    }
}

fn bytes(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn count(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Registers `metric` under `name` and hands it back for filling.
fn add<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

fn render(
    view: &NodeView,
    extras: &dyn ScrapeExtras,
    previous: &mut HashMap<(String, String), (Instant, u64)>,
    now: Instant,
) -> Result<String, MetricsError> {
    let mut registry = Registry::default();
    let node_problem = add(
        &mut registry,
        "hami_node_ledger_problem",
        "1 when the node part of the ledger cannot be read",
        Gauge::<i64>::default(),
    );
    node_problem.set(i64::from(view.node_problem.is_some()));

    let total = add(
        &mut registry,
        "hami_device_memory_total_bytes",
        "Device memory as the node part records it",
        Family::<DeviceLabels, Gauge>::default(),
    );
    let committed = add(
        &mut registry,
        "hami_device_memory_committed_bytes",
        "Sum of the memory caps of the containers on the device",
        Family::<DeviceLabels, Gauge>::default(),
    );
    let used = add(
        &mut registry,
        "hami_device_memory_used_bytes",
        "Sum of the device memory the containers' usage parts hold",
        Family::<DeviceLabels, Gauge>::default(),
    );
    let containers = add(
        &mut registry,
        "hami_device_containers",
        "Containers whose limits name the device",
        Family::<DeviceLabels, Gauge>::default(),
    );
    let uncapped = add(
        &mut registry,
        "hami_device_uncapped_containers",
        "Containers on the device without a memory cap",
        Family::<DeviceLabels, Gauge>::default(),
    );
    for device in &view.devices {
        let labels = DeviceLabels {
            device_uuid: device.info.uuid.clone(),
            device_index: device.info.index.to_string(),
        };
        total
            .get_or_create(&labels)
            .set(bytes(device.info.total_memory));
        committed
            .get_or_create(&labels)
            .set(bytes(device.memory_committed));
        used.get_or_create(&labels).set(bytes(device.memory_used));
        containers
            .get_or_create(&labels)
            .set(count(device.containers));
        uncapped
            .get_or_create(&labels)
            .set(count(device.uncapped_containers));
    }

    render_containers(&mut registry, view, previous, now);
    render_extras(&mut registry, extras);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

fn render_containers(
    registry: &mut Registry,
    view: &NodeView,
    previous: &mut HashMap<(String, String), (Instant, u64)>,
    now: Instant,
) {
    let problem = add(
        registry,
        "hami_container_ledger_problem",
        "1 when the container's limits or usage part cannot be read",
        Family::<ContainerLabels, Gauge>::default(),
    );
    let processes = add(
        registry,
        "hami_container_processes",
        "Processes of the container holding a slot in its usage part (lock held)",
        Family::<ContainerLabels, Gauge>::default(),
    );
    let mem_used = add(
        registry,
        "hami_vgpu_memory_used_bytes",
        "Device memory the container holds, per its usage part",
        Family::<ContainerDeviceLabels, Gauge>::default(),
    );
    let mem_limit = add(
        registry,
        "hami_vgpu_memory_limit_bytes",
        "The container's memory cap on the device (absent when uncapped)",
        Family::<ContainerDeviceLabels, Gauge>::default(),
    );
    let core_cap = add(
        registry,
        "hami_vgpu_core_allocated_ratio",
        "The container's compute cap on the device, 0-1 (absent when uncapped)",
        Family::<ContainerDeviceLabels, Ratio>::default(),
    );
    let utilization = add(
        registry,
        "hami_container_device_utilization_ratio",
        "Share of the device's time the container kept it busy since the previous scrape, 0-1",
        Family::<ContainerDeviceLabels, Ratio>::default(),
    );
    let busy = add(
        registry,
        "hami_container_compute_busy_seconds",
        "Device time the container's measurer recorded as busy",
        Family::<ContainerDeviceLabels, Seconds>::default(),
    );
    let throttled = add(
        registry,
        "hami_container_compute_throttled_seconds",
        "Time the container's kernel launches waited for budget or yielded to priority",
        Family::<ContainerDeviceLabels, Seconds>::default(),
    );
    let launches = add(
        registry,
        "hami_container_kernel_launches",
        "Kernel launches the compute limiter admitted",
        Family::<ContainerDeviceLabels, Counter>::default(),
    );

    let mut seen = Vec::new();
    for container in &view.containers {
        let labels = ContainerLabels {
            container_id: container.id.clone(),
            pod_namespace: String::new(),
            pod_name: String::new(),
            container_name: String::new(),
        };
        problem
            .get_or_create(&labels)
            .set(i64::from(container.problem.is_some()));
        if let Some(usage) = &container.usage {
            let live = usage
                .snapshot
                .slots
                .iter()
                .filter(|s| s.state == SlotState::Live && s.alive == Some(true))
                .count();
            processes.get_or_create(&labels).set(count(live));
        }
        for device in view.container_devices(container) {
            let labels = ContainerDeviceLabels {
                container_id: container.id.clone(),
                device_uuid: device.uuid.to_owned(),
                device_index: device.node_index.map(|i| i.to_string()).unwrap_or_default(),
                pod_namespace: String::new(),
                pod_name: String::new(),
                container_name: String::new(),
            };
            if let Some(held) = device.used {
                mem_used.get_or_create(&labels).set(bytes(held));
            }
            if let Some(cap) = device.limit.memory_limit {
                mem_limit.get_or_create(&labels).set(bytes(cap));
            }
            if let Some(percent) = device.limit.compute_percent {
                core_cap
                    .get_or_create(&labels)
                    .set(f64::from(percent) / 100.0);
            }
            let Some(compute) = device.compute else {
                continue;
            };
            busy.get_or_create(&labels)
                .inc_by(compute.measured_ns as f64 / 1e9);
            throttled
                .get_or_create(&labels)
                .inc_by(compute.throttled_ns as f64 / 1e9);
            launches.get_or_create(&labels).inc_by(compute.launches);
            let key = (container.id.clone(), device.uuid.to_owned());
            if let Some((then, before)) = previous.get(&key) {
                let wall = now.saturating_duration_since(*then).as_nanos() as f64;
                // A counter that went back (a new usage part under the same id) restarts.
                if wall > 0.0 && compute.measured_ns >= *before {
                    let share = (compute.measured_ns - before) as f64 / wall;
                    utilization
                        .get_or_create(&labels)
                        .set(share.clamp(0.0, 1.0));
                }
            }
            previous.insert(key.clone(), (now, compute.measured_ns));
            seen.push(key);
        }
    }
    // Containers that are gone take their last sample with them.
    previous.retain(|key, _| seen.contains(key));
}

fn render_extras(registry: &mut Registry, extras: &dyn ScrapeExtras) {
    let over_cap = add(
        registry,
        "hami_backstop_over_cap_bytes",
        "Bytes a process holds above its container's cap, as the driver reports it",
        Family::<OverCapLabels, Gauge>::default(),
    );
    for sample in extras.over_cap() {
        over_cap
            .get_or_create(&OverCapLabels {
                container_id: sample.container_id,
                device_uuid: sample.device_uuid,
                pid: sample.pid.to_string(),
            })
            .set(bytes(sample.used_bytes.saturating_sub(sample.limit_bytes)));
    }
    let kills = add(
        registry,
        "hami_backstop_kills",
        "Processes the enforcement backstop killed for exceeding their container's cap",
        Counter::<u64>::default(),
    );
    kills.inc_by(extras.kills());
}

#[cfg(test)]
mod tests;
