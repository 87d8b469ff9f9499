//! Raw descriptor helpers for [`Connection`](crate::Connection): the two things it
//! needs that rustix cannot do safely.
//!
//! - [`writev_no_sigpipe`]: write to a pipe without letting `SIGPIPE` kill the
//!   process when the reader is gone (sockets use `MSG_NOSIGNAL` instead, which pipes
//!   have no equivalent of). A library cannot rely on the binary ignoring `SIGPIPE`
//!   (Rust binaries do; C hosts, Python and tests with their own runtime may not).
//! - [`deaden_inherited`]: in a forked child, replace the child's copy of a
//!   descriptor it did not capture by a dead socket, keeping the number occupied.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};

/// `writev` on `fd` with `SIGPIPE` blocked in the calling thread, so that a write
/// to a pipe whose read end is closed returns `EPIPE` instead of killing the process.
///
/// The technique is libpq's, one system call shorter: block `SIGPIPE` in this
/// thread (learning the old mask), write, and if the write failed with `EPIPE`
/// consume the signal it raised (thread-directed, so pending on this thread) with a
/// zero-timeout `sigtimedwait`; then restore the mask. No `SIGPIPE` can have been
/// pending before unless the old mask already blocked it (an unblocked one would
/// have been delivered): in that case the caller blocks `SIGPIPE` itself, and the
/// signal is left pending as any write of its own would leave it. The disposition,
/// shared by all threads, is never touched. Cost: two extra system calls a write.
pub(crate) fn writev_no_sigpipe(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: the sigset_t values are plain data initialized by sigemptyset (or
    // written by pthread_sigmask) before use; pthread_sigmask and sigtimedwait only
    // read and write them, and change only this thread's signal mask, which is
    // restored before returning.
    unsafe {
        let mut pipe_set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut pipe_set);
        libc::sigaddset(&mut pipe_set, libc::SIGPIPE);
        let mut old: libc::sigset_t = std::mem::zeroed();
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &pipe_set, &mut old);
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let already_blocked = libc::sigismember(&old, libc::SIGPIPE) == 1;
        let result = rustix::io::writev(fd, bufs).map_err(io::Error::from);
        if already_blocked {
            return result; // the mask is unchanged: nothing to restore
        }
        if matches!(&result, Err(e) if e.raw_os_error() == Some(libc::EPIPE)) {
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            while libc::sigtimedwait(&pipe_set, std::ptr::null_mut(), &zero) == -1
                && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        result
    }
}

/// Replaces the file behind descriptor number `raw` by one end of a Unix socket pair
/// whose other end is closed: reads then return end of file at once, writes fail
/// with `EPIPE` (sends use `MSG_NOSIGNAL`, pipe writes [`writev_no_sigpipe`]), and
/// `poll` reports it readable (hung up). The number stays occupied, so a handle that
/// still holds it can never touch a file opened later under a reused number.
///
/// Contract (why this is safe to call): `raw` is the descriptor of a live handle
/// of this process (an `OwnedFd` inside a [`Connection`](crate::Connection) whose
/// inherit registration is alive), and the call comes from an inherit hook in a
/// forked child before any user code runs there, so no one else uses the number. The
/// handle keeps owning the number; this only swaps what it refers to, atomically
/// (`dup3`), with close-on-exec set.
pub(crate) fn deaden_inherited(raw: RawFd) -> io::Result<()> {
    let (dead, peer) = socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    drop(peer);
    // SAFETY: dup3 only changes the descriptor table: by the contract above `raw` is
    // owned by a live handle of this process that keeps owning it, and `dead` is an
    // open descriptor we own (closed when it drops, after the copy).
    let rc = unsafe { libc::dup3(dead.as_fd().as_raw_fd(), raw, libc::O_CLOEXEC) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Test support: runs `f` in a child process where `SIGPIPE` has its default
/// action (terminate), as in a C host or a Python interpreter, and asserts the child
/// exited normally: a `SIGPIPE` raised by `f` would end it with -13. The
/// disposition changes in that child only, not in the test process.
#[cfg(test)]
pub(crate) fn with_default_sigpipe(f: impl FnOnce() + Send + 'static) {
    let mut p = crate::Process::new(move || {
        // SAFETY: setting a signal's disposition to SIG_DFL installs no handler code.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        f();
    });
    p.start().unwrap();
    let code = p.join(Some(std::time::Duration::from_secs(30))).unwrap();
    assert_eq!(code, Some(0), "the child died (-13 is SIGPIPE) or failed");
}

/// The most descriptors one [`send_with_fds`] message carries (the kernel's
/// `SCM_MAX_FD`).
pub(crate) const MAX_FDS: usize = 253;

/// Sends one message on a Unix socket: `bytes` framed by their length (a `u32`,
/// little-endian), with `fds` attached to its first byte as `SCM_RIGHTS` (the
/// receiver gets its own descriptors for the same open files). Safe code: rustix
/// builds the control message. Blocks until all is written; `MSG_NOSIGNAL`, so a
/// closed peer is `EPIPE`, never a signal.
///
/// On a stream socket, messages of several threads may interleave: callers keep
/// one sender per socket (multiproc's sockets are private to one request).
pub(crate) fn send_with_fds(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} descriptors in one message, at most {MAX_FDS}",
                fds.len()
            ),
        ));
    }
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 4 GiB"))?;
    let header = len.to_le_bytes();
    let mut space = vec![
        std::mem::MaybeUninit::<u8>::uninit();
        rustix::cmsg_space!(ScmRights(fds.len().max(1)))
    ];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("control message buffer too small"));
    }
    // The first sendmsg carries the descriptors; what it did not write goes on
    // with plain sends.
    let mut sent = loop {
        match sendmsg(
            sock,
            &[IoSlice::new(&header), IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let total = header.len() + bytes.len();
    while sent < total {
        let rest: &[u8] = if sent < header.len() {
            &header[sent..]
        } else {
            &bytes[sent - header.len()..]
        };
        match rustix::net::send(sock, rest, SendFlags::NOSIGNAL) {
            Ok(n) => sent += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Receives one message sent by [`send_with_fds`]: its bytes and the descriptors
/// that came with it (close-on-exec). `None` at end of file before a message
/// began; `UnexpectedEof` if the peer closed in the middle of one. Blocks.
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
) -> io::Result<Option<(Vec<u8>, Vec<std::os::fd::OwnedFd>)>> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
    // Stream sockets only: the first read takes the length alone (the
    // descriptors arrive with it), so it never eats into the next message.
    let mut buf = vec![0u8; 4];
    let mut space =
        vec![std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        match recvmsg(
            sock,
            &mut [io::IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(m) => break m,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    if got.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(io::Error::other(
            "descriptors were cut off (more than the message may carry)",
        ));
    }
    let mut have = got.bytes;
    if got.bytes == 0 {
        return if fds.is_empty() {
            Ok(None)
        } else {
            Err(io::ErrorKind::UnexpectedEof.into())
        };
    }
    let eof = || {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed in the middle of a message",
        )
    };
    while have < 4 {
        have += read_some(sock, &mut buf[have..4])?.ok_or_else(eof)?;
    }
    let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    let total = 4 + len;
    buf.resize(total, 0);
    while have < total {
        have += read_some(sock, &mut buf[have..total])?.ok_or_else(eof)?;
    }
    buf.truncate(total);
    buf.drain(..4);
    Ok(Some((buf, fds)))
}

/// One `recv` into `buf`: `None` at end of file.
fn read_some(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match rustix::net::recv(sock, &mut *buf, rustix::net::RecvFlags::empty()) {
            Ok((0, _)) => return Ok(None),
            Ok((n, _)) => return Ok(Some(n)),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::pipe::{PipeFlags, pipe_with};

    #[test]
    fn write_to_a_closed_pipe_is_epipe_not_a_signal() {
        with_default_sigpipe(|| {
            let (r, w) = pipe_with(PipeFlags::CLOEXEC).unwrap();
            drop(r);
            let err = writev_no_sigpipe(w.as_fd(), &[IoSlice::new(b"x")]).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
            // No SIGPIPE is left pending for this thread.
            // SAFETY: plain sigset_t initialized before use.
            unsafe {
                let mut pending: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut pending);
                libc::sigpending(&mut pending);
                assert_eq!(libc::sigismember(&pending, libc::SIGPIPE), 0);
            }
        });
    }

    #[test]
    fn a_deadened_descriptor_reads_eof_and_keeps_its_number() {
        let (r, w) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        rustix::io::write(&w, b"data").unwrap();
        let n = r.as_raw_fd();
        deaden_inherited(n).unwrap();
        assert_eq!(r.as_raw_fd(), n);
        let mut buf = [0u8; 8];
        assert_eq!(rustix::io::read(&r, &mut buf).unwrap(), 0); // EOF, not "data"
        deaden_inherited(w.as_raw_fd()).unwrap();
        let err = writev_no_sigpipe(w.as_fd(), &[IoSlice::new(b"x")]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
    }
}
