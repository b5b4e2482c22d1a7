//! Process liveness through open-file-description (OFD) byte locks.
//!
//! A process holds a write lock on one byte of the usage file for as long as it owns a slot.
//! The kernel drops OFD locks when the last descriptor of the description closes, which
//! happens when the process dies however it dies, so "the byte can be locked" means "its owner
//! is gone". Unlike pids this works across pid namespaces and is immune to pid reuse.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

fn byte_lock(kind: libc::c_short, byte: u64) -> io::Result<libc::flock> {
    let start = libc::off_t::try_from(byte)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "lock offset out of range"))?;
    Ok(libc::flock {
        l_type: kind,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start,
        l_len: 1,
        // Must be zero for OFD locks.
        l_pid: 0,
    })
}

/// Tries to take the write lock on `byte` for the description behind `fd`, without waiting.
/// `Ok(false)`: another description holds it.
pub(crate) fn try_lock(fd: BorrowedFd<'_>, byte: u64) -> io::Result<bool> {
    let mut lock = byte_lock(libc::F_WRLCK as libc::c_short, byte)?;
    // SAFETY: `fd` is a valid open descriptor (borrowed), and `lock` is a valid, exclusively
    // borrowed `struct flock` for the duration of the call, as F_OFD_SETLK requires.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => Ok(false),
        _ => Err(err),
    }
}

/// Releases the lock on `byte` held by the description behind `fd`.
pub(crate) fn unlock(fd: BorrowedFd<'_>, byte: u64) -> io::Result<()> {
    let mut lock = byte_lock(libc::F_UNLCK as libc::c_short, byte)?;
    // SAFETY: as in `try_lock`.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether a description other than the one behind `fd` holds a lock on `byte`.
pub(crate) fn held_by_other(fd: BorrowedFd<'_>, byte: u64) -> io::Result<bool> {
    let mut lock = byte_lock(libc::F_WRLCK as libc::c_short, byte)?;
    // SAFETY: as in `try_lock`; F_OFD_GETLK writes the conflicting lock (if any) into `lock`.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    if rc == 0 {
        Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn second_description_sees_the_lock_until_the_first_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, [0u8; 16]).unwrap();
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap()
        };
        let owner = open();
        let other = open();
        assert!(try_lock(owner.as_fd(), 3).unwrap());
        assert!(!try_lock(other.as_fd(), 3).unwrap());
        assert!(held_by_other(other.as_fd(), 3).unwrap());
        assert!(!held_by_other(other.as_fd(), 4).unwrap());
        drop(owner);
        assert!(!held_by_other(other.as_fd(), 3).unwrap());
        assert!(try_lock(other.as_fd(), 3).unwrap());
        unlock(other.as_fd(), 3).unwrap();
    }
}
