//! `Value` and `RawValue`: one plain-data value in shared memory (Python's
//! `multiprocessing.Value` / `RawValue`).
//!
//! Two disciplines, one per type, so that neither can undercut the other:
//! - [`Value`] is guarded by an [`RLock`] (Python's default lock): every access
//!   takes it, and its guard gives `&mut T`;
//! - [`RawValue`] has no lock and never hands out a reference: copies, and for
//!   integers lock-free atomic operations (more than Python has).
//!
//! Why the guard's `&mut T` is unique in the process: see `shm::storage` (the claim
//! word); why no other process writes under it: the guard holds the lock, and
//! `release` refuses the level a guard holds (the RLock's pin count).

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

use bytemuck::Pod;

use crate::error::Result;
use crate::shm::storage::{Exclusive, Storage};
use crate::sync::owner_died::{LockResult, OwnerDied, TryLockError, TryLockResult};
use crate::sync::raw_lock;
use crate::sync::{RLock, RLockGuard};

/// A shared value with a lock: Python's `multiprocessing.Value`.
///
/// The value and its lock share one cache line. The lock is an [`RLock`], as
/// CPython's default: hold [`get_lock`](Self::get_lock) and the calls below still
/// work in that thread (`with v.get_lock(): v.value += 1`).
/// - [`lock`](Self::lock): a guard that derefs to `&mut T`;
/// - [`get`](Self::get) / [`set`](Self::set): one locked copy each (Python's `.value`).
///
/// For lock-free atomic integers use [`RawValue`].
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
///
/// Travels to a process that did not inherit it as a token: see
/// [`token::export`](crate::token::export).
#[derive(Debug, Clone)]
pub struct Value<T> {
    storage: Storage<T>,
    lock: RLock,
}

/// Holds a [`Value`]'s lock; derefs to the value. Stays on the thread that took it.
///
/// ```
/// let v = multiproc::Value::new(1.5f64)?;
/// *v.lock().unwrap() *= 2.0;
/// assert_eq!(v.get()?, 3.0);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T> {
    // Field order is drop order: the claim ends, then the pinned level.
    value: Exclusive<'a, T>,
    pin: Pin<'a>,
}

/// One level of a data lock that this thread holds for a data guard, pinned (see
/// `RLock::pin`): no `release` takes it; dropping it releases it.
pub(crate) struct Pin<'a> {
    lock: &'a RLock,
    // The level is this thread's: the pin must stay on it.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl<'a> Pin<'a> {
    /// Turns a held level into a pinned one.
    #[inline]
    pub(crate) fn new(guard: RLockGuard<'a>) -> Pin<'a> {
        Pin {
            lock: guard.into_pinned(),
            _not_send: std::marker::PhantomData,
        }
    }

    pub(crate) fn lock(&self) -> &'a RLock {
        self.lock
    }
}

impl Drop for Pin<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.release_pinned();
    }
}

/// Takes a data guard's pieces once the lock is held: `Err` (the level released
/// again) when the data is in use in this process.
#[inline]
pub(crate) fn guarded<'a, T: Pod, G>(
    storage: &'a Storage<T>,
    how: TryLockResult<RLockGuard<'a>>,
    what: &'static str,
    make: impl Fn(Exclusive<'a, T>, Pin<'a>) -> G,
) -> TryLockResult<G> {
    let (guard, died) = match how {
        Ok(g) => (g, false),
        Err(TryLockError::OwnerDied(d)) => (d.into_inner(), true),
        Err(TryLockError::WouldBlock) => return Err(TryLockError::WouldBlock),
        Err(TryLockError::Invalid(e)) => return Err(TryLockError::Invalid(e)),
    };
    // Every claim change of a locked storage happens under its lock, held now.
    let data = match storage.exclusive_locked(what) {
        Ok(d) => d,
        Err(e) => return Err(TryLockError::Invalid(e)),
    };
    let g = make(data, Pin::new(guard));
    if died {
        Err(TryLockError::OwnerDied(OwnerDied::new(g)))
    } else {
        Ok(g)
    }
}

/// The blocking form: a misuse (a second guard in one thread) panics, as a second
/// `RefCell::borrow_mut` does.
#[inline]
pub(crate) fn blocking<G>(r: TryLockResult<G>, what: &str) -> LockResult<G> {
    match r {
        Ok(g) => Ok(g),
        Err(TryLockError::OwnerDied(d)) => Err(d),
        Err(TryLockError::Invalid(e)) => panic!("{what}::lock: {e}"),
        Err(TryLockError::WouldBlock) => unreachable!("a wait without deadline ends with the lock"),
    }
}

impl<T: Pod> Value<T> {
    /// A shared `value` with a new lock (Python's `Value(typecode, value)`).
    ///
    /// `T` is any plain-data type ([`Pod`]), `#[repr(C)]` structs
    /// included.
    ///
    /// ```
    /// let point = multiproc::Value::new([1.0f64, -2.0])?;
    /// assert_eq!(point.get()?, [1.0, -2.0]);
    /// assert!(!point.get_lock().is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(value: T) -> Result<Value<T>> {
        let (storage, head) = Storage::alloc(1, raw_lock::SIZE, true)?;
        let lock = match head {
            Some(at) => RLock::in_block(storage.block().clone(), at),
            None => RLock::new()?,
        };
        storage.write_all(&[value], "Value")?;
        Ok(Value { storage, lock })
    }

    /// A shared `value` guarded by an existing `lock` (Python's `lock=<lock>`).
    ///
    /// ```
    /// use multiproc::{RLock, Value};
    /// let lock = RLock::new()?;
    /// let a = Value::with_lock(1u8, lock.clone())?;
    /// let b = Value::with_lock(2u8, lock)?;
    /// let mut g = a.lock().unwrap();
    /// assert!(b.get_lock().is_locked()); // one lock for both
    /// *g = b.get()?; // this thread holds it: b is readable too
    /// drop(g);
    /// assert_eq!(a.get()?, 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_lock(value: T, lock: RLock) -> Result<Value<T>> {
        let (storage, _) = Storage::alloc(1, 0, true)?;
        storage.write_all(&[value], "Value")?;
        Ok(Value { storage, lock })
    }

    /// The Value of `storage` (one element) guarded by `lock` (a directory's).
    pub(crate) fn from_parts(storage: Storage<T>, lock: RLock) -> Value<T> {
        Value { storage, lock }
    }

    /// The lock (Python's `get_lock()`): hold it to make several operations
    /// on the value one atomic step.
    ///
    /// ```
    /// let v = multiproc::Value::new(0u32)?;
    /// {
    ///     let _held = v.get_lock().lock().unwrap();
    ///     let x = v.get()?; // the same thread may go on: the lock is recursive
    ///     v.set(x + 1)?;
    /// }
    /// assert_eq!(v.get()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_lock(&self) -> &RLock {
        &self.lock
    }

    /// Takes the lock; the guard derefs to `&mut T`.
    ///
    /// `Err(OwnerDied(guard))` holds the lock too: see [`OwnerDied`].
    ///
    /// # Panics
    /// If this process already uses the value through another live guard (in this
    /// thread: a second guard would alias the first); [`try_lock`](Self::try_lock)
    /// reports that as an error instead.
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
    #[inline]
    pub fn lock(&self) -> LockResult<ValueGuard<'_, T>> {
        blocking(
            self.guard(self.lock.lock().map_err(TryLockError::OwnerDied)),
            "Value",
        )
    }

    /// Takes the lock if no other thread or process holds it, without waiting.
    ///
    /// `Err(TryLockError::Invalid(Error::InUse { .. }))` when a guard of this value
    /// is already alive in this thread.
    ///
    /// ```
    /// use multiproc::{Error, TryLockError, Value};
    /// let v = Value::new(1u8)?;
    /// let g = v.try_lock().unwrap();
    /// assert!(matches!(v.try_lock(), Err(TryLockError::Invalid(Error::InUse { .. }))));
    /// assert!(matches!(v.get(), Err(Error::InUse { .. }))); // no copy under a guard
    /// drop(g);
    /// assert_eq!(v.get()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_lock(&self) -> TryLockResult<ValueGuard<'_, T>> {
        self.guard(self.lock.try_lock())
    }

    /// Waits at most `timeout` for the lock.
    ///
    /// ```
    /// use std::time::Duration;
    /// let v = multiproc::Value::new(0u16)?;
    /// *v.try_lock_for(Duration::from_secs(1)).unwrap() = 3;
    /// assert_eq!(v.get()?, 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_lock_for(&self, timeout: std::time::Duration) -> TryLockResult<ValueGuard<'_, T>> {
        self.guard(self.lock.try_lock_for(timeout))
    }

    #[inline]
    fn guard<'a>(&'a self, how: TryLockResult<RLockGuard<'a>>) -> TryLockResult<ValueGuard<'a, T>> {
        guarded(&self.storage, how, "Value", |value, pin| ValueGuard {
            value,
            pin,
        })
    }

    /// A copy of the value, taken under the lock (Python's `v.value`).
    ///
    /// [`Error::OwnerDied`](crate::Error::OwnerDied) if a holder of the lock died
    /// (the lock is released again, still inconsistent);
    /// [`Error::InUse`](crate::Error::InUse) while a guard of it lives in this thread.
    ///
    /// ```
    /// let v = multiproc::Value::new(b'x')?;
    /// assert_eq!(v.get()?, b'x');
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        let _g = self.lock.lock()?;
        self.storage.get(0, "Value")
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
        self.storage.set(0, value, "Value")
    }
}

impl<T> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value[0]
    }
}

impl<T> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value[0]
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
        self.pin.lock().mark_consistent();
    }
}

/// A shared value without a lock: Python's `RawValue`, with lock-free atomic
/// operations for integers.
///
/// It never hands out a reference into shared memory: [`get`](Self::get) and
/// [`set`](Self::set) copy (word by word, atomically: a reader racing a writer of a
/// multi-word `T` may see a mix of the two values, never undefined behaviour), and
/// the atomic operations act on the shared integer itself.
///
/// ```
/// let v = multiproc::RawValue::new(7u32)?;
/// v.set(8);
/// assert_eq!(v.get(), 8);
/// assert_eq!(v.fetch_add(2), 8);
/// assert_eq!(v.load(), 10);
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// Travels to a process that did not inherit it as a token: see
/// [`token::export`](crate::token::export).
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
        let (storage, _) = Storage::alloc(1, 0, false)?;
        let v = RawValue { storage };
        v.set(value);
        Ok(v)
    }

    /// The RawValue of `storage` (one element; a directory's).
    pub(crate) fn from_storage(storage: Storage<T>) -> RawValue<T> {
        RawValue { storage }
    }

    /// A copy of the value.
    ///
    /// ```
    /// let v = multiproc::RawValue::new([1u8, 2, 3])?;
    /// assert_eq!(v.get(), [1, 2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> T {
        let (map, at) = self.storage.atomic_place();
        map.read(at)
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
        let (map, at) = self.storage.atomic_place();
        map.write(at, value)
    }
}

/// Integer types with lock-free atomic operations on a shared [`RawValue`]:
/// `i8`..`i64`, `u8`..`u64`, `isize`, `usize`.
///
/// Sealed: the operations are defined on the integer's bits, through the unsigned
/// atomic of the same width, so signed and unsigned wrap the same way (and
/// [`fetch_max`](RawValue::fetch_max) / [`fetch_min`](RawValue::fetch_min) compare
/// as the integer type does).
///
/// ```
/// use multiproc::{AtomicInt, RawValue};
/// fn bump<T: AtomicInt>(v: &RawValue<T>, by: T) -> T {
///     v.fetch_add(by)
/// }
/// let v = RawValue::new(i8::MAX)?;
/// assert_eq!(bump(&v, 1), i8::MAX);
/// assert_eq!(v.load(), i8::MIN); // wraps
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// Other types cannot implement it:
///
/// ```compile_fail,E0277
/// #[derive(Clone, Copy, multiproc::Pod, multiproc::Zeroable)]
/// #[repr(C)]
/// struct Mine(u32);
/// impl multiproc::AtomicInt for Mine {}
/// ```
pub trait AtomicInt: Pod + Ord + sealed::Sealed {}

mod sealed {
    use crate::sys::mem::Mapping;

    /// What each operation does, on the unsigned atomic of the integer's width.
    ///
    /// ```text
    /// Swap: x = v   Add: x += v   Sub: x -= v   And: x &= v   Or: x |= v   Xor: x ^= v
    /// ```
    #[derive(Clone, Copy)]
    pub enum Op {
        Swap,
        Add,
        Sub,
        And,
        Or,
        Xor,
    }

    /// The operations behind [`AtomicInt`](super::AtomicInt); private, so that only
    /// the integer types implement it.
    ///
    /// ```compile_fail,E0603
    /// // The module is private: outside code cannot name the trait.
    /// use multiproc::data::value::sealed::Sealed;
    /// ```
    pub trait Sealed: Sized {
        fn load(map: &Mapping, off: usize) -> Self;
        fn store(map: &Mapping, off: usize, v: Self);
        fn rmw(map: &Mapping, off: usize, op: Op, v: Self) -> Self;
        fn compare_exchange(map: &Mapping, off: usize, cur: Self, new: Self) -> Result<Self, Self>;
    }
}

use sealed::Op;

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
            fn rmw(map: &crate::sys::mem::Mapping, off: usize, op: Op, v: $t) -> $t {
                let a = map.atomic::<$atomic>(off);
                let v = v as $bits;
                (match op {
                    Op::Swap => a.swap(v, Ordering::SeqCst),
                    Op::Add => a.fetch_add(v, Ordering::SeqCst),
                    Op::Sub => a.fetch_sub(v, Ordering::SeqCst),
                    Op::And => a.fetch_and(v, Ordering::SeqCst),
                    Op::Or => a.fetch_or(v, Ordering::SeqCst),
                    Op::Xor => a.fetch_xor(v, Ordering::SeqCst),
                }) as $t
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

macro_rules! as_atomic {
    ($($t:ty => $atomic:ident),*) => {$(
        impl RawValue<$t> {
            #[doc = concat!("The shared `", stringify!($atomic), "` itself, for what the other methods do not")]
            /// offer (wait on it with a futex, or pass it to code that takes an atomic).
            /// Every process that holds a clone of this value sees the same atomic.
            ///
            /// ```
            /// use std::sync::atomic::Ordering;
            #[doc = concat!("let v = multiproc::RawValue::new(1", stringify!($t), ")?;")]
            /// v.as_atomic().fetch_add(2, Ordering::SeqCst);
            /// assert_eq!(v.load(), 3);
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn as_atomic(&self) -> &std::sync::atomic::$atomic {
                let (map, at) = self.storage.atomic_place();
                map.atomic::<std::sync::atomic::$atomic>(at)
            }
        }
    )*};
}
as_atomic!(u32 => AtomicU32, u64 => AtomicU64);

impl<T: AtomicInt> RawValue<T> {
    #[inline]
    fn rmw(&self, op: Op, value: T) -> T {
        let (map, at) = self.storage.atomic_place();
        T::rmw(map, at, op, value)
    }

    /// Reads the value atomically.
    ///
    /// ```
    /// let v = multiproc::RawValue::new(5i64)?;
    /// assert_eq!(v.load(), 5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn load(&self) -> T {
        let (map, at) = self.storage.atomic_place();
        T::load(map, at)
    }

    /// Writes the value atomically.
    ///
    /// ```
    /// let v = multiproc::RawValue::new(0u32)?;
    /// v.store(9);
    /// assert_eq!(v.load(), 9);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn store(&self, value: T) {
        let (map, at) = self.storage.atomic_place();
        T::store(map, at, value)
    }

    /// Stores `value`; returns the previous value.
    ///
    /// ```
    /// let v = multiproc::RawValue::new(1u8)?;
    /// assert_eq!(v.swap(2), 1);
    /// assert_eq!(v.load(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn swap(&self, value: T) -> T {
        self.rmw(Op::Swap, value)
    }

    /// Adds atomically, wrapping on overflow; returns the previous value.
    ///
    /// ```
    /// let v = multiproc::RawValue::new(1u64)?;
    /// assert_eq!(v.fetch_add(2), 1);
    /// assert_eq!(v.load(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn fetch_add(&self, value: T) -> T {
        self.rmw(Op::Add, value)
    }

    /// Subtracts atomically, wrapping on overflow; returns the previous value.
    ///
    /// ```
    /// let v = multiproc::RawValue::new(0u16)?;
    /// assert_eq!(v.fetch_sub(1), 0);
    /// assert_eq!(v.load(), u16::MAX); // wraps
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn fetch_sub(&self, value: T) -> T {
        self.rmw(Op::Sub, value)
    }

    /// Bitwise and, atomically; returns the previous value.
    ///
    /// ```
    /// let v = multiproc::RawValue::new(0b1100u8)?;
    /// assert_eq!(v.fetch_and(0b1010), 0b1100);
    /// assert_eq!(v.load(), 0b1000);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn fetch_and(&self, value: T) -> T {
        self.rmw(Op::And, value)
    }

    /// Bitwise or, atomically; returns the previous value.
    ///
    /// ```
    /// let v = multiproc::RawValue::new(0b1100u8)?;
    /// assert_eq!(v.fetch_or(0b0011), 0b1100);
    /// assert_eq!(v.load(), 0b1111);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn fetch_or(&self, value: T) -> T {
        self.rmw(Op::Or, value)
    }

    /// Bitwise xor, atomically; returns the previous value.
    ///
    /// ```
    /// let v = multiproc::RawValue::new(0b1100u8)?;
    /// assert_eq!(v.fetch_xor(0b0110), 0b1100);
    /// assert_eq!(v.load(), 0b1010);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn fetch_xor(&self, value: T) -> T {
        self.rmw(Op::Xor, value)
    }

    /// Stores `new` if the value is `current`; returns the previous value,
    /// `Ok` if it was `current`.
    ///
    /// ```
    /// let v = multiproc::RawValue::new(1i8)?;
    /// assert_eq!(v.compare_exchange(1, 2), Ok(1));
    /// assert_eq!(v.compare_exchange(1, 3), Err(2));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn compare_exchange(&self, current: T, new: T) -> std::result::Result<T, T> {
        let (map, at) = self.storage.atomic_place();
        T::compare_exchange(map, at, current, new)
    }

    /// Applies `f` atomically (a compare-exchange loop) until it returns `None` or
    /// its result is stored; returns the previous value, `Ok` if stored.
    ///
    /// ```
    /// let v = multiproc::RawValue::new(3u32)?;
    /// assert_eq!(v.fetch_update(|x| (x < 5).then(|| x * 2)), Ok(3));
    /// assert_eq!(v.fetch_update(|x| (x < 5).then(|| x * 2)), Err(6));
    /// assert_eq!(v.load(), 6);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn fetch_update(&self, mut f: impl FnMut(T) -> Option<T>) -> std::result::Result<T, T> {
        let mut cur = self.load();
        while let Some(new) = f(cur) {
            match self.compare_exchange(cur, new) {
                Ok(prev) => return Ok(prev),
                Err(now) => cur = now,
            }
        }
        Err(cur)
    }

    /// Stores the larger of the value and `value`; returns the previous value.
    ///
    /// ```
    /// let v = multiproc::RawValue::new(-5i32)?;
    /// assert_eq!(v.fetch_max(-7), -5); // compared as i32
    /// assert_eq!(v.fetch_max(4), -5);
    /// assert_eq!(v.load(), 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn fetch_max(&self, value: T) -> T {
        match self.fetch_update(|x| (value > x).then_some(value)) {
            Ok(prev) | Err(prev) => prev,
        }
    }

    /// Stores the smaller of the value and `value`; returns the previous value.
    ///
    /// ```
    /// let v = multiproc::RawValue::new(5u64)?;
    /// assert_eq!(v.fetch_min(9), 5);
    /// assert_eq!(v.fetch_min(2), 5);
    /// assert_eq!(v.load(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn fetch_min(&self, value: T) -> T {
        match self.fetch_update(|x| (value < x).then_some(value)) {
            Ok(prev) | Err(prev) => prev,
        }
    }
}

/// A Value travels as a token ([`crate::token`]) with its lock; the element type
/// is checked on import (size, alignment and a fingerprint of its name). An
/// imported handle shares the claims of this process's other handles to it: a
/// guard on one makes a guard on the other [`Error::InUse`](crate::Error::InUse).
impl<T: Pod> serde::Serialize for Value<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        crate::token::serialize(s, crate::token::Tag::Value, || {
            Ok((self.storage.token()?, &self.lock))
        })
    }
}

impl<'de, T: Pod> serde::Deserialize<'de> for Value<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::token::deserialize(
            d,
            crate::token::Tag::Value,
            |(t, lock): (crate::shm::storage::ElementsToken, RLock)| {
                Ok(Value {
                    storage: Storage::from_token(&t, true, "Value")?,
                    lock,
                })
            },
        )
    }
}

/// A RawValue travels as a token ([`crate::token`]); the element type is checked on
/// import (size, alignment and a fingerprint of its name).
impl<T: Pod> serde::Serialize for RawValue<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        crate::token::serialize(s, crate::token::Tag::RawValue, || self.storage.token())
    }
}

impl<'de, T: Pod> serde::Deserialize<'de> for RawValue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::token::deserialize(
            d,
            crate::token::Tag::RawValue,
            |t: crate::shm::storage::ElementsToken| {
                Ok(RawValue {
                    storage: Storage::from_token(&t, false, "RawValue")?,
                })
            },
        )
    }
}
