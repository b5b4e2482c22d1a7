//! One host-side thread per capped container that publishes its compute demand and priority to
//! the node part, which containers may only read. The compute limiter of other containers on
//! the same device reads it: `high` priority and `burst` decisions depend on it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use hami_ledger::{NodeLedger, UsageLedger, compute, limits};

use crate::ledger_entry::{EntryPaths, node_path};

/// The publishing threads of this shim's containers, by container id.
#[derive(Debug, Default)]
pub struct ContentionPublishers {
    threads: Mutex<HashMap<String, Publisher>>,
}

#[derive(Debug)]
struct Publisher {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl ContentionPublishers {
    /// Starts publishing for container `id`; a failure is logged, never fatal to the container
    /// (its caps still hold; only priority between tenants is lost).
    pub fn start(&self, id: &str, root: &Path, paths: &EntryPaths) {
        let stop = Arc::new(AtomicBool::new(false));
        let (node, usage, limits) = (node_path(root), paths.usage.clone(), paths.limits.clone());
        let flag = Arc::clone(&stop);
        let container = id.to_owned();
        let spawned = std::thread::Builder::new()
            .name(format!("contention-{id}"))
            .spawn(move || {
                let publish = || -> Result<(), String> {
                    let node = NodeLedger::open_writable(&node).map_err(|e| e.to_string())?;
                    let usage = UsageLedger::attach(&usage).map_err(|e| e.to_string())?;
                    let limits = limits::read(&limits).map_err(|e| e.to_string())?;
                    compute::publish_contention(&node, &usage, &limits, &flag)
                        .map_err(|e| e.to_string())
                };
                if let Err(e) = publish() {
                    log::warn!("container {container}: compute priority is not published: {e}");
                }
            });
        match spawned {
            Ok(thread) => {
                let mut threads = self.lock();
                threads.insert(id.to_owned(), Publisher { stop, thread });
            }
            Err(e) => log::warn!("container {id}: cannot start the contention publisher: {e}"),
        }
    }

    /// Stops publishing for container `id` and waits for the thread to give its slots back.
    pub fn stop(&self, id: &str) {
        let publisher = self.lock().remove(id);
        if let Some(publisher) = publisher {
            publisher.stop.store(true, Ordering::Relaxed);
            let _ = publisher.thread.join();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Publisher>> {
        // Single inserts and removes cannot leave the map inconsistent after a panic.
        self.threads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use hami_ledger::compute::{Contention, NodeContentionWords};
    use hami_ledger::{ComputePolicy, ContainerLimits, DeviceInfo, DeviceLimit, Priority, Vendor};

    use super::*;
    use crate::ledger_entry::write_entry;

    fn claimed_slots(root: &Path) -> u32 {
        let node = NodeLedger::open(node_path(root)).unwrap();
        Contention::new(&NodeContentionWords::new(&node, 0)).claimed_slots()
    }

    #[test]
    fn a_capped_container_holds_a_contention_slot_until_it_is_released() {
        let root = tempfile::tempdir().unwrap();
        let device = DeviceInfo {
            uuid: "GPU-a".into(),
            index: 0,
            vendor: Vendor::Nvidia,
            total_memory: 8 << 30,
            compute_units: 0,
        };
        NodeLedger::create(node_path(root.path()), &[device]).unwrap();
        let limits = ContainerLimits {
            container_id: "c1".into(),
            devices: vec![DeviceLimit {
                uuid: "GPU-a".into(),
                memory_limit: Some(1 << 30),
                compute_percent: Some(30),
                policy: ComputePolicy::Hard,
                priority: Priority::High,
            }],
        };
        let paths = write_entry(root.path(), &limits).unwrap();
        let publishers = ContentionPublishers::default();
        publishers.start("c1", root.path(), &paths);

        let deadline = Instant::now() + Duration::from_secs(5);
        while claimed_slots(root.path()) == 0 {
            assert!(
                Instant::now() < deadline,
                "the publisher never claimed a slot"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        publishers.stop("c1");
        assert_eq!(
            claimed_slots(root.path()),
            0,
            "the slot is given back at release"
        );
    }
}
