//! Raw descriptor helpers for [`Connection`](crate::Connection): the two things it
//! needs that rustix cannot do safely.
//!
//! - [`writev_no_sigpipe`]: write to a pipe without letting `SIGPIPE` kill the
//!   process when the reader is gone (sockets use `MSG_NOSIGNAL` instead, which pipes
//!   have no equivalent of). A library cannot rely on the binary ignoring `SIGPIPE`
//!   (Rust binaries do; C hosts, Python and tests with their own runtime may not).
//! - [`deaden_inherited`]: in a forked child, replace the child's copy of a
//!   descriptor it did not capture by a dead socket, keeping the number occupied.
//! - [`send_with_fds`] / [`recv_with_fds`]: one message of bytes and descriptors
//!   over a Unix stream socket (`SCM_RIGHTS`), how exported tokens reach a process
//!   that did not inherit them.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

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

/// Whether a read of `fd` returns at once: bytes, end of file or an error wait
/// there (for a pidfd: the process has exited). One `poll` system call with a
/// zero timeout; an interrupted or failed poll says no.
pub(crate) fn readable_now(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
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

/// The most descriptors one `sendmsg` carries (the kernel's `SCM_MAX_FD`).
#[cfg_attr(not(test), allow(dead_code))]
const FDS_PER_MSG: usize = 253;
/// The ancillary space of one message of [`FDS_PER_MSG`] descriptors (1 KiB),
/// kept on the stack: a heap buffer per `sendmsg`/`recvmsg` wrote the
/// allocator's pages, each a copy-on-write fault in a process just forked (the
/// forkserver and its children send and receive a few messages right after
/// their fork).
const CMSG_SPACE: usize = rustix::cmsg_space!(ScmRights(FDS_PER_MSG));

/// Sends `bytes` and `fds` over the Unix stream socket `sock` as one message for
/// [`recv_with_fds`].
///
/// Wire format: a 12-byte header (u64 byte count, u32 descriptor count,
/// native-endian) sent with the first batch of up to 253 descriptors as
/// `SCM_RIGHTS`; then one byte per further batch, carrying it; then the bytes.
/// Up to 253 descriptors, the whole message goes in one `sendmsg`. Writes use `MSG_NOSIGNAL`: a gone peer is `EPIPE`, never `SIGPIPE`.
pub(crate) fn send_with_fds(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    let count = u32::try_from(fds.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors"))?;
    let mut header = [0u8; 12];
    header[..8].copy_from_slice(&(bytes.len() as u64).to_ne_bytes());
    header[8..].copy_from_slice(&count.to_ne_bytes());
    if fds.len() <= FDS_PER_MSG {
        // The usual message: header, descriptors and bytes in one `sendmsg` (the
        // same bytes on the wire as below), so the peer is woken once, by a whole
        // message.
        let mut space = [std::mem::MaybeUninit::uninit(); CMSG_SPACE];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("ancillary buffer too small"));
        }
        let total = header.len() + bytes.len();
        let mut sent = sendmsg(
            sock,
            &[IoSlice::new(&header), IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        )?;
        // The descriptors went with the first byte; the rest is plain data.
        while sent < total {
            let rest = if sent < header.len() {
                &header[sent..]
            } else {
                &bytes[sent - header.len()..]
            };
            sent += rustix::net::send(sock, rest, SendFlags::NOSIGNAL)?;
        }
        return Ok(());
    }
    let mut batches = fds.chunks(FDS_PER_MSG);
    let mut first = true;
    loop {
        let batch = batches.next().unwrap_or(&[]);
        if batch.is_empty() && !first {
            break;
        }
        let mut space = [std::mem::MaybeUninit::uninit(); CMSG_SPACE];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !batch.is_empty() && !control.push(SendAncillaryMessage::ScmRights(batch)) {
            return Err(io::Error::other("ancillary buffer too small"));
        }
        let data: &[u8] = if first { &header } else { &[0] };
        let mut sent = sendmsg(
            sock,
            &[IoSlice::new(data)],
            &mut control,
            SendFlags::NOSIGNAL,
        )?;
        // The descriptors went with the first byte; the rest is plain data.
        while sent < data.len() {
            sent += rustix::net::send(sock, &data[sent..], SendFlags::NOSIGNAL)?;
        }
        first = false;
    }
    let mut sent = 0;
    while sent < bytes.len() {
        sent += rustix::net::send(sock, &bytes[sent..], SendFlags::NOSIGNAL)?;
    }
    Ok(())
}

/// Receives one message that [`send_with_fds`] sent: its bytes and descriptors
/// (close-on-exec). End of file before the message is complete, more
/// descriptors than announced, or truncated ancillary data are errors (any
/// descriptors received are closed).
pub(crate) fn recv_with_fds(sock: BorrowedFd<'_>) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut header = [0u8; 12];
    let mut fds = Vec::new();
    recv_exact(sock, &mut header, &mut fds)?;
    let len = u64::from_ne_bytes(header[..8].try_into().expect("8 bytes"));
    let count = u32::from_ne_bytes(header[8..].try_into().expect("4 bytes")) as usize;
    while fds.len() < count {
        recv_exact(sock, &mut [0u8; 1], &mut fds)?;
    }
    if fds.len() != count {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} descriptors received, {count} announced", fds.len()),
        ));
    }
    let len = usize::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "message too long"))?;
    let mut bytes = vec![0u8; len];
    recv_exact(sock, &mut bytes, &mut fds)?;
    if fds.len() != count {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "descriptors came with the message bytes",
        ));
    }
    Ok((bytes, fds))
}

/// Fills `buf` from `sock`, appending the descriptors that come with it.
fn recv_exact(sock: BorrowedFd<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<()> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, recvmsg};
    let mut got = 0;
    while got < buf.len() {
        let mut space = [std::mem::MaybeUninit::uninit(); CMSG_SPACE];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = recvmsg(
            sock,
            &mut [io::IoSliceMut::new(&mut buf[got..])],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = m {
                fds.extend(received);
            }
        }
        if msg.flags.contains(ReturnFlags::CTRUNC) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "descriptors were cut (ancillary data truncated)",
            ));
        }
        if msg.bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the socket mid-message",
            ));
        }
        got += msg.bytes;
    }
    Ok(())
}

/// Test support: the descriptor a parent test left open in this re-executed test
/// process under number `raw` (it names it in an environment variable).
#[cfg(test)]
pub(crate) fn inherited_test_fd(raw: RawFd) -> OwnedFd {
    // Check that the number is open before taking ownership of it.
    rustix::io::fcntl_getfd(
        // SAFETY: only borrowed for this one call, which fails harmlessly (EBADF)
        // if the number is not open.
        unsafe { BorrowedFd::borrow_raw(raw) },
    )
    .expect("the parent test left the socket open");
    // SAFETY: the parent test created this descriptor for this process, left it
    // open across exec and named it only to us; nothing else in this process
    // owns or closes it.
    unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) }
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

    /// A connected socket pair, `n` fresh memfds and their file identities.
    fn pair_and_memfds(n: usize) -> (OwnedFd, OwnedFd, Vec<OwnedFd>, Vec<(u64, u64)>) {
        let (a, b) = socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let files: Vec<OwnedFd> = (0..n)
            .map(|_| crate::sys::mem::memfd("t", 8).unwrap())
            .collect();
        let ids = files
            .iter()
            .map(|f| crate::sys::transfer::file_id(f).unwrap())
            .collect();
        (a, b, files, ids)
    }

    /// The one-`sendmsg` path (up to 253 descriptors): bytes larger than the
    /// socket's buffer (the rest goes by `send`), then a second message right
    /// behind it, each received whole with its own descriptors.
    #[test]
    fn messages_with_few_descriptors_cross_whole_and_back_to_back() {
        let (a, b, files, ids) = pair_and_memfds(3);
        // A bug that loses bytes fails the test instead of hanging it.
        rustix::net::sockopt::set_socket_timeout(
            &b,
            rustix::net::sockopt::Timeout::Recv,
            Some(std::time::Duration::from_secs(30)),
        )
        .unwrap();
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7) as u8).collect();
        let sender = {
            let big = big.clone();
            std::thread::spawn(move || {
                send_with_fds(a.as_fd(), &big, &[files[0].as_fd(), files[1].as_fd()]).unwrap();
                send_with_fds(a.as_fd(), b"second", &[files[2].as_fd()]).unwrap();
                send_with_fds(a.as_fd(), b"third, no descriptor", &[]).unwrap();
                a
            })
        };
        let id = |f: &OwnedFd| crate::sys::transfer::file_id(f).unwrap();
        let (got, fds) = recv_with_fds(b.as_fd()).unwrap();
        assert_eq!(got, big);
        assert_eq!(fds.iter().map(id).collect::<Vec<_>>(), ids[..2]);
        let (got, fds) = recv_with_fds(b.as_fd()).unwrap();
        assert_eq!(got, b"second");
        assert_eq!(fds.iter().map(id).collect::<Vec<_>>(), ids[2..]);
        let (got, fds) = recv_with_fds(b.as_fd()).unwrap();
        assert_eq!((&got[..], fds.len()), (&b"third, no descriptor"[..], 0));
        drop(sender.join().unwrap());
    }

    #[test]
    fn bytes_and_many_descriptors_cross_a_socket() {
        // More than one batch of descriptors, and more bytes than one send.
        let (a, b, files, ids) = pair_and_memfds(300);
        let bytes: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let sender = {
            let bytes = bytes.clone();
            std::thread::spawn(move || {
                let borrowed: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
                send_with_fds(a.as_fd(), &bytes, &borrowed).unwrap();
                a
            })
        };
        let (got, fds) = recv_with_fds(b.as_fd()).unwrap();
        let a = sender.join().unwrap();
        assert_eq!(got, bytes);
        let got_ids: Vec<_> = fds
            .iter()
            .map(|f| crate::sys::transfer::file_id(f).unwrap())
            .collect();
        assert_eq!(got_ids, ids, "the same files, in order");
        // An empty message; then a peer gone mid-message is an error.
        send_with_fds(b.as_fd(), &[], &[]).unwrap();
        let (none, nofd) = recv_with_fds(a.as_fd()).unwrap();
        assert!(none.is_empty() && nofd.is_empty());
        rustix::net::send(b.as_fd(), &[1, 2, 3], rustix::net::SendFlags::NOSIGNAL).unwrap();
        drop(b);
        let err = recv_with_fds(a.as_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
