//! Handles that travel: every multiproc object as a token another process imports.
//!
//! A forked [`Process`](crate::Process) inherits handles. A process that did not
//! (started by exec, or already running) gets them as a *token*: [`export`] turns a
//! handle — or any serde value containing handles — into bytes (postcard) plus the
//! descriptors its shared memory needs; send both (the descriptors by inheritance
//! or over a Unix socket with `SCM_RIGHTS`, never by a name in `/dev/shm`), and
//! [`import`] makes a handle to the same object there. An imported handle counts
//! exactly as an inherited one: it keeps the object alive, a Lock it holds passes
//! to the next acquirer with [`OwnerDied`](crate::OwnerDied) if its process dies,
//! a Queue handle counts as a producer/consumer of the importing process.
//!
//! ```
//! use multiproc::{Lock, Value, token};
//! let lock = Lock::new()?;
//! let counter = Value::new(5u64)?;
//! let exported = token::export(&(lock.clone(), counter.clone()))?;
//! // ... send exported.bytes and exported.fds to another process; here, ourselves:
//! let (lock2, counter2): (Lock, Value<u64>) = token::import(exported)?;
//! let _held = lock.lock().unwrap();
//! assert!(lock2.try_lock().is_err()); // the same lock
//! counter2.set(6)?;
//! assert_eq!(counter.get()?, 6); // the same memory
//! # Ok::<(), multiproc::Error>(())
//! ```
//!
//! Keep a handle alive in the sending process until the receiver has imported: a
//! token does not keep its object alive, and a token whose object was freed fails
//! with [`Error::StaleToken`] (never hands out whatever reused the memory).
//! Serializing a handle with a plain serializer (not inside [`export`]) is an error
//! ([`Error::TokenOutside`]); so is deserializing one outside [`import`].
//!
//! What does not travel: a [`Pool`](crate::Pool) (its workers are this process's
//! children), a [`Barrier`](crate::Barrier) with an action (a closure; export
//! fails with [`Error::NotTransferable`]).
//!
//! ## Token byte format (version 1)
//! postcard throughout (varint integers, enums as a varint variant index). Every
//! handle is written as
//! ```text
//! version   u16   TOKEN_VERSION (1); another version is Error::TokenVersion
//! tag       u16   the object kind (table below); another is Error::TokenKind
//! payload         the kind's fields, below
//! ```
//! Tags: 1 Lock, 2 RLock, 3 Semaphore, 4 BoundedSemaphore, 5 Event, 6 Condition,
//! 7 Barrier, 8 Value, 9 RawValue, 10 Array, 11 RawArray, 12 SharedMemory,
//! 13 Queue, 14 SimpleQueue, 15 JoinableQueue, 16 Sender, 17 Receiver,
//! 18 Connection.
//!
//! Building blocks of the payloads:
//! ```text
//! Block     enum: 0 Arena { fd u32, inode u64, off u32, generation u32, class u8 }
//!                 1 Large { fd u32, inode u64, size u64 }
//!           fd: index into Exported::fds. Arena: the chunk (checked: fstat inode
//!           equal, header kind "arena chunk", version, size 1 MiB - 64), the block
//!           header's offset in it (a block boundary of that class in the carved
//!           part), the generation at block offset 12 when exported (an import
//!           that finds another generation is Error::StaleToken), the size class.
//!           Large: the segment (header kind "large block", payload size equal).
//! At        Block, at u32        a 16-byte primitive at `at` bytes into the block's
//!                                payload (16-aligned, inside it, in the arena)
//! Elements  Block, at u64, len u64, size u32, align u32, fingerprint u64
//!                                `len` elements of a type of that size and
//!                                alignment at `at` bytes into the payload;
//!                                fingerprint: FNV-1a 64 of the Rust type name
//! ```
//! Payloads:
//! ```text
//! Lock, RLock              At
//! Semaphore, Bounded...    At (the 16-byte core: value, waiters, bound; at 0)
//! Event                    At (the 4-byte word; at 0)
//! Value, Array             Elements, RLock (a whole token, tag 2)
//! RawValue, RawArray       Elements
//! Condition                enum 0 Lock(token) | 1 RLock(token), fd u32, inode u64
//!                          (the waiter table: a sealed memfd of 16 + 16 x 2^22
//!                          bytes, checked)
//! Barrier                  At (at 0; parties read from the block and checked to
//!                          fit it), timeout Option<Duration> (secs u64, nanos u32)
//! SharedMemory             fd u32, inode u64, name string (checked as on attach:
//!                          this user's, mode 0600, a regular file)
//! Queue, SimpleQueue,      Ring, fingerprint u64 (of the message type), joinable
//! JoinableQueue, Sender,   bool (a Queue or SimpleQueue token must be false, a
//! Receiver                 JoinableQueue's true)
//!   Ring                   At (the control words, 64-aligned), Block (the data
//!                          segment); capacity, byte bound and maxsize are read
//!                          from the control words and checked as `new` makes them
//! Connection               kind u8 (0 socket, 1 pipe read end, 2 pipe write end;
//!                          checked against the descriptor's type), fd u32
//! ```
//! Descriptors are deduplicated by (device, inode, access): the two ends of one
//! pipe share an inode and are passed as two descriptors.
//!
//! ## What an import means for each kind
//! - Arena objects: one hold per process (an import into a process that holds the
//!   block already shares that hold; otherwise it adds one, only to a live block
//!   of the token's generation). The imported handle keeps the object alive as an
//!   inherited one does; a Value/Array imported next to another handle shares its
//!   claims (one guard at a time in this process).
//! - Every kind: a handle's memory never overlaps what another kind of handle
//!   uses in the importing process (elements never cover a primitive's words;
//!   checked per allocation, `shm::arena::Block::use_as`): a token edited to
//!   place a Lock on an Array's elements, or a Value on its own lock, is
//!   [`Error::BadToken`].
//! - Queues: the imported handle counts as a producer and/or consumer of the
//!   importing process, exactly as a handle made there.
//! - Connection: a duplicate of the descriptor; the exporting process keeps its
//!   own, so the peer sees EOF only once both are closed (as CPython's `DupFd`).
//! - SharedMemory: an attach by descriptor (works after `unlink`); unlink once,
//!   from one process, as in CPython.
//!
//! Type names are what the compiler calls the type: tokens travel between
//! processes of one build (a spawned child re-executes the same binary).

use std::os::fd::OwnedFd;

use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::shm::arena::{Block, BlockToken};
use crate::sys::transfer;

/// The token format version this build writes and reads.
///
/// ```
/// assert_eq!(multiproc::token::TOKEN_VERSION, 1);
/// ```
pub const TOKEN_VERSION: u16 = 1;

/// A handle (or any serde value containing handles) ready to cross into another
/// process: its bytes plus the descriptors its shared memory needs.
///
/// ```
/// let e = multiproc::Event::new()?;
/// let exported = multiproc::token::export(&e)?;
/// assert_eq!(exported.fds.len(), 1); // the arena chunk the Event lives in
/// assert!(!exported.bytes.is_empty());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub struct Exported {
    /// The postcard bytes (the token format in the module docs).
    pub bytes: Vec<u8>,
    /// The descriptors, in the order the tokens index them (close-on-exec).
    pub fds: Vec<OwnedFd>,
}

/// Serializes `value` (handles and anything serde writes) into an [`Exported`].
///
/// Each distinct shared-memory file is passed once (1000 Locks in one arena chunk
/// are one descriptor).
///
/// ```
/// use multiproc::{Lock, token};
/// let locks: Vec<Lock> = (0..1000).map(|_| Lock::new()).collect::<Result<_, _>>()?;
/// let exported = token::export(&locks)?;
/// assert!(exported.fds.len() <= 2); // one per arena chunk
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn export<T: Serialize + ?Sized>(value: &T) -> Result<Exported> {
    let (bytes, fds, failed) = transfer::exporting(|| postcard::to_stdvec(value));
    match (bytes, failed) {
        (_, Some(err)) => Err(err),
        (Ok(bytes), None) => Ok(Exported { bytes, fds }),
        (Err(e), None) => Err(Error::TokenEncoding(e.to_string())),
    }
}

/// Deserializes what [`export`] made (in this or another process) into handles.
///
/// ```
/// use multiproc::{Error, Event, Lock, token};
/// let e = Event::new()?;
/// let wrong = token::import::<Lock>(token::export(&e)?);
/// assert!(matches!(wrong, Err(Error::TokenKind { .. }))); // an Event is no Lock
/// let e2: Event = token::import(token::export(&e)?)?;
/// e2.set();
/// assert!(e.is_set());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn import<T: DeserializeOwned>(exported: Exported) -> Result<T> {
    let Exported { bytes, fds } = exported;
    let (value, failed) = transfer::importing(fds, || postcard::from_bytes::<T>(&bytes));
    match (value, failed) {
        (_, Some(err)) => Err(err),
        (Ok(v), None) => Ok(v),
        (Err(e), None) => Err(Error::TokenEncoding(e.to_string())),
    }
}

/// The object kinds (the `tag` of a token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
#[allow(dead_code)] // the kinds not wired yet keep their numbers
pub(crate) enum Tag {
    Lock = 1,
    RLock = 2,
    Semaphore = 3,
    BoundedSemaphore = 4,
    Event = 5,
    Condition = 6,
    Barrier = 7,
    Value = 8,
    RawValue = 9,
    Array = 10,
    RawArray = 11,
    SharedMemory = 12,
    Queue = 13,
    SimpleQueue = 14,
    JoinableQueue = 15,
    Sender = 16,
    Receiver = 17,
    Connection = 18,
}

const TAG_NAMES: [&str; 19] = [
    "?",
    "Lock",
    "RLock",
    "Semaphore",
    "BoundedSemaphore",
    "Event",
    "Condition",
    "Barrier",
    "Value",
    "RawValue",
    "Array",
    "RawArray",
    "SharedMemory",
    "Queue",
    "SimpleQueue",
    "JoinableQueue",
    "Sender",
    "Receiver",
    "Connection",
];

impl Tag {
    pub(crate) fn name(self) -> &'static str {
        TAG_NAMES[self as usize]
    }
}

fn outside(op: &'static str) -> Error {
    Error::TokenOutside {
        op,
        hint: if op == "serialized" {
            "use multiproc::token::export (spawn does it for its arguments)"
        } else {
            "use multiproc::token::import"
        },
    }
}

/// Writes a handle's token: version, `tag`, then what `payload` makes (which may
/// add descriptors). Outside `export`, or if `payload` fails, a serde error (the
/// typed error parked for `export`).
pub(crate) fn serialize<S: Serializer, P: Serialize>(
    s: S,
    tag: Tag,
    payload: impl FnOnce() -> Result<P>,
) -> Result<S::Ok, S::Error> {
    use serde::ser::Error as _;
    if !transfer::is_exporting() {
        return Err(S::Error::custom(outside("serialized")));
    }
    let p = payload().map_err(|e| S::Error::custom(transfer::fail(e)))?;
    let mut t = s.serialize_tuple(3)?;
    t.serialize_element(&TOKEN_VERSION)?;
    t.serialize_element(&(tag as u16))?;
    t.serialize_element(&p)?;
    t.end()
}

/// Reads a handle's token of kind `tag` and makes the handle with `make`.
pub(crate) fn deserialize<'de, D, P, T>(
    d: D,
    tag: Tag,
    make: impl FnOnce(P) -> Result<T>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    P: Deserialize<'de>,
{
    use serde::de::Error as _;
    if !transfer::is_importing() {
        return Err(D::Error::custom(outside("deserialized")));
    }
    struct V<P, F>(Tag, Option<F>, std::marker::PhantomData<P>);
    impl<'de, P: Deserialize<'de>, T, F: FnOnce(P) -> Result<T>> Visitor<'de> for V<P, F> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a multiproc {} token", self.0.name())
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<T, A::Error> {
            use serde::de::Error as _;
            let fail = |e: Error| A::Error::custom(transfer::fail(e));
            let short = || {
                fail(Error::BadToken {
                    what: self.0.name(),
                    reason: "the token ends early".into(),
                })
            };
            let version: u16 = seq.next_element()?.ok_or_else(short)?;
            if version != TOKEN_VERSION {
                return Err(fail(Error::TokenVersion {
                    found: version,
                    expected: TOKEN_VERSION,
                }));
            }
            let tag: u16 = seq.next_element()?.ok_or_else(short)?;
            if tag != self.0 as u16 {
                let found = TAG_NAMES
                    .get(tag as usize)
                    .filter(|_| tag != 0)
                    .map_or_else(|| format!("unknown kind {tag}"), |n| n.to_string());
                return Err(fail(Error::TokenKind {
                    expected: self.0.name(),
                    found,
                }));
            }
            let p: P = seq.next_element()?.ok_or_else(short)?;
            let make = self.1.take().expect("visited once");
            make(p).map_err(fail)
        }
    }
    d.deserialize_tuple(3, V(tag, Some(make), std::marker::PhantomData))
}

/// A 16-byte primitive inside a block (the `At` of the format).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct At {
    block: BlockToken,
    at: u32,
}

impl At {
    /// The token of the primitive at absolute offset `offset` of `block`'s mapping.
    pub(crate) fn of(block: &Block, offset: usize) -> Result<At> {
        Ok(At {
            block: block.token()?,
            at: (offset - block.offset()) as u32,
        })
    }

    /// The block and the absolute offset of a primitive of `len` bytes, checked: an
    /// arena block, 16-aligned, inside the payload.
    pub(crate) fn import(&self, len: usize, what: &'static str) -> Result<(Block, usize)> {
        let block = Block::from_token(&self.block, what)?;
        let at = self.at as usize;
        if block.static_map().is_none() {
            return Err(Error::BadToken {
                what,
                reason: "a primitive in a large segment".into(),
            });
        }
        if at % 16 != 0 || at.checked_add(len).is_none_or(|end| end > block.len()) {
            return Err(Error::BadToken {
                what,
                reason: format!(
                    "a {len}-byte object at {at} of a {}-byte block",
                    block.len()
                ),
            });
        }
        // A primitive never overlaps elements this process uses in the block.
        block.use_as(crate::shm::arena::Use::Primitives { end: at + len }, what)?;
        let offset = block.offset() + at;
        Ok((block, offset))
    }
}

/// FNV-1a 64 of `T`'s type name: the element/message type part of a token.
pub(crate) fn fingerprint<T: ?Sized>() -> u64 {
    std::any::type_name::<T>()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::{AsFd, AsRawFd};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};

    use super::*;
    use crate::sys::fd::{inherited_test_fd, recv_with_fds, send_with_fds};
    use crate::{Error, Lock, Queue, Sender, TryLockError, Value};

    const CHILD: &str = "MULTIPROC_TOKEN_TEST_CHILD";
    const BOUND: Duration = Duration::from_secs(30);
    const NAME: &str = "token::tests::a_process_that_inherited_nothing_imports_over_a_socket";

    /// The re-executed test binary's side: it inherited nothing (exec), gets the
    /// tokens and their descriptors over the socket, and uses them with the parent.
    fn child(raw: i32) {
        let sock = inherited_test_fd(raw);
        let (bytes, fds) = recv_with_fds(sock.as_fd()).unwrap();
        let (lock, value, tx): (Lock, Value<u32>, Sender<String>) =
            import(Exported { bytes, fds }).unwrap();
        let _held = lock.lock().unwrap();
        value.set(42).unwrap();
        tx.put(&"locked".to_string(), Some(BOUND)).unwrap();
        // Step 2: write once more (the parent dropped its own Value meanwhile).
        let mut b = [0u8; 1];
        let n = rustix::io::read(&sock, &mut b).unwrap();
        assert_eq!(n, 1, "the parent went away");
        value.set(43).unwrap();
        tx.put(&"written".to_string(), Some(BOUND)).unwrap();
        // Hold everything until killed (or the parent goes: EOF).
        let _ = rustix::io::read(&sock, &mut b);
        std::process::exit(0);
    }

    #[test]
    fn a_process_that_inherited_nothing_imports_over_a_socket() {
        if let Ok(raw) = std::env::var(CHILD) {
            return child(raw.parse().unwrap());
        }
        let lock = Lock::new().unwrap();
        let value = Value::new(0u32).unwrap();
        let q = Queue::<String>::new().unwrap();
        let rx = q.receiver();
        let exported = export(&(&lock, &value, q.sender())).unwrap();
        let (mine, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        // The child's end survives exec (and only it).
        rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty()).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, theirs.as_raw_fd().to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        drop(theirs);
        let borrowed: Vec<_> = exported.fds.iter().map(|f| f.as_fd()).collect();
        send_with_fds(mine.as_fd(), &exported.bytes, &borrowed).unwrap();
        drop(exported);
        assert_eq!(rx.get(Some(BOUND)).unwrap(), "locked");
        // The imported lock is the lock, the imported value the value.
        assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
        assert_eq!(value.get().unwrap(), 42);
        // The child's imported Sender counts as a producer: with the parent's own
        // producer gone, an empty queue times out instead of disconnecting.
        drop(q);
        assert!(matches!(
            rx.get(Some(Duration::from_millis(50))),
            Err(Error::Timeout { .. })
        ));
        // The child's imported Value holds its block: dropping the parent's last
        // handle does not free it, so a new Value never shares its memory.
        drop(value);
        let fresh = Value::new(0u32).unwrap();
        rustix::io::write(&mine, b"w").unwrap();
        assert_eq!(rx.get(Some(BOUND)).unwrap(), "written");
        assert_eq!(
            fresh.get().unwrap(),
            0,
            "the freed block was reused under the child"
        );
        // SIGKILL the importer holding the Lock: the parent gets it with OwnerDied,
        // and the queue disconnects (its only producer died).
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
        match lock.try_lock_for(BOUND) {
            Err(TryLockError::OwnerDied(_)) => {}
            other => panic!("expected OwnerDied, got {other:?}"),
        }
        assert!(matches!(rx.get(Some(BOUND)), Err(Error::Disconnected(_))));
        let mut out = String::new();
        let _ = child.stdout.take().unwrap().read_to_string(&mut out);
        assert!(!out.contains("panicked"), "the child failed:\n{out}");
    }
}
