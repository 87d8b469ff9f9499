//! SharedMemory: Python's API, named segments between real processes, and the
//! errors for bad input.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;

use common::{join_ok, spawn};
use multiproc::{Error, SharedMemory};

#[test]
fn create_attach_write_read_across_processes() {
    let shm = SharedMemory::create(4096).unwrap();
    assert_eq!(shm.size(), 4096);
    assert!(shm.name().starts_with("mp-"));
    shm.write_at(0, b"from parent").unwrap();
    let name = shm.name().to_string();
    join_ok(spawn(move || {
        // A fresh attach by name, as an unrelated program would do.
        let other = SharedMemory::attach(&name).unwrap();
        let mut buf = [0u8; 11];
        other.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"from parent");
        other.write_at(4000, b"from child").unwrap();
        other.buf()[4095].store(7, Ordering::Relaxed);
    }));
    let mut buf = [0u8; 10];
    shm.read_at(4000, &mut buf).unwrap();
    assert_eq!(&buf, b"from child");
    assert_eq!(shm.to_vec().unwrap()[4095], 7);
    shm.unlink().unwrap();
    assert!(matches!(
        SharedMemory::attach(shm.name()),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn named_segments_are_private_exclusive_and_unpredictable() {
    let a = SharedMemory::create(1).unwrap();
    let b = SharedMemory::create(1).unwrap();
    assert_ne!(a.name(), b.name());
    // 16 random hex digits after the prefix.
    assert_eq!(a.name().len(), "mp-".len() + 16);
    let mode = std::fs::metadata(format!("/dev/shm/{}", a.name()))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "named segments are never readable by others"
    );
    assert!(matches!(
        SharedMemory::create_named(a.name(), 1),
        Err(Error::AlreadyExists { .. })
    ));
    // A leading '/' is accepted, as in Python.
    let again = SharedMemory::attach(&format!("/{}", a.name())).unwrap();
    assert_eq!(again.size(), 1);
    a.unlink().unwrap();
    b.unlink().unwrap();
    assert!(matches!(a.unlink(), Err(Error::NotFound { .. })));
}

#[test]
fn python_constructor_shapes() {
    let a = SharedMemory::new(None, true, 10).unwrap();
    let b = SharedMemory::new(Some(a.name()), false, 0).unwrap();
    assert_eq!(b.size(), 10);
    b.close();
    assert!(matches!(
        SharedMemory::new(None, false, 0),
        Err(Error::InvalidArgument(_))
    ));
    a.unlink().unwrap();
}

#[test]
fn bad_sizes_names_and_ranges_are_errors() {
    assert!(matches!(
        SharedMemory::create(0),
        Err(Error::ZeroSize { .. })
    ));
    assert!(matches!(
        SharedMemory::create(usize::MAX),
        Err(Error::SizeOverflow { .. })
    ));
    for bad in ["", "/", "a/b", "..", "x\0y"] {
        assert!(
            matches!(
                SharedMemory::create_named(bad, 1),
                Err(Error::InvalidName { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        SharedMemory::attach("mp-surely-not-there"),
        Err(Error::NotFound { .. })
    ));
    let shm = SharedMemory::create(8).unwrap();
    let _guard = Unlink(shm.name().to_string());
    // The error reports the range asked for, and the size; nothing is written.
    let err = shm.write_at(5, b"1234").unwrap_err();
    assert!(
        matches!(
            err,
            Error::RangeOutOfBounds {
                offset: 5,
                len: 4,
                size: 8
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("4 bytes at offset 5") && text.contains("8-byte"),
        "{text}"
    );
    assert_eq!(shm.to_vec().unwrap(), [0; 8]);
    assert!(matches!(
        shm.read_at(usize::MAX, &mut [0u8; 2]),
        Err(Error::RangeOutOfBounds {
            offset: usize::MAX,
            len: 2,
            size: 8
        })
    ));
    assert!(matches!(
        shm.read_at(9, &mut []),
        Err(Error::RangeOutOfBounds {
            offset: 9,
            len: 0,
            size: 8
        })
    ));
    shm.read_at(8, &mut []).unwrap(); // an empty range at the end is fine
    shm.unlink().unwrap();
}

/// Removes `/dev/shm/<name>` when dropped, even when the test fails.
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        // Through SharedMemory, so that the owner record goes too.
        match SharedMemory::attach(&self.0) {
            Ok(shm) => drop(shm.unlink()),
            Err(_) => drop(std::fs::remove_file(format!("/dev/shm/{}", self.0))),
        }
    }
}

/// Another process truncates a named segment under the mappings of this one: the
/// checked calls then give `Error::Shrunk` instead of touching the lost pages
/// (SIGBUS). They run in a child, so that a SIGBUS fails the join, not the run.
#[test]
fn a_segment_truncated_by_another_process_gives_errors_not_sigbus() {
    const SIZE: usize = 4 * 4096;
    let shm = SharedMemory::create(SIZE).unwrap();
    let _guard = Unlink(shm.name().to_string());
    shm.write_at(0, b"kept").unwrap();
    shm.write_at(SIZE - 4, b"lost").unwrap();
    let path = format!("/dev/shm/{}", shm.name());
    // A second process cuts the file to its first page.
    join_ok(spawn(move || {
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(4096).unwrap();
    }));
    let name = shm.name().to_string();
    join_ok(spawn(move || {
        // Inherited mapping, then a fresh attach (which sees the new size).
        let mut four = [0u8; 4];
        shm.read_at(0, &mut four).unwrap();
        assert_eq!(&four, b"kept", "bytes before the new end are still there");
        shm.write_at(0, b"more").unwrap();
        match shm.read_at(SIZE - 4, &mut four) {
            Err(Error::Shrunk {
                available,
                size,
                needed,
                ..
            }) => {
                assert_eq!(available, 4096);
                assert_eq!((size, needed), (SIZE as u64, SIZE as u64));
            }
            other => panic!("expected Shrunk, got {other:?}"),
        }
        assert!(matches!(
            shm.write_at(3 * 4096, b"x"),
            Err(Error::Shrunk { .. })
        ));
        let err = shm.to_vec().unwrap_err();
        assert!(matches!(err, Error::Shrunk { .. }), "{err:?}");
        assert!(err.to_string().contains("truncated"), "{err}");
        // As in CPython, a fresh attach takes the file's size now.
        assert_eq!(SharedMemory::attach(&name).unwrap().size(), 4096);
    }));
}

#[test]
fn a_file_another_program_made_attaches_as_plain_bytes() {
    // A file in /dev/shm that multiproc did not make (CPython's are such files):
    // its bytes from offset 0, its size the file's.
    let name = format!("mp-foreign-{}", std::process::id());
    let path = format!("/dev/shm/{name}");
    std::fs::write(&path, vec![0xAB; 256]).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let shm = SharedMemory::attach(&name);
    std::fs::remove_file(&path).unwrap();
    let shm = shm.unwrap();
    assert_eq!(shm.size(), 256);
    assert_eq!(shm.to_vec().unwrap(), vec![0xAB; 256]);
    // Not multiproc's: no owner record, so unlink removes the name only.
    assert!(matches!(shm.unlink(), Err(Error::NotFound { .. })));
}

/// A Directory's segment is not plain bytes: attached as SharedMemory in the
/// process that has a guard on one of its Arrays, the byte writes would land
/// under that live `&mut`. Attach refuses it (failed before: the probe's write
/// showed through the guard).
/// Fills `a` with a mark under its guard, writes zero over the mark's first copy
/// through `shm` (a second view of the same bytes, found by content), and
/// returns what the guard then reads: the mark if the two do not alias.
fn write_under_guard(shm: &SharedMemory, a: &multiproc::Array<u64>) -> u64 {
    const MARK: u64 = 0x5a5a_1234_8765_a5a5;
    let mut g = a.lock().unwrap();
    g.fill(MARK);
    let bytes = shm.to_vec().unwrap();
    let at = bytes
        .windows(8)
        .position(|w| w == MARK.to_ne_bytes())
        .expect("the elements are in the segment");
    shm.write_at(at, &0u64.to_ne_bytes()).unwrap();
    g[0]
}

#[test]
fn a_directory_does_not_attach_as_shared_memory() {
    let name = format!("mp-s16-dir-attach-{}", std::process::id());
    let dir = multiproc::Directory::create(&name, 4096).unwrap();
    let a = multiproc::Array::<u64>::create_in(&dir, "a", 4).unwrap();
    let attached = SharedMemory::attach(&name);
    if let Ok(shm) = &attached {
        let seen = write_under_guard(shm, &a);
        dir.unlink().unwrap();
        panic!("attached: a write through it showed under a live guard ({seen:#x})");
    }
    dir.unlink().unwrap();
    let err = attached.unwrap_err();
    assert!(matches!(err, Error::KindMismatch { .. }), "{err:?}");
}

/// The other order: a SharedMemory made into a directory (a real directory's
/// bytes copied in with safe calls) does not open as a Directory while this
/// process holds it as SharedMemory, whose writes would land under a guard of
/// one of its Arrays (failed before: the write showed through the guard).
#[test]
fn a_segment_held_as_shared_memory_does_not_open_as_a_directory() {
    let pid = std::process::id();
    let (real, copy) = (
        format!("mp-s16-dir-real-{pid}"),
        format!("mp-s16-dir-copy-{pid}"),
    );
    let dir = multiproc::Directory::create(&real, 4096).unwrap();
    multiproc::Array::<u64>::create_in(&dir, "a", 4).unwrap();
    let bytes = std::fs::read(format!("/dev/shm/{real}")).unwrap();
    dir.unlink().unwrap();
    let shm = SharedMemory::create_named(&copy, bytes.len()).unwrap();
    shm.write_at(0, &bytes).unwrap();
    let opened = multiproc::Directory::open(&copy);
    if let Ok(d) = &opened {
        let a = multiproc::Array::<u64>::open_in(d, "a").unwrap();
        let seen = write_under_guard(&shm, &a);
        shm.unlink().unwrap();
        panic!("opened: a SharedMemory write showed under a live guard ({seen:#x})");
    }
    shm.unlink().unwrap();
    let err = opened.unwrap_err();
    assert!(matches!(err, Error::KindMismatch { .. }), "{err:?}");
}
