//! The error every part reports about its file: the file named, and what is wrong with it.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::header::{LayoutError, PartKind};

/// A ledger file could not be used.
#[derive(Debug, Error)]
pub enum FileError {
    #[error("cannot {op} {path}: {err}")]
    Io {
        op: &'static str,
        path: PathBuf,
        err: io::Error,
    },
    #[error("{path} is not a valid {kind} ledger: {problem}")]
    Invalid {
        path: PathBuf,
        kind: PartKind,
        problem: LayoutError,
    },
}

impl FileError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, err: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            err,
        }
    }

    /// The layout problem, when the file was readable but invalid.
    pub fn layout_problem(&self) -> Option<&LayoutError> {
        match self {
            Self::Io { .. } => None,
            Self::Invalid { problem, .. } => Some(problem),
        }
    }
}
