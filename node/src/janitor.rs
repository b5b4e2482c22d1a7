//! The ledger janitor: removes the entries of containers that are gone and reclaims the
//! process slots of dead processes, never anything of a live one.
//!
//! An entry (`<root>/containers/<id>/`) is removed only when both hold:
//!
//! 1. its owner is gone: the janitor can take the entry's owner lock
//!    (`hami_ledger::owner`; the shim and `hami run` hold it as long as they own the entry);
//! 2. no process of the container holds a slot of its usage part (one lock query on a
//!    read-only descriptor: the kernel's lock table, not the file's contents, which the
//!    container can write).
//!
//! The check runs twice: once without any node lock to find candidates, then again for each
//! candidate under the node's placement lock, and the entry is removed while both locks are
//! held. Writers take the placement lock before the owner lock too (the shim), so a shim
//! placing a container never waits on the janitor, and placement never counts a half-removed
//! entry.
//!
//! Dead slots of the entries that stay are reclaimed by a sacrificial child process
//! (`reclaimer.rs`), and only for parts whose copy (`hami_ledger::UsageCopy`, never a mapping)
//! shows a slot whose owner is gone.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use hami_ledger::owner::{self, OwnerLock, PLACEMENT_LOCK_FILE};
use hami_ledger::paths::LedgerDir;
use hami_ledger::{SlotState, UsageCopy};
use thiserror::Error;

use crate::reclaimer::{PartOutcome, Reclaimer};

/// A janitor pass could not run at all (a problem with one entry is reported, not fatal).
#[derive(Debug, Error)]
pub enum JanitorError {
    #[error("cannot list {path}: {source}")]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock {path}: {source}")]
    PlacementLock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JanitorReport {
    /// Container ids whose entries were removed.
    pub removed: Vec<String>,
    /// Dead process slots freed in entries that stay.
    pub freed_slots: usize,
    /// Entries or parts the pass could not handle, each with the reason (never fatal).
    pub problems: Vec<String>,
}

/// Reclaims what dead containers and processes left in one ledger directory.
#[derive(Clone, Debug)]
pub struct Janitor {
    ledger: LedgerDir,
    reclaimer: Reclaimer,
}

impl Janitor {
    /// A janitor of `ledger` whose slot reclaims run in children of `reclaimer`.
    pub fn new(ledger: LedgerDir, reclaimer: Reclaimer) -> Self {
        Self { ledger, reclaimer }
    }

    /// One pass over every entry.
    pub fn pass(&self) -> Result<JanitorReport, JanitorError> {
        let mut report = JanitorReport::default();
        let entries = self.entries(&mut report)?;
        let candidates: Vec<&(String, PathBuf)> = entries
            .iter()
            .filter(|(id, dir)| self.is_dead(id, dir, &mut report).is_some())
            .collect();
        if !candidates.is_empty() {
            let _placement = self.placement_lock()?;
            for (id, dir) in candidates {
                // Checked again under the placement lock; removed while the owner lock is held.
                let Some(_owner) = self.is_dead(id, dir, &mut report) else {
                    continue;
                };
                match std::fs::remove_dir_all(dir) {
                    Ok(()) => report.removed.push(id.clone()),
                    Err(e) => report
                        .problems
                        .push(format!("cannot remove {}: {e}", dir.display())),
                }
            }
        }
        let staying: Vec<PathBuf> = entries
            .iter()
            .filter(|(id, _)| !report.removed.contains(id))
            .filter_map(|(id, _)| self.ledger.usage(id).ok())
            .collect();
        let with_dead_slots: Vec<PathBuf> = staying
            .into_iter()
            .filter(|usage| has_dead_slot(usage, &mut report))
            .collect();
        for (part, outcome) in self.reclaimer.reclaim(&with_dead_slots) {
            match outcome {
                PartOutcome::Reclaimed { freed_slots } => report.freed_slots += freed_slots,
                PartOutcome::Failed(why) | PartOutcome::Crashed(why) => report
                    .problems
                    .push(format!("cannot reclaim {}: {why}", part.display())),
            }
        }
        Ok(report)
    }

    /// `(id, directory)` of every entry; names that cannot be container ids are reported.
    fn entries(&self, report: &mut JanitorReport) -> Result<Vec<(String, PathBuf)>, JanitorError> {
        let containers = self.ledger.root().join("containers");
        let listing = match std::fs::read_dir(&containers) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(JanitorError::List {
                    path: containers,
                    source,
                });
            }
        };
        let mut entries = Vec::new();
        for entry in listing.flatten() {
            let name = entry.file_name();
            let dir = match name.to_str().map(|id| (id, self.ledger.container_dir(id))) {
                Some((id, Ok(dir))) if entry.file_type().is_ok_and(|t| t.is_dir()) => {
                    (id.to_owned(), dir)
                }
                _ => {
                    report.problems.push(format!(
                        "{} is not a container entry (left alone)",
                        entry.path().display()
                    ));
                    continue;
                }
            };
            entries.push(dir);
        }
        entries.sort();
        Ok(entries)
    }

    /// The entry's owner lock when the entry is dead (owner gone, no live slot); `None` when
    /// it lives or cannot be checked (reported).
    fn is_dead(&self, id: &str, dir: &Path, report: &mut JanitorReport) -> Option<OwnerLock> {
        let owner = match OwnerLock::try_take(dir) {
            Ok(owner) => owner?,
            Err(e) => {
                report.problems.push(format!("entry {id}: {e}"));
                return None;
            }
        };
        let usage = self.ledger.usage(id).ok()?;
        match owner::usage_has_live_slot(&usage) {
            Ok(false) => Some(owner),
            Ok(true) => None,
            Err(e) => {
                report
                    .problems
                    .push(format!("entry {id}: cannot check its processes: {e}"));
                None
            }
        }
    }

    fn placement_lock(&self) -> Result<File, JanitorError> {
        let path = self.ledger.root().join(PLACEMENT_LOCK_FILE);
        let error = |source| JanitorError::PlacementLock {
            path: path.clone(),
            source,
        };
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(error)?;
        // SAFETY: `file` is an open descriptor owned here; flock has no memory arguments.
        // Blocking is bounded: holders (shim placement, this janitor) hold it for milliseconds.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(error(std::io::Error::last_os_error()));
        }
        Ok(file)
    }
}

/// Whether the usage part at `usage` has a slot whose owner is gone (read from a copy, so a
/// hostile file is only a reported problem).
fn has_dead_slot(usage: &Path, report: &mut JanitorReport) -> bool {
    match UsageCopy::read(usage) {
        Ok(copy) => copy.snapshot.slots.iter().any(|slot| {
            matches!(slot.state, SlotState::Live | SlotState::Reclaiming)
                && slot.alive == Some(false)
        }),
        // An entry being written (no usage part yet) has nothing to reclaim.
        Err(_) if !usage.exists() => false,
        Err(e) => {
            report
                .problems
                .push(format!("cannot read {}: {e}", usage.display()));
            false
        }
    }
}
