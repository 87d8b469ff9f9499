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
    assert_eq!(shm.to_vec()[4095], 7);
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
    assert!(matches!(
        shm.write_at(5, b"1234"),
        Err(Error::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        shm.read_at(usize::MAX, &mut [0u8; 2]),
        Err(Error::IndexOutOfRange { .. })
    ));
    shm.unlink().unwrap();
}

#[test]
fn attaching_to_a_foreign_file_is_an_error() {
    // A file in /dev/shm that multiproc did not make.
    let name = format!("mp-foreign-{}", std::process::id());
    let path = format!("/dev/shm/{name}");
    std::fs::write(&path, vec![0xAB; 256]).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = SharedMemory::attach(&name).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(err, Error::Foreign { .. }), "{err}");
    assert!(err.to_string().contains("not a multiproc segment"));
}
