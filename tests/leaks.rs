//! Nothing leaks: processes killed (SIGKILL) at various points leave no `/dev/shm`
//! entry and no memfd behind, except named segments their user created and did not
//! unlink, which `multiproc clean` (and `shm::clean`) finds and removes.
//!
//! Other test processes (and other programs) may create and remove `/dev/shm`
//! entries while these tests run, so "as before" is checked for the entries *these*
//! tests' processes created: new entries whose header names one of them as creator.

mod common;

use std::collections::HashSet;

use common::{BOUND, dev_shm, get_name, join_ok, put_name, spawn};
use multiproc::shm::clean::{self, Status};
use multiproc::{Array, Event, Lock, Process, RLock, RawValue, SharedMemory, Value};

/// Starts a child that runs `setup`, sets `ready`, and waits to be killed.
fn doomed(ready: &Event, setup: impl FnOnce() + Send + 'static) -> Process {
    let ready = ready.clone();
    let never = Event::new().unwrap();
    spawn(move || {
        setup();
        ready.set();
        never.wait(Some(BOUND)).unwrap();
        panic!("not killed in time");
    })
}

fn kill_when_ready(mut p: Process, ready: &Event) -> u32 {
    assert!(
        ready.wait(Some(BOUND)).unwrap(),
        "the child never got ready"
    );
    let pid = p.pid().unwrap();
    p.kill().unwrap();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(-9));
    pid
}

/// `/dev/shm` entries that are not in `before` and were created by one of `pids`.
fn new_entries_by(before: &[String], pids: &HashSet<u32>) -> Vec<String> {
    let before: HashSet<&String> = before.iter().collect();
    let ours: HashSet<String> = clean::scan()
        .unwrap()
        .into_iter()
        .filter(|s| pids.contains(&s.creator_pid))
        .flat_map(|s| [s.name, s.record])
        .collect();
    dev_shm()
        .into_iter()
        .filter(|n| !before.contains(n) && ours.contains(n))
        .collect()
}

/// Inodes of the multiproc memfds mapped by process `pid` (`self` for this one).
fn memfd_inodes(pid: &str) -> HashSet<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines()
        .filter(|l| l.contains("/memfd:multiproc"))
        .filter_map(|l| l.split_whitespace().nth(4)?.parse().ok())
        .collect()
}

/// Every multiproc memfd inode mapped by any process on the machine.
fn memfd_inodes_everywhere() -> HashSet<u64> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .flat_map(|pid| memfd_inodes(&pid.to_string()))
        .collect()
}

#[test]
fn processes_killed_at_any_point_leave_dev_shm_as_before() {
    let before = dev_shm();
    let mut pids = HashSet::new();
    let lock = Lock::new().unwrap();
    let rlock = RLock::new().unwrap();

    // Killed holding a Lock and an RLock.
    let ready = Event::new().unwrap();
    let (l, r) = (lock.clone(), rlock.clone());
    let p = doomed(&ready, move || {
        std::mem::forget(l.lock().unwrap());
        std::mem::forget(r.lock().unwrap());
    });
    pids.insert(kill_when_ready(p, &ready));

    // Killed after creating arena objects, a large Array (a memfd of its own) and
    // while holding a Value's lock.
    let ready = Event::new().unwrap();
    let p = doomed(&ready, || {
        let locks: Vec<Lock> = (0..1000).map(|_| Lock::new().unwrap()).collect();
        let big = Array::<u64>::new(1 << 17).unwrap();
        big.set(0, 1).unwrap();
        let v = Value::new(5u64).unwrap();
        std::mem::forget(v.lock().unwrap());
        std::mem::forget((locks, big, v));
    });
    pids.insert(kill_when_ready(p, &ready));

    // Killed after creating a named segment and unlinking it, with it still mapped.
    let ready = Event::new().unwrap();
    let p = doomed(&ready, || {
        let shm = SharedMemory::create(1 << 16).unwrap();
        shm.write_at(0, b"still mapped").unwrap();
        shm.unlink().unwrap();
        std::mem::forget(shm);
    });
    pids.insert(kill_when_ready(p, &ready));

    // The locks they held still work (with OwnerDied, as they should).
    assert!(
        lock.try_lock_for(BOUND)
            .is_err_and(|e| matches!(e, multiproc::TryLockError::OwnerDied(_)))
    );
    assert!(
        rlock
            .try_lock_for(BOUND)
            .is_err_and(|e| matches!(e, multiproc::TryLockError::OwnerDied(_)))
    );

    assert_eq!(new_entries_by(&before, &pids), Vec::<String>::new());
}

#[test]
fn a_killed_child_s_own_memfd_segments_vanish_with_it() {
    let ready = Event::new().unwrap();
    let p = doomed(&ready, || {
        // 1 MiB: too large for the arena, so a memfd of the child's own.
        let big = Array::<u8>::new(1 << 20).unwrap();
        big.set(0, 1).unwrap();
        std::mem::forget(big);
    });
    assert!(ready.wait(Some(BOUND)).unwrap());
    let pid = p.pid().unwrap().to_string();
    // The child's memfds that this process does not map: the ones it created.
    let own: HashSet<u64> = memfd_inodes(&pid)
        .difference(&memfd_inodes("self"))
        .copied()
        .collect();
    assert!(!own.is_empty(), "the child maps a memfd of its own");
    kill_when_ready(p, &ready);
    let left: HashSet<u64> = memfd_inodes_everywhere()
        .intersection(&own)
        .copied()
        .collect();
    assert!(
        left.is_empty(),
        "memfds {left:?} outlived their only process"
    );
}

#[test]
fn dropping_a_large_array_unmaps_and_frees_its_memfd() {
    // Map the arena's first chunk now: the array's lock lives there.
    let _first_arena_object = Lock::new().unwrap();
    let before = memfd_inodes("self");
    let big = Array::<f64>::new(1 << 18).unwrap();
    let with = memfd_inodes("self");
    let added: Vec<u64> = with.difference(&before).copied().collect();
    assert_eq!(added.len(), 1, "one memfd for the array");
    let clone = big.clone();
    drop(big);
    assert!(memfd_inodes("self").contains(&added[0]), "a clone keeps it");
    drop(clone);
    assert!(!memfd_inodes("self").contains(&added[0]));
    assert!(!memfd_inodes_everywhere().contains(&added[0]));
}

#[test]
fn clean_removes_a_segment_whose_creator_was_killed_and_keeps_live_ones() {
    let killed_name = RawValue::new([0u8; 32]).unwrap();
    let live_name = RawValue::new([0u8; 32]).unwrap();

    // A creator that is killed before it can unlink.
    let ready = Event::new().unwrap();
    let n = killed_name.clone();
    let p = doomed(&ready, move || {
        let shm = SharedMemory::create(4096).unwrap();
        put_name(&n, shm.name());
    });
    kill_when_ready(p, &ready);
    let stale = get_name(&killed_name);

    // A creator that is alive throughout.
    let live_ready = Event::new().unwrap();
    let finish = Event::new().unwrap();
    let (n, r, f) = (live_name.clone(), live_ready.clone(), finish.clone());
    let live = spawn(move || {
        let shm = SharedMemory::create(4096).unwrap();
        put_name(&n, shm.name());
        r.set();
        assert!(f.wait(Some(BOUND)).unwrap());
        shm.unlink().unwrap();
    });
    assert!(live_ready.wait(Some(BOUND)).unwrap());
    let alive = get_name(&live_name);

    let stale_list = clean::stale_segments().unwrap();
    assert!(stale_list.iter().any(|s| s.name == stale));
    assert!(stale_list.iter().all(|s| s.name != alive));
    assert_eq!(clean::status(&alive).unwrap().status, Status::CreatorAlive);
    assert!(
        clean::remove_stale(&alive).is_err(),
        "a live creator's segment is kept"
    );

    // Mapped by a live process (this one): kept although its creator is gone.
    let attached = SharedMemory::attach(&stale).unwrap();
    let me = std::process::id();
    assert_eq!(
        clean::status(&stale).unwrap().status,
        Status::InUse { pid: me }
    );
    assert!(clean::remove_stale(&stale).is_err());
    drop(attached);

    let record = clean::status(&stale).unwrap().record;
    assert!(dev_shm().contains(&record));
    let removed = clean::remove_stale(&stale).unwrap();
    assert_eq!(removed.status, Status::Stale);
    assert!(!dev_shm().contains(&stale));
    assert!(!dev_shm().contains(&record), "the owner record goes too");
    assert!(dev_shm().contains(&alive));
    finish.set();
    join_ok(live);
    assert!(!dev_shm().contains(&alive));
}

#[test]
fn the_clean_command_lists_by_default_and_removes_with_yes() {
    let name = RawValue::new([0u8; 32]).unwrap();
    let ready = Event::new().unwrap();
    let n = name.clone();
    let p = doomed(&ready, move || {
        let shm = SharedMemory::create(100).unwrap();
        put_name(&n, shm.name());
    });
    kill_when_ready(p, &ready);
    let stale = get_name(&name);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_multiproc"))
            .arg("clean")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    // Restricted to our segment by name: other stale segments on the machine are
    // not ours to remove in a test.
    let listed = run(&[&stale]);
    assert!(listed.contains(&stale), "{listed}");
    assert!(listed.contains("dry run, nothing removed"), "{listed}");
    assert!(dev_shm().contains(&stale));
    let listed = run(&["--dry-run", &stale]);
    assert!(listed.contains("dry run"), "{listed}");
    let removed = run(&["--yes", &stale]);
    assert!(removed.contains(&format!("removed {stale}")), "{removed}");
    assert!(
        removed
            .lines()
            .last()
            .unwrap()
            .starts_with("clean: removed 1 stale segment")
    );
    assert!(!dev_shm().contains(&stale));
}
