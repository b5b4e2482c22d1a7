//! Reading, writing and mapping part files.
//!
//! Writers build a complete image and publish it with write-to-temp, fsync, rename, so a reader
//! sees either the old file or the new one, never a half-written one. Readers check the header
//! (and the checksum of the immutable prefix) before anything else looks at the content, and
//! map exactly the layout size only after the file length is known to match, so a truncated
//! file is an error, not a `SIGBUS`.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::FileError;
use crate::header::{self, HEADER_SIZE, LayoutError, PartSpec};

/// Reads the whole file at `path` and checks it against `spec`; returns the image.
pub(crate) fn read_image(path: &Path, spec: &PartSpec) -> Result<Vec<u8>, FileError> {
    let file = File::open(path).map_err(|err| FileError::io("open", path, err))?;
    read_checked(&file, path, spec, spec.size)
}

/// Reads the first `len` bytes of `file` (at most the layout size) and checks the header, the
/// file length and the checksum of the immutable prefix.
pub(crate) fn read_checked(
    file: &File,
    path: &Path,
    spec: &PartSpec,
    len: usize,
) -> Result<Vec<u8>, FileError> {
    let invalid = |problem| FileError::Invalid {
        path: path.to_owned(),
        kind: spec.kind,
        problem,
    };
    let found = file
        .metadata()
        .map_err(|err| FileError::io("stat", path, err))?
        .len();
    let readable = usize::try_from(found).unwrap_or(usize::MAX).min(len);
    let mut image = vec![0u8; readable];
    (&*file)
        .read_exact(&mut image)
        .map_err(|err| FileError::io("read", path, err))?;
    if image.len() >= HEADER_SIZE {
        header::check_fields(&image, spec).map_err(invalid)?;
    }
    let expected = spec.size as u64;
    if found < expected {
        return Err(invalid(LayoutError::Truncated { found, expected }));
    }
    if found > expected {
        return Err(invalid(LayoutError::Oversized { found, expected }));
    }
    header::check_sum(&image, spec).map_err(invalid)?;
    Ok(image)
}

/// Publishes `image` at `path` atomically (creating missing directories), with permission bits
/// `mode` (not masked by umask: the usage part must be writable by the container's user).
pub(crate) fn write_atomically(path: &Path, image: &[u8], mode: u32) -> Result<(), FileError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|err| FileError::io("create directory", parent, err))?;
    }
    let temp = temp_path(path);
    let result = write_temp(&temp, image, mode).and_then(|()| {
        fs::rename(&temp, path).map_err(|err| FileError::io("rename into place", path, err))
    });
    if result.is_err() {
        // Best effort: the temp name is unique to this call, nobody else uses it.
        let _ = fs::remove_file(&temp);
    }
    result
}

fn write_temp(temp: &Path, image: &[u8], mode: u32) -> Result<(), FileError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC)
        .open(temp)
        .map_err(|err| FileError::io("create", temp, err))?;
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(|err| FileError::io("chmod", temp, err))?;
    file.write_all(image)
        .map_err(|err| FileError::io("write", temp, err))?;
    file.sync_all()
        .map_err(|err| FileError::io("sync", temp, err))
}

fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}.{n}", std::process::id()));
    path.with_file_name(name)
}

/// Opens the file behind `fd` again as a new open file description (own OFD locks), read-write.
///
/// Goes through `/proc/self/fd` so the same inode is opened even if the path was replaced;
/// falls back to `path` where `/proc` is not mounted.
pub(crate) fn reopen(fd: BorrowedFd<'_>, path: &Path) -> Result<File, FileError> {
    let open = |p: &Path| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(p)
    };
    let via_proc = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    open(&via_proc)
        .or_else(|_| open(path))
        .map_err(|err| FileError::io("reopen", path, err))
}

/// A shared mapping of a whole, validated part file.
pub(crate) struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; all access to it goes through
// atomics (the layout structs hold only atomics), so sharing it between threads is sound.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only hands out shared references to atomics.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `file` with `MAP_SHARED`. The caller has checked that the
    /// file is at least `len` bytes long.
    pub(crate) fn new(
        file: &File,
        path: &Path,
        len: usize,
        writable: bool,
    ) -> Result<Self, FileError> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh mapping at an address of the kernel's choice cannot alias any Rust
        // object; `file` is a valid open descriptor for the duration of the call.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(FileError::io("mmap", path, std::io::Error::last_os_error()));
        }
        let base = NonNull::new(base.cast::<u8>())
            .ok_or_else(|| FileError::io("mmap", path, std::io::Error::other("null mapping")))?;
        Ok(Self { base, len })
    }

    /// Start of the mapping: page-aligned, `len` bytes, valid until drop.
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe a mapping this value created and nothing else unmaps;
        // no reference into it outlives `self` (views borrow from the owner).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}
