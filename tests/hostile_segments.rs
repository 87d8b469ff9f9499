//! Bad input and hostile segments: attaching to a `/dev/shm` file that is truncated,
//! corrupt, of another kind or version, too open, owned by another user, a symlink,
//! a directory or a FIFO gives a typed error, never a crash; `multiproc clean` skips
//! such files; named segments multiproc creates are never readable by others.
//!
//! Every file is made directly with std::fs and removed by a guard on drop.

mod common;

use std::fs::{OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

use common::{join_ok, spawn};
use multiproc::shm::clean;

/// The segment header's size and magic, as `shm::header` lays them out (written
/// out here: a test that forges headers must not trust the code it attacks).
const HEADER_SIZE: usize = 64;
const MAGIC: u64 = u64::from_le_bytes(*b"MPROCSEG");
use multiproc::{Error, RawValue, SharedMemory};

/// A file in /dev/shm, removed when dropped (even when the test fails).
struct ShmFile {
    name: String,
}

impl ShmFile {
    fn path(&self) -> String {
        format!("/dev/shm/{}", self.name)
    }

    /// A fresh, unique name (nothing created yet).
    fn name(tag: &str) -> ShmFile {
        ShmFile {
            name: format!("mp-hostile-{}-{tag}", std::process::id()),
        }
    }

    /// A regular file with these bytes and mode 0600.
    fn with_bytes(tag: &str, bytes: &[u8]) -> ShmFile {
        let f = ShmFile::name(tag);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(f.path())
            .unwrap();
        file.write_all(bytes).unwrap();
        f
    }

    fn attach(&self) -> multiproc::Result<SharedMemory> {
        SharedMemory::attach(&self.name)
    }
}

impl Drop for ShmFile {
    fn drop(&mut self) {
        let p = self.path();
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            let _ = std::fs::remove_dir(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// A header as multiproc writes it, followed by `payload` zero bytes on disk.
fn header(version: u32, kind: u32, size: u64, payload: usize) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_SIZE + payload];
    b[..8].copy_from_slice(&MAGIC.to_le_bytes());
    b[8..12].copy_from_slice(&version.to_le_bytes());
    b[12..16].copy_from_slice(&kind.to_le_bytes());
    b[16..24].copy_from_slice(&size.to_le_bytes());
    b[24..28].copy_from_slice(&std::process::id().to_le_bytes());
    b
}

const SHARED_MEMORY: u32 = 2;
const ARENA: u32 = 1;

#[test]
fn a_well_formed_file_attaches_so_the_others_fail_for_their_defect_only() {
    let f = ShmFile::with_bytes("good", &header(1, SHARED_MEMORY, 100, 100));
    let shm = f.attach().unwrap();
    assert_eq!(shm.size(), 100);
}

#[test]
fn truncated_files_are_refused() {
    let empty = ShmFile::with_bytes("empty", &[]);
    assert!(matches!(empty.attach(), Err(Error::Foreign { .. })));
    let short = ShmFile::with_bytes("short", &MAGIC.to_le_bytes());
    assert!(matches!(short.attach(), Err(Error::Foreign { .. })));
    // A whole header that promises 4096 bytes of payload, with 100 on disk.
    let cut = ShmFile::with_bytes("cut", &header(1, SHARED_MEMORY, 4096, 100));
    match cut.attach() {
        Err(Error::Truncated { actual, needed, .. }) => {
            assert_eq!((actual, needed), (164, 4160));
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    let huge = ShmFile::with_bytes("huge", &header(1, SHARED_MEMORY, u64::MAX, 0));
    assert!(matches!(huge.attach(), Err(Error::Foreign { .. })));
}

#[test]
fn corrupt_headers_are_refused() {
    let zero = ShmFile::with_bytes("zero", &[0u8; 4096]);
    assert!(matches!(zero.attach(), Err(Error::Foreign { .. })));
    let mut bad = header(1, SHARED_MEMORY, 16, 16);
    bad[0] ^= 0xff;
    let bad = ShmFile::with_bytes("magic", &bad);
    assert!(matches!(bad.attach(), Err(Error::Foreign { .. })));
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let garbage = ShmFile::with_bytes("garbage", &garbage);
    assert!(matches!(garbage.attach(), Err(Error::Foreign { .. })));
    let unknown = ShmFile::with_bytes("kind99", &header(1, 99, 16, 16));
    assert!(matches!(unknown.attach(), Err(Error::Foreign { .. })));
}

#[test]
fn other_kinds_and_versions_are_refused() {
    let arena = ShmFile::with_bytes("arena", &header(1, ARENA, 64, 64));
    match arena.attach() {
        Err(Error::KindMismatch {
            expected, found, ..
        }) => {
            assert_eq!(expected, "SharedMemory");
            assert_eq!(found, "arena chunk");
        }
        other => panic!("expected KindMismatch, got {other:?}"),
    }
    for version in [0, 2, u32::MAX] {
        let f = ShmFile::with_bytes(
            &format!("v{version}"),
            &header(version, SHARED_MEMORY, 8, 8),
        );
        match f.attach() {
            Err(Error::VersionMismatch {
                found, expected, ..
            }) => assert_eq!((found, expected), (version, 1)),
            other => panic!("version {version}: expected VersionMismatch, got {other:?}"),
        }
    }
}

#[test]
fn segments_others_may_read_or_that_belong_to_another_user_are_refused() {
    for mode in [0o644, 0o640, 0o606, 0o666] {
        let f = ShmFile::with_bytes(&format!("mode{mode:o}"), &header(1, SHARED_MEMORY, 8, 8));
        std::fs::set_permissions(f.path(), Permissions::from_mode(mode)).unwrap();
        assert!(
            matches!(f.attach(), Err(Error::Permission { .. })),
            "mode {mode:o}"
        );
    }
    let foreign = ShmFile::with_bytes("nobody", &header(1, SHARED_MEMORY, 8, 8));
    // The tests run as root: give the file to `nobody`. Not root: the open fails
    // with a permission error, which is the same typed error.
    let _ = std::os::unix::fs::chown(foreign.path(), Some(65534), Some(65534));
    match foreign.attach() {
        Err(Error::Permission { reason, .. }) => {
            assert!(
                reason.contains("another user") || reason.contains("uid"),
                "{reason}"
            );
        }
        other => panic!("expected Permission, got {other:?}"),
    }
}

#[test]
fn symlinks_directories_and_fifos_are_refused_without_hanging() {
    let target = ShmFile::with_bytes("target", &header(1, SHARED_MEMORY, 8, 8));
    let link = ShmFile::name("link");
    std::os::unix::fs::symlink(target.path(), link.path()).unwrap();
    // Regression: attach used to follow the link (rustix's shm_open has no
    // O_NOFOLLOW) and attach to the target.
    assert!(
        matches!(link.attach(), Err(Error::Foreign { .. })),
        "a symlink is not followed"
    );

    let dir = ShmFile::name("dir");
    std::fs::create_dir(dir.path()).unwrap();
    assert!(matches!(dir.attach(), Err(Error::Foreign { .. })));

    let fifo = ShmFile::name("fifo");
    let status = std::process::Command::new("mkfifo")
        .args(["-m", "600", &fifo.path()])
        .status()
        .unwrap();
    assert!(status.success());
    // Attach in a child, so that a hang fails the join instead of the whole run.
    let name = fifo.name.clone();
    let refused = RawValue::new(0u32).unwrap();
    let r = refused.clone();
    join_ok(spawn(move || {
        if matches!(SharedMemory::attach(&name), Err(Error::Foreign { .. })) {
            r.set(1);
        }
    }));
    assert_eq!(refused.get(), 1);
}

#[test]
fn clean_skips_every_hostile_file() {
    let files = [
        ShmFile::with_bytes("c-empty", &[]),
        ShmFile::with_bytes("c-short", &[1, 2, 3]),
        ShmFile::with_bytes("c-cut", &header(1, SHARED_MEMORY, 4096, 100)),
        ShmFile::with_bytes("c-zero", &[0u8; 128]),
        ShmFile::with_bytes("c-v2", &header(2, SHARED_MEMORY, 8, 8)),
    ];
    let nobody = ShmFile::with_bytes("c-nobody", &header(1, SHARED_MEMORY, 8, 8));
    let _ = std::os::unix::fs::chown(nobody.path(), Some(65534), Some(65534));
    let listed = clean::scan().unwrap();
    for f in files.iter().chain([&nobody]) {
        assert!(listed.iter().all(|s| s.name != f.name), "{} listed", f.name);
        assert!(matches!(
            clean::status(&f.name),
            Err(Error::NotFound { .. })
        ));
        assert!(clean::remove_stale(&f.name).is_err());
        assert!(
            std::fs::symlink_metadata(f.path()).is_ok(),
            "{} removed",
            f.name
        );
    }
}

#[test]
fn named_segments_are_created_0600_whatever_the_umask() {
    let mode = RawValue::new(0u32).unwrap();
    let m = mode.clone();
    join_ok(spawn(move || {
        // Only this child's file-creation mask changes.
        rustix::process::umask(rustix::fs::Mode::empty());
        let shm = SharedMemory::create(8).unwrap();
        let meta = std::fs::metadata(format!("/dev/shm/{}", shm.name())).unwrap();
        m.set(meta.permissions().mode() & 0o777);
        shm.unlink().unwrap();
    }));
    assert_eq!(mode.get(), 0o600);
}
