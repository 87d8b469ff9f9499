//! [`wait`] over connections and process sentinels, Python's
//! `multiprocessing.connection.wait`.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};

use crate::error::Result;
use crate::msg::connection::{Connection, poll_readable};
use crate::sys::time::Deadline;

/// Something [`wait`] can wait on: a [`Connection`] (ready when a message or its
/// end of file can be read, counting messages it has already buffered), or any
/// descriptor (`AsFd`: a process sentinel, a socket, a pipe, an `OwnedFd`,
/// `BorrowedFd`...), ready when `poll` reports it readable or hung up.
///
/// `Connection` deliberately does not implement `AsFd`: polling its descriptor
/// alone would miss the messages it has buffered. (Implement this trait for your
/// own buffered types the same way.)
///
/// ```
/// use multiproc::connection::Waitable;
/// let (a, b) = multiproc::Pipe(true)?;
/// a.send(&1u8)?;
/// assert!(!b.ready_now()); // not read yet: only `poll` on its descriptor tells
/// b.poll(None)?;
/// let _ = b.wait_fd()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub trait Waitable {
    /// The descriptor to poll for readability.
    ///
    /// # Errors
    ///
    /// [`Error::ConnectionClosed`](crate::Error::ConnectionClosed) for a closed
    /// connection.
    ///
    /// ```
    /// use multiproc::connection::Waitable;
    /// let (mut a, _b) = multiproc::Pipe(true)?;
    /// assert!(a.wait_fd().is_ok());
    /// a.close();
    /// assert!(a.wait_fd().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    fn wait_fd(&self) -> Result<BorrowedFd<'_>>;

    /// Whether the object is ready without polling (a connection holding buffered
    /// bytes). `false` by default.
    ///
    /// ```
    /// use multiproc::connection::Waitable;
    /// let (r, _w) = rustix::pipe::pipe()?;
    /// assert!(!r.ready_now());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    fn ready_now(&self) -> bool {
        false
    }
}

impl<T: AsFd + ?Sized> Waitable for T {
    fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        Ok(self.as_fd())
    }
}

impl Waitable for Connection {
    fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        Connection::wait_fd(self)
    }

    fn ready_now(&self) -> bool {
        self.has_buffered()
    }
}

/// Waits until at least one of `objects` is ready, or `timeout` passes (`None`:
/// forever), and returns the indices of those ready, in order; empty on timeout
/// (Python's `multiprocessing.connection.wait(object_list, timeout)`, which returns
/// the objects).
///
/// A connection is ready when a message has arrived or its other end is gone (a
/// `recv` then returns the message or [`Error::Eof`](crate::Error::Eof) without
/// blocking); a process sentinel when the process has ended.
///
/// # Errors
///
/// [`Error::ConnectionClosed`](crate::Error::ConnectionClosed) if a connection in
/// the list is closed; [`Error::TimeoutOverflow`](crate::Error::TimeoutOverflow);
/// [`Error::Io`](crate::Error::Io) if `poll` fails.
///
/// ```
/// use std::time::Duration;
/// use multiproc::connection::wait;
/// use multiproc::{Pipe, Process};
/// let (a1, b1) = Pipe(true)?;
/// let (a2, b2) = Pipe(true)?;
/// let mut p = Process::new(move || b2.send(&"from the child").unwrap());
/// p.start()?;
/// drop(b1); // a1 will see EOF, so it is ready too
/// let mut ready = Vec::new();
/// while ready.len() < 2 {
///     ready = wait(&[&a1, &a2], Some(Duration::from_secs(10)))?;
///     assert!(!ready.is_empty(), "timed out");
/// }
/// assert_eq!(ready, [0, 1]);
/// assert_eq!(a2.recv::<String>()?, "from the child");
/// p.join(Some(Duration::from_secs(10)))?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<Vec<usize>> {
    let deadline = Deadline::after(timeout)?;
    let fds: Vec<BorrowedFd<'_>> = objects.iter().map(|o| o.wait_fd()).collect::<Result<_>>()?;
    let now: Vec<bool> = objects.iter().map(|o| o.ready_now()).collect();
    // Something buffered is ready at once: then only look at the others.
    let deadline = if now.iter().any(|&r| r) {
        Deadline::after(Some(Duration::ZERO))?
    } else {
        deadline
    };
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(fd, PollFlags::IN))
        .collect();
    poll_readable(&mut pfds, deadline)?;
    Ok(pfds
        .iter()
        .zip(&now)
        .enumerate()
        .filter(|(_, (p, now))| **now || !p.revents().is_empty())
        .map(|(i, _)| i)
        .collect())
}
