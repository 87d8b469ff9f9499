//! Tokens: handles exported and imported (`multiproc::token`), in one process and
//! across processes that did not inherit them.

mod common;

use common::{BlockT, T, join_ok, spawn};
use multiproc::token::{self, Exported};
use multiproc::{
    Array, BoundedSemaphore, Error, Event, Lock, RLock, RawArray, RawValue, Semaphore,
    TryLockError, Value,
};
use serde::{Deserialize, Serialize};

/// A Lock's token: version, tag, (block, at).
type LockT = (u16, u16, (BlockT, u32));

fn again(e: &Exported) -> Exported {
    Exported {
        bytes: e.bytes.clone(),
        fds: e.fds.iter().map(|f| f.try_clone().unwrap()).collect(),
    }
}

fn lock_token(e: &Exported) -> LockT {
    postcard::from_bytes(&e.bytes).unwrap()
}

fn forged(e: &Exported, t: &LockT) -> Exported {
    Exported {
        bytes: postcard::to_stdvec(t).unwrap(),
        fds: again(e).fds,
    }
}

#[test]
fn an_imported_lock_is_the_same_lock() {
    let lock = Lock::new().unwrap();
    let other: Lock = token::import(token::export(&lock).unwrap()).unwrap();
    let g = lock.lock().unwrap();
    assert!(other.try_lock().is_err(), "the imported lock is held");
    drop(g);
    let g = other.try_lock().unwrap();
    assert!(lock.is_locked());
    drop(g);
    assert!(!lock.is_locked());
}

#[test]
fn every_small_kind_round_trips_and_shares_state() {
    let rlock = RLock::new().unwrap();
    let sem = Semaphore::new(2).unwrap();
    let bsem = BoundedSemaphore::new(1).unwrap();
    let event = Event::new().unwrap();
    let value = Value::new(7u32).unwrap();
    let raw = RawValue::new(15u64).unwrap();
    let array = Array::from_slice(&[1u16, 2, 3]).unwrap();
    let big = RawArray::<u64>::new(100_000).unwrap(); // a large segment
    let all = (&rlock, &sem, &bsem, &event, &value, &raw, &array, &big);
    let e = token::export(&all).unwrap();
    #[allow(clippy::type_complexity)]
    let (rlock2, sem2, bsem2, event2, value2, raw2, array2, big2): (
        RLock,
        Semaphore,
        BoundedSemaphore,
        Event,
        Value<u32>,
        RawValue<u64>,
        Array<u16>,
        RawArray<u64>,
    ) = token::import(e).unwrap();
    let g = rlock.lock().unwrap();
    assert!(rlock2.is_locked() && rlock2.is_owned());
    drop(g);
    assert!(!rlock2.is_locked());
    let _p = sem2.try_lock().unwrap();
    assert_eq!(sem.get_value(), 1);
    assert_eq!(bsem2.bound(), 1);
    assert!(matches!(bsem2.release(), Err(Error::OverRelease { .. })));
    event2.set();
    assert!(event.wait(T).unwrap());
    value2.set(8).unwrap();
    assert_eq!(value.get().unwrap(), 8);
    let g = value.lock().unwrap();
    assert!(
        value2.get_lock().is_locked(),
        "the lock travelled with the Value"
    );
    drop(g);
    raw2.store(25);
    assert_eq!(raw.load(), 25);
    array2.set(2, 9).unwrap();
    assert_eq!(array.to_vec().unwrap(), [1, 2, 9]);
    big2.set(99_999, 42).unwrap();
    assert_eq!(big.get(99_999).unwrap(), 42);
}

#[test]
fn an_imported_value_shares_the_claims_of_the_original() {
    let value = Value::new(1u64).unwrap();
    let imported: Value<u64> = token::import(token::export(&value).unwrap()).unwrap();
    let g = value.lock().unwrap();
    // The lock is recursive and this thread holds it: only the claims refuse.
    assert!(matches!(
        imported.try_lock(),
        Err(TryLockError::Invalid(Error::InUse { .. }))
    ));
    assert!(matches!(imported.get(), Err(Error::InUse { .. })));
    drop(g);
    assert_eq!(imported.get().unwrap(), 1);
    // A large Array too (its segment is found by inode).
    let array = Array::<u8>::new(1 << 20).unwrap();
    let imported: Array<u8> = token::import(token::export(&array).unwrap()).unwrap();
    let g = imported.lock().unwrap();
    assert!(matches!(
        array.try_lock(),
        Err(TryLockError::Invalid(Error::InUse { .. }))
    ));
    assert!(matches!(array.to_vec(), Err(Error::InUse { .. })));
    drop(g);
    assert!(array.lock().is_ok());
}

#[test]
fn a_token_of_a_freed_object_is_stale_even_when_its_block_is_reused() {
    let lock = Lock::new().unwrap();
    let e = token::export(&lock).unwrap();
    let (_, _, (block, _)) = lock_token(&e);
    drop(lock);
    // Freed, not reused yet: no hold is added to a free block.
    let r = token::import::<Lock>(again(&e));
    assert!(matches!(r, Err(Error::StaleToken { .. })), "{r:?}");
    // Allocate until the freed block is reused (the first allocation of its class
    // normally takes it).
    let (reused, _others) = lock_in(block);
    let _g = reused.as_ref().map(|l| l.lock().unwrap());
    let r = token::import::<Lock>(again(&e));
    assert!(
        matches!(r, Err(Error::StaleToken { .. })),
        "a stale token named the new lock: {r:?}"
    );
    // Held by this process, imported from another token, it still works.
    if let Some(reused) = &reused {
        let ok: Lock = token::import(token::export(reused).unwrap()).unwrap();
        assert!(ok.is_locked());
    }
}

#[test]
fn forged_tokens_are_typed_errors() {
    let lock = Lock::new().unwrap();
    let e = token::export(&lock).unwrap();
    let t = lock_token(&e);
    let (v, tag, (block, at)) = t;
    let BlockT::Arena {
        fd,
        inode,
        off,
        generation,
        class,
    } = block
    else {
        panic!("a Lock is an arena block")
    };
    let arena = |fd, inode, off, generation, class| BlockT::Arena {
        fd,
        inode,
        off,
        generation,
        class,
    };
    let import = |t: LockT| token::import::<Lock>(forged(&e, &t));
    // Another kind.
    assert!(matches!(
        token::import::<Event>(again(&e)),
        Err(Error::TokenKind {
            expected: "Event",
            ..
        })
    ));
    assert!(matches!(
        import((v, 99, (block, at))),
        Err(Error::TokenKind { .. })
    ));
    assert!(matches!(
        import((v + 1, tag, (block, at))),
        Err(Error::TokenVersion { .. })
    ));
    // Wrong inode, bad descriptor index, offsets out of range or off the grid.
    assert!(matches!(
        import((v, tag, (arena(fd, inode + 1, off, generation, class), at))),
        Err(Error::BadToken { .. })
    ));
    assert!(matches!(
        import((v, tag, (arena(fd + 5, inode, off, generation, class), at))),
        Err(Error::BadToken { .. })
    ));
    for bad_off in [0, 8, off + 8, u32::MAX - 31, (1 << 20) - 32] {
        let r = import((v, tag, (arena(fd, inode, bad_off, generation, class), at)));
        assert!(matches!(r, Err(Error::BadToken { .. })), "{bad_off}: {r:?}");
    }
    for bad_at in [8, 16, 1 << 30] {
        let r = import((v, tag, (arena(fd, inode, off, generation, class), bad_at)));
        assert!(matches!(r, Err(Error::BadToken { .. })), "{bad_at}: {r:?}");
    }
    assert!(matches!(
        import((v, tag, (arena(fd, inode, off, generation, 200), at))),
        Err(Error::BadToken { .. })
    ));
    assert!(matches!(
        import((
            v,
            tag,
            (arena(fd, inode, off, generation.wrapping_add(1), class), at)
        )),
        Err(Error::StaleToken { .. })
    ));
    // A large-segment block where an arena block must be, and cut bytes.
    let big = RawArray::<u8>::new(1 << 20).unwrap();
    let eb = token::export(&big).unwrap();
    let r = token::import::<RawArray<u16>>(again(&eb));
    assert!(matches!(r, Err(Error::TokenKind { .. })), "{r:?}");
    let r = token::import::<RawArray<i8>>(again(&eb));
    assert!(matches!(r, Err(Error::TokenKind { .. })), "{r:?}");
    let cut = Exported {
        bytes: e.bytes[..e.bytes.len() - 2].to_vec(),
        fds: again(&e).fds,
    };
    assert!(token::import::<Lock>(cut).is_err());
    // None of it touched the lock.
    assert!(!lock.is_locked());
    let ok: Lock = token::import(again(&e)).unwrap();
    let _g = ok.lock().unwrap();
    assert!(lock.is_locked());
}

#[test]
fn handles_refuse_plain_serializers() {
    let lock = Lock::new().unwrap();
    let err = serde_json::to_string(&lock).unwrap_err();
    assert!(
        err.to_string().contains("multiproc::token::export"),
        "{err}"
    );
    assert!(postcard::to_stdvec(&lock).is_err());
    let bytes = token::export(&lock).unwrap().bytes;
    assert!(postcard::from_bytes::<Lock>(&bytes).is_err());
    let value = Value::new(1u8).unwrap();
    assert!(serde_json::to_string(&value).is_err());
}

#[test]
fn a_forked_child_imports_a_token_and_its_lock_is_shared() {
    let lock = Lock::new().unwrap();
    let value = Value::new(0u32).unwrap();
    let e = token::export(&(&lock, &value)).unwrap();
    let (bytes, fds) = (e.bytes.clone(), again(&e).fds);
    let child = spawn(move || {
        let (l, v): (Lock, Value<u32>) = token::import(Exported { bytes, fds }).unwrap();
        let _g = l.lock().unwrap();
        v.set(5).unwrap();
    });
    join_ok(child);
    assert_eq!(value.get().unwrap(), 5);
    assert!(!lock.is_locked());
}

#[test]
fn a_condition_and_a_barrier_travel() {
    use multiproc::{Barrier, Condition};
    let cond = Condition::new().unwrap();
    let flag = RawValue::new(0u32).unwrap();
    let e = token::export(&(&cond, &flag)).unwrap();
    let (bytes, fds) = (e.bytes.clone(), again(&e).fds);
    let g = cond.lock().unwrap();
    let child = spawn(move || {
        // The child imports rather than using its inherited copies.
        let (c, f): (Condition, RawValue<u32>) = token::import(Exported { bytes, fds }).unwrap();
        let _g = c.lock().unwrap();
        f.store(1);
        c.notify_all().unwrap();
    });
    assert!(cond.wait_for(|| flag.load() == 1, T).unwrap());
    drop(g);
    join_ok(child);
    // A Barrier travels with its timeout, not with an action.
    let b = Barrier::new(2)
        .unwrap()
        .with_timeout(std::time::Duration::from_secs(20));
    let b2: Barrier = token::import(token::export(&b).unwrap()).unwrap();
    assert_eq!(b2.parties(), 2);
    let t = std::thread::spawn(move || b2.wait(None).unwrap());
    b.wait(None).unwrap();
    t.join().unwrap();
    let with_action = Barrier::new(1).unwrap().with_action(|| {});
    let r = token::export(&with_action);
    assert!(matches!(r, Err(Error::NotTransferable { .. })), "{r:?}");
    // Imported as the wrong kind: typed.
    let r = token::import::<Barrier>(token::export(&cond).unwrap());
    assert!(matches!(r, Err(Error::TokenKind { .. })), "{r:?}");
}

#[test]
fn queues_travel_with_their_roles_and_message_type() {
    use multiproc::{JoinableQueue, Queue, Receiver, Sender, SimpleQueue};
    let q = Queue::<String>::new().unwrap();
    let (tx, rx): (Sender<String>, Receiver<String>) =
        token::import(token::export(&(q.sender(), q.receiver())).unwrap()).unwrap();
    tx.put(&"a".into(), T).unwrap();
    assert_eq!(q.get(T).unwrap(), "a");
    q.put(&"b".into(), T).unwrap();
    assert_eq!(rx.get(T).unwrap(), "b");
    // The imported Sender is a producer: the last producer's drop disconnects.
    drop(q);
    drop(tx);
    assert!(matches!(rx.get(T), Err(Error::Disconnected(_))));
    // Message types and queue kinds are checked.
    let q = Queue::<u32>::new().unwrap();
    let r = token::import::<Queue<u64>>(token::export(&q).unwrap());
    assert!(matches!(r, Err(Error::TokenKind { .. })), "{r:?}");
    let r = token::import::<Sender<u32>>(token::export(&q).unwrap());
    assert!(matches!(r, Err(Error::TokenKind { .. })), "{r:?}");
    let closed = q.sender();
    closed.close();
    assert!(matches!(token::export(&closed), Err(Error::Closed(_))));
    let jq = JoinableQueue::<u8>::new().unwrap();
    let r = token::import::<Queue<u8>>(token::export(&jq).unwrap());
    assert!(matches!(r, Err(Error::TokenKind { .. })), "{r:?}");
    let jq2: JoinableQueue<u8> = token::import(token::export(&jq).unwrap()).unwrap();
    jq.put(&1, T).unwrap();
    assert_eq!(jq2.get(T).unwrap(), 1);
    jq2.task_done().unwrap();
    jq.join(T).unwrap();
    let sq = SimpleQueue::<u8>::new().unwrap();
    let sq2: SimpleQueue<u8> = token::import(token::export(&sq).unwrap()).unwrap();
    sq2.put(&9).unwrap();
    assert_eq!(sq.get().unwrap(), 9);
}

#[test]
fn a_connection_and_a_shared_memory_travel() {
    use multiproc::{Connection, Pipe, SharedMemory};
    let (a, b) = Pipe(true).unwrap();
    let b2: Connection = token::import(token::export(&b).unwrap()).unwrap();
    drop(b);
    a.send(&5u32).unwrap();
    assert_eq!(b2.recv::<u32>().unwrap(), 5);
    drop(b2); // every holder of the end is gone: EOF
    assert!(matches!(a.recv::<u32>(), Err(Error::Eof)));
    let (r, w) = Pipe(false).unwrap();
    let (r2, w2): (Connection, Connection) =
        token::import(token::export(&(&r, &w)).unwrap()).unwrap();
    w2.send_bytes(b"x", 0, None).unwrap();
    assert_eq!(r2.recv_bytes(None).unwrap(), b"x");
    let mut closed = r;
    closed.close();
    assert!(matches!(
        token::export(&closed),
        Err(Error::ConnectionClosed { .. })
    ));
    let shm = SharedMemory::create(16).unwrap();
    shm.write_at(0, b"hi").unwrap();
    let e = token::export(&shm).unwrap();
    shm.unlink().unwrap(); // the descriptor travels, not the name
    let shm2: SharedMemory = token::import(e).unwrap();
    assert_eq!(shm2.name(), shm.name());
    let mut two = [0u8; 2];
    shm2.read_at(0, &mut two).unwrap();
    assert_eq!(&two, b"hi");
    assert!(matches!(shm2.unlink(), Err(Error::NotFound { .. })));
}

/// Allocates Locks until one sits in `block` (the freed block of a token); `None`
/// if another thread of the test process took the block first (under
/// `cargo test`, whose tests share a process: the stale token must fail then too).
fn lock_in(block: BlockT) -> (Option<Lock>, Vec<Lock>) {
    let mut others = Vec::new();
    loop {
        let new = Lock::new().unwrap();
        let (_, _, (b, _)) = lock_token(&token::export(&new).unwrap());
        let same = match (b, block) {
            (
                BlockT::Arena { inode, off, .. },
                BlockT::Arena {
                    inode: i0, off: o0, ..
                },
            ) => inode == i0 && off == o0,
            _ => false,
        };
        if same {
            return (Some(new), others);
        }
        others.push(new);
        if others.len() == 1000 {
            return (None, others);
        }
    }
}

#[test]
fn a_stale_token_of_a_block_another_process_reused_is_refused() {
    let (ready, done) = (Event::new().unwrap(), Event::new().unwrap());
    let lock = Lock::new().unwrap();
    let e = token::export(&lock).unwrap();
    let (_, _, (block, _)) = lock_token(&e);
    drop(lock); // freed: this process holds the block no more
    let (r, d) = (ready.clone(), done.clone());
    let child = spawn(move || {
        // The free lists are shared: the child reuses the block for its own lock.
        let (mine, _others) = lock_in(block);
        let _g = mine.as_ref().map(|l| l.lock().unwrap());
        r.set();
        assert!(d.wait(T).unwrap());
        assert!(mine.as_ref().is_none_or(|l| l.is_locked()));
    });
    assert!(ready.wait(T).unwrap());
    // The block is live (the child holds it) but of another generation.
    let r = token::import::<Lock>(again(&e));
    assert!(
        matches!(r, Err(Error::StaleToken { .. })),
        "a stale token named another process's new lock: {r:?}"
    );
    done.set();
    join_ok(child);
    let r = token::import::<Lock>(again(&e));
    assert!(matches!(r, Err(Error::StaleToken { .. })), "{r:?}");
}

/// A Condition's token: version, tag, (lock token, table fd, table inode).
#[derive(Serialize, Deserialize)]
enum InnerT {
    Lock(LockT),
    RLock(LockT),
}
type ConditionT = (u16, u16, (InnerT, u32, u64));

#[test]
fn a_forged_condition_table_is_refused() {
    use multiproc::Condition;
    use std::os::fd::AsFd;
    let cond = Condition::new().unwrap();
    let e = token::export(&cond).unwrap();
    let (v, tag, (inner, fd, inode)): ConditionT = postcard::from_bytes(&e.bytes).unwrap();
    assert!(matches!(inner, InnerT::RLock(_)));
    // Another file of the right size that is not sealed (it could shrink under
    // the mapping): refused, whatever inode the token names.
    let unsealed = rustix::fs::memfd_create("forged", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&unsealed, 16 + 16 * (1 << 22)).unwrap();
    let st = rustix::fs::fstat(&unsealed).unwrap();
    let mut fds = again(&e).fds;
    fds.push(rustix::io::fcntl_dupfd_cloexec(unsealed.as_fd(), 0).unwrap());
    let forged_fd = fds.len() as u32 - 1;
    let bytes = postcard::to_stdvec(&(v, tag, (inner, forged_fd, st.st_ino))).unwrap();
    let r = token::import::<Condition>(Exported { bytes, fds });
    assert!(matches!(r, Err(Error::BadToken { .. })), "{r:?}");
    // The real table under a wrong inode.
    let (v, tag, (inner, _, _)): ConditionT = postcard::from_bytes(&e.bytes).unwrap();
    let bytes = postcard::to_stdvec(&(v, tag, (inner, fd, inode + 1))).unwrap();
    let r = token::import::<Condition>(Exported {
        bytes,
        fds: again(&e).fds,
    });
    assert!(matches!(r, Err(Error::BadToken { .. })), "{r:?}");
    assert!(token::import::<Condition>(e).is_ok());
}
