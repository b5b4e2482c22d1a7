//! Device health as the plugin reports it to kubelet: a [`HealthReport`] (the unhealthy devices
//! and why) published on a `tokio::sync::watch` channel by a poller that asks a [`HealthProbe`]
//! about every device at a fixed interval. The NVML probe is [`super::nvml_probe::NvmlProbe`].

use std::collections::BTreeMap;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

/// How often the poller asks about every device by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The devices currently unhealthy, by UUID, with the reason; every other device is healthy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthReport {
    unhealthy: BTreeMap<String, String>,
}

impl HealthReport {
    /// Whether the device with `uuid` may be allocated.
    pub fn is_healthy(&self, uuid: &str) -> bool {
        !self.unhealthy.contains_key(uuid)
    }

    /// The unhealthy devices and why.
    pub fn unhealthy(&self) -> &BTreeMap<String, String> {
        &self.unhealthy
    }

    /// This report with `uuid` unhealthy for `reason`.
    pub fn with_unhealthy(mut self, uuid: &str, reason: &str) -> Self {
        self.unhealthy.insert(uuid.to_string(), reason.to_string());
        self
    }

    /// Whether the two reports disagree about which devices are healthy (reasons aside).
    fn differs_from(&self, other: &HealthReport) -> bool {
        !self.unhealthy.keys().eq(other.unhealthy.keys())
    }
}

/// Why a device is unhealthy, from one probe.
pub type Unhealthy = String;

/// Asks the driver whether one device works.
pub trait HealthProbe: Send + 'static {
    /// `Ok(())` when the device with `uuid` answers normally, else why not.
    fn check(&mut self, uuid: &str) -> Result<(), Unhealthy>;
}

/// A channel whose receivers see every change of the node's device health.
pub fn channel() -> (watch::Sender<HealthReport>, watch::Receiver<HealthReport>) {
    watch::channel(HealthReport::default())
}

/// Polls `probe` about every device in `uuids` every `interval` on a thread of its own (probes
/// are blocking driver calls), publishing a new report whenever the set of unhealthy devices
/// changes. The thread ends when every receiver of `sender` is gone.
pub fn spawn_poller<P: HealthProbe>(
    mut probe: P,
    uuids: Vec<String>,
    interval: Duration,
    sender: watch::Sender<HealthReport>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("hami-device-health".to_string())
        .spawn(move || {
            while !sender.is_closed() {
                let mut report = HealthReport::default();
                for uuid in &uuids {
                    if let Err(reason) = probe.check(uuid) {
                        report.unhealthy.insert(uuid.clone(), reason);
                    }
                }
                publish(&sender, report);
                std::thread::sleep(interval);
            }
        })
}

/// Replaces the current report when it changes which devices are healthy, logging each change.
fn publish(sender: &watch::Sender<HealthReport>, report: HealthReport) {
    sender.send_if_modified(|current| {
        if !report.differs_from(current) {
            return false;
        }
        for (uuid, reason) in &report.unhealthy {
            if current.is_healthy(uuid) {
                log::warn!("device {uuid} is unhealthy: {reason}");
            }
        }
        for uuid in current.unhealthy.keys() {
            if report.is_healthy(uuid) {
                log::info!("device {uuid} is healthy again");
            }
        }
        *current = report;
        true
    });
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A probe whose answers the test sets.
    #[derive(Clone, Default)]
    struct ScriptedProbe(Arc<Mutex<BTreeMap<String, String>>>);

    impl HealthProbe for ScriptedProbe {
        fn check(&mut self, uuid: &str) -> Result<(), Unhealthy> {
            match self.0.lock().unwrap().get(uuid) {
                Some(reason) => Err(reason.clone()),
                None => Ok(()),
            }
        }
    }

    #[test]
    fn reports_change_only_when_a_device_changes_health_and_the_poller_ends_with_its_readers() {
        let probe = ScriptedProbe::default();
        let (sender, mut receiver) = channel();
        let poller = spawn_poller(
            probe.clone(),
            vec!["a".into(), "b".into()],
            Duration::from_millis(5),
            sender,
        )
        .unwrap();
        probe.0.lock().unwrap().insert("b".into(), "lost".into());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            receiver.changed().await.unwrap();
            let report = receiver.borrow_and_update().clone();
            assert!(report.is_healthy("a"));
            assert_eq!(
                report.unhealthy().get("b").map(String::as_str),
                Some("lost")
            );
            probe.0.lock().unwrap().remove("b");
            receiver.changed().await.unwrap();
            assert!(receiver.borrow_and_update().unhealthy().is_empty());
        });
        drop(receiver);
        poller.join().unwrap();
    }

    #[test]
    fn a_new_reason_for_an_unhealthy_device_is_no_change_for_kubelet() {
        let (sender, mut receiver) = channel();
        publish(&sender, HealthReport::default().with_unhealthy("a", "lost"));
        assert!(receiver.has_changed().unwrap());
        receiver.mark_unchanged();
        publish(
            &sender,
            HealthReport::default().with_unhealthy("a", "still lost"),
        );
        assert!(!receiver.has_changed().unwrap());
        publish(&sender, HealthReport::default());
        assert!(receiver.has_changed().unwrap());
    }
}
