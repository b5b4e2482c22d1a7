//! Who owns a container's ledger entry, and where the host finds the container's processes.
//!
//! An entry (`<root>/containers/<id>/`) is owned by the component that wrote it (the shim, or
//! `hami run`) for as long as that component lives: the writer holds an exclusive `flock` on
//! the entry's [`OWNER_LOCK_FILE`] from before it writes the first part until after it removes
//! the entry. The kernel drops the lock when the owner dies, however it dies, so "the lock can
//! be taken" means "the owner is gone". The file is host-only (never mounted into a
//! container), so no tenant can hold it and keep a dead entry alive.
//!
//! The node agent's janitor takes the same lock before it removes an entry, and checks the
//! file it locked is still the one the entry names (`same_inode`): a writer that locked a file
//! the janitor has since unlinked with its directory sees that and starts again, so a janitor
//! and a writer of the same id never both believe they hold the entry.
//!
//! [`ProcessAnchor`] (file [`ANCHOR_FILE`], host-only too) tells the agent where the
//! container's processes are: the cgroup of its first process (containers), or the process
//! tree under a root process (`hami run`).

use std::fs::{File, OpenOptions};
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::usage::{SlotRecord, UsageLayout};
use crate::{MAX_PROCESSES, file};

/// Name of the owner lock in an entry directory (host-only).
pub const OWNER_LOCK_FILE: &str = "owner.lock";
/// Name of the file that says where the container's processes are (host-only).
pub const ANCHOR_FILE: &str = "processes";
/// Name of the node's placement lock under the ledger root: entries are written (shim) and
/// removed (janitor) under an exclusive `flock` on it, so placement never counts an entry
/// that is half written or half removed.
pub const PLACEMENT_LOCK_FILE: &str = "placement.lock";

/// How long a writer waits for a lock that someone else holds (a janitor holds it for
/// the few milliseconds of one check) before it reports the entry as owned.
const ACQUIRE_WAIT: Duration = Duration::from_secs(2);
/// Mode of the lock and anchor files: host components only read and lock them.
const HOST_FILE_MODE: u32 = 0o644;

/// Ownership of an entry could not be taken or checked.
#[derive(Debug, Error)]
pub enum OwnerError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "ledger entry {dir} is owned by a live process (its {OWNER_LOCK_FILE} is locked); pick another container id"
    )]
    Held { dir: PathBuf },
    #[error("{path} is not a process anchor: {text:?} (accepted: `cgroup PID` or `tree PID`)")]
    BadAnchor { path: PathBuf, text: String },
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> OwnerError {
    let path = path.to_owned();
    move |source| OwnerError::Io { op, path, source }
}

/// The exclusive owner lock of one entry; released when dropped or when the process dies.
#[derive(Debug)]
pub struct OwnerLock {
    /// Holds the `flock` (its open file description; `O_CLOEXEC`, so no child inherits it).
    file: File,
    dir: PathBuf,
}

impl OwnerLock {
    /// Writer side: creates the entry directory `dir` if needed and takes its owner lock,
    /// waiting up to 2 s for a janitor's brief hold. `Held` when a live owner keeps it.
    pub fn acquire(dir: &Path) -> Result<Self, OwnerError> {
        let start = Instant::now();
        loop {
            std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
            match Self::try_take(dir) {
                Ok(Some(lock)) => return Ok(lock),
                // The directory went between create_dir_all and the open: a janitor removed
                // a dead entry of the same id. Create it again.
                Err(OwnerError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
                Ok(None) => {}
            }
            if start.elapsed() >= ACQUIRE_WAIT {
                return Err(OwnerError::Held {
                    dir: dir.to_owned(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Takes the owner lock of entry `dir` if nobody holds it (janitor side; also the
    /// writer's single attempt). `None`: a live owner holds it, or the entry was removed
    /// while this call locked it.
    pub fn try_take(dir: &Path) -> Result<Option<Self>, OwnerError> {
        let path = dir.join(OWNER_LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(HOST_FILE_MODE)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_error("open", &path))?;
        // SAFETY: `file` is an open descriptor owned by this function; flock has no memory
        // arguments.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EWOULDBLOCK) => Ok(None),
                _ => Err(io_error("lock", &path)(err)),
            };
        }
        let lock = Self {
            file,
            dir: dir.to_owned(),
        };
        // Locked a file that a janitor has unlinked since we opened it: not the entry's lock.
        Ok(lock.same_inode()?.then_some(lock))
    }

    /// Whether the locked file is still the one the entry directory names.
    fn same_inode(&self) -> Result<bool, OwnerError> {
        let path = self.dir.join(OWNER_LOCK_FILE);
        let held = self.file.metadata().map_err(io_error("stat", &path))?;
        match std::fs::symlink_metadata(&path) {
            Ok(named) => Ok(named.dev() == held.dev() && named.ino() == held.ino()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error("stat", &path)(e)),
        }
    }

    /// The entry directory this lock owns.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Where the host finds a container's processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessAnchor {
    /// The container's processes are those of the cgroup (and PID namespace) of its first
    /// process, `init_pid` on the host (containers started by the shim).
    Cgroup { init_pid: u32 },
    /// The container's processes are `root_pid` and its descendants (`hami run`).
    Tree { root_pid: u32 },
}

impl ProcessAnchor {
    /// Records the anchor in entry `dir` (write-to-temp and rename: readers see all or none).
    pub fn write(self, dir: &Path) -> Result<(), OwnerError> {
        let path = dir.join(ANCHOR_FILE);
        let text = match self {
            Self::Cgroup { init_pid } => format!("cgroup {init_pid}\n"),
            Self::Tree { root_pid } => format!("tree {root_pid}\n"),
        };
        file::write_atomically(&path, text.as_bytes(), HOST_FILE_MODE).map_err(|e| OwnerError::Io {
            op: "write",
            path: path.clone(),
            source: io::Error::other(e.to_string()),
        })
    }

    /// The anchor recorded in entry `dir`; `None` when none is recorded yet.
    pub fn read(dir: &Path) -> Result<Option<Self>, OwnerError> {
        let path = dir.join(ANCHOR_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read", &path)(e)),
        };
        let bad = || OwnerError::BadAnchor {
            path: path.clone(),
            text: text.clone(),
        };
        let (kind, pid) = text.trim().split_once(' ').ok_or_else(bad)?;
        let pid: u32 = pid.parse().map_err(|_| bad())?;
        match (kind, pid) {
            (_, 0) => Err(bad()),
            ("cgroup", init_pid) => Ok(Some(Self::Cgroup { init_pid })),
            ("tree", root_pid) => Ok(Some(Self::Tree { root_pid })),
            _ => Err(bad()),
        }
    }
}

/// The byte range of the usage part's slot array. Every slot's lock byte lies in its own
/// record (`usage/layout.rs`), so one lock query over this range finds any live owner.
const SLOT_ARRAY_START: usize = offset_of!(UsageLayout, slots);
const SLOT_ARRAY_LEN: usize = size_of::<SlotRecord>() * MAX_PROCESSES;

/// Whether any process holds a slot of the usage part at `usage` (a live process of the
/// container that registered with the library).
///
/// Host side, on a file the container can write: opened read-only and non-blocking, never
/// mapped, never read; only one `F_OFD_GETLK` query (lock state lives in the kernel, not in
/// the file, so no content of the file can fool or crash it). A missing file has no owner.
pub fn usage_has_live_slot(usage: &Path) -> io::Result<bool> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(usage)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let conflict = |what: &str| io::Error::other(format!("{} {what}", usage.display()));
    if !file.metadata()?.is_file() {
        return Err(conflict("is not a regular file"));
    }
    let start = libc::off_t::try_from(SLOT_ARRAY_START).map_err(|_| conflict("offset"))?;
    let len = libc::off_t::try_from(SLOT_ARRAY_LEN).map_err(|_| conflict("length"))?;
    let mut query = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start,
        l_len: len,
        // Must be zero for OFD locks.
        l_pid: 0,
    };
    // SAFETY: `file` is an open descriptor for the duration of the call and `query` is a valid,
    // exclusively borrowed `struct flock`, which F_OFD_GETLK overwrites with a conflicting
    // lock, if any.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut query) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(query.l_type != libc::F_UNLCK as libc::c_short)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UsageLedger;

    #[test]
    fn a_held_lock_cannot_be_taken_until_its_owner_lets_go() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("containers/c1");
        let owner = OwnerLock::acquire(&dir).unwrap();
        assert!(OwnerLock::try_take(&dir).unwrap().is_none());
        drop(owner);
        let janitor = OwnerLock::try_take(&dir).unwrap().expect("owner gone");
        assert_eq!(janitor.dir(), dir);
    }

    #[test]
    fn a_lock_on_a_removed_entry_is_not_the_entry_lock() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c1");
        let janitor = OwnerLock::acquire(&dir).unwrap();
        // A writer opened the old file; the janitor removes the entry and lets go.
        let stale = File::open(dir.join(OWNER_LOCK_FILE)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        drop(janitor);
        let lock = OwnerLock {
            file: stale,
            dir: dir.clone(),
        };
        assert!(!lock.same_inode().unwrap());
        // A fresh acquire recreates the entry and its lock.
        let writer = OwnerLock::acquire(&dir).unwrap();
        assert!(writer.same_inode().unwrap());
    }

    #[test]
    fn anchors_round_trip_and_bad_text_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ProcessAnchor::read(dir.path()).unwrap(), None);
        for anchor in [
            ProcessAnchor::Cgroup { init_pid: 42 },
            ProcessAnchor::Tree { root_pid: 7 },
        ] {
            anchor.write(dir.path()).unwrap();
            assert_eq!(ProcessAnchor::read(dir.path()).unwrap(), Some(anchor));
        }
        for text in ["", "cgroup", "tree 0", "pod 3", "cgroup x"] {
            std::fs::write(dir.path().join(ANCHOR_FILE), text).unwrap();
            let err = ProcessAnchor::read(dir.path()).unwrap_err();
            assert!(err.to_string().contains("accepted"), "{err}");
        }
    }

    #[test]
    fn a_registered_slot_is_seen_without_mapping_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.ledger");
        assert!(!usage_has_live_slot(&path).unwrap(), "no file, no owner");
        UsageLedger::create(&path, 1).unwrap();
        let usage = UsageLedger::attach(&path).unwrap();
        assert!(!usage_has_live_slot(&path).unwrap());
        let slot = usage.register().unwrap();
        assert!(usage_has_live_slot(&path).unwrap());
        drop(slot);
        assert!(!usage_has_live_slot(&path).unwrap());
        // Content is never read: a truncated file answers the same way.
        std::fs::write(&path, b"x").unwrap();
        assert!(!usage_has_live_slot(&path).unwrap());
    }
}
