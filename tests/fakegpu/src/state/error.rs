//! Errors of attaching to the shared device state.

use std::path::PathBuf;

use thiserror::Error;

/// Why the shared state file cannot be used.
#[derive(Debug, Error)]
pub enum StateError {
    #[error("cannot use state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open state file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot map state file {path}: {source}")]
    Map {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not a hami-fakegpu state of layout {expected} ({found})")]
    Incompatible {
        path: PathBuf,
        expected: u32,
        found: String,
    },
    #[error("all {0} process slots of the simulated device are taken by live processes")]
    NoFreeSlot(usize),
}
