//! `JoinableQueue`: a [`Queue`](super::Queue) whose consumers say when each message
//! is handled (`task_done`), so that a producer can wait until all are (`join`)
//! — Python's `multiprocessing.JoinableQueue`.
//!
//! ## Unfinished tasks
//! A task is unfinished from its `put` until a `task_done` for it. The count is
//! never stored as one number (a process killed between a put and an increment
//! would leave it wrong forever); it is computed:
//! `unfinished = qsize + tasks held by live consumers`, where each consumer
//! process's tasks (taken, not yet done) are counted in the shared `tasks` role
//! table. A get counts its task there *before* it takes the message (and takes
//! it back if it got none), so no instant shows a taken task as finished.
//!
//! ## A consumer that dies holding tasks
//! Its tasks are not waited for: `join` returns as soon as the queue is empty and
//! no *live* consumer holds a task; if dead consumers held some, it returns
//! [`Error::TasksAbandoned`] with their number (an upper bound: a consumer killed
//! inside `get` is counted even if it had not yet taken its message out), and
//! writes them off, so the next `join` returns `Ok` unless more die.
//!
//! `task_done` in a process that took no task finishes one of another live
//! process's (Python allows any process to call it); with no task anywhere it is
//! [`Error::TaskDoneTooMany`].

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::holder::{Holder, Roles};
use super::queue::{
    Receiver, Sender, decode, encode, get_decoded, get_one, get_with, put_one, put_with,
    with_encoded, with_scratch,
};
use super::ring::{self, DONE_SEQ, JOINERS, Ring, Role};
use super::roles::Who;
use crate::error::{Error, Result};
use crate::sync::raw_lock::OWNER_CHECK_INTERVAL;
use crate::sys::futex;
use crate::sys::time::Deadline;

/// After the task count changed: wakes the joiners, if any sleep.
pub(crate) fn tasks_changed(ring: &Ring) {
    if ring.word(JOINERS).load(Ordering::SeqCst) > 0 {
        let seq = ring.word(DONE_SEQ);
        seq.fetch_add(1, Ordering::SeqCst);
        futex::wake_all(seq);
    }
}

/// One task of `h`'s queue is done (see [`JoinableQueue::task_done`]).
pub(crate) fn task_done(h: &Holder) -> Result<()> {
    if !h.joinable {
        return Err(Error::InvalidArgument(
            "task_done() on a handle of a Queue: only a JoinableQueue (and its receivers) counts tasks".into(),
        ));
    }
    if h.is_closed() {
        return Err(Error::Closed("JoinableQueue.task_done"));
    }
    let tasks = h.ring.table(Role::Tasks);
    if !tasks.remove(Who::Me) && !tasks.remove_any_alive() {
        return Err(Error::TaskDoneTooMany);
    }
    tasks_changed(&h.ring);
    Ok(())
}

/// A [`Queue`](super::Queue) with `task_done` and `join` (see the [module](self)).
///
/// ```
/// use std::time::Duration;
/// use multiproc::{JoinableQueue, Process};
/// let q = JoinableQueue::<u32>::new()?;
/// let worker = q.clone();
/// let mut p = Process::new(move || {
///     for _ in 0..3 {
///         let n = worker.get(None).unwrap();
///         let _ = n * 2; // the work
///         worker.task_done().unwrap();
///     }
/// });
/// p.start()?;
/// q.put_many(&[1, 2, 3], None)?;
/// q.join(Some(Duration::from_secs(10)))?; // every task done
/// p.join(Some(Duration::from_secs(10)))?;
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// Travels to a process that did not inherit it as a token: see
/// [`token::export`](crate::token::export).
pub struct JoinableQueue<T> {
    holder: Holder,
    _msg: PhantomData<fn(T) -> T>,
}

impl<T> JoinableQueue<T> {
    /// A joinable queue with no bound on messages and a 1 MiB ring.
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// assert!(q.empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<JoinableQueue<T>> {
        JoinableQueue::with_bounds(0, 0)
    }

    /// A joinable queue of at most `maxsize` messages (0: no bound).
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<u8>::with_maxsize(1)?;
    /// q.put(&1, None)?;
    /// assert!(q.full());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_maxsize(maxsize: usize) -> Result<JoinableQueue<T>> {
        JoinableQueue::with_bounds(maxsize, 0)
    }

    /// Bounds as [`Queue::with_bounds`](super::Queue::with_bounds).
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<u8>::with_bounds(4, 1024)?;
    /// assert_eq!(q.maxsize(), 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_bounds(maxsize: usize, max_bytes: usize) -> Result<JoinableQueue<T>> {
        let ring = Arc::new(Ring::new(maxsize as u64, max_bytes as u64)?);
        Ok(JoinableQueue {
            holder: Holder::new(ring, Roles::BOTH, true),
            _msg: PhantomData,
        })
    }

    /// A producer-only handle on this queue.
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// q.sender().put(&1, None)?;
    /// assert_eq!(q.get(None)?, 1);
    /// q.task_done()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn sender(&self) -> Sender<T> {
        Sender {
            holder: Holder::new(Arc::clone(&self.holder.ring), Roles::PRODUCER, true),
            _msg: PhantomData,
        }
    }

    /// A consumer-only handle on this queue; its gets count tasks too.
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// let rx = q.receiver();
    /// q.put(&1, None)?;
    /// assert_eq!(rx.get(None)?, 1);
    /// assert!(q.join(Some(std::time::Duration::from_millis(1))).is_err()); // not done
    /// q.task_done()?;
    /// q.join(None)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn receiver(&self) -> Receiver<T> {
        Receiver {
            holder: Holder::new(Arc::clone(&self.holder.ring), Roles::CONSUMER, true),
            _msg: PhantomData,
        }
    }

    /// Says that one task taken from the queue is done (Python's `task_done`).
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// q.put(&1, None)?;
    /// let _ = q.get(None)?;
    /// q.task_done()?;
    /// assert!(matches!(q.task_done(), Err(multiproc::Error::TaskDoneTooMany)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn task_done(&self) -> Result<()> {
        task_done(&self.holder)
    }

    /// Tasks not yet done: queued messages plus those live consumers took and
    /// have not called `task_done` for.
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// q.put(&1, None)?;
    /// assert_eq!(q.unfinished_tasks(), 1);
    /// let _ = q.get(None)?;
    /// assert_eq!(q.unfinished_tasks(), 1); // taken, not done
    /// q.task_done()?;
    /// assert_eq!(q.unfinished_tasks(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn unfinished_tasks(&self) -> u64 {
        let ring = &self.holder.ring;
        ring.qsize() + ring.table(Role::Tasks).alive_total()
    }

    /// Waits at most `timeout` (forever with `None`) until every task put is done
    /// (Python's `join`). [`Error::Timeout`] if time ran out;
    /// [`Error::TasksAbandoned`] if everything is done but tasks that dead
    /// consumers held (see the [module](self)).
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// q.join(None)?; // nothing put: returns at once
    /// q.put(&1, None)?;
    /// assert!(matches!(q.join(Some(Duration::from_millis(5))), Err(multiproc::Error::Timeout { .. })));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(&self, timeout: Option<Duration>) -> Result<()> {
        let deadline = Deadline::after(timeout)?;
        let ring = &self.holder.ring;
        let joiners = ring.word(JOINERS);
        let seq = ring.word(DONE_SEQ);
        joiners.fetch_add(1, Ordering::SeqCst);
        let result = loop {
            let s = seq.load(Ordering::SeqCst);
            if self.unfinished_tasks() == 0 {
                let lost = ring.table(Role::Tasks).write_off_dead();
                break if lost == 0 {
                    Ok(())
                } else {
                    Err(Error::TasksAbandoned { count: lost })
                };
            }
            if deadline.expired() {
                break Err(ring::timed_out("JoinableQueue.join", timeout));
            }
            // Sliced: a consumer that dies holding tasks wakes nobody.
            futex::wait(seq, s, Some(deadline.slice(OWNER_CHECK_INTERVAL)));
        };
        joiners.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

producer_api!(
    JoinableQueue,
    "let q = multiproc::JoinableQueue::<u32>::new()?;\nlet h = q.clone();"
);
consumer_api!(
    JoinableQueue,
    "let q = multiproc::JoinableQueue::<u32>::new()?;\nlet h = q.clone();"
);
common_api!(
    JoinableQueue,
    "let q = multiproc::JoinableQueue::<u32>::new()?;\nlet h = q.clone();"
);

/// A JoinableQueue travels as a token ([`crate::token`]); the message type is
/// checked on import. The imported handle counts as a producer and consumer of
/// the importing process exactly as an inherited one.
impl<T> serde::Serialize for JoinableQueue<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        crate::token::serialize(s, crate::token::Tag::JoinableQueue, || {
            self.holder.token::<T>()
        })
    }
}

impl<'de, T> serde::Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::token::deserialize(
            d,
            crate::token::Tag::JoinableQueue,
            |t: super::holder::QueueToken| {
                Ok(JoinableQueue {
                    holder: Holder::from_token::<T>(&t, Roles::BOTH, Some(true), "JoinableQueue")?,
                    _msg: PhantomData,
                })
            },
        )
    }
}
