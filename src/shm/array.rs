//! `Array` and `RawArray`: fixed-length arrays of plain data in shared memory
//! (Python's `multiprocessing.Array` / `RawArray` from `sharedctypes`).
//!
//! ## Layout
//! When the lock and the elements fit in one arena block (up to ~4 KiB), they share
//! it, so that a small Array or a Value and its lock sit in one cache line:
//! ```text
//! 0   16 bytes  RawLock (see sync::raw_lock)
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

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use bytemuck::Pod;

use super::arena::{Block, MAX_SMALL};
use crate::error::{Error, Result};
use crate::sync::owner_died::{LockResult, OwnerDied};
use crate::sync::raw_lock;
use crate::sync::{Lock, LockGuard};

/// Elements of `T` in shared memory: the block and where the first one is.
#[derive(Debug, Clone)]
pub(crate) struct Storage<T> {
    block: Block,
    offset: usize,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> Storage<T> {
    /// Zeroed storage for `len` elements, with a fresh lock when `lock` is true.
    pub(crate) fn new(len: usize, lock: bool) -> Result<(Storage<T>, Option<Lock>)> {
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
        let max = (super::segment::MAX_PAYLOAD as usize) / size;
        let bytes = len
            .checked_mul(size)
            .filter(|_| len <= max)
            .ok_or(Error::SizeOverflow {
                what: "shared array length",
                requested: len as u128,
                max: max as u128,
            })?;
        let head = if lock { raw_lock::SIZE } else { 0 };
        if head + bytes <= MAX_SMALL {
            let block = Block::alloc((head + bytes).max(1))?;
            let base = block.offset();
            let lock = lock.then(|| Lock::in_block(block.clone(), base));
            let storage = Storage {
                block,
                offset: base + head,
                len,
                _t: PhantomData,
            };
            Ok((storage, lock))
        } else {
            let lock = if lock { Some(Lock::new()?) } else { None };
            let block = Block::alloc(bytes)?;
            let offset = block.offset();
            Ok((
                Storage {
                    block,
                    offset,
                    len,
                    _t: PhantomData,
                },
                lock,
            ))
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn check(&self, index: usize) -> Result<usize> {
        if index < self.len {
            Ok(self.offset + index * std::mem::size_of::<T>())
        } else {
            Err(Error::IndexOutOfRange {
                index,
                len: self.len,
            })
        }
    }

    pub(crate) fn get(&self, index: usize) -> Result<T> {
        Ok(self.block.map().read(self.check(index)?))
    }

    pub(crate) fn set(&self, index: usize, value: T) -> Result<()> {
        self.block.map().write(self.check(index)?, value);
        Ok(())
    }

    pub(crate) fn to_vec(&self) -> Vec<T> {
        let mut v = vec![T::zeroed(); self.len];
        self.block.map().read_slice(self.offset, &mut v);
        v
    }

    pub(crate) fn write_all(&self, values: &[T]) {
        self.block
            .map()
            .write_slice(self.offset, &values[..self.len.min(values.len())]);
    }

    #[inline]
    pub(crate) fn map(&self) -> &crate::sys::mem::Mapping {
        self.block.map()
    }

    #[inline]
    pub(crate) fn offset(&self) -> usize {
        self.offset
    }

    /// The elements as `&mut [T]`.
    ///
    /// # Safety
    /// The caller must have exclusive access to the elements in this process while
    /// the slice lives (hold the lock every other accessor takes).
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub(crate) unsafe fn slice_mut(&self, start: usize, len: usize) -> &mut [T] {
        // SAFETY: forwarded contract; `Mapping::slice_mut` checks bounds.
        unsafe {
            self.block
                .map()
                .slice_mut(self.offset + start * std::mem::size_of::<T>(), len)
        }
    }
}

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
#[derive(Debug, Clone)]
pub struct Array<T> {
    storage: Storage<T>,
    lock: Lock,
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
    slice: &'a mut [T],
    guard: LockGuard<'a>,
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
        let (storage, lock) = Storage::new(len, true)?;
        Ok(Array {
            storage,
            lock: lock.expect("asked for a lock"),
        })
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
        a.storage.write_all(values);
        Ok(a)
    }

    /// `len` zeroed elements guarded by an existing `lock` (Python's `lock=<lock>`).
    ///
    /// ```
    /// use multiproc::{Array, Lock};
    /// let lock = Lock::new()?;
    /// let a = Array::<u32>::with_lock(2, lock.clone())?;
    /// let _g = a.lock().unwrap();
    /// assert!(lock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_lock(len: usize, lock: Lock) -> Result<Array<T>> {
        let (storage, _) = Storage::new(len, false)?;
        Ok(Array { storage, lock })
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
    /// [`set`](Self::set) and [`to_vec`](Self::to_vec) in every process.
    ///
    /// ```
    /// use std::time::Duration;
    /// let a = multiproc::Array::<i32>::new(2)?;
    /// let held = a.get_lock().lock().unwrap();
    /// assert!(a.get_lock().try_lock_for(Duration::from_millis(1)).is_err());
    /// drop(held);
    /// a.set(0, 1)?; // free again
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// Takes the lock; the guard derefs to `&mut [T]`.
    ///
    /// `Err(OwnerDied(guard))` holds the lock too: see [`OwnerDied`].
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
    pub fn lock<'a>(&'a self) -> LockResult<ArrayGuard<'a, T>> {
        let wrap = |guard: LockGuard<'a>| -> ArrayGuard<'a, T> {
            // SAFETY: the guard holds this array's lock, which every path that
            // hands out references to the elements (only this one) takes first, and
            // a Lock is not recursive, so no other slice exists in this process.
            let slice = unsafe { self.storage.slice_mut(0, self.storage.len()) };
            ArrayGuard { slice, guard }
        };
        match self.lock.lock() {
            Ok(g) => Ok(wrap(g)),
            Err(died) => Err(OwnerDied::new(wrap(died.into_inner()))),
        }
    }

    fn locked<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<R> {
        let _g = self.lock.lock()?;
        f()
    }

    /// Element `index`, read under the lock.
    ///
    /// # Errors
    ///
    /// [`Error::IndexOutOfRange`] past the end; [`Error::OwnerDied`] if a holder of
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
        self.locked(|| self.storage.get(index))
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
        self.locked(|| self.storage.set(index, value))
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
        self.locked(|| Ok(self.storage.to_vec()))
    }

    /// Splits the elements into `parts` disjoint chunks for lock-free parallel
    /// writing; see [`ArrayChunk`]. Sizes differ by at most one, the larger first;
    /// `parts == 0` is [`Error::ZeroSize`].
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
        split(&self.storage, parts)
    }
}

impl<T> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.slice
    }
}

impl<T> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.slice
    }
}

impl<T> ArrayGuard<'_, T> {
    /// Declares the elements repaired after an [`OwnerDied`].
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
        self.guard.mark_consistent();
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
/// assert_eq!(a.to_vec(), vec![9, 2, 3]);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct RawArray<T> {
    storage: Storage<T>,
}

impl<T: Pod> RawArray<T> {
    /// `len` zeroed elements (Python's `RawArray(typecode, len)`).
    ///
    /// ```
    /// let a = multiproc::RawArray::<i32>::new(3)?;
    /// assert_eq!(a.to_vec(), vec![0, 0, 0]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(len: usize) -> Result<RawArray<T>> {
        Ok(RawArray {
            storage: Storage::new(len, false)?.0,
        })
    }

    /// A copy of `values`.
    ///
    /// ```
    /// let a = multiproc::RawArray::from_slice(b"hi")?;
    /// assert_eq!(a.to_vec(), b"hi".to_vec());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn from_slice(values: &[T]) -> Result<RawArray<T>> {
        let a = RawArray::new(values.len())?;
        a.storage.write_all(values);
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

    /// Element `index`; [`Error::IndexOutOfRange`] past the end.
    ///
    /// ```
    /// let a = multiproc::RawArray::from_slice(&[4u8, 5])?;
    /// assert_eq!(a.get(0)?, 4);
    /// assert!(a.get(2).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self, index: usize) -> Result<T> {
        self.storage.get(index)
    }

    /// Sets element `index`; [`Error::IndexOutOfRange`] past the end.
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
    /// assert_eq!(a.to_vec(), vec![0, 42]);
    /// assert!(a.set(2, 0).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        self.storage.set(index, value)
    }

    /// A copy of all elements.
    ///
    /// ```
    /// let a = multiproc::RawArray::from_slice(&[1u32, 2])?;
    /// a.set(0, 3)?;
    /// assert_eq!(a.to_vec(), vec![3, 2]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        self.storage.to_vec()
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
        split(&self.storage, parts)
    }
}

fn split<T: Pod>(storage: &Storage<T>, parts: usize) -> Result<Vec<ArrayChunk<T>>> {
    if parts == 0 {
        return Err(Error::ZeroSize {
            what: "number of chunks",
        });
    }
    let len = storage.len();
    let (base, extra) = (len / parts, len % parts);
    let mut start = 0;
    Ok((0..parts)
        .map(|i| {
            // The first `len % parts` chunks take one element more: every element
            // is in exactly one chunk, and sizes differ by at most one.
            let n = base + usize::from(i < extra);
            let chunk = ArrayChunk {
                storage: storage.clone(),
                start,
                len: n,
            };
            start += n;
            chunk
        })
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
    storage: Storage<T>,
    start: usize,
    len: usize,
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
        self.start
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
        self.len
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
        self.len == 0
    }

    /// The chunk's elements, writable without a lock.
    ///
    /// ```
    /// let a = multiproc::RawArray::<u8>::new(4)?;
    /// for mut chunk in a.chunks(2)? {
    ///     let fill = chunk.start() as u8 + 1;
    ///     chunk.as_mut_slice().fill(fill);
    /// }
    /// assert_eq!(a.to_vec(), vec![1, 1, 3, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: `split` gives each element to exactly one chunk, chunks are not
        // Clone, and `&mut self` makes this the only slice of this chunk.
        unsafe { self.storage.slice_mut(self.start, self.len) }
    }
}
