//! A container's entry in the node ledger: `<root>/containers/<id>/` with its limits, its usage
//! part and the `ld.so.preload` file mounted into it; and what all entries commit per device.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hami_ledger::owner::{OwnerError, OwnerLock, ProcessAnchor};
use hami_ledger::{ContainerLimits, UsageLedger};
use thiserror::Error;

/// Where the library and the ledger parts are mounted inside a capped container: one
/// definition, which the library reads whatever the container's environment says.
pub use hami_ledger::paths::{
    CONTAINER_LIBRARY_PATH as LIBRARY_IN_CONTAINER, CONTAINER_LIMITS_PATH as LIMITS_IN_CONTAINER,
    CONTAINER_NODE_PATH as NODE_IN_CONTAINER, CONTAINER_USAGE_PATH as USAGE_IN_CONTAINER,
};

/// Why a ledger entry could not be written or removed.
#[derive(Debug, Error)]
pub enum EntryError {
    #[error("container id {0:?} cannot name a ledger directory")]
    BadContainerId(String),
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write ledger part {path}: {message}")]
    Ledger { path: PathBuf, message: String },
    #[error(transparent)]
    Owner(#[from] OwnerError),
}

/// Host paths of one container's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPaths {
    pub dir: PathBuf,
    pub limits: PathBuf,
    pub usage: PathBuf,
    pub preload: PathBuf,
}

/// The node part's host path.
pub fn node_path(root: &Path) -> PathBuf {
    root.join("node.ledger")
}

fn containers_dir(root: &Path) -> PathBuf {
    root.join("containers")
}

/// The entry paths of container `id`, refusing ids that would escape the ledger directory.
pub fn entry_paths(root: &Path, id: &str) -> Result<EntryPaths, EntryError> {
    let valid = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(EntryError::BadContainerId(id.to_owned()));
    }
    let dir = containers_dir(root).join(id);
    Ok(EntryPaths {
        limits: dir.join("limits.ledger"),
        usage: dir.join("usage.ledger"),
        preload: dir.join("ld.so.preload"),
        dir,
    })
}

/// Takes the owner lock of container `id`'s entry (creating its directory): held by the shim
/// until it removes the entry, so the node agent's janitor never removes the entry of a
/// container whose shim lives (`hami_ledger::owner`). Taken before [`write_entry`].
pub fn take_ownership(root: &Path, id: &str) -> Result<OwnerLock, EntryError> {
    let paths = entry_paths(root, id)?;
    Ok(OwnerLock::acquire(&paths.dir)?)
}

/// Records where container `id`'s processes are (its first process's host PID, for its
/// cgroup), for the node agent's backstop. Host-only: not mounted into the container.
pub fn record_init_pid(root: &Path, id: &str, init_pid: u32) -> Result<(), EntryError> {
    let paths = entry_paths(root, id)?;
    Ok(ProcessAnchor::Cgroup { init_pid }.write(&paths.dir)?)
}

/// Writes container `limits.container_id`'s entry: limits, a zeroed usage part, `ld.so.preload`.
/// The caller holds the entry's owner lock ([`take_ownership`]).
pub fn write_entry(root: &Path, limits: &ContainerLimits) -> Result<EntryPaths, EntryError> {
    let paths = entry_paths(root, &limits.container_id)?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| EntryError::Io { path, source }
    };
    std::fs::create_dir_all(&paths.dir).map_err(io(&paths.dir))?;
    hami_ledger::limits::write(&paths.limits, limits).map_err(|e| EntryError::Ledger {
        path: paths.limits.clone(),
        message: e.to_string(),
    })?;
    UsageLedger::create(&paths.usage, limits.devices.len()).map_err(|e| EntryError::Ledger {
        path: paths.usage.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&paths.preload, format!("{LIBRARY_IN_CONTAINER}\n"))
        .map_err(io(&paths.preload))?;
    Ok(paths)
}

/// Removes container `id`'s entry; an absent entry is not an error.
pub fn remove_entry(root: &Path, id: &str) -> Result<(), EntryError> {
    let paths = entry_paths(root, id)?;
    match std::fs::remove_dir_all(&paths.dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(EntryError::Io {
            path: paths.dir,
            source: e,
        }),
        _ => Ok(()),
    }
}

/// What the entries commit on one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Commitment {
    pub memory: u64,
    pub compute_percent: u32,
}

/// Sums, per device UUID, what every container entry except `except_id` commits.
///
/// An entry without a memory cap commits the whole device (`total_memory` gives its size). An
/// entry whose limits cannot be read (being written, or corrupt) is skipped with a warning: the
/// placement lock makes the first impossible for entries written by shims.
pub fn commitments(
    root: &Path,
    total_memory: &HashMap<String, u64>,
    except_id: &str,
) -> HashMap<String, Commitment> {
    let mut sums: HashMap<String, Commitment> = HashMap::new();
    let Ok(entries) = std::fs::read_dir(containers_dir(root)) else {
        return sums;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_str() == Some(except_id) {
            continue;
        }
        let path = entry.path().join("limits.ledger");
        let limits = match hami_ledger::limits::read(&path) {
            Ok(limits) => limits,
            Err(e) => {
                log::warn!("placement ignores {}: {e}", path.display());
                continue;
            }
        };
        for device in limits.devices {
            let whole = total_memory.get(&device.uuid).copied().unwrap_or(0);
            let sum = sums.entry(device.uuid).or_default();
            sum.memory = sum
                .memory
                .saturating_add(device.memory_limit.unwrap_or(whole));
            sum.compute_percent = sum
                .compute_percent
                .saturating_add(device.compute_percent.unwrap_or(0));
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use hami_ledger::{ComputePolicy, DeviceLimit, Priority};

    use super::*;

    fn limits(id: &str, uuid: &str, memory: Option<u64>, compute: Option<u32>) -> ContainerLimits {
        ContainerLimits {
            container_id: id.to_owned(),
            devices: vec![DeviceLimit {
                uuid: uuid.to_owned(),
                memory_limit: memory,
                compute_percent: compute,
                policy: ComputePolicy::Hard,
                priority: Priority::Normal,
            }],
        }
    }

    #[test]
    fn entry_is_written_readable_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let written = limits("c1", "GPU-a", Some(1 << 30), Some(40));
        let paths = write_entry(root.path(), &written).unwrap();
        assert_eq!(hami_ledger::limits::read(&paths.limits).unwrap(), written);
        assert!(UsageLedger::attach(&paths.usage).is_ok());
        assert_eq!(
            std::fs::read_to_string(&paths.preload).unwrap(),
            format!("{LIBRARY_IN_CONTAINER}\n")
        );
        remove_entry(root.path(), "c1").unwrap();
        assert!(!paths.dir.exists());
        remove_entry(root.path(), "c1").unwrap();
    }

    #[test]
    fn an_owned_entry_cannot_be_taken_until_its_owner_lets_go() {
        let root = tempfile::tempdir().unwrap();
        let owner = take_ownership(root.path(), "c1").unwrap();
        let paths = write_entry(root.path(), &limits("c1", "GPU-a", Some(1), None)).unwrap();
        record_init_pid(root.path(), "c1", 42).unwrap();
        assert_eq!(
            ProcessAnchor::read(&paths.dir).unwrap(),
            Some(ProcessAnchor::Cgroup { init_pid: 42 })
        );
        assert!(OwnerLock::try_take(&paths.dir).unwrap().is_none());
        remove_entry(root.path(), "c1").unwrap();
        drop(owner);
        assert!(!paths.dir.exists());
    }

    #[test]
    fn commitments_sum_other_containers_and_uncapped_takes_the_device() {
        let root = tempfile::tempdir().unwrap();
        write_entry(root.path(), &limits("c1", "GPU-a", Some(1 << 30), Some(40))).unwrap();
        write_entry(root.path(), &limits("c2", "GPU-a", Some(2 << 30), None)).unwrap();
        write_entry(root.path(), &limits("c3", "GPU-b", None, Some(10))).unwrap();
        write_entry(root.path(), &limits("me", "GPU-b", Some(1), Some(90))).unwrap();
        let totals = HashMap::from([
            ("GPU-a".to_owned(), 8 << 30),
            ("GPU-b".to_owned(), 16 << 30),
        ]);
        let sums = commitments(root.path(), &totals, "me");
        assert_eq!(
            sums["GPU-a"],
            Commitment {
                memory: 3 << 30,
                compute_percent: 40
            }
        );
        assert_eq!(
            sums["GPU-b"],
            Commitment {
                memory: 16 << 30,
                compute_percent: 10
            }
        );
    }

    #[test]
    fn ids_that_escape_the_directory_are_refused() {
        let root = Path::new("/run/hami");
        for id in ["", "..", "a/b", "../x", "a b"] {
            assert!(
                matches!(entry_paths(root, id), Err(EntryError::BadContainerId(_))),
                "{id}"
            );
        }
        assert_eq!(
            entry_paths(root, "abc-1_2.3").unwrap().usage,
            PathBuf::from("/run/hami/containers/abc-1_2.3/usage.ledger")
        );
    }
}
