//! The copy reader against what a hostile container can do to its usage part: truncate it,
//! grow it, fill it with garbage, swap in something that is not a file, and do it while the
//! host reads.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::UsageLedger;

const MIB: u64 = 1 << 20;

fn usage_file(n_devices: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.ledger");
    UsageLedger::create(&path, n_devices).unwrap();
    (dir, path)
}

fn layout_problem(err: &CopyError) -> Option<&LayoutError> {
    match err {
        CopyError::File(file) => file.layout_problem(),
        CopyError::NotARegularFile { .. } => None,
    }
}

#[test]
fn a_copy_says_what_the_snapshot_says() {
    let (_dir, path) = usage_file(2);
    let usage = UsageLedger::attach(&path).unwrap();
    let first = usage.register().unwrap();
    let second = usage.register().unwrap();
    usage.reserve(&first, 0, 3 * MIB, u64::MAX).unwrap();
    usage.reserve(&second, 1, 5 * MIB, u64::MAX).unwrap();
    usage.set_host_pid(first.index(), first.generation(), 4242);
    let cell = usage.compute_cell(1).unwrap();
    cell.words[usage_word::MEASURED_NS].store(7_000, Ordering::Relaxed);
    cell.words[usage_word::THROTTLED_NS].store(900, Ordering::Relaxed);
    cell.words[usage_word::LAUNCHES].store(12, Ordering::Relaxed);
    cell.words[usage_word::RATE_PPM].store(250_000, Ordering::Relaxed);

    let copy = UsageCopy::read(&path).unwrap();
    assert_eq!(copy.snapshot, usage.snapshot());
    assert_eq!(copy.snapshot.devices, vec![3 * MIB, 5 * MIB]);
    assert_eq!(copy.snapshot.slots.len(), 2);
    let held = &copy.snapshot.slots[0];
    assert_eq!(
        (held.pid, held.host_pid, held.state, held.alive),
        (std::process::id(), Some(4242), SlotState::Live, Some(true))
    );
    assert_eq!(copy.compute[0], ComputeCounters::default());
    assert_eq!(
        copy.compute[1],
        ComputeCounters {
            measured_ns: 7_000,
            throttled_ns: 900,
            launches: 12,
            rate_ppm: 250_000,
        }
    );

    // The owner goes: its slot is still Live in the file, and the lock says it is dead.
    let index = second.index();
    drop(second);
    let copy = UsageCopy::read(&path).unwrap();
    let gone = copy
        .snapshot
        .slots
        .iter()
        .find(|s| s.index == index)
        .unwrap();
    assert_eq!((gone.state, gone.alive), (SlotState::Live, Some(false)));
    drop(first);
}

#[test]
fn a_truncated_part_is_an_error_naming_the_file() {
    let (_dir, path) = usage_file(1);
    let image = std::fs::read(&path).unwrap();
    for len in [0, 10, HEADER_SIZE as u64, SPEC.size as u64 - 1] {
        std::fs::write(&path, &image).unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len).unwrap();
        let err = UsageCopy::read(&path).unwrap_err();
        // Too short for a header, a header alone, or one byte short: all the same problem.
        let expected = LayoutError::Truncated {
            found: len,
            expected: SPEC.size as u64,
        };
        assert_eq!(layout_problem(&err), Some(&expected), "{err}");
        assert!(err.to_string().contains("usage.ledger"), "{err}");
    }
}

#[test]
fn a_grown_part_is_an_error() {
    let (_dir, path) = usage_file(1);
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(&[0xa5; 4096]).unwrap();
    let err = UsageCopy::read(&path).unwrap_err();
    assert_eq!(
        layout_problem(&err),
        Some(&LayoutError::Oversized {
            found: SPEC.size as u64 + 1,
            expected: SPEC.size as u64
        }),
        "{err}"
    );
}

/// Runs `read` on another thread; a reader that blocks fails the test instead of hanging it.
fn read_without_hanging(path: PathBuf) -> Result<UsageCopy, CopyError> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(UsageCopy::read(&path));
    });
    receive
        .recv_timeout(Duration::from_secs(20))
        .expect("the copy reader blocked")
}

#[test]
fn a_fifo_a_directory_and_a_link_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("usage.ledger");
    let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `name` is a valid NUL-terminated path for the duration of the call.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o666) }, 0);
    match read_without_hanging(fifo.clone()) {
        Err(CopyError::NotARegularFile { found: "FIFO", .. }) => {}
        other => panic!("a FIFO was not refused as one: {other:?}"),
    }

    let subdir = dir.path().join("dir");
    std::fs::create_dir(&subdir).unwrap();
    match read_without_hanging(subdir) {
        Err(CopyError::NotARegularFile {
            found: "directory", ..
        }) => {}
        other => panic!("a directory was not refused: {other:?}"),
    }

    // A link to a valid part is still refused: the container's file is the path itself.
    let (_real_dir, real) = usage_file(1);
    let link = dir.path().join("link.ledger");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    match read_without_hanging(link) {
        Err(CopyError::NotARegularFile {
            found: "symbolic link",
            ..
        }) => {}
        other => panic!("a link was followed: {other:?}"),
    }

    match read_without_hanging("/dev/null".into()) {
        Err(CopyError::NotARegularFile {
            found: "character device",
            ..
        }) => {}
        other => panic!("a device was not refused: {other:?}"),
    }
}

#[test]
fn a_part_without_devices_is_refused() {
    let (_dir, path) = usage_file(1);
    let mut image = std::fs::read(&path).unwrap();
    image[offset_of!(header::Header, entries)..][..4].copy_from_slice(&0u32.to_ne_bytes());
    header::seal(&mut image, &SPEC);
    std::fs::write(&path, &image).unwrap();
    let err = UsageCopy::read(&path).unwrap_err();
    assert!(
        matches!(layout_problem(&err), Some(LayoutError::BadRecord { .. })),
        "{err}"
    );
}

#[test]
fn a_concurrent_truncation_loop_never_faults_the_reader() {
    let (_dir, path) = usage_file(4);
    let image = std::fs::read(&path).unwrap();
    let stop = AtomicBool::new(false);
    let (mut good, mut refused) = (0u32, 0u32);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let file = OpenOptions::new().write(true).open(&path).unwrap();
            let mut len = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Shrink to a moving length, then restore the whole part.
                len = (len + 4099) % SPEC.size as u64;
                file.set_len(len).unwrap();
                file.set_len(SPEC.size as u64).unwrap();
                file.write_all_at(&image, 0).unwrap();
            }
        });
        for _ in 0..2_000 {
            match UsageCopy::read(&path) {
                Ok(copy) => {
                    assert_eq!(copy.snapshot.devices.len(), 4);
                    good += 1;
                }
                Err(err) => {
                    assert!(layout_problem(&err).is_some(), "{err}");
                    refused += 1;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    eprintln!("copies: {good} whole, {refused} refused while the file changed");
}

fn whole_part_with(rest: &[u8], n_devices: u32) -> Vec<u8> {
    let mut image = vec![0u8; SPEC.size];
    header::encode(&mut image, &SPEC, n_devices);
    header::seal(&mut image, &SPEC);
    for (at, byte) in image[HEADER_SIZE..].iter_mut().enumerate() {
        *byte = rest[at % rest.len()];
    }
    image
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Garbage after a valid header is the container's to write: it decodes, with any values.
    #[test]
    fn garbage_counters_decode(rest in proptest::collection::vec(any::<u8>(), 1..4096), n in 1u32..=16) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.ledger");
        std::fs::write(&path, whole_part_with(&rest, n)).unwrap();
        let copy = UsageCopy::read(&path).unwrap();
        prop_assert_eq!(copy.snapshot.devices.len(), n as usize);
        prop_assert_eq!(copy.compute.len(), n as usize);
        prop_assert!(copy.snapshot.slots.iter().all(|s| s.used.len() == n as usize));
    }

    /// Any bytes at all, of any length near the layout's: an error or a copy, never a panic.
    #[test]
    fn any_bytes_are_an_answer(bytes in proptest::collection::vec(any::<u8>(), 0..256), cut in 0usize..=2, flip in any::<(usize, u8)>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.ledger");
        let mut image = whole_part_with(if bytes.is_empty() { &[0] } else { &bytes }, 1);
        let at = flip.0 % image.len();
        image[at] ^= flip.1;
        match cut {
            0 => image.push(0),
            1 => {}
            _ => image.truncate(at),
        }
        std::fs::write(&path, &image).unwrap();
        let _ = UsageCopy::read(&path);
    }
}
