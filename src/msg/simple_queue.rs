//! `SimpleQueue`: Python's `multiprocessing.SimpleQueue` — `put`, `get`, `empty`,
//! `close` and nothing else, on the same shared ring as [`Queue`].

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::queue::Queue;
use crate::error::Result;

/// An unbounded queue with Python's `SimpleQueue` methods; every handle is both a
/// producer and a consumer (so `get` waits while any handle lives).
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Process, SimpleQueue};
/// let q = SimpleQueue::<u64>::new()?;
/// let child_q = q.clone();
/// let mut p = Process::new(move || child_q.put(&42).unwrap());
/// p.start()?;
/// assert_eq!(q.get()?, 42);
/// p.join(Some(Duration::from_secs(10)))?;
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// Travels to a process that did not inherit it as a token: see
/// [`token::export`](crate::token::export).
pub struct SimpleQueue<T> {
    inner: Queue<T>,
}

impl<T> SimpleQueue<T> {
    /// A new, empty queue (a 1 MiB ring; `put` waits only when that much is queued).
    ///
    /// ```
    /// let q = multiproc::SimpleQueue::<String>::new()?;
    /// assert!(q.empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<SimpleQueue<T>> {
        Ok(SimpleQueue {
            inner: Queue::new()?,
        })
    }

    /// Whether the queue holds no message now.
    ///
    /// ```
    /// let q = multiproc::SimpleQueue::<u8>::new()?;
    /// q.put(&1)?;
    /// assert!(!q.empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn empty(&self) -> bool {
        self.inner.empty()
    }

    /// Closes this handle: its later calls fail with
    /// [`Error::Closed`](crate::Error::Closed).
    ///
    /// ```
    /// let q = multiproc::SimpleQueue::<u8>::new()?;
    /// q.close();
    /// assert!(q.put(&1).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(&self) {
        self.inner.close()
    }
}

impl<T: Serialize> SimpleQueue<T> {
    /// Puts `msg`, waiting for room if the ring is full.
    ///
    /// ```
    /// let q = multiproc::SimpleQueue::<&str>::new()?;
    /// q.put(&"hello")?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put(&self, msg: &T) -> Result<()> {
        self.inner.put(msg, None)
    }
}

impl<T: DeserializeOwned> SimpleQueue<T> {
    /// Takes the oldest message, waiting for one.
    ///
    /// ```
    /// let q = multiproc::SimpleQueue::<Vec<u8>>::new()?;
    /// q.put(&vec![1, 2])?;
    /// assert_eq!(q.get()?, vec![1, 2]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.inner.get(None)
    }
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<T> std::fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimpleQueue")
            .field("empty", &self.empty())
            .finish()
    }
}

/// A SimpleQueue travels as a token ([`crate::token`]), as a [`Queue`] does.
impl<T> serde::Serialize for SimpleQueue<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        crate::token::serialize(s, crate::token::Tag::SimpleQueue, || {
            self.inner.holder.token::<T>()
        })
    }
}

impl<'de, T> serde::Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::token::deserialize(
            d,
            crate::token::Tag::SimpleQueue,
            |t: super::holder::QueueToken| {
                Ok(SimpleQueue {
                    inner: Queue {
                        holder: super::holder::Holder::from_token::<T>(
                            &t,
                            super::holder::Roles::BOTH,
                            Some(false),
                            "SimpleQueue",
                        )?,
                        _msg: std::marker::PhantomData,
                    },
                })
            },
        )
    }
}
