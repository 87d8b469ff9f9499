//! `Value` and `RawValue`: one plain-data value in shared memory (Python's
//! `multiprocessing.Value` / `RawValue`), with atomic operations on integers.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

use bytemuck::Pod;

use super::array::Storage;
use crate::error::Result;
use crate::sync::owner_died::{LockResult, OwnerDied};
use crate::sync::{Lock, LockGuard};

/// A shared value with a lock: Python's `multiprocessing.Value`.
///
/// The value and its lock share one cache line. Three ways to use it:
/// - [`lock`](Self::lock): a guard that derefs to `&mut T` (`with v.get_lock(): v.value += 1`);
/// - [`get`](Self::get) / [`set`](Self::set): one locked copy each (Python's `.value`);
/// - for integers, [`load`](Self::load), [`store`](Self::store),
///   [`fetch_add`](Self::fetch_add), [`compare_exchange`](Self::compare_exchange):
///   lock-free atomics, more than Python has. Use one discipline per value: the
///   atomics do not take the lock.
///
/// ```
/// use multiproc::{Process, Value};
/// let counter = Value::<i32>::new(0)?;
/// let mut kids = Vec::new();
/// for _ in 0..4 {
///     let c = counter.clone();
///     let mut p = Process::new(move || {
///         for _ in 0..1000 {
///             *c.lock().unwrap() += 1;
///         }
///     });
///     p.start()?;
///     kids.push(p);
/// }
/// for mut p in kids { p.join(None)?; }
/// assert_eq!(counter.get()?, 4000);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Value<T> {
    storage: Storage<T>,
    lock: Lock,
}

/// Holds a [`Value`]'s lock; derefs to the value.
///
/// ```
/// let v = multiproc::Value::new(1.5f64)?;
/// *v.lock().unwrap() *= 2.0;
/// assert_eq!(v.get()?, 3.0);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T> {
    value: &'a mut T,
    guard: LockGuard<'a>,
}

impl<T: Pod> Value<T> {
    /// A shared `value` with a new lock (Python's `Value(typecode, value)`).
    ///
    /// `T` is any plain-data type ([`bytemuck::Pod`]), `#[repr(C)]` structs
    /// included.
    ///
    /// ```
    /// let point = multiproc::Value::new([1.0f64, -2.0])?;
    /// assert_eq!(point.get()?, [1.0, -2.0]);
    /// assert!(!point.get_lock().is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(value: T) -> Result<Value<T>> {
        let (storage, lock) = Storage::new(1, true)?;
        storage.write_all(&[value]);
        Ok(Value {
            storage,
            lock: lock.expect("asked for a lock"),
        })
    }

    /// A shared `value` guarded by an existing `lock` (Python's `lock=<lock>`).
    ///
    /// ```
    /// use multiproc::{Lock, Value};
    /// let lock = Lock::new()?;
    /// let a = Value::with_lock(1u8, lock.clone())?;
    /// let b = Value::with_lock(2u8, lock)?;
    /// let _g = a.lock().unwrap();
    /// assert!(b.get_lock().is_locked()); // one lock for both
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_lock(value: T, lock: Lock) -> Result<Value<T>> {
        let (storage, _) = Storage::new(1, false)?;
        storage.write_all(&[value]);
        Ok(Value { storage, lock })
    }

    /// The lock (Python's `get_lock()`): hold it to make several operations
    /// on the value one atomic step.
    ///
    /// ```
    /// let v = multiproc::Value::new(0u32)?;
    /// let g = v.lock().unwrap();
    /// assert!(v.get_lock().is_locked());
    /// drop(g);
    /// assert!(!v.get_lock().is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// Takes the lock; the guard derefs to `&mut T`.
    ///
    /// `Err(OwnerDied(guard))` holds the lock too: see [`OwnerDied`].
    ///
    /// ```
    /// let v = multiproc::Value::new(10i64)?;
    /// {
    ///     let mut g = v.lock().unwrap();
    ///     *g -= 3; // read-modify-write under one lock
    ///     *g *= 2;
    /// }
    /// assert_eq!(v.get()?, 14);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock<'a>(&'a self) -> LockResult<ValueGuard<'a, T>> {
        let wrap = |guard: LockGuard<'a>| -> ValueGuard<'a, T> {
            // SAFETY: the guard holds this value's lock, which the only path handing
            // out references to it (this one) takes first; the lock is not
            // recursive, so no other reference exists in this process.
            let value = unsafe { &mut self.storage.slice_mut(0, 1)[0] };
            ValueGuard { value, guard }
        };
        match self.lock.lock() {
            Ok(g) => Ok(wrap(g)),
            Err(died) => Err(OwnerDied::new(wrap(died.into_inner()))),
        }
    }

    /// A copy of the value, taken under the lock (Python's `v.value`).
    ///
    /// [`Error::OwnerDied`](crate::Error::OwnerDied) if a holder of the lock died
    /// (the lock is released again, still inconsistent).
    ///
    /// ```
    /// let v = multiproc::Value::new(b'x')?;
    /// assert_eq!(v.get()?, b'x');
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        let _g = self.lock.lock()?;
        self.storage.get(0)
    }

    /// Replaces the value under the lock (Python's `v.value = x`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Process, Value};
    /// let v = Value::new(0.0f32)?;
    /// let v2 = v.clone();
    /// let mut p = Process::new(move || v2.set(2.5).unwrap());
    /// p.start()?;
    /// assert_eq!(p.join(Some(Duration::from_secs(10)))?, Some(0));
    /// assert_eq!(v.get()?, 2.5); // set by the child
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self, value: T) -> Result<()> {
        let _g = self.lock.lock()?;
        self.storage.set(0, value)
    }
}

impl<T> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value
    }
}

impl<T> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value
    }
}

impl<T> ValueGuard<'_, T> {
    /// Declares the value repaired after an [`OwnerDied`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Error, Process, Value};
    /// let v = Value::new(0u32)?;
    /// let v2 = v.clone();
    /// let mut p = Process::new(move || {
    ///     let g = v2.lock().unwrap();
    ///     std::mem::forget(g); // exits holding the lock
    /// });
    /// p.start()?;
    /// p.join(Some(Duration::from_secs(10)))?;
    /// // Without repair, every acquirer hears of the death:
    /// assert!(matches!(v.get(), Err(Error::OwnerDied)));
    /// let Err(died) = v.lock() else { unreachable!("the holder died") };
    /// let mut g = died.into_inner(); // the lock is held
    /// *g = 0; // repair
    /// g.mark_consistent();
    /// drop(g);
    /// assert_eq!(v.get()?, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn mark_consistent(&self) {
        self.guard.mark_consistent();
    }
}

/// A shared value without a lock: Python's `RawValue`.
///
/// ```
/// let v = multiproc::RawValue::new(7u32)?;
/// v.set(8);
/// assert_eq!(v.get(), 8);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct RawValue<T> {
    storage: Storage<T>,
}

impl<T: Pod> RawValue<T> {
    /// A shared `value` (Python's `RawValue(typecode, value)`).
    ///
    /// ```
    /// let v = multiproc::RawValue::new(-1i16)?;
    /// assert_eq!(v.get(), -1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(value: T) -> Result<RawValue<T>> {
        let (storage, _) = Storage::new(1, false)?;
        storage.write_all(&[value]);
        Ok(RawValue { storage })
    }

    /// A copy of the value.
    ///
    /// ```
    /// let v = multiproc::RawValue::new([1u8, 2, 3])?;
    /// assert_eq!(v.get(), [1, 2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> T {
        self.storage
            .get(0)
            .expect("index 0 of a one-element storage")
    }

    /// Replaces the value; a child's write is seen by the parent.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Process, RawValue};
    /// let v = RawValue::new(0u64)?;
    /// let v2 = v.clone();
    /// let mut p = Process::new(move || v2.set(99));
    /// p.start()?;
    /// p.join(Some(Duration::from_secs(10)))?;
    /// assert_eq!(v.get(), 99);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self, value: T) {
        self.storage
            .set(0, value)
            .expect("index 0 of a one-element storage")
    }
}

/// Integer types with lock-free atomic operations on a shared [`Value`] or
/// [`RawValue`]: `i8`..`i64`, `u8`..`u64`, `isize`, `usize`.
///
/// Sealed: the operations are defined on the integer's bits, through the unsigned
/// atomic of the same width, so signed and unsigned wrap the same way.
///
/// ```
/// use multiproc::{AtomicInt, Value};
/// fn bump<T: AtomicInt>(v: &Value<T>, by: T) -> T {
///     v.fetch_add(by)
/// }
/// let v = Value::new(i8::MAX)?;
/// assert_eq!(bump(&v, 1), i8::MAX);
/// assert_eq!(v.load(), i8::MIN); // wraps
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// Other types cannot implement it:
///
/// ```compile_fail,E0277
/// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Mine(u32);
/// impl multiproc::AtomicInt for Mine {}
/// ```
pub trait AtomicInt: Pod + sealed::Sealed {}

mod sealed {
    /// The operations behind [`AtomicInt`](super::AtomicInt); private, so that only
    /// the integer types implement it.
    ///
    /// ```compile_fail,E0603
    /// // The module is private: outside code cannot name the trait.
    /// use multiproc::shm::value::sealed::Sealed;
    /// ```
    pub trait Sealed {
        fn load(map: &crate::sys::mem::Mapping, off: usize) -> Self;
        fn store(map: &crate::sys::mem::Mapping, off: usize, v: Self);
        fn fetch_add(map: &crate::sys::mem::Mapping, off: usize, v: Self) -> Self;
        fn compare_exchange(
            map: &crate::sys::mem::Mapping,
            off: usize,
            cur: Self,
            new: Self,
        ) -> Result<Self, Self>
        where
            Self: Sized;
    }
}

macro_rules! atomic_int {
    ($atomic:ty, $bits:ty: $($t:ty),*) => {$(
        impl AtomicInt for $t {}
        impl sealed::Sealed for $t {
            fn load(map: &crate::sys::mem::Mapping, off: usize) -> $t {
                map.atomic::<$atomic>(off).load(Ordering::SeqCst) as $t
            }
            fn store(map: &crate::sys::mem::Mapping, off: usize, v: $t) {
                map.atomic::<$atomic>(off).store(v as $bits, Ordering::SeqCst)
            }
            fn fetch_add(map: &crate::sys::mem::Mapping, off: usize, v: $t) -> $t {
                map.atomic::<$atomic>(off).fetch_add(v as $bits, Ordering::SeqCst) as $t
            }
            fn compare_exchange(map: &crate::sys::mem::Mapping, off: usize, cur: $t, new: $t) -> Result<$t, $t> {
                map.atomic::<$atomic>(off)
                    .compare_exchange(cur as $bits, new as $bits, Ordering::SeqCst, Ordering::SeqCst)
                    .map(|v| v as $t)
                    .map_err(|v| v as $t)
            }
        }
    )*};
}
atomic_int!(AtomicU8, u8: u8, i8);
atomic_int!(AtomicU16, u16: u16, i16);
atomic_int!(AtomicU32, u32: u32, i32);
atomic_int!(AtomicU64, u64: u64, i64, usize, isize);

macro_rules! atomic_ops {
    ($ty:ident) => {
        impl<T: AtomicInt> $ty<T> {
            /// Reads the value atomically (no lock).
            ///
            /// ```
            #[doc = concat!("let v = multiproc::", stringify!($ty), "::new(5i64)?;")]
            /// assert_eq!(v.load(), 5);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn load(&self) -> T {
                T::load(self.storage.map(), self.storage.offset())
            }

            /// Writes the value atomically (no lock).
            ///
            /// ```
            #[doc = concat!("let v = multiproc::", stringify!($ty), "::new(0u32)?;")]
            /// v.store(9);
            /// assert_eq!(v.load(), 9);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn store(&self, value: T) {
                T::store(self.storage.map(), self.storage.offset(), value)
            }

            /// Adds atomically, wrapping on overflow; returns the previous value.
            ///
            /// ```
            #[doc = concat!("let v = multiproc::", stringify!($ty), "::new(1u64)?;")]
            /// assert_eq!(v.fetch_add(2), 1);
            /// assert_eq!(v.load(), 3);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn fetch_add(&self, value: T) -> T {
                T::fetch_add(self.storage.map(), self.storage.offset(), value)
            }

            /// Stores `new` if the value is `current`; returns the previous value,
            /// `Ok` if it was `current`.
            ///
            /// ```
            #[doc = concat!("let v = multiproc::", stringify!($ty), "::new(1i8)?;")]
            /// assert_eq!(v.compare_exchange(1, 2), Ok(1));
            /// assert_eq!(v.compare_exchange(1, 3), Err(2));
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn compare_exchange(&self, current: T, new: T) -> std::result::Result<T, T> {
                T::compare_exchange(self.storage.map(), self.storage.offset(), current, new)
            }
        }
    };
}
atomic_ops!(Value);
atomic_ops!(RawValue);
