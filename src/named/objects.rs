//! `create_in` / `open_in` for every type a [`Directory`] holds: each lays its
//! object out in the bytes the directory gives it (the same layout as the type's
//! arena block, see `docs/LAYOUT.md`), or checks and adopts an existing one.

use std::marker::PhantomData;
use std::sync::Arc;

use bytemuck::Pod;

use super::{Directory, ObjectKind, Placed, Spec};
use crate::error::{Error, Result};
use crate::msg::holder::{Holder, Roles};
use crate::msg::ring::Ring;
use crate::shm::arena::Block;
use crate::shm::storage::Storage;
use crate::sync::raw_lock;
use crate::sync::semaphore::VALUE_MAX;
use crate::{
    Array, Barrier, BoundedSemaphore, Event, Lock, Queue, RLock, RawArray, RawValue, Semaphore,
    Value,
};

/// Bytes of the lock in front of a Value's or an Array's elements.
const HEAD: usize = raw_lock::SIZE;

impl Placed {
    fn block(&self) -> Block {
        Block::named(self.map, self.off, self.len)
    }

    /// [`Error::DirectoryCorrupt`] unless the object has at least `needed` bytes.
    fn at_least(self, dir: &Directory, name: &str, needed: usize) -> Result<Placed> {
        if self.len < needed {
            return Err(dir.corrupt(format!(
                "object {name:?} has {} bytes where its type needs {needed}",
                self.len
            )));
        }
        Ok(self)
    }
}

fn elem_checked<T>() -> Result<usize> {
    let size = std::mem::size_of::<T>();
    if size == 0 {
        return Err(Error::InvalidArgument(
            "element types of size zero cannot be shared".into(),
        ));
    }
    if std::mem::align_of::<T>() > 16 {
        return Err(Error::InvalidArgument(format!(
            "element alignment {} is over 16 bytes; shared elements must be at most 16-aligned",
            std::mem::align_of::<T>()
        )));
    }
    Ok(size)
}

fn elems_bytes<T>(len: usize) -> Result<usize> {
    let size = elem_checked::<T>()?;
    let max = (crate::shm::segment::MAX_PAYLOAD as usize) / size;
    len.checked_mul(size)
        .filter(|_| len <= max && len > 0)
        .ok_or(Error::SizeOverflow {
            what: "named array length (at least 1)",
            requested: len as u128,
            max: max as u128,
        })
}

impl Lock {
    /// Creates an unlocked Lock named `name` in `dir` (see [`Directory`]); a name
    /// already taken is [`Error::ObjectExists`].
    ///
    /// ```
    /// use multiproc::{Directory, Error, Lock};
    /// let dir = Directory::create("mp-doc-lock-create-in", 4096)?;
    /// let lock = Lock::create_in(&dir, "counter_lock")?;
    /// assert!(!lock.is_locked());
    /// assert!(matches!(Lock::create_in(&dir, "counter_lock"), Err(Error::ObjectExists { .. })));
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create_in(dir: &Directory, name: &str) -> Result<Lock> {
        let spec = Spec::plain(ObjectKind::Lock);
        dir.create_object(name, &spec, raw_lock::SIZE, 0, |p| {
            Ok(Lock::in_block(p.block(), p.off))
        })
    }

    /// Opens the Lock named `name` in `dir`, made by this or another program.
    /// Errors: [`Error::ObjectNotFound`], [`Error::ObjectTypeMismatch`] (another
    /// type under that name), [`Error::ObjectVersionMismatch`].
    ///
    /// ```
    /// use multiproc::{Barrier, Directory, Error, Lock};
    /// let dir = Directory::create("mp-doc-lock-open-in", 4096)?;
    /// let a = Lock::create_in(&dir, "l")?;
    /// let b = Lock::open_in(&Directory::open("mp-doc-lock-open-in")?, "l")?;
    /// let g = b.lock().unwrap();
    /// assert!(a.is_locked());
    /// drop(g);
    /// assert!(matches!(Barrier::open_in(&dir, "l"), Err(Error::ObjectTypeMismatch { .. })));
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn open_in(dir: &Directory, name: &str) -> Result<Lock> {
        let p = dir
            .open_object(name, &Spec::plain(ObjectKind::Lock))?
            .at_least(dir, name, raw_lock::SIZE)?;
        Ok(Lock::in_block(p.block(), p.off))
    }
}

impl RLock {
    /// Creates an unlocked RLock named `name` in `dir`.
    ///
    /// ```
    /// let dir = multiproc::Directory::create("mp-doc-rlock-create-in", 4096)?;
    /// let r = multiproc::RLock::create_in(&dir, "r")?;
    /// let _a = r.lock().unwrap();
    /// let _b = r.lock().unwrap(); // recursive
    /// # drop((_a, _b));
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create_in(dir: &Directory, name: &str) -> Result<RLock> {
        let spec = Spec::plain(ObjectKind::RLock);
        dir.create_object(name, &spec, raw_lock::SIZE, 0, |p| {
            Ok(RLock::in_block(p.block(), p.off))
        })
    }

    /// Opens the RLock named `name` in `dir`.
    ///
    /// ```
    /// use multiproc::{Directory, RLock};
    /// let dir = Directory::create("mp-doc-rlock-open-in", 4096)?;
    /// let a = RLock::create_in(&dir, "r")?;
    /// let b = RLock::open_in(&dir, "r")?;
    /// let g = b.lock().unwrap();
    /// assert!(a.is_owned()); // the same lock, this thread
    /// drop(g);
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn open_in(dir: &Directory, name: &str) -> Result<RLock> {
        let p = dir
            .open_object(name, &Spec::plain(ObjectKind::RLock))?
            .at_least(dir, name, raw_lock::SIZE)?;
        Ok(RLock::in_block(p.block(), p.off))
    }
}

fn check_permits(value: u32) -> Result<()> {
    if value > VALUE_MAX {
        return Err(Error::SizeOverflow {
            what: "semaphore value",
            requested: value as u128,
            max: VALUE_MAX as u128,
        });
    }
    Ok(())
}

impl Semaphore {
    /// Creates a Semaphore of `value` permits named `name` in `dir`.
    ///
    /// ```
    /// use multiproc::{Directory, Semaphore};
    /// let dir = Directory::create("mp-doc-sem-create-in", 4096)?;
    /// let s = Semaphore::create_in(&dir, "slots", 2)?;
    /// assert_eq!(s.get_value(), 2);
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create_in(dir: &Directory, name: &str, value: u32) -> Result<Semaphore> {
        check_permits(value)?;
        let spec = Spec::plain(ObjectKind::Semaphore);
        dir.create_object(name, &spec, 16, 0, |p| {
            Ok(Semaphore::in_block(p.block(), Some(value)))
        })
    }

    /// Opens the Semaphore named `name` in `dir`.
    ///
    /// ```
    /// use multiproc::{Directory, Semaphore};
    /// let dir = Directory::create("mp-doc-sem-open-in", 4096)?;
    /// let a = Semaphore::create_in(&dir, "slots", 2)?;
    /// let b = Semaphore::open_in(&dir, "slots")?;
    /// let _permit = b.lock().unwrap();
    /// assert_eq!(a.get_value(), 1);
    /// # drop(_permit);
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn open_in(dir: &Directory, name: &str) -> Result<Semaphore> {
        let p = dir
            .open_object(name, &Spec::plain(ObjectKind::Semaphore))?
            .at_least(dir, name, 16)?;
        Ok(Semaphore::in_block(p.block(), None))
    }
}

impl BoundedSemaphore {
    /// Creates a BoundedSemaphore of `value` permits (also its bound) named `name`
    /// in `dir`.
    ///
    /// ```
    /// use multiproc::{BoundedSemaphore, Directory};
    /// let dir = Directory::create("mp-doc-bsem-create-in", 4096)?;
    /// let s = BoundedSemaphore::create_in(&dir, "b", 3)?;
    /// assert_eq!(s.bound(), 3);
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create_in(dir: &Directory, name: &str, value: u32) -> Result<BoundedSemaphore> {
        check_permits(value)?;
        let spec = Spec::plain(ObjectKind::BoundedSemaphore);
        dir.create_object(name, &spec, 16, 0, |p| {
            Ok(BoundedSemaphore::in_block(p.block(), Some(value)))
        })
    }

    /// Opens the BoundedSemaphore named `name` in `dir` (its bound comes with it).
    ///
    /// ```
    /// use multiproc::{BoundedSemaphore, Directory};
    /// let dir = Directory::create("mp-doc-bsem-open-in", 4096)?;
    /// BoundedSemaphore::create_in(&dir, "b", 3)?;
    /// assert_eq!(BoundedSemaphore::open_in(&dir, "b")?.bound(), 3);
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn open_in(dir: &Directory, name: &str) -> Result<BoundedSemaphore> {
        let p = dir
            .open_object(name, &Spec::plain(ObjectKind::BoundedSemaphore))?
            .at_least(dir, name, 16)?;
        Ok(BoundedSemaphore::in_block(p.block(), None))
    }
}

impl Event {
    /// Creates a clear Event named `name` in `dir`.
    ///
    /// ```
    /// let dir = multiproc::Directory::create("mp-doc-event-create-in", 4096)?;
    /// assert!(!multiproc::Event::create_in(&dir, "ready")?.is_set());
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create_in(dir: &Directory, name: &str) -> Result<Event> {
        let spec = Spec::plain(ObjectKind::Event);
        dir.create_object(name, &spec, 4, 0, |p| Ok(Event::in_block(p.block())))
    }

    /// Opens the Event named `name` in `dir`.
    ///
    /// ```
    /// use multiproc::{Directory, Event};
    /// let dir = Directory::create("mp-doc-event-open-in", 4096)?;
    /// let a = Event::create_in(&dir, "ready")?;
    /// Event::open_in(&dir, "ready")?.set();
    /// assert!(a.is_set());
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn open_in(dir: &Directory, name: &str) -> Result<Event> {
        let p = dir
            .open_object(name, &Spec::plain(ObjectKind::Event))?
            .at_least(dir, name, 4)?;
        Ok(Event::in_block(p.block()))
    }
}

impl Barrier {
    /// Creates a Barrier for `parties` processes named `name` in `dir` (the
    /// action and default timeout are per handle: set them on each).
    ///
    /// ```
    /// let dir = multiproc::Directory::create("mp-doc-barrier-create-in", 4096)?;
    /// assert_eq!(multiproc::Barrier::create_in(&dir, "meet", 3)?.parties(), 3);
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create_in(dir: &Directory, name: &str, parties: usize) -> Result<Barrier> {
        if parties == 0 {
            return Err(Error::ZeroSize {
                what: "Barrier parties",
            });
        }
        if parties > i32::MAX as usize {
            return Err(Error::SizeOverflow {
                what: "Barrier parties",
                requested: parties as u128,
                max: i32::MAX as u128,
            });
        }
        let spec = Spec::plain(ObjectKind::Barrier);
        dir.create_object(name, &spec, Barrier::bytes(parties), parties as u64, |p| {
            Ok(Barrier::in_block(p.block(), parties, true))
        })
    }

    /// Opens the Barrier named `name` in `dir` (its parties come with it).
    ///
    /// ```
    /// use multiproc::{Barrier, Directory};
    /// let dir = Directory::create("mp-doc-barrier-open-in", 4096)?;
    /// Barrier::create_in(&dir, "meet", 1)?;
    /// let b = Barrier::open_in(&dir, "meet")?;
    /// assert_eq!(b.wait(None)?, 0);
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn open_in(dir: &Directory, name: &str) -> Result<Barrier> {
        let p = dir.open_object(name, &Spec::plain(ObjectKind::Barrier))?;
        let p = p.at_least(dir, name, Barrier::bytes(1))?;
        let parties = Barrier::parties_at(p.map, p.off) as usize;
        if parties == 0 || parties > i32::MAX as usize {
            return Err(dir.corrupt(format!("Barrier {name:?} has {parties} parties")));
        }
        let p = p.at_least(dir, name, Barrier::bytes(parties))?;
        Ok(Barrier::in_block(p.block(), parties, false))
    }
}

impl<T: Pod> Value<T> {
    /// Creates a Value holding `value`, with its own lock, named `name` in `dir`.
    /// Its element type is part of its type: opening it as a `Value` of another
    /// type is [`Error::ObjectTypeMismatch`].
    ///
    /// ```
    /// use multiproc::{Directory, Error, Value};
    /// let dir = Directory::create("mp-doc-value-create-in", 4096)?;
    /// let v = Value::create_in(&dir, "hits", 5u32)?;
    /// assert_eq!(v.get()?, 5);
    /// assert!(matches!(Value::<u64>::open_in(&dir, "hits"), Err(Error::ObjectTypeMismatch { .. })));
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create_in(dir: &Directory, name: &str, value: T) -> Result<Value<T>> {
        let size = elem_checked::<T>()?;
        let spec = Spec::of::<T>(ObjectKind::Value);
        dir.create_object(name, &spec, HEAD + size, 0, |p| {
            let v = value_at(p);
            v.set(value)?;
            Ok(v)
        })
    }

    /// Opens the `Value<T>` named `name` in `dir`. Handles opened several times
    /// in one process share one claim word (one guard at a time, as for clones).
    ///
    /// ```
    /// use multiproc::{Directory, Value};
    /// let dir = Directory::create("mp-doc-value-open-in", 4096)?;
    /// let a = Value::create_in(&dir, "hits", 5u32)?;
    /// let b = Value::<u32>::open_in(&dir, "hits")?;
    /// *b.lock().unwrap() += 1;
    /// assert_eq!(a.get()?, 6);
    /// let _g = a.lock().unwrap();
    /// assert!(b.get().is_err()); // in use by a's guard, in this thread
    /// # drop(_g);
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn open_in(dir: &Directory, name: &str) -> Result<Value<T>> {
        let size = elem_checked::<T>()?;
        let p = dir
            .open_object(name, &Spec::of::<T>(ObjectKind::Value))?
            .at_least(dir, name, HEAD + size)?;
        Ok(value_at(p))
    }
}

fn value_at<T: Pod>(p: Placed) -> Value<T> {
    let storage = Storage::named(p.block(), p.off + HEAD, 1);
    Value::from_parts(storage, RLock::in_block(p.block(), p.off))
}

impl<T: Pod> RawValue<T> {
    /// Creates a RawValue (no lock) holding `value`, named `name` in `dir`.
    ///
    /// ```
    /// let dir = multiproc::Directory::create("mp-doc-rawvalue-create-in", 4096)?;
    /// assert_eq!(multiproc::RawValue::create_in(&dir, "x", 1.5f64)?.get(), 1.5);
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create_in(dir: &Directory, name: &str, value: T) -> Result<RawValue<T>> {
        let size = elem_checked::<T>()?;
        let spec = Spec::of::<T>(ObjectKind::RawValue);
        dir.create_object(name, &spec, size, 0, |p| {
            let v = RawValue::from_storage(Storage::named(p.block(), p.off, 1));
            v.set(value);
            Ok(v)
        })
    }

    /// Opens the `RawValue<T>` named `name` in `dir`.
    ///
    /// ```
    /// use multiproc::{Directory, RawValue};
    /// let dir = Directory::create("mp-doc-rawvalue-open-in", 4096)?;
    /// let a = RawValue::create_in(&dir, "x", 1u16)?;
    /// RawValue::<u16>::open_in(&dir, "x")?.set(2);
    /// assert_eq!(a.get(), 2);
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn open_in(dir: &Directory, name: &str) -> Result<RawValue<T>> {
        let size = elem_checked::<T>()?;
        let p = dir
            .open_object(name, &Spec::of::<T>(ObjectKind::RawValue))?
            .at_least(dir, name, size)?;
        Ok(RawValue::from_storage(Storage::named(p.block(), p.off, 1)))
    }
}

impl<T: Pod> Array<T> {
    /// Creates an Array of `len` (at least 1) zeroed elements, with its own lock,
    /// named `name` in `dir`.
    ///
    /// ```
    /// let dir = multiproc::Directory::create("mp-doc-array-create-in", 4096)?;
    /// let a = multiproc::Array::<i32>::create_in(&dir, "grid", 8)?;
    /// assert_eq!(a.to_vec()?, vec![0; 8]);
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create_in(dir: &Directory, name: &str, len: usize) -> Result<Array<T>> {
        let bytes = elems_bytes::<T>(len)?;
        let spec = Spec::of::<T>(ObjectKind::Array);
        let total = bytes.checked_add(HEAD).ok_or(Error::SizeOverflow {
            what: "named array length",
            requested: len as u128,
            max: (usize::MAX / 2) as u128,
        })?;
        dir.create_object(name, &spec, total, len as u64, |p| Ok(array_at(p, len)))
    }

    /// Opens the `Array<T>` named `name` in `dir` (its length comes with it).
    ///
    /// ```
    /// use multiproc::{Array, Directory};
    /// let dir = Directory::create("mp-doc-array-open-in", 4096)?;
    /// let a = Array::<i32>::create_in(&dir, "grid", 3)?;
    /// Array::<i32>::open_in(&dir, "grid")?.lock().unwrap()[1] = 7;
    /// assert_eq!(a.to_vec()?, vec![0, 7, 0]);
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn open_in(dir: &Directory, name: &str) -> Result<Array<T>> {
        let p = dir.open_object(name, &Spec::of::<T>(ObjectKind::Array))?;
        let len = array_len::<T>(dir, name, &p, HEAD)?;
        Ok(array_at(p, len))
    }
}

/// The element count of an opened array entry, checked against its bytes.
fn array_len<T>(dir: &Directory, name: &str, p: &Placed, head: usize) -> Result<usize> {
    let len = usize::try_from(p.param).unwrap_or(usize::MAX);
    let fits = elems_bytes::<T>(len)
        .ok()
        .and_then(|b| b.checked_add(head))
        .is_some_and(|b| b <= p.len);
    if !fits {
        return Err(dir.corrupt(format!(
            "array {name:?} says {len} elements in {} bytes",
            p.len
        )));
    }
    Ok(len)
}

fn array_at<T: Pod>(p: Placed, len: usize) -> Array<T> {
    let storage = Storage::named(p.block(), p.off + HEAD, len);
    Array::from_parts(storage, RLock::in_block(p.block(), p.off))
}

impl<T: Pod> RawArray<T> {
    /// Creates a RawArray (no lock) of `len` (at least 1) zeroed elements named
    /// `name` in `dir`.
    ///
    /// ```
    /// let dir = multiproc::Directory::create("mp-doc-rawarray-create-in", 4096)?;
    /// assert_eq!(multiproc::RawArray::<u8>::create_in(&dir, "bytes", 100)?.len(), 100);
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create_in(dir: &Directory, name: &str, len: usize) -> Result<RawArray<T>> {
        let bytes = elems_bytes::<T>(len)?;
        let spec = Spec::of::<T>(ObjectKind::RawArray);
        dir.create_object(name, &spec, bytes, len as u64, |p| {
            Ok(RawArray::from_storage(Storage::named(
                p.block(),
                p.off,
                len,
            )))
        })
    }

    /// Opens the `RawArray<T>` named `name` in `dir`.
    ///
    /// ```
    /// use multiproc::{Directory, RawArray};
    /// let dir = Directory::create("mp-doc-rawarray-open-in", 4096)?;
    /// let a = RawArray::<u8>::create_in(&dir, "bytes", 4)?;
    /// RawArray::<u8>::open_in(&dir, "bytes")?.set(3, 9)?;
    /// assert_eq!(a.to_vec()?, vec![0, 0, 0, 9]);
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn open_in(dir: &Directory, name: &str) -> Result<RawArray<T>> {
        let p = dir.open_object(name, &Spec::of::<T>(ObjectKind::RawArray))?;
        let len = array_len::<T>(dir, name, &p, 0)?;
        Ok(RawArray::from_storage(Storage::named(
            p.block(),
            p.off,
            len,
        )))
    }
}

impl<T> Queue<T> {
    /// Creates a Queue named `name` in `dir` with no bound on messages and a
    /// 1 MiB ring (as [`Queue::new`]; the directory must have that room).
    ///
    /// ```
    /// let dir = multiproc::Directory::create("mp-doc-queue-create-in", 2 << 20)?;
    /// let q = multiproc::Queue::<String>::create_in(&dir, "jobs")?;
    /// q.put(&"hello".to_string(), None)?;
    /// assert_eq!(q.get(None)?, "hello");
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create_in(dir: &Directory, name: &str) -> Result<Queue<T>> {
        Queue::create_in_with_bounds(dir, name, 0, 0)
    }

    /// Creates a Queue named `name` in `dir` of at most `maxsize` messages and
    /// `max_bytes` buffered bytes (as [`Queue::with_bounds`]).
    ///
    /// ```
    /// let dir = multiproc::Directory::create("mp-doc-queue-bounds-in", 8192)?;
    /// let q = multiproc::Queue::<u32>::create_in_with_bounds(&dir, "small", 2, 256)?;
    /// q.put(&1, None)?;
    /// q.put(&2, None)?;
    /// assert!(q.full());
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create_in_with_bounds(
        dir: &Directory,
        name: &str,
        maxsize: usize,
        max_bytes: usize,
    ) -> Result<Queue<T>> {
        let (cap, limit) = Ring::bounds(maxsize as u64, max_bytes as u64)?;
        let len = Ring::CONTROL + Ring::data_bytes(cap) as usize;
        let spec = Spec::message::<T>(ObjectKind::Queue);
        dir.create_object(name, &spec, len, cap, |p| {
            Ok(queue_at(p, cap, limit, maxsize as u64, true))
        })
    }

    /// Opens the `Queue<T>` named `name` in `dir`: this handle is a producer and
    /// a consumer (take [`sender`](Queue::sender) / [`receiver`](Queue::receiver)
    /// handles from it). The message type is checked by its name.
    ///
    /// ```
    /// use multiproc::{Directory, Queue};
    /// let dir = Directory::create("mp-doc-queue-open-in", 8192)?;
    /// let a = Queue::<u32>::create_in_with_bounds(&dir, "q", 0, 1024)?;
    /// let b = Queue::<u32>::open_in(&dir, "q")?;
    /// a.put(&7, None)?;
    /// assert_eq!(b.get(None)?, 7);
    /// assert!(Queue::<String>::open_in(&dir, "q").is_err()); // another message type
    /// dir.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn open_in(dir: &Directory, name: &str) -> Result<Queue<T>> {
        let p = dir.open_object(name, &Spec::message::<T>(ObjectKind::Queue))?;
        let p = p.at_least(dir, name, Ring::CONTROL)?;
        let (cap, limit, maxsize) = Ring::config_at(p.map, p.off)
            .ok_or_else(|| dir.corrupt(format!("queue {name:?} has an impossible ring config")))?;
        let p = p.at_least(dir, name, Ring::CONTROL + Ring::data_bytes(cap) as usize)?;
        Ok(queue_at(p, cap, limit, maxsize, false))
    }
}

fn queue_at<T>(p: Placed, cap: u64, limit: u64, maxsize: u64, init: bool) -> Queue<T> {
    // The control words at the object's (64-aligned) start, the role tables and
    // frames right after them.
    let ctl = Block::named(p.map, p.off, Ring::CONTROL);
    let data = Block::named(p.map, p.off + Ring::CONTROL, p.len - Ring::CONTROL);
    let ring = Ring::at(ctl, p.off, data, cap, limit, maxsize, init);
    Queue {
        holder: Holder::new(Arc::new(ring), Roles::BOTH, false),
        _msg: PhantomData,
    }
}
