//! Where the parts live: on the host under one directory, inside a container at fixed paths
//! named by environment variables.

use std::path::{Path, PathBuf};

use crate::model::InputError;
use crate::{CONTAINER_ID_LEN, text};

/// Host directory of the ledger when `HAMI_LEDGER_DIR` is not set.
pub const DEFAULT_ROOT: &str = "/run/hami";
/// Host tools: overrides [`DEFAULT_ROOT`].
pub const ENV_LEDGER_DIR: &str = "HAMI_LEDGER_DIR";
/// In a container: full path of the node part.
pub const ENV_NODE: &str = "HAMI_LEDGER_NODE";
/// In a container: full path of the container's limits part.
pub const ENV_LIMITS: &str = "HAMI_LEDGER_LIMITS";
/// In a container: full path of the container's usage part.
pub const ENV_USAGE: &str = "HAMI_LEDGER_USAGE";
/// Where the shim mounts the library inside a capped container (and what the container's
/// `/etc/ld.so.preload` names).
pub const CONTAINER_LIBRARY_PATH: &str = "/usr/local/lib/hami/libhami.so";
/// Where the shim mounts the node part inside a container.
pub const CONTAINER_NODE_PATH: &str = "/run/hami/node.ledger";
/// Where the shim mounts the limits part inside a container.
pub const CONTAINER_LIMITS_PATH: &str = "/run/hami/limits.ledger";
/// Where the shim mounts the usage part inside a container.
pub const CONTAINER_USAGE_PATH: &str = "/run/hami/usage.ledger";

/// The host directory holding the node part and one directory per container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerDir {
    root: PathBuf,
}

impl LedgerDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `$HAMI_LEDGER_DIR`, else [`DEFAULT_ROOT`]. For host tools, read once at start-up.
    pub fn from_env() -> Self {
        Self::new(std::env::var_os(ENV_LEDGER_DIR).unwrap_or_else(|| DEFAULT_ROOT.into()))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/node.ledger`.
    pub fn node(&self) -> PathBuf {
        self.root.join("node.ledger")
    }

    /// `<root>/containers/<id>`; refuses ids that are not one plain path component.
    pub fn container_dir(&self, container_id: &str) -> Result<PathBuf, InputError> {
        text::check(container_id, CONTAINER_ID_LEN).map_err(|problem| {
            InputError::BadContainerId {
                id: container_id.to_owned(),
                problem,
            }
        })?;
        let plain = container_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !plain || container_id == "." || container_id == ".." {
            return Err(InputError::ContainerIdNotAPathComponent {
                id: container_id.to_owned(),
            });
        }
        Ok(self.root.join("containers").join(container_id))
    }

    /// `<root>/containers/<id>/limits.ledger`.
    pub fn limits(&self, container_id: &str) -> Result<PathBuf, InputError> {
        Ok(self.container_dir(container_id)?.join("limits.ledger"))
    }

    /// `<root>/containers/<id>/usage.ledger`.
    pub fn usage(&self, container_id: &str) -> Result<PathBuf, InputError> {
        Ok(self.container_dir(container_id)?.join("usage.ledger"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_contract_paths() {
        let dir = LedgerDir::new("/run/hami");
        assert_eq!(dir.node(), Path::new("/run/hami/node.ledger"));
        assert_eq!(
            dir.usage("abc123").unwrap(),
            Path::new("/run/hami/containers/abc123/usage.ledger")
        );
        assert_eq!(
            dir.limits("abc123").unwrap(),
            Path::new("/run/hami/containers/abc123/limits.ledger")
        );
    }

    #[test]
    fn refuses_ids_that_escape_the_directory() {
        let dir = LedgerDir::new("/run/hami");
        for id in ["..", ".", "a/b", "../x", "", "a b"] {
            assert!(dir.container_dir(id).is_err(), "{id:?} accepted");
        }
    }
}
