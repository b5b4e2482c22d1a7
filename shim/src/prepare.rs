//! What happens to a container at `Create`: annotations → placement → ledger entry → spec rewrite.
//!
//! Placement and the ledger write happen under an exclusive `flock` on `<root>/placement.lock`,
//! so two containers created at once on this node see each other's commitments. The shim
//! owns each entry it writes (`hami_ledger::owner`: an `flock` on the entry's host-only
//! `owner.lock`, taken before the entry is written, let go after it is removed), so the node
//! agent's janitor removes only entries whose shim is gone.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use containerd_shim::api::Options as RuncOptions;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use hami_ledger::owner::{OwnerLock, PLACEMENT_LOCK_FILE};
use hami_ledger::paths::{ENV_LIMITS, ENV_NODE, ENV_USAGE};
use hami_ledger::{ContainerLimits, DeviceLimit};
use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;

use crate::config::{ConfigError, ShimConfig};
use crate::contention::ContentionPublishers;
use crate::inventory::{self, InventoryError};
use crate::ledger_entry::{
    self, EntryError, EntryPaths, LIBRARY_IN_CONTAINER, LIMITS_IN_CONTAINER, NODE_IN_CONTAINER,
    USAGE_IN_CONTAINER,
};
use crate::placement::{self, DeviceState, PlacedDevice, PlacementError, Visibility};
use crate::proxy::ContainerPreparer;
use crate::spec_rewrite::{self, BindMount, Injection, SpecError};
use hami_request::{ContainerRequest, RequestError};

/// Why a container could not be prepared; the text reaches `ctr` / kubelet.
#[derive(Debug, Error)]
pub enum PrepareError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Annotation(#[from] RequestError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error("cannot place the container: {0}")]
    Placement(#[from] PlacementError),
    #[error(transparent)]
    Entry(#[from] EntryError),
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("library {0} (library_path in the shim config) does not exist")]
    LibraryMissing(PathBuf),
}

/// Holds the node's placement lock until dropped.
struct PlacementLock(#[allow(dead_code)] Flock<File>);

impl PlacementLock {
    fn acquire(root: &Path) -> Result<Self, PrepareError> {
        let path = root.join(PLACEMENT_LOCK_FILE);
        let lock_err = |source| PrepareError::Lock {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(root).map_err(lock_err)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_err)?;
        let locked = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| lock_err(std::io::Error::from(errno)))?;
        Ok(Self(locked))
    }
}

/// Prepares containers with the node's ledger, configured by `/etc/hami/shim.toml`.
#[derive(Debug, Default)]
pub struct LedgerPreparer {
    publishers: ContentionPublishers,
    /// The owner lock of each entry this shim wrote, by container id.
    owners: Mutex<HashMap<String, OwnerLock>>,
}

impl LedgerPreparer {
    fn prepare_container(
        &self,
        id: &str,
        bundle: &Path,
    ) -> Result<Option<Injection>, PrepareError> {
        let started = std::time::Instant::now();
        let mut spec = spec_rewrite::read_spec(bundle)?;
        let notes = spec_rewrite::annotations(&spec);
        if spec_rewrite::is_sandbox(&notes) {
            return Ok(None);
        }
        let name = spec_rewrite::container_name(&notes, id);
        let Some(mut request) = ContainerRequest::from_annotations(&notes, name)? else {
            return Ok(None);
        };
        let config = ShimConfig::load()?;
        if !config.library_path.is_file() {
            return Err(PrepareError::LibraryMissing(config.library_path));
        }
        request
            .placement
            .get_or_insert(config.placement_policy.into());
        let visible = spec_rewrite::process_env(&spec, "NVIDIA_VISIBLE_DEVICES");
        let visibility = Visibility::from_env_value(visible.as_deref());

        let (placed, paths, owner) =
            place_and_record(&config.ledger_dir, id, &request, &visibility)?;
        let injection = injection(&config, &paths, &placed);
        let rewritten = spec_rewrite::inject_into_spec(&mut spec, &injection)
            .and_then(|()| spec_rewrite::write_spec(bundle, &spec));
        if let Err(e) = rewritten {
            let _ = ledger_entry::remove_entry(&config.ledger_dir, id);
            drop(owner);
            return Err(e.into());
        }
        self.owned().insert(id.to_owned(), owner);
        self.publishers.start(id, &config.ledger_dir, &paths);
        log::info!(
            "container {id}: capped on {:?}, prepared in {:?}",
            placed.iter().map(|p| &p.uuid).collect::<Vec<_>>(),
            started.elapsed()
        );
        Ok(Some(injection))
    }

    fn owned(&self) -> std::sync::MutexGuard<'_, HashMap<String, OwnerLock>> {
        // Single inserts and removes cannot leave the map inconsistent after a panic.
        self.owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Places the container and writes its ledger entry, both under the node's placement lock;
/// returns the entry's owner lock, taken before anything is written.
fn place_and_record(
    root: &Path,
    id: &str,
    request: &ContainerRequest,
    visibility: &Visibility,
) -> Result<(Vec<PlacedDevice>, EntryPaths, OwnerLock), PrepareError> {
    let _lock = PlacementLock::acquire(root)?;
    let want_models =
        !request.selection.use_types.is_empty() || !request.selection.nouse_types.is_empty();
    let devices = inventory::load_or_discover(root, want_models)?;
    let totals: HashMap<String, u64> = devices
        .iter()
        .map(|d| (d.info.uuid.clone(), d.info.total_memory))
        .collect();
    let committed = ledger_entry::commitments(root, &totals, id);
    let states: Vec<DeviceState> = devices
        .iter()
        .map(|d| {
            let c = committed.get(&d.info.uuid).copied().unwrap_or_default();
            DeviceState {
                uuid: d.info.uuid.clone(),
                index: d.info.index,
                type_names: d.type_names.clone(),
                total_memory: d.info.total_memory,
                committed_memory: c.memory,
                committed_compute: c.compute_percent,
            }
        })
        .collect();
    let placed = placement::place(&states, visibility, request)?;
    let limits = ContainerLimits {
        container_id: id.to_owned(),
        devices: placed
            .iter()
            .map(|p| DeviceLimit {
                uuid: p.uuid.clone(),
                memory_limit: p.memory_limit,
                compute_percent: request.compute_percent,
                policy: request.policy,
                priority: request.priority,
            })
            .collect(),
    };
    let owner = ledger_entry::take_ownership(root, id)?;
    match ledger_entry::write_entry(root, &limits) {
        Ok(paths) => Ok((placed, paths, owner)),
        Err(e) => {
            let _ = ledger_entry::remove_entry(root, id);
            Err(e.into())
        }
    }
}

/// The mounts and environment a capped container gets.
fn injection(config: &ShimConfig, paths: &EntryPaths, placed: &[PlacedDevice]) -> Injection {
    let bind = |source: &Path, destination: &str, read_only| BindMount {
        source: source.to_owned(),
        destination: destination.to_owned(),
        read_only,
    };
    let uuids: Vec<&str> = placed.iter().map(|p| p.uuid.as_str()).collect();
    Injection {
        mounts: vec![
            bind(&config.library_path, LIBRARY_IN_CONTAINER, true),
            bind(&paths.preload, "/etc/ld.so.preload", true),
            bind(
                &ledger_entry::node_path(&config.ledger_dir),
                NODE_IN_CONTAINER,
                true,
            ),
            bind(&paths.limits, LIMITS_IN_CONTAINER, true),
            bind(&paths.usage, USAGE_IN_CONTAINER, false),
        ],
        env: vec![
            (ENV_NODE.into(), NODE_IN_CONTAINER.into()),
            (ENV_LIMITS.into(), LIMITS_IN_CONTAINER.into()),
            (ENV_USAGE.into(), USAGE_IN_CONTAINER.into()),
            ("NVIDIA_VISIBLE_DEVICES".into(), uuids.join(",")),
            ("LD_PRELOAD".into(), LIBRARY_IN_CONTAINER.into()),
        ],
    }
}

/// Type URL of the runc shim's options.
const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";

/// The runc options the backend gets: from the shim config, since containerd sends the generic
/// `runtimeoptions.v1.Options` to a non-runc runtime type and the runc shim cannot decode it.
pub fn runc_options(config: &ShimConfig) -> Option<Any> {
    if config.runtime_binary == "runc" && !config.systemd_cgroup {
        return None;
    }
    let options = RuncOptions {
        binary_name: config.runtime_binary.clone(),
        systemd_cgroup: config.systemd_cgroup,
        ..Default::default()
    };
    let value = options.write_to_bytes().ok()?;
    Some(Any {
        type_url: RUNC_OPTIONS_TYPE.to_owned(),
        value,
        ..Default::default()
    })
}

impl ContainerPreparer for LedgerPreparer {
    type Error = PrepareError;

    fn prepare(&self, id: &str, bundle: &Path) -> Result<Option<Injection>, PrepareError> {
        self.prepare_container(id, bundle)
    }

    fn created(&self, id: &str, pid: u32) {
        self.publishers.created(id, pid);
        if self.owned().contains_key(id) {
            let root = ShimConfig::load().unwrap_or_default().ledger_dir;
            if let Err(e) = ledger_entry::record_init_pid(&root, id, pid) {
                log::warn!("container {id}: the node agent cannot find its processes: {e}");
            }
        }
    }

    fn release(&self, id: &str) {
        self.publishers.stop(id);
        let owner = self.owned().remove(id);
        let root = ShimConfig::load().unwrap_or_default().ledger_dir;
        if let Err(e) = ledger_entry::remove_entry(&root, id) {
            log::warn!("container {id}: {e}");
        }
        // Let go only once the entry is gone: a janitor never sees it unowned before.
        drop(owner);
    }

    fn backend_options(&self, incoming: Option<&Any>) -> Option<Any> {
        if let Some(any) = incoming
            && any.type_url.ends_with(RUNC_OPTIONS_TYPE)
        {
            return Some(any.clone());
        }
        runc_options(&ShimConfig::load().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_options_carry_the_configured_runtime_and_cgroup_driver() {
        assert_eq!(runc_options(&ShimConfig::default()), None);
        let config = ShimConfig {
            runtime_binary: "nvidia-container-runtime".into(),
            systemd_cgroup: true,
            ..ShimConfig::default()
        };
        let any = runc_options(&config).unwrap();
        assert_eq!(any.type_url, RUNC_OPTIONS_TYPE);
        let decoded = RuncOptions::parse_from_bytes(&any.value).unwrap();
        assert_eq!(decoded.binary_name, "nvidia-container-runtime");
        assert!(decoded.systemd_cgroup);
    }

    #[test]
    fn injection_mounts_ledger_parts_with_the_right_modes() {
        let config = ShimConfig::default();
        let paths = ledger_entry::entry_paths(&config.ledger_dir, "c1").unwrap();
        let placed = [PlacedDevice {
            uuid: "GPU-a".into(),
            memory_limit: Some(1),
            committed_memory: 1,
        }];
        let inj = injection(&config, &paths, &placed);
        let mode = |dest: &str| {
            inj.mounts
                .iter()
                .find(|m| m.destination == dest)
                .unwrap()
                .read_only
        };
        assert!(mode(LIBRARY_IN_CONTAINER));
        assert!(mode("/etc/ld.so.preload"));
        assert!(mode(NODE_IN_CONTAINER));
        assert!(mode(LIMITS_IN_CONTAINER));
        assert!(!mode(USAGE_IN_CONTAINER));
        assert!(
            inj.env
                .contains(&("NVIDIA_VISIBLE_DEVICES".into(), "GPU-a".into()))
        );
    }
}
