//! Bad input and hostile segments: attaching to a `/dev/shm` file that is empty, too
//! open, owned by another user, a symlink, a directory or a FIFO gives a typed
//! error, never a crash (any other regular file of this user attaches, as in
//! CPython: a named segment is just bytes); `multiproc clean` skips owner records
//! that are truncated, corrupt, of another kind or version, misnamed or another
//! user's, and never removes the file they point at; named segments and
//! records multiproc creates are never readable by others.
//!
//! Every file is made directly with std::fs and removed by a guard on drop.

mod common;

use std::fs::{OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};

use common::{join_ok, spawn};
use multiproc::shm::clean::{self, Status};

/// The segment header's size, magic and layout version, as `shm::header` lays them
/// out (written out here: a test that forges headers must not trust the code it
/// attacks).
const HEADER_SIZE: usize = 64;
const MAGIC: u64 = u64::from_le_bytes(*b"MPROCSEG");
const LAYOUT_VERSION: u32 = 2;
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
fn any_regular_file_of_this_user_attaches_with_its_size_as_in_cpython() {
    // Even one that starts with a multiproc header: the bytes are the user's.
    let f = ShmFile::with_bytes("good", &header(1, SHARED_MEMORY, 100, 100));
    let shm = f.attach().unwrap();
    assert_eq!(shm.size(), HEADER_SIZE + 100);
    assert_eq!(&shm.to_vec().unwrap()[..8], b"MPROCSEG");
    let short = ShmFile::with_bytes("short", b"abc");
    let shm = short.attach().unwrap();
    assert_eq!(shm.to_vec().unwrap(), b"abc");
    assert!(matches!(
        shm.read_at(2, &mut [0u8; 2]),
        Err(Error::RangeOutOfBounds {
            offset: 2,
            len: 2,
            size: 3
        })
    ));
}

#[test]
fn empty_files_are_refused() {
    let empty = ShmFile::with_bytes("empty", &[]);
    match empty.attach() {
        Err(Error::Foreign { reason, .. }) => assert!(reason.contains("empty"), "{reason}"),
        other => panic!("expected Foreign, got {other:?}"),
    }
}

#[test]
fn segments_others_may_read_or_that_belong_to_another_user_are_refused() {
    for mode in [0o644, 0o640, 0o606, 0o666] {
        let f = ShmFile::with_bytes(&format!("mode{mode:o}"), &[7u8; 64]);
        std::fs::set_permissions(f.path(), Permissions::from_mode(mode)).unwrap();
        assert!(
            matches!(f.attach(), Err(Error::Permission { .. })),
            "mode {mode:o}"
        );
    }
    let foreign = ShmFile::with_bytes("nobody", &[7u8; 64]);
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
    let target = ShmFile::with_bytes("target", &[7u8; 64]);
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

/// An owner record as multiproc writes it for the file `target` (a valid one
/// names `mp-owner-<target's inode>`), its creator a pid that is gone.
fn record(version: u32, kind: u32, inode: u64, target: &str) -> Vec<u8> {
    let mut b = header(version, kind, target.len() as u64, 0);
    // A pid above pid_max: no such process, so the record would be stale.
    b[24..28].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
    b[40..48].copy_from_slice(&inode.to_le_bytes());
    b.extend_from_slice(target.as_bytes());
    b
}

#[test]
fn clean_skips_every_hostile_owner_record_and_keeps_what_it_points_at() {
    let target = ShmFile::with_bytes("c-target", &[1u8; 64]);
    let inode = std::fs::metadata(target.path()).unwrap().ino();
    let record_name = |tag: &str| ShmFile {
        name: format!("{}{inode}{tag}", clean::RECORD_PREFIX),
    };
    let write = |f: &ShmFile, bytes: &[u8]| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(f.path())
            .unwrap();
        file.write_all(bytes).unwrap();
    };
    let good = record(LAYOUT_VERSION, SHARED_MEMORY, inode, &target.name);
    let mut bad_magic = good.clone();
    bad_magic[0] ^= 0xff;
    let mut long_size = good.clone();
    long_size[16..24].copy_from_slice(&1000u64.to_le_bytes());
    let mut bad_utf8 = good.clone();
    *bad_utf8.last_mut().unwrap() = 0xff;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("header only", good[..HEADER_SIZE].to_vec()),
        ("cut name", good[..good.len() - 1].to_vec()),
        ("bad magic", bad_magic),
        ("size past the end", long_size),
        ("old version", record(1, SHARED_MEMORY, inode, &target.name)),
        (
            "future version",
            record(LAYOUT_VERSION + 1, SHARED_MEMORY, inode, &target.name),
        ),
        (
            "arena kind",
            record(LAYOUT_VERSION, ARENA, inode, &target.name),
        ),
        (
            "unknown kind",
            record(LAYOUT_VERSION, 99, inode, &target.name),
        ),
        (
            "name with a slash",
            record(LAYOUT_VERSION, SHARED_MEMORY, inode, "a/b"),
        ),
        ("name not UTF-8", bad_utf8),
        ("zeros", vec![0u8; 200]),
    ];
    // Each case in turn under the record's exact name, then a valid record under
    // a name that does not match its inode, one too open, and another user's.
    for (what, bytes) in &cases {
        let f = record_name("");
        write(&f, bytes);
        assert!(
            clean::scan().unwrap().iter().all(|s| s.name != target.name),
            "{what}: listed"
        );
        assert!(
            matches!(clean::status(&target.name), Err(Error::NotFound { .. })),
            "{what}"
        );
        assert!(clean::remove_stale(&target.name).is_err(), "{what}");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_multiproc"))
            .args(["clean", "--yes", &target.name])
            .output()
            .unwrap();
        // Not found by name: an error exit, nothing removed.
        assert!(!out.status.success(), "{what}");
        assert!(
            std::fs::metadata(f.path()).is_ok(),
            "{what}: record removed"
        );
        assert!(
            std::fs::metadata(target.path()).is_ok(),
            "{what}: target removed"
        );
    }
    // A valid record under a name that does not match its inode.
    let misnamed = record_name("0");
    write(&misnamed, &good);
    assert!(clean::scan().unwrap().iter().all(|s| s.name != target.name));
    drop(misnamed);
    // The control: the same bytes under the right name are a stale record.
    let valid = record_name("");
    write(&valid, &good);
    let info = clean::status(&target.name);
    // Given to another user (the tests run as root), it is not ours any more.
    let given = std::os::unix::fs::chown(valid.path(), Some(65534), Some(65534)).is_ok();
    let after = clean::status(&target.name);
    drop(valid);
    let info = info.unwrap();
    assert_eq!((info.status, info.file_present), (Status::Stale, true));
    assert_eq!(info.file_size, 64);
    if given {
        assert!(matches!(after, Err(Error::NotFound { .. })), "{after:?}");
    }
    assert!(std::fs::metadata(target.path()).is_ok());
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
        let record = clean::status(shm.name()).unwrap().record;
        let rmeta = std::fs::metadata(format!("/dev/shm/{record}")).unwrap();
        // Both 0600: 0o600 | 0o600 << 9 when both are right.
        m.set((meta.permissions().mode() & 0o777) | (rmeta.permissions().mode() & 0o777) << 9);
        shm.unlink().unwrap();
    }));
    assert_eq!(
        mode.get(),
        0o600 | 0o600 << 9,
        "segment and record are 0600"
    );
}
