//! `Array` and `RawArray`: fixed-length arrays of plain data in shared memory
//! (Python's `multiprocessing.Array` / `RawArray` from `sharedctypes`).
//!
//! ## Layout
//! When the lock and the elements fit in one arena block (up to ~4 KiB), they share
//! it, so that a small Array and its lock sit in one cache line:
//! ```text
//! 0   16 bytes  RawLock of the Array's RLock (see sync::raw_lock)
//! 16  len * size_of::<T>()  elements
//! ```
//! Larger arrays put the elements in a memfd segment of their own (payload offset 0)
//! and the lock in a separate arena block. A `RawArray` has no lock.
//!
//! ## Access disciplines
//! - under the lock: [`Array::lock`] gives `&mut [T]`; [`Array::get`] / `set` take it
//!   per call, as Python's synchronized wrapper does;
//! - without a lock: [`RawArray`] `get` / `set` copy single elements;
//! - data-parallel: [`Array::chunks`] splits the elements into disjoint
//!   [`ArrayChunk`]s, each owned by one worker, written with no lock at all.
//!
//! Within a process these exclude each other (see `shm::storage`): while chunks of
//! an array are alive in a process, its guards and copies there are refused with
//! [`Error::InUse`](crate::Error::InUse), and so is a second split.

use std::ops::{Deref, DerefMut};

use bytemuck::Pod;

use super::value::{Pin, blocking, guarded};
use crate::error::Result;
use crate::shm::storage::{Exclusive, Part, Storage};
use crate::sync::owner_died::{LockResult, TryLockError, TryLockResult};
use crate::sync::raw_lock;
use crate::sync::{RLock, RLockGuard};

/// A shared array of `T` with a lock: Python's `multiprocessing.Array`.
///
/// `T` is any plain-data type ([`bytemuck::Pod`]: integers, floats, arrays and
/// `#[repr(C)]` structs of them; no pointers). Clone the handle to share it with a
/// forked [`Process`](crate::Process).
///
/// ```
/// use multiproc::{Array, Process};
/// let arr = Array::from_slice(&[0i32; 5])?;
/// let mut kids = Vec::new();
/// for _ in 0..3 {
///     let a = arr.clone();
///     let mut p = Process::new(move || {
///         let mut g = a.lock().unwrap();
///         for x in g.iter_mut() { *x += 1; }
///     });
///     p.start()?;
///     kids.push(p);
/// }
/// for mut p in kids { p.join(None)?; }
/// assert_eq!(arr.to_vec()?, vec![3, 3, 3, 3, 3]);
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// Travels to a process that did not inherit it as a token: see
/// [`token::export`](crate::token::export).
#[derive(Debug, Clone)]
pub struct Array<T> {
    storage: Storage<T>,
    lock: RLock,
}

/// Holds an [`Array`]'s lock and gives its elements as a slice.
///
/// ```
/// let arr = multiproc::Array::<u8>::new(3)?;
/// arr.lock().unwrap().copy_from_slice(&[1, 2, 3]);
/// assert_eq!(arr.to_vec()?, vec![1, 2, 3]);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T> {
    // Field order is drop order: the claim ends, then the pinned level.
    slice: Exclusive<'a, T>,
    pin: Pin<'a>,
}

impl<T: Pod> Array<T> {
    /// `len` zeroed elements with a new lock (Python's `Array(typecode, len)`).
    ///
    /// ```
    /// let a = multiproc::Array::<f64>::new(4)?;
    /// assert_eq!(a.len(), 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(len: usize) -> Result<Array<T>> {
        let (storage, head) = Storage::alloc(len, raw_lock::SIZE, true)?;
        let lock = match head {
            Some(at) => RLock::in_block(storage.block().clone(), at),
            None => RLock::new()?,
        };
        Ok(Array { storage, lock })
    }

    /// A copy of `values` with a new lock (Python's `Array(typecode, [..])`).
    ///
    /// ```
    /// let a = multiproc::Array::from_slice(&[1.0f32, 2.0, 3.0])?;
    /// assert_eq!(a.len(), 3);
    /// assert_eq!(a.to_vec()?, vec![1.0, 2.0, 3.0]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn from_slice(values: &[T]) -> Result<Array<T>> {
        let a = Array::new(values.len())?;
        a.storage.write_all(values, "Array")?;
        Ok(a)
    }

    /// `len` zeroed elements guarded by an existing `lock` (Python's `lock=<lock>`).
    ///
    /// ```
    /// use multiproc::{Array, RLock};
    /// let lock = RLock::new()?;
    /// let a = Array::<u32>::with_lock(2, lock.clone())?;
    /// let _g = a.lock().unwrap();
    /// assert!(lock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_lock(len: usize, lock: RLock) -> Result<Array<T>> {
        let (storage, _) = Storage::alloc(len, 0, true)?;
        Ok(Array { storage, lock })
    }

    /// The Array of `storage` guarded by `lock` (a directory's).
    pub(crate) fn from_parts(storage: Storage<T>, lock: RLock) -> Array<T> {
        Array { storage, lock }
    }

    /// The number of elements.
    ///
    /// ```
    /// let a = multiproc::Array::<u16>::new(100_000)?; // large: a segment of its own
    /// assert_eq!(a.len(), 100_000);
    /// assert_eq!(a.lock().unwrap().len(), 100_000);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.storage.len()
    }

    /// Whether there are no elements.
    ///
    /// ```
    /// use multiproc::Array;
    /// assert!(Array::<u8>::new(0)?.is_empty());
    /// assert!(!Array::<u8>::new(1)?.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lock guarding the elements (Python's `get_lock()`).
    ///
    /// Holding it directly excludes [`lock`](Self::lock), [`get`](Self::get),
    /// [`set`](Self::set) and [`to_vec`](Self::to_vec) in every other thread and
    /// process; the holding thread may go on calling them (it is an RLock, as
    /// CPython's).
    ///
    /// ```
    /// use std::time::Duration;
    /// let a = multiproc::Array::<i32>::new(2)?;
    /// let held = a.get_lock().lock().unwrap();
    /// a.set(0, a.get(1)? + 1)?; // one atomic step with the lock held
    /// std::thread::scope(|s| {
    ///     let other = s.spawn(|| a.get_lock().try_lock_for(Duration::from_millis(1)).is_err());
    ///     assert!(other.join().unwrap());
    /// });
    /// drop(held);
    /// assert_eq!(a.to_vec()?, vec![1, 0]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_lock(&self) -> &RLock {
        &self.lock
    }

    /// Takes the lock; the guard derefs to `&mut [T]`.
    ///
    /// `Err(OwnerDied(guard))` holds the lock too: see [`OwnerDied`](crate::OwnerDied).
    ///
    /// # Panics
    /// If this process already uses the elements through a live guard or live
    /// chunks (a second `&mut` would alias the first); [`try_lock`](Self::try_lock)
    /// reports that as an error instead.
    ///
    /// ```
    /// let a = multiproc::Array::from_slice(&[3u8, 1, 2])?;
    /// {
    ///     let mut g = a.lock().unwrap();
    ///     g.sort();
    ///     assert!(a.get_lock().is_locked());
    /// }
    /// assert_eq!(a.to_vec()?, vec![1, 2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        blocking(
            self.guard(self.lock.lock().map_err(TryLockError::OwnerDied)),
            "Array",
        )
    }

    /// Takes the lock if no other thread or process holds it, without waiting;
    /// `Err(TryLockError::Invalid(Error::InUse { .. }))` while this process uses the
    /// elements through a live guard or chunks.
    ///
    /// ```
    /// use multiproc::{Array, Error, TryLockError};
    /// let a = Array::<u8>::new(4)?;
    /// let chunks = a.chunks(2)?;
    /// assert!(matches!(a.try_lock(), Err(TryLockError::Invalid(Error::InUse { .. }))));
    /// drop(chunks);
    /// a.try_lock().unwrap().fill(1);
    /// assert_eq!(a.to_vec()?, vec![1; 4]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_lock(&self) -> TryLockResult<ArrayGuard<'_, T>> {
        self.guard(self.lock.try_lock())
    }

    /// Waits at most `timeout` for the lock.
    ///
    /// ```
    /// use std::time::Duration;
    /// let a = multiproc::Array::<i32>::new(2)?;
    /// a.try_lock_for(Duration::from_secs(1)).unwrap()[1] = 7;
    /// assert_eq!(a.get(1)?, 7);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_lock_for(&self, timeout: std::time::Duration) -> TryLockResult<ArrayGuard<'_, T>> {
        self.guard(self.lock.try_lock_for(timeout))
    }

    fn guard<'a>(&'a self, how: TryLockResult<RLockGuard<'a>>) -> TryLockResult<ArrayGuard<'a, T>> {
        guarded(&self.storage, how, "Array", |slice, pin| ArrayGuard {
            slice,
            pin,
        })
    }

    fn locked<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<R> {
        let _g = self.lock.lock()?;
        f()
    }

    /// Element `index`, read under the lock.
    ///
    /// # Errors
    ///
    /// [`Error::IndexOutOfRange`](crate::Error::IndexOutOfRange) past the end; [`Error::OwnerDied`](crate::Error::OwnerDied) if a holder of
    /// the lock died (the lock is then released, still inconsistent).
    ///
    /// ```
    /// use multiproc::{Array, Error};
    /// let a = Array::from_slice(&[10i16, 20])?;
    /// assert_eq!(a.get(1)?, 20);
    /// assert!(matches!(a.get(2), Err(Error::IndexOutOfRange { index: 2, len: 2 })));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self, index: usize) -> Result<T> {
        self.locked(|| self.storage.get(index, "Array"))
    }

    /// Sets element `index` under the lock.
    ///
    /// ```
    /// let a = multiproc::Array::<i64>::new(2)?;
    /// a.set(1, -5)?;
    /// assert_eq!(a.get(1)?, -5);
    /// assert!(a.set(2, 0).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        self.locked(|| self.storage.set(index, value, "Array"))
    }

    /// A copy of all elements, under the lock (Python's `arr[:]`).
    ///
    /// ```
    /// let a = multiproc::Array::<u32>::new(3)?;
    /// a.set(2, 7)?;
    /// assert_eq!(a.to_vec()?, vec![0, 0, 7]); // new elements are zeroed
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.locked(|| self.storage.to_vec("Array"))
    }

    /// Splits the elements into `parts` disjoint chunks for lock-free parallel
    /// writing; see [`ArrayChunk`]. Sizes differ by at most one, the larger first;
    /// `parts == 0` is [`Error::ZeroSize`](crate::Error::ZeroSize).
    ///
    /// ```
    /// let a = multiproc::Array::<u8>::new(7)?;
    /// let chunks = a.chunks(3)?;
    /// let ranges: Vec<(usize, usize)> = chunks.iter().map(|c| (c.start(), c.len())).collect();
    /// assert_eq!(ranges, vec![(0, 3), (3, 2), (5, 2)]);
    /// assert!(a.chunks(0).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn chunks(&self, parts: usize) -> Result<Vec<ArrayChunk<T>>> {
        // Under the lock, as guards and copies are (the claim word's
        // compare-exchanges exclude each other on their own).
        let _g = self.lock.lock()?;
        split(&self.storage, parts, "Array")
    }
}

impl<T> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.slice
    }
}

impl<T> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.slice
    }
}

impl<T> ArrayGuard<'_, T> {
    /// Declares the elements repaired after an [`OwnerDied`](crate::OwnerDied).
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Array, Process};
    /// let a = Array::<u32>::new(4)?;
    /// let a2 = a.clone();
    /// let mut p = Process::new(move || {
    ///     let mut g = a2.lock().unwrap();
    ///     g[0] = 1; // ... and dies holding the lock, mid-update
    ///     std::mem::forget(g);
    /// });
    /// p.start()?;
    /// p.join(Some(Duration::from_secs(10)))?;
    /// let mut g = match a.lock() {
    ///     Ok(_) => unreachable!("the holder died"),
    ///     Err(died) => died.into_inner(), // the lock is held
    /// };
    /// g.fill(0); // repair
    /// g.mark_consistent();
    /// drop(g);
    /// assert!(a.lock().is_ok()); // clean again
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn mark_consistent(&self) {
        self.pin.lock().mark_consistent();
    }
}

/// A shared array without a lock: Python's `RawArray`.
///
/// Each `get` / `set` copies one element; concurrent writers to the *same* element
/// race as in C (use [`Array`] or chunks for that).
///
/// ```
/// let a = multiproc::RawArray::from_slice(&[1u16, 2, 3])?;
/// a.set(0, 9)?;
/// assert_eq!(a.to_vec()?, vec![9, 2, 3]);
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// Travels to a process that did not inherit it as a token: see
/// [`token::export`](crate::token::export).
#[derive(Debug, Clone)]
pub struct RawArray<T> {
    storage: Storage<T>,
}

impl<T: Pod> RawArray<T> {
    /// `len` zeroed elements (Python's `RawArray(typecode, len)`).
    ///
    /// ```
    /// let a = multiproc::RawArray::<i32>::new(3)?;
    /// assert_eq!(a.to_vec()?, vec![0, 0, 0]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(len: usize) -> Result<RawArray<T>> {
        Ok(RawArray {
            storage: Storage::alloc(len, 0, false)?.0,
        })
    }

    /// The RawArray of `storage` (a directory's).
    pub(crate) fn from_storage(storage: Storage<T>) -> RawArray<T> {
        RawArray { storage }
    }

    /// A copy of `values`.
    ///
    /// ```
    /// let a = multiproc::RawArray::from_slice(b"hi")?;
    /// assert_eq!(a.to_vec()?, b"hi".to_vec());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn from_slice(values: &[T]) -> Result<RawArray<T>> {
        let a = RawArray::new(values.len())?;
        a.storage.write_all(values, "RawArray")?;
        Ok(a)
    }

    /// The number of elements.
    ///
    /// ```
    /// assert_eq!(multiproc::RawArray::<u64>::new(9)?.len(), 9);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.storage.len()
    }

    /// Whether there are no elements.
    ///
    /// ```
    /// use multiproc::RawArray;
    /// assert!(RawArray::<u8>::new(0)?.is_empty());
    /// assert!(!RawArray::from_slice(&[0u8])?.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `index`; [`Error::IndexOutOfRange`](crate::Error::IndexOutOfRange) past the end.
    ///
    /// ```
    /// let a = multiproc::RawArray::from_slice(&[4u8, 5])?;
    /// assert_eq!(a.get(0)?, 4);
    /// assert!(a.get(2).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self, index: usize) -> Result<T> {
        self.storage.get(index, "RawArray")
    }

    /// Sets element `index`; [`Error::IndexOutOfRange`](crate::Error::IndexOutOfRange) past the end.
    ///
    /// A child process's writes are seen by the parent:
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Process, RawArray};
    /// let a = RawArray::<u8>::new(2)?;
    /// let a2 = a.clone();
    /// let mut p = Process::new(move || a2.set(1, 42).unwrap());
    /// p.start()?;
    /// assert_eq!(p.join(Some(Duration::from_secs(10)))?, Some(0));
    /// assert_eq!(a.to_vec()?, vec![0, 42]);
    /// assert!(a.set(2, 0).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        self.storage.set(index, value, "RawArray")
    }

    /// A copy of all elements.
    ///
    /// ```
    /// let a = multiproc::RawArray::from_slice(&[1u32, 2])?;
    /// a.set(0, 3)?;
    /// assert_eq!(a.to_vec()?, vec![3, 2]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.storage.to_vec("RawArray")
    }

    /// Splits the elements into `parts` disjoint chunks; see [`ArrayChunk`].
    ///
    /// ```
    /// let a = multiproc::RawArray::<u8>::new(5)?;
    /// let lens: Vec<usize> = a.chunks(2)?.iter().map(|c| c.len()).collect();
    /// assert_eq!(lens, vec![3, 2]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn chunks(&self, parts: usize) -> Result<Vec<ArrayChunk<T>>> {
        split(&self.storage, parts, "RawArray")
    }
}

fn split<T: Pod>(
    storage: &Storage<T>,
    parts: usize,
    what: &'static str,
) -> Result<Vec<ArrayChunk<T>>> {
    Ok(storage
        .split(parts, what)?
        .into_iter()
        .map(|part| ArrayChunk { part })
        .collect())
}

/// A disjoint range of an [`Array`] or [`RawArray`], owned by one worker.
///
/// [`Array::chunks`] hands out each element in exactly one chunk, so chunks moved to
/// different processes (or threads) write without any lock. A chunk is not `Clone`.
/// Read the whole array only after the writers are done (join them, or meet them at
/// a [`Barrier`](crate::Barrier)). Do not write through the Array's guard while a
/// chunk of it is being written in the same process.
///
/// ```
/// use multiproc::{Array, Process};
/// let arr = Array::<u64>::new(10)?;
/// let mut workers = Vec::new();
/// for mut chunk in arr.chunks(3)? {
///     let mut p = Process::new(move || {
///         let start = chunk.start() as u64;
///         for (i, x) in chunk.as_mut_slice().iter_mut().enumerate() {
///             *x = (start + i as u64) * 2;
///         }
///     });
///     p.start()?;
///     workers.push(p);
/// }
/// for mut p in workers { p.join(None)?; }
/// assert_eq!(arr.to_vec()?, (0..10).map(|i| i * 2).collect::<Vec<u64>>());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub struct ArrayChunk<T> {
    part: Part<T>,
}

impl<T: Pod> ArrayChunk<T> {
    /// Index of the chunk's first element in the whole array.
    ///
    /// ```
    /// let a = multiproc::RawArray::<u8>::new(6)?;
    /// let starts: Vec<usize> = a.chunks(3)?.iter().map(|c| c.start()).collect();
    /// assert_eq!(starts, vec![0, 2, 4]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn start(&self) -> usize {
        self.part.start()
    }

    /// Number of elements in the chunk.
    ///
    /// ```
    /// let a = multiproc::Array::<u8>::new(10)?;
    /// let lens: Vec<usize> = a.chunks(4)?.iter().map(|c| c.len()).collect();
    /// assert_eq!(lens, vec![3, 3, 2, 2]);
    /// assert_eq!(lens.iter().sum::<usize>(), a.len());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.part.len()
    }

    /// Whether the chunk is empty (more chunks than elements).
    ///
    /// ```
    /// let a = multiproc::Array::<u8>::new(2)?;
    /// let empty: Vec<bool> = a.chunks(3)?.iter().map(|c| c.is_empty()).collect();
    /// assert_eq!(empty, vec![false, false, true]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.part.len() == 0
    }

    /// The chunk's elements, writable without a lock.
    ///
    /// ```
    /// let a = multiproc::RawArray::<u8>::new(4)?;
    /// for mut chunk in a.chunks(2)? {
    ///     let fill = chunk.start() as u8 + 1;
    ///     chunk.as_mut_slice().fill(fill);
    /// }
    /// assert_eq!(a.to_vec()?, vec![1, 1, 3, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self.part.as_mut_slice()
    }
}

/// A Array travels as a token ([`crate::token`]) with its lock; the element type
/// is checked on import (size, alignment and a fingerprint of its name). An
/// imported handle shares the claims of this process's other handles to it: a
/// guard on one makes a guard on the other [`Error::InUse`](crate::Error::InUse).
impl<T: Pod> serde::Serialize for Array<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        crate::token::serialize(s, crate::token::Tag::Array, || {
            Ok((self.storage.token()?, &self.lock))
        })
    }
}

impl<'de, T: Pod> serde::Deserialize<'de> for Array<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::token::deserialize(
            d,
            crate::token::Tag::Array,
            |(t, lock): (crate::shm::storage::ElementsToken, RLock)| {
                Ok(Array {
                    storage: Storage::from_token(&t, true, "Array")?,
                    lock,
                })
            },
        )
    }
}

/// A RawArray travels as a token ([`crate::token`]); the element type is checked on
/// import (size, alignment and a fingerprint of its name).
impl<T: Pod> serde::Serialize for RawArray<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        crate::token::serialize(s, crate::token::Tag::RawArray, || self.storage.token())
    }
}

impl<'de, T: Pod> serde::Deserialize<'de> for RawArray<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::token::deserialize(
            d,
            crate::token::Tag::RawArray,
            |t: crate::shm::storage::ElementsToken| {
                Ok(RawArray {
                    storage: Storage::from_token(&t, false, "RawArray")?,
                })
            },
        )
    }
}
