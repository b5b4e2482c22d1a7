//! The device state shared by every process that uses the simulated device: a file under
//! `HAMI_FAKEGPU_DIR`, mapped `MAP_SHARED`, created by the first process and attached to by
//! the others (also from other containers when the directory is mounted into them).

mod busy;
mod device_lock;
mod error;
mod futex;
pub mod layout;
mod slots;

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use busy::ProcessUsage;
pub use device_lock::DeviceGuard;
pub use error::StateError;
use layout::{DeviceRecord, LAYOUT_VERSION, MAGIC, STATE_SIZE, StateFile};
pub use slots::Slot;

use crate::config::Config;

/// Name of the state file inside the state directory.
pub const STATE_FILE_NAME: &str = "device-state";

/// An attached state file. The mapping lives as long as the process.
pub struct SharedState {
    state: &'static StateFile,
    dir: PathBuf,
}

/// A point-in-time view of one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub total_memory: u64,
    pub used_memory: u64,
    pub sms: u32,
    pub uuid: [u8; 16],
}

impl SharedState {
    /// Creates the state file from `config`, or attaches to the one already there.
    pub fn attach(config: &Config) -> Result<SharedState, StateError> {
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| StateError::Dir {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(STATE_FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o666)
            .open(&path)
            .map_err(|source| StateError::Open {
                path: path.clone(),
                source,
            })?;
        // Processes of other users (other containers) attach too; umask must not stop them.
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o666));
        let _init_lock = FileLock::exclusive(&file);
        let len = file
            .metadata()
            .map_err(|source| StateError::Open {
                path: path.clone(),
                source,
            })?
            .len();
        if len == 0 {
            file.set_len(STATE_SIZE as u64)
                .map_err(|source| StateError::Open {
                    path: path.clone(),
                    source,
                })?;
        } else if len != STATE_SIZE as u64 {
            return Err(StateError::Incompatible {
                path,
                expected: LAYOUT_VERSION,
                found: format!("{len} bytes, expected {STATE_SIZE}"),
            });
        }
        let state = map(&file, &path)?;
        let header = &state.header;
        if header.magic.load(Ordering::Acquire) == 0 {
            // Processes of other users (other containers) must be able to lock slot files
            // in a directory they may not be allowed to create files in.
            for index in 0..layout::MAX_PROCESSES {
                let slot_file = slots::slot_path(&dir, index);
                if let Ok(file) = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o666)
                    .open(&slot_file)
                {
                    let _ = file.set_permissions(std::fs::Permissions::from_mode(0o666));
                }
            }
            initialise(state, config);
        } else if header.magic.load(Ordering::Acquire) != MAGIC
            || header.version.load(Ordering::Relaxed) != LAYOUT_VERSION
            || header.size.load(Ordering::Relaxed) != STATE_SIZE as u64
        {
            return Err(StateError::Incompatible {
                path,
                expected: LAYOUT_VERSION,
                found: format!("layout {}", header.version.load(Ordering::Relaxed)),
            });
        }
        Ok(SharedState { state, dir })
    }

    /// Attaches read-write to an existing state file in `dir` without creating one.
    pub fn open_existing(dir: &Path) -> Result<SharedState, StateError> {
        let path = dir.join(STATE_FILE_NAME);
        if !path.exists() {
            return Err(StateError::Open {
                path,
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let probe = Config {
            dir: dir.to_path_buf(),
            devices: 1,
            memory: 1,
            sms: 1,
            uuids: vec![[0; 16]],
            context_memory: 0,
        };
        SharedState::attach(&probe)
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of devices.
    pub fn device_count(&self) -> u32 {
        self.state.header.device_count.load(Ordering::Relaxed)
    }

    /// Device memory each context costs.
    pub fn context_memory(&self) -> u64 {
        self.state.header.context_memory.load(Ordering::Relaxed)
    }

    /// A view of device `index`; `None` when out of range.
    pub fn device(&self, index: usize) -> Option<DeviceInfo> {
        let record = self.device_record(index)?;
        let mut uuid = [0u8; 16];
        for (chunk, word) in uuid.chunks_exact_mut(4).zip(&record.uuid) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_be_bytes());
        }
        Some(DeviceInfo {
            total_memory: record.total_memory.load(Ordering::Relaxed),
            used_memory: record.used_memory.load(Ordering::Acquire),
            sms: record.sms.load(Ordering::Relaxed),
            uuid,
        })
    }

    /// Marks device `index` lost (NVML then answers `NVML_ERROR_GPU_IS_LOST` for it, in every
    /// process) or found again; false when there is no such device.
    pub fn set_lost(&self, index: usize, lost: bool) -> bool {
        let Some(record) = self.device_record(index) else {
            return false;
        };
        record.lost.store(u32::from(lost), Ordering::Release);
        true
    }

    /// Whether device `index` is lost; false when there is no such device.
    pub fn is_lost(&self, index: usize) -> bool {
        self.device_record(index)
            .is_some_and(|record| record.lost.load(Ordering::Acquire) != 0)
    }

    fn device_record(&self, index: usize) -> Option<&'static DeviceRecord> {
        if index < self.device_count() as usize {
            self.state.devices.get(index)
        } else {
            None
        }
    }

    /// Takes `bytes` of device memory for the process in `slot`; false when it does not fit.
    pub fn reserve(&self, slot: &Slot, device: usize, bytes: u64) -> bool {
        if self.try_reserve(slot, device, bytes) {
            return true;
        }
        // Memory of processes that died without freeing is returned first, then retried.
        self.reclaim_dead(Some(slot));
        self.try_reserve(slot, device, bytes)
    }

    fn try_reserve(&self, slot: &Slot, device: usize, bytes: u64) -> bool {
        let Some(record) = self.device_record(device) else {
            return false;
        };
        let total = record.total_memory.load(Ordering::Relaxed);
        let reserved =
            record
                .used_memory
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    used.checked_add(bytes).filter(|next| *next <= total)
                });
        if reserved.is_err() {
            return false;
        }
        self.state.processes[slot.index()].devices[device]
            .memory
            .fetch_add(bytes, Ordering::AcqRel);
        true
    }

    /// Gives back `bytes` of device memory taken by [`SharedState::reserve`].
    pub fn release(&self, slot: &Slot, device: usize, bytes: u64) {
        let Some(record) = self.device_record(device) else {
            return;
        };
        saturating_sub(
            &self.state.processes[slot.index()].devices[device].memory,
            bytes,
        );
        saturating_sub(&record.used_memory, bytes);
    }
}

fn saturating_sub(counter: &AtomicU64, bytes: u64) {
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        Some(v.saturating_sub(bytes))
    });
}

fn initialise(state: &StateFile, config: &Config) {
    let header = &state.header;
    header.version.store(LAYOUT_VERSION, Ordering::Relaxed);
    header.device_count.store(config.devices, Ordering::Relaxed);
    header.size.store(STATE_SIZE as u64, Ordering::Relaxed);
    header
        .context_memory
        .store(config.context_memory, Ordering::Relaxed);
    for (record, uuid) in state.devices.iter().zip(&config.uuids) {
        record.total_memory.store(config.memory, Ordering::Relaxed);
        record.sms.store(config.sms, Ordering::Relaxed);
        for (word, chunk) in record.uuid.iter().zip(uuid.chunks_exact(4)) {
            word.store(
                u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                Ordering::Relaxed,
            );
        }
    }
    header.magic.store(MAGIC, Ordering::Release);
}

fn map(file: &File, path: &Path) -> Result<&'static StateFile, StateError> {
    // SAFETY: a fresh shared mapping of the whole file (its length was just checked to be
    // STATE_SIZE); the kernel picks the address, so nothing existing is replaced.
    let address = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STATE_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if address == libc::MAP_FAILED {
        return Err(StateError::Map {
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: the mapping is STATE_SIZE bytes, page-aligned (so aligned for StateFile), never
    // unmapped, and StateFile is made only of atomics and plain integers, valid for any bytes
    // (a new file reads as zeros); all shared mutation goes through the atomics.
    Ok(unsafe { &*address.cast::<StateFile>() })
}

/// An exclusive `flock` held until dropped.
pub(crate) struct FileLock<'a> {
    file: &'a File,
}

impl<'a> FileLock<'a> {
    /// Blocks until the lock is held. A failure to lock is ignored: the state is then used
    /// unserialised, which only matters if two processes create it at the same instant.
    pub(crate) fn exclusive(file: &'a File) -> FileLock<'a> {
        // SAFETY: flock on a descriptor owned by `file`, alive for the guard's lifetime.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        FileLock { file }
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // SAFETY: unlocks the descriptor locked in `exclusive`; `file` is still open.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn config(dir: &Path, memory: u64) -> Config {
        Config {
            dir: dir.to_path_buf(),
            devices: 2,
            memory,
            sms: 4,
            uuids: vec![[1; 16], [2; 16]],
            context_memory: 0,
        }
    }

    #[test]
    fn second_attach_sees_the_first_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let first = SharedState::attach(&config(dir.path(), 1 << 30)).unwrap();
        let second = SharedState::attach(&config(dir.path(), 4 << 30)).unwrap();
        assert_eq!(second.device(0).unwrap().total_memory, 1 << 30);
        assert_eq!(second.device(1).unwrap().uuid, [2; 16]);
        assert_eq!(first.device_count(), 2);
        assert!(second.device(2).is_none());
    }

    #[test]
    fn reservations_stop_at_capacity_and_are_shared() {
        let dir = tempfile::tempdir().unwrap();
        let first = SharedState::attach(&config(dir.path(), 10 << 20)).unwrap();
        let second = SharedState::attach(&config(dir.path(), 10 << 20)).unwrap();
        let slot = first.claim_slot(1).unwrap();
        assert!(first.reserve(&slot, 0, 8 << 20));
        assert_eq!(second.device(0).unwrap().used_memory, 8 << 20);
        assert!(!second.reserve(&slot, 0, 4 << 20));
        first.release(&slot, 0, 8 << 20);
        assert!(second.reserve(&slot, 0, 10 << 20));
        assert_eq!(first.device(1).unwrap().used_memory, 0);
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE_NAME), b"not a state file").unwrap();
        let err = SharedState::attach(&config(dir.path(), 1 << 20))
            .err()
            .unwrap();
        assert!(matches!(err, StateError::Incompatible { .. }), "{err}");
    }
}
