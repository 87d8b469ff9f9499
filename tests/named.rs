//! Objects opened by name: a separate program (the `multiproc` binary's hidden
//! `dir peer` mode, which did not create them) opens a Lock, a Value and Queues
//! by name and uses them with their creator; a peer SIGKILLed holding the Lock
//! gives the creator OwnerDied; every wrong open is a typed error; creators racing
//! on one name make one object; every type round-trips through a forked child;
//! and nothing is left in /dev/shm.

mod common;

use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::{BOUND, T, join_all_ok, join_ok, spawn};
use multiproc::named::ObjectKind;
use multiproc::{
    Array, Barrier, BoundedSemaphore, Directory, Error, Event, Lock, Queue, RLock, RawArray,
    RawValue, Semaphore, SharedMemory, TryLockError, Value,
};

/// The directory format as `docs/LAYOUT.md` gives it (written out here: tests
/// that forge bytes must not trust the code they attack).
const FORMAT_AT: u64 = 80;
const TABLE: u64 = 128;
const ENTRY_VERSION: u64 = 4;
const ENTRY_OFFSET: u64 = 8;

/// A directory that is unlinked when dropped (even when the test fails), and
/// whose name and owner record are checked gone by [`Dir::finish`].
struct Dir {
    dir: Directory,
    ino: u64,
}

fn unique(tag: &str) -> String {
    format!("mp-named-{}-{tag}", std::process::id())
}

impl Dir {
    fn new(tag: &str, bytes: usize) -> Dir {
        let dir = Directory::create(&unique(tag), bytes).unwrap();
        let ino = std::fs::metadata(path(dir.name())).unwrap().ino();
        Dir { dir, ino }
    }

    /// Unlinks it and checks that neither the segment nor its owner record stays.
    fn finish(self) {
        let (name, ino) = (self.dir.name().to_string(), self.ino);
        drop(self);
        assert!(!std::path::Path::new(&path(&name)).exists(), "{name} left");
        let record = format!("mp-owner-{ino}");
        assert!(!common::dev_shm().contains(&record), "{record} left");
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = self.dir.unlink();
    }
}

impl std::ops::Deref for Dir {
    type Target = Directory;
    fn deref(&self) -> &Directory {
        &self.dir
    }
}

fn path(name: &str) -> String {
    format!("/dev/shm/{name}")
}

/// The `multiproc` binary (another program than this test) with `args`.
fn multiproc(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_multiproc"));
    c.args(args).stdin(Stdio::null());
    c
}

/// Waits (polling, bounded) for `child` to exit; kills it if it does not.
fn wait_child(child: &mut Child) -> std::process::ExitStatus {
    let end = Instant::now() + BOUND;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("peer {} did not exit in time", child.id());
        }
        std::thread::yield_now();
    }
}

/// The objects a peer opens (see `src/cli/dir.rs`).
struct Shared {
    lock: Lock,
    counter: Value<u64>,
    to_peer: Queue<String>,
    from_peer: Queue<String>,
}

fn shared(dir: &Directory) -> Shared {
    Shared {
        lock: Lock::create_in(dir, "lock").unwrap(),
        counter: Value::create_in(dir, "counter", 0u64).unwrap(),
        to_peer: Queue::create_in_with_bounds(dir, "to_peer", 0, 4096).unwrap(),
        from_peer: Queue::create_in_with_bounds(dir, "from_peer", 0, 4096).unwrap(),
    }
}

#[test]
fn another_program_uses_a_lock_a_value_and_queues_by_name_with_their_creator() {
    const N: u64 = 3000;
    const PEERS: usize = 2;
    let dir = Dir::new("peers", 64 * 1024);
    let s = shared(&dir);
    let n = N.to_string();
    // One inbox per peer (`to_peer` is the first's), one shared reply queue.
    let inboxes: Vec<(String, Queue<String>)> = (0..PEERS)
        .map(|i| match i {
            0 => ("to_peer".to_string(), s.to_peer.clone()),
            _ => {
                let name = format!("to_peer{i}");
                let q = Queue::create_in_with_bounds(&dir, &name, 0, 4096).unwrap();
                (name, q)
            }
        })
        .collect();
    let mut peers: Vec<Child> = inboxes
        .iter()
        .map(|(inbox, _)| {
            multiproc(&[
                "dir",
                "peer",
                dir.name(),
                "--increments",
                &n,
                "--inbox",
                inbox,
            ])
            .spawn()
            .unwrap()
        })
        .collect();
    for (_, q) in &inboxes {
        q.put(&"start".to_string(), None).unwrap();
    }
    for _ in 0..N {
        let _g = s.lock.lock().unwrap();
        s.counter.set(s.counter.get().unwrap() + 1).unwrap();
    }
    for _ in 0..PEERS {
        assert_eq!(s.from_peer.get(T).unwrap(), format!("done {N}"));
    }
    for (i, (_, q)) in inboxes.iter().enumerate() {
        q.put(&format!("bye {i}"), None).unwrap();
    }
    let mut byes: Vec<String> = (0..PEERS).map(|_| s.from_peer.get(T).unwrap()).collect();
    byes.sort();
    assert_eq!(
        byes,
        (0..PEERS)
            .map(|i| format!("bye {i} back"))
            .collect::<Vec<_>>()
    );
    for p in &mut peers {
        assert!(wait_child(p).success(), "a peer failed");
    }
    assert_eq!(s.counter.get().unwrap(), N * (PEERS as u64 + 1));
    // `multiproc dir list` (another program) lists them with their types.
    let out = multiproc(&["dir", "list", dir.name()]).output().unwrap();
    assert!(out.status.success());
    let listing = String::from_utf8(out.stdout).unwrap();
    for want in [
        "lock",
        "Lock",
        "counter",
        "Value<u64>",
        "to_peer",
        "Queue<alloc::string::String>",
    ] {
        assert!(listing.contains(want), "{want} not in {listing}");
    }
    dir.finish();
}

#[test]
fn a_peer_killed_holding_the_lock_gives_the_creator_owner_died() {
    let dir = Dir::new("kill", 64 * 1024);
    let s = shared(&dir);
    let mut peer = multiproc(&["dir", "peer", dir.name(), "--hold"])
        .spawn()
        .unwrap();
    assert_eq!(s.from_peer.get(T).unwrap(), "holding");
    assert!(s.lock.is_locked());
    peer.kill().unwrap();
    let status = wait_child(&mut peer);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    match s.lock.try_lock_for(BOUND) {
        Err(TryLockError::OwnerDied(died)) => died.into_inner().mark_consistent(),
        other => panic!("expected OwnerDied, got {:?}", other.map(|_| ())),
    }
    // The lock works on, and the other objects too.
    drop(s.lock.try_lock().unwrap());
    s.counter.set(1).unwrap();
    dir.finish();
}

#[test]
fn every_wrong_open_is_a_typed_error_that_says_what_to_do() {
    let dir = Dir::new("wrong", 64 * 1024);
    Lock::create_in(&dir, "lock").unwrap();
    Value::create_in(&dir, "v32", 1u32).unwrap();
    Array::<u8>::create_in(&dir, "bytes", 4).unwrap();
    Queue::<u32>::create_in_with_bounds(&dir, "q", 0, 256).unwrap();

    let e = Barrier::open_in(&dir, "lock").unwrap_err();
    assert!(
        matches!(&e, Error::ObjectTypeMismatch { found, expected, .. } if found == "Lock" && expected == "Barrier"),
        "{e:?}"
    );
    assert!(e.to_string().contains("open it as a Lock"), "{e}");
    for e in [
        RLock::open_in(&dir, "lock").unwrap_err(),
        Event::open_in(&dir, "lock").unwrap_err(),
        Semaphore::open_in(&dir, "lock").unwrap_err(),
        BoundedSemaphore::open_in(&dir, "lock").unwrap_err(),
        Lock::open_in(&dir, "v32").unwrap_err(),
        Value::<u64>::open_in(&dir, "v32").unwrap_err(),
        Value::<i32>::open_in(&dir, "v32").unwrap_err(),
        Value::<[u8; 4]>::open_in(&dir, "v32").unwrap_err(),
        RawValue::<u32>::open_in(&dir, "v32").unwrap_err(),
        Array::<u16>::open_in(&dir, "bytes").unwrap_err(),
        RawArray::<u8>::open_in(&dir, "bytes").unwrap_err(),
        Queue::<String>::open_in(&dir, "q").unwrap_err(),
        Queue::<u32>::open_in(&dir, "lock").unwrap_err(),
    ] {
        assert!(matches!(e, Error::ObjectTypeMismatch { .. }), "{e:?}");
    }
    let e = Value::<u64>::open_in(&dir, "v32").unwrap_err();
    assert!(
        e.to_string().contains("is a Value<u32>, not a Value<u64>"),
        "{e}"
    );

    let e = Lock::open_in(&dir, "missing").unwrap_err();
    assert!(matches!(e, Error::ObjectNotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("create it first"), "{e}");

    let e = Event::create_in(&dir, "lock").unwrap_err();
    assert!(
        matches!(&e, Error::ObjectExists { found, .. } if found == "Lock"),
        "{e:?}"
    );
    assert!(e.to_string().contains("Lock::open_in"), "{e}");

    assert!(matches!(
        Lock::create_in(&dir, ""),
        Err(Error::InvalidArgument(_))
    ));
    let e = Directory::create(dir.name(), 4096).unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e:?}");
    assert!(matches!(
        Directory::open(&unique("no-such-dir")),
        Err(Error::NotFound { .. })
    ));

    // A directory too small, or out of entries.
    let small = Dir::new("small", 4096);
    let e = Queue::<u8>::create_in(&small, "big").unwrap_err();
    assert!(matches!(e, Error::DirectoryFull { .. }), "{e:?}");
    for i in 0..multiproc::named::ENTRIES {
        Event::create_in(&small, &format!("e{i}")).unwrap();
    }
    let e = Event::create_in(&small, "one-more").unwrap_err();
    assert!(matches!(e, Error::DirectoryFull { .. }), "{e:?}");
    assert_eq!(small.names().unwrap().len(), multiproc::named::ENTRIES);
    small.finish();
    dir.finish();
}

#[test]
fn segments_that_are_not_directories_are_refused() {
    // A SharedMemory: no header, so not a directory.
    let shm = SharedMemory::create_named(&unique("shm"), 8192).unwrap();
    let e = Directory::open(shm.name()).unwrap_err();
    assert!(matches!(e, Error::Foreign { .. }), "{e:?}");
    shm.unlink().unwrap();
    // A directory whose mode lets others in.
    let open = Dir::new("mode", 4096);
    std::fs::set_permissions(path(open.name()), std::fs::Permissions::from_mode(0o644)).unwrap();
    // This process maps it already (by inode): a fresh process checks anew.
    let out = multiproc(&["dir", "list", open.name()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("mode 644"), "{err}");
    open.finish();
}

/// A directory made by a child (so that this process does not map it: its open
/// checks run here), with a Lock named "lock"; its file and owner record are
/// removed when dropped, even when the test fails.
struct Elsewhere {
    name: String,
    ino: u64,
}

impl Drop for Elsewhere {
    fn drop(&mut self) {
        let same = std::fs::metadata(path(&self.name)).is_ok_and(|m| m.ino() == self.ino);
        if same {
            let _ = std::fs::remove_file(path(&self.name));
        }
        let _ = std::fs::remove_file(path(&format!("mp-owner-{}", self.ino)));
    }
}

impl std::ops::Deref for Elsewhere {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

fn made_elsewhere(tag: &str) -> Elsewhere {
    let name = unique(tag);
    let n = name.clone();
    join_ok(spawn(move || {
        let dir = Directory::create(&n, 4096).unwrap();
        Lock::create_in(&dir, "lock").unwrap();
    }));
    let ino = std::fs::metadata(path(&name)).unwrap().ino();
    Elsewhere { name, ino }
}

fn forge(name: &str, at: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path(name))
        .unwrap();
    f.write_all_at(bytes, at).unwrap();
}

#[test]
fn other_versions_and_corrupt_entries_are_typed_errors() {
    // The directory format version.
    let name = made_elsewhere("format");
    forge(&name, FORMAT_AT, &9u32.to_le_bytes());
    let e = Directory::open(&name).unwrap_err();
    assert!(
        matches!(
            e,
            Error::VersionMismatch {
                found: 9,
                expected: 1,
                ..
            }
        ),
        "{e:?}"
    );
    drop(name);

    // The object's layout version.
    let name = made_elsewhere("version");
    forge(&name, TABLE + ENTRY_VERSION, &7u32.to_le_bytes());
    let dir = Directory::open(&name).unwrap();
    let e = Lock::open_in(&dir, "lock").unwrap_err();
    assert!(
        matches!(
            e,
            Error::ObjectVersionMismatch {
                found: 7,
                expected: 1,
                kind: "Lock",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("same multiproc version"), "{e}");
    dir.unlink().unwrap();

    // An entry pointing outside the file.
    let name = made_elsewhere("corrupt");
    forge(&name, TABLE + ENTRY_OFFSET, &(1u64 << 40).to_le_bytes());
    let dir = Directory::open(&name).unwrap();
    let e = Lock::open_in(&dir, "lock").unwrap_err();
    assert!(matches!(e, Error::DirectoryCorrupt { .. }), "{e:?}");
    assert!(matches!(dir.objects(), Err(Error::DirectoryCorrupt { .. })));
    dir.unlink().unwrap();

    // The segment header's layout version (a fresh process: `dir list`).
    let name = made_elsewhere("layout");
    forge(&name, 8, &3u32.to_le_bytes());
    let out = multiproc(&["dir", "list", &name]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("layout version 3")
    );
    drop(name);
}

#[test]
fn creators_racing_on_one_name_make_one_object() {
    const KIDS: usize = 4;
    const EACH: u64 = 500;
    let dir = Dir::new("race", 64 * 1024);
    let go = Event::new().unwrap();
    let created = RawValue::<u64>::new(0).unwrap();
    let kids = (0..KIDS)
        .map(|_| {
            let (dir, go, created) = (dir.dir.clone(), go.clone(), created.clone());
            spawn(move || {
                assert!(go.wait(T).unwrap());
                let v = match Value::<u64>::create_in(&dir, "count", 0) {
                    Ok(v) => {
                        created.fetch_add(1);
                        v
                    }
                    Err(Error::ObjectExists { .. }) => Value::open_in(&dir, "count").unwrap(),
                    Err(e) => panic!("{e}"),
                };
                for _ in 0..EACH {
                    *v.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    go.set();
    join_all_ok(kids);
    assert_eq!(created.get(), 1, "exactly one creator made it");
    assert_eq!(dir.names().unwrap(), vec!["count".to_string()]);
    assert_eq!(
        Value::<u64>::open_in(&dir, "count").unwrap().get().unwrap(),
        KIDS as u64 * EACH
    );
    dir.finish();
}

#[test]
fn processes_racing_to_create_one_directory_share_it() {
    const KIDS: usize = 4;
    let name = unique("dir-race");
    let go = Event::new().unwrap();
    let kids = (0..KIDS)
        .map(|i| {
            let (name, go) = (name.clone(), go.clone());
            spawn(move || {
                assert!(go.wait(T).unwrap());
                let dir = Directory::open_or_create(&name, 4096).unwrap();
                Event::create_in(&dir, &format!("kid{i}")).unwrap();
            })
        })
        .collect();
    go.set();
    join_all_ok(kids);
    let dir = Directory::open(&name).unwrap();
    let mut names = dir.names().unwrap();
    names.sort();
    assert_eq!(
        names,
        (0..KIDS).map(|i| format!("kid{i}")).collect::<Vec<_>>()
    );
    let ino = std::fs::metadata(path(&name)).unwrap().ino();
    Dir { dir, ino }.finish();
}

#[test]
fn every_type_round_trips_through_a_forked_child_by_name() {
    let d = Dir::new("fork", 64 * 1024);
    let lock = Lock::create_in(&d, "lock").unwrap();
    let rlock = RLock::create_in(&d, "rlock").unwrap();
    let sem = Semaphore::create_in(&d, "sem", 2).unwrap();
    let bsem = BoundedSemaphore::create_in(&d, "bsem", 1).unwrap();
    let event = Event::create_in(&d, "event").unwrap();
    let barrier = Barrier::create_in(&d, "barrier", 2).unwrap();
    let value = Value::create_in(&d, "value", 1.5f64).unwrap();
    let raw_value = RawValue::create_in(&d, "raw_value", 7i32).unwrap();
    let array = Array::<u16>::create_in(&d, "array", 3).unwrap();
    let raw_array = RawArray::<u8>::create_in(&d, "raw_array", 5).unwrap();
    let queue = Queue::<(u32, String)>::create_in_with_bounds(&d, "queue", 0, 1024).unwrap();
    let back = Queue::<(u32, String)>::create_in_with_bounds(&d, "back", 0, 1024).unwrap();
    let name = d.name().to_string();
    let child = spawn(move || {
        // Opened by name, not inherited.
        let dir = Directory::open(&name).unwrap();
        let l = Lock::open_in(&dir, "lock").unwrap();
        std::mem::forget(l.lock().unwrap()); // left held: the parent sees it
        let r = RLock::open_in(&dir, "rlock").unwrap();
        drop(r.lock().unwrap());
        let s = Semaphore::open_in(&dir, "sem").unwrap();
        assert_eq!(s.get_value(), 2);
        std::mem::forget(s.lock().unwrap());
        let b = BoundedSemaphore::open_in(&dir, "bsem").unwrap();
        assert!(matches!(b.release(), Err(Error::OverRelease { .. })));
        Event::open_in(&dir, "event").unwrap().set();
        let v = Value::<f64>::open_in(&dir, "value").unwrap();
        *v.lock().unwrap() *= 2.0;
        RawValue::<i32>::open_in(&dir, "raw_value").unwrap().set(-7);
        Array::<u16>::open_in(&dir, "array")
            .unwrap()
            .lock()
            .unwrap()[2] = 9;
        RawArray::<u8>::open_in(&dir, "raw_array")
            .unwrap()
            .set(4, 1)
            .unwrap();
        let q = Queue::<(u32, String)>::open_in(&dir, "queue").unwrap();
        q.put(&(1, "from the child".into()), None).unwrap();
        let back = Queue::<(u32, String)>::open_in(&dir, "back").unwrap();
        assert_eq!(back.get(T).unwrap(), (2, "from the parent".to_string()));
        assert!(Barrier::open_in(&dir, "barrier").unwrap().wait(T).unwrap() < 2);
    });
    assert_eq!(queue.get(T).unwrap(), (1, "from the child".to_string()));
    back.put(&(2, "from the parent".into()), None).unwrap();
    assert!(barrier.wait(T).unwrap() < 2);
    join_ok(child);
    assert!(lock.is_locked());
    assert!(!rlock.is_locked());
    assert_eq!(sem.get_value(), 1);
    assert_eq!(bsem.get_value(), 1);
    assert!(event.is_set());
    assert_eq!(value.get().unwrap(), 3.0);
    assert_eq!(raw_value.get(), -7);
    assert_eq!(array.to_vec().unwrap(), vec![0, 0, 9]);
    assert_eq!(raw_array.to_vec().unwrap(), vec![0, 0, 0, 0, 1]);
    let kinds: Vec<ObjectKind> = d.objects().unwrap().iter().map(|o| o.kind).collect();
    assert_eq!(kinds.len(), 12);
    d.finish();
}

#[test]
fn handles_opened_twice_in_one_process_share_one_claim() {
    let d = Dir::new("claims", 4096);
    let a = Array::<u32>::create_in(&d, "a", 4).unwrap();
    let b = Array::<u32>::open_in(&d, "a").unwrap();
    let c = RawArray::<u32>::create_in(&d, "raw", 4).unwrap();
    let c2 = RawArray::<u32>::open_in(&d, "raw").unwrap();
    {
        let _g = a.lock().unwrap();
        // Another handle to the same elements cannot make a second `&mut`, nor
        // read while the guard's `&mut` lives.
        assert!(b.try_lock().is_err());
        assert!(matches!(b.to_vec(), Err(Error::InUse { .. })));
    }
    let chunks = c.chunks(2).unwrap();
    assert!(matches!(c2.chunks(2), Err(Error::InUse { .. })));
    drop(chunks);
    assert!(c2.chunks(2).is_ok());
    d.finish();
}

#[test]
fn multiproc_clean_knows_directories_whose_creator_is_gone() {
    use multiproc::shm::clean::{self, Status};
    let name = made_elsewhere("clean");
    let ino = std::fs::metadata(path(&name)).unwrap().ino();
    // The creator exited without unlinking, and nobody maps it: stale.
    let info = clean::status(&name).unwrap();
    assert_eq!(
        (info.status, info.kind),
        (Status::Stale, clean::Kind::Directory)
    );
    // Mapped by a live process (this one): kept.
    let dir = Directory::open(&name).unwrap();
    assert_eq!(
        clean::status(&name).unwrap().status,
        Status::InUse {
            pid: std::process::id()
        }
    );
    assert!(clean::remove_stale(&name).is_err());
    assert_eq!(dir.names().unwrap(), vec!["lock".to_string()]);
    // A directory this process maps stays mapped (never unmapped), so the
    // removal itself is shown through `multiproc clean` from the state it sees:
    // unlink by name, then nothing is left.
    dir.unlink().unwrap();
    assert!(!std::path::Path::new(&path(&name)).exists());
    assert!(!common::dev_shm().contains(&format!("mp-owner-{ino}")));

    // And one nobody maps is removed by `multiproc clean --yes` (another program).
    let name = made_elsewhere("clean-yes");
    let ino = std::fs::metadata(path(&name)).unwrap().ino();
    let out = multiproc(&["clean", "--yes", &name]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!std::path::Path::new(&path(&name)).exists());
    assert!(!common::dev_shm().contains(&format!("mp-owner-{ino}")));
}

#[test]
fn objects_of_a_directory_travel_by_name_not_as_tokens() {
    let d = Dir::new("token", 4096);
    let lock = Lock::create_in(&d, "lock").unwrap();
    let e = multiproc::token::export(&lock).unwrap_err();
    assert!(e.to_string().contains("travels by name"), "{e}");
    d.finish();
}
