//! [`Pipe`]: two connected [`Connection`]s, Python's `multiprocessing.Pipe`.

use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
use rustix::pipe::{PipeFlags, pipe_with};

use crate::error::{Error, Result};
use crate::msg::connection::Connection;

/// A pair of connected [`Connection`]s (Python's `multiprocessing.Pipe(duplex)`).
///
/// With `duplex` (Python's default) both ends send and receive: a Unix stream
/// socket pair. With `duplex == false` the first end only receives and the second
/// only sends: a pipe `(reader, writer)`, as CPython makes it. Descriptors are
/// close-on-exec. Named like Python's function (hence the capital letter).
///
/// # Errors
///
/// [`Error::Io`] if the system is out of descriptors.
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Pipe, Process};
/// let (reader, writer) = Pipe(false)?;
/// let mut p = Process::new(move || {
///     for i in 0..3u32 {
///         writer.send(&i).unwrap();
///     }
/// });
/// p.start()?;
/// let got: Vec<u32> = (0..3).map(|_| reader.recv().unwrap()).collect();
/// assert_eq!(got, [0, 1, 2]);
/// assert_eq!(p.join(Some(Duration::from_secs(10)))?, Some(0));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[allow(non_snake_case)]
pub fn Pipe(duplex: bool) -> Result<(Connection, Connection)> {
    if duplex {
        let (a, b) = socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| Error::io("Pipe(true): creating a Unix socket pair", e))?;
        Ok((Connection::socket(a), Connection::socket(b)))
    } else {
        let (r, w) = pipe_with(PipeFlags::CLOEXEC)
            .map_err(|e| Error::io("Pipe(false): creating a pipe", e))?;
        Ok((Connection::pipe_reader(r), Connection::pipe_writer(w)))
    }
}
