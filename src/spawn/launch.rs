//! The parent's side of spawn and forkserver: start the child, send it the entry
//! and the exported arguments, wait until it has imported them.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::event::{PollFd, PollFlags, poll};
use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
use rustix::process::{Pid, PidfdFlags, pidfd_open};

use super::wire::{self, Call, Reply, Request};
use crate::error::{Error, Result};
use crate::process::registry::{self, Child, Reaper};
use crate::sys::fd::send_with_fds;

#[cfg(test)]
thread_local! {
    /// Test support: 1 forges the executable's identity in this thread's next
    /// requests, 2 the function's type.
    pub(crate) static FORGE: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// What `Process::start` hands over.
pub(crate) struct Launch<'a> {
    pub(crate) name: &'a str,
    pub(crate) identity: &'a [u32],
    pub(crate) daemon: bool,
    pub(crate) call: &'a dyn Call,
}

/// A started child, and `Some(why)` if it refused its entry or died before it
/// imported its arguments.
pub(crate) type Started = (Arc<Child>, Option<String>);

fn err(launch: &Launch<'_>, method: &'static str, reason: impl Into<String>) -> Error {
    Error::Start {
        name: launch.name.to_string(),
        method,
        reason: reason.into(),
    }
}

pub(crate) fn stream_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// A request to send: its bytes, and the descriptors that go with it (this
/// process's pidfd on itself first, shared with the registry rather than
/// duplicated per start, then the arguments').
struct Outgoing {
    bytes: Vec<u8>,
    self_pidfd: Arc<OwnedFd>,
    fds: Vec<OwnedFd>,
}

/// The request for `launch`.
fn request(launch: &Launch<'_>) -> Result<Outgoing> {
    #[allow(unused_mut)]
    let mut entry = launch
        .call
        .token()
        .map_err(|e| Error::io("reading /proc/self/exe to name the entry", e))?;
    #[cfg(test)]
    match FORGE.with(|f| f.get()) {
        1 => entry = entry.forged_exe(),
        2 => entry = entry.forged_type(),
        _ => {}
    }
    let exported = launch.call.export()?;
    let (parent_name, self_pidfd) = {
        let mut reg = registry::registry();
        let pidfd = reg
            .self_pidfd()
            .map_err(|e| Error::io("opening a pidfd of the current process", e))?;
        (reg.name().to_string(), pidfd)
    };
    let req = Request {
        version: wire::VERSION,
        entry,
        name: launch.name.to_string(),
        identity: launch.identity.to_vec(),
        daemon: launch.daemon,
        parent_name,
        parent_pid: std::process::id(),
        args: exported.bytes,
    };
    let bytes = postcard::to_allocvec(&req).map_err(|e| Error::Start {
        name: launch.name.to_string(),
        method: "spawn",
        reason: format!("encoding the request: {e}"),
    })?;
    Ok(Outgoing {
        bytes,
        self_pidfd,
        fds: exported.fds,
    })
}

/// Sends the request on `sock` and waits for the child's reply, or for its death
/// (its pidfd readable with nothing to read: a copy of its socket end inherited by
/// a sibling forked meanwhile would keep end of file from coming).
fn handshake(
    sock: BorrowedFd<'_>,
    pidfd: BorrowedFd<'_>,
    request: Option<&Outgoing>,
) -> Option<String> {
    if let Some(out) = request {
        send_request(sock, out);
    }
    loop {
        let mut pfds = [
            PollFd::new(&sock, PollFlags::IN),
            PollFd::new(&pidfd, PollFlags::IN),
        ];
        match poll(&mut pfds, None) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Some(format!("polling the child's socket: {e}")),
            Ok(_) => {}
        }
        let readable = !pfds[0].revents().is_empty();
        let dead = !pfds[1].revents().is_empty();
        if !readable && !dead {
            continue;
        }
        if !readable {
            // Dead; a reply written just before death is readable already.
            if !crate::sys::fd::readable_now(sock) {
                return Some("the child died before it had imported its arguments".into());
            }
        }
        return match wire::recv(sock) {
            Ok(Some((reply, _))) => match postcard::from_bytes::<Reply>(&reply) {
                Ok(Reply::Ready) => None,
                Ok(Reply::Refused(why)) => Some(why),
                Err(e) => Some(format!("the child's reply does not decode: {e}")),
            },
            Ok(None) => Some("the child died before it had imported its arguments".into()),
            Err(e) => Some(format!("reading the child's reply: {e}")),
        };
    }
}

fn send_request(sock: BorrowedFd<'_>, out: &Outgoing) {
    let borrowed: Vec<BorrowedFd<'_>> = std::iter::once(out.self_pidfd.as_fd())
        .chain(out.fds.iter().map(|f| f.as_fd()))
        .collect();
    // A failed send means the child is gone: its reply (none) says so later.
    let _ = send_with_fds(sock, &out.bytes, &borrowed);
}

/// Spawn: exec this executable with one end of a fresh socket pair.
pub(crate) fn spawn(launch: &Launch<'_>) -> Result<Started> {
    let args = super::harness_args()?;
    let out = request(launch)?;
    let (ours, theirs) = stream_pair().map_err(|e| Error::io("opening the child's socket", e))?;
    let ino = rustix::fs::fstat(&theirs)
        .map_err(|e| Error::io("fstat of the child's socket", e))?
        .st_ino;
    let value = format!("child:{}:{ino}", std::os::fd::AsRawFd::as_raw_fd(&theirs));
    let child =
        crate::sys::exec::spawn_self(&args, (wire::ENV, &value), theirs.as_fd()).map_err(|e| {
            err(
                launch,
                "spawn",
                format!("exec of /proc/self/exe failed: {e}"),
            )
        })?;
    drop(theirs);
    let pid = child.id() as i32;
    // `child` is dropped without waiting: the registry reaps by pid. Its pid
    // cannot be reused before that reap, so the pidfd opened now names it.
    drop(child);
    let raw = Pid::from_raw(pid).expect("a child's pid is positive");
    let pidfd = match pidfd_open(raw, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = rustix::process::kill_process(raw, rustix::process::Signal::KILL);
            let _ = rustix::process::waitpid(Some(raw), rustix::process::WaitOptions::empty());
            return Err(Error::io(
                format!("opening a pidfd for process {:?}", launch.name),
                e,
            ));
        }
    };
    let refused = handshake(ours.as_fd(), pidfd.as_fd(), Some(&out));
    let child = Arc::new(Child::with_reaper(
        pid,
        pidfd,
        launch.name.to_string(),
        launch.daemon,
        Reaper::Wait,
    ));
    Ok((child, refused))
}

/// Forkserver: ask the server (started on first use) to fork the child.
pub(crate) fn forkserver(launch: &Launch<'_>) -> Result<Started> {
    let out = request(launch)?;
    // Usually the spare asked for by the last start: forked and waiting, its
    // answer already in the socket, so the request goes to it at once; the
    // next spare is asked for then (see `server`).
    let forked = super::server::fork_child(&|conn| send_request(conn, &out))
        .map_err(|e| err(launch, "forkserver", e))?;
    let refused = handshake(forked.conn.as_fd(), forked.pidfd.as_fd(), None);
    let child = Arc::new(Child::with_reaper(
        forked.pid,
        forked.pidfd,
        launch.name.to_string(),
        launch.daemon,
        // The server's own child (no sibling fork on this system): it relays
        // the exit; else this process's own child, waited for as any.
        forked.status.map_or(Reaper::Wait, Reaper::Relay),
    ));
    Ok((child, refused))
}
