//! The forkserver: a single-threaded process, a fresh exec of this executable in
//! server mode (through [`init`](super::init)), started on first use, that forks
//! each child on request. A multi-threaded program gets fork-speed starts without
//! fork's hazard: the server has one thread, so nothing is held in its children.
//!
//! # Who may talk to it
//!
//! Nothing is named: the server's one *control* socket is a socket pair made by
//! the process that started it (the *starter*), its end inherited through exec.
//! Only holders of that descriptor can send requests — the starter and, while
//! they keep the copy, its forks (which start their own server instead: see
//! [`fork_child`]). No path in a directory and no abstract-namespace name exist
//! that another user, or another program of the same user, could connect to, so
//! there is nothing to authenticate (a 0700 directory or an `SO_PEERCRED` check
//! would guard a name that this design does not have).
//!
//! # Protocol (every message a `send_with_fds` frame of postcard)
//!
//! Control socket (stream), starter → server:
//! 1. once, first: [`ToServer::Hello`]; descriptors: the starter's pidfd;
//! 2. per child: [`ToServer::Fork`]; descriptors: the child's socket (the end
//!    the child speaks the `wire` protocol on) and a *status* socket.
//!
//! Status socket (stream, one per child), server → requester:
//! 1. [`FromServer::Forked`] with the child's pid; descriptor: a pidfd of the
//!    child (for `sentinel`, `kill`, `is_alive`), or [`FromServer::Failed`];
//! 2. only if `Forked` said `own: false`: [`FromServer::Exited`] with the exit
//!    code (Python's convention) once the server has reaped the child.
//!
//! The requester then talks to the child on its socket exactly as spawn does
//! (`wire`): request, `Ready`, and the child runs the entry.
//!
//! # Whose child
//!
//! The server forks each child as its own sibling (`CLONE_PARENT`, see
//! `sys::fork::fork_sibling`): the child's parent is the starter, the only
//! process that sends requests. The requester then waits for it itself
//! (`waitpid` on its pid, as for fork and spawn; `Forked { own: true }`), and its
//! exit reaches the requester with no hand-off through the server: one
//! cross-process wake-up fewer per start and join, and the exit codes of running
//! children survive the server's death. Where that fork is not available (see
//! `fork_sibling`: a server that is not single-threaded, as under libtest, where
//! it runs in a test's thread; a kernel without `PR_GET_TID_ADDRESS` or
//! `clone3`), the server forks as usual, reaps the child and relays its exit
//! code (`Forked { own: false }`, then `Exited`).
//!
//! # Lifetime
//!
//! The server polls the starter's pidfd and exits as soon as the starter has
//! ended (or when the control socket reaches end of file), leaving nothing:
//! it holds no shared memory and no name. The children live on as any orphans,
//! except daemons, which watch their requester's pidfd themselves and die with it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use rustix::event::{PollFd, PollFlags, poll};
use rustix::process::{Pid, PidfdFlags, WaitOptions, pidfd_open, waitpid};
use serde::{Deserialize, Serialize};

use super::launch::stream_pair;
use super::wire;
use crate::process::registry::{self, exit_code};
use crate::sys::fd::send_with_fds;
use crate::sys::fork::{self, Forked};

/// Starter → server, on the control socket.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToServer {
    /// First message: the protocol's version; the starter's pidfd attached.
    Hello { version: u32 },
    /// Fork a child; its socket and the status socket attached.
    Fork,
}

/// Server → requester, on a status socket.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromServer {
    /// Forked; the child's pidfd attached. `own`: the child is the requester's
    /// own child (it waits for it); otherwise the server's (it relays the exit).
    Forked { pid: i32, own: bool },
    /// Not forked: why.
    Failed(String),
    /// The child was reaped: its exit code (`-signal` if killed).
    Exited { code: i32 },
}

fn encode<T: Serialize>(m: &T) -> Vec<u8> {
    postcard::to_allocvec(m).expect("plain enums serialize")
}

/// The running server, as its starter knows it.
struct Server {
    /// The pid of the process that started it: a fork of the starter that
    /// inherited this record starts its own server.
    starter: u32,
    control: OwnedFd,
    pid: i32,
    pidfd: OwnedFd,
}

static SERVER: Mutex<Option<Server>> = Mutex::new(None);

impl Server {
    fn start() -> std::io::Result<Server> {
        let args = super::harness_args().map_err(std::io::Error::other)?;
        let self_pidfd = registry::registry().self_pidfd()?;
        let (ours, theirs) = stream_pair()?;
        let ino = rustix::fs::fstat(&theirs)?.st_ino;
        let value = format!("server:{}:{ino}", std::os::fd::AsRawFd::as_raw_fd(&theirs));
        let child = crate::sys::exec::spawn_self(&args, (wire::ENV, &value), theirs.as_fd())?;
        drop(theirs);
        let pid = child.id() as i32;
        drop(child);
        let pidfd = pidfd_open(Pid::from_raw(pid).expect("positive"), PidfdFlags::empty())?;
        send_with_fds(
            ours.as_fd(),
            &encode(&ToServer::Hello {
                version: wire::VERSION,
            }),
            &[self_pidfd.as_fd()],
        )?;
        Ok(Server {
            starter: std::process::id(),
            control: ours,
            pid,
            pidfd,
        })
    }

    fn alive(&self) -> bool {
        matches!(
            registry::wait_readable(self.pidfd.as_fd(), Some(std::time::Duration::ZERO)),
            Ok(false)
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only a server found dead (or failing) is dropped, by its starter: make
        // sure it is gone, and reap it. In a fork of the starter it is not ours.
        if self.starter == std::process::id() {
            let _ = rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL);
            if let Some(pid) = Pid::from_raw(self.pid) {
                let _ = waitpid(Some(pid), WaitOptions::empty());
            }
        }
    }
}

/// A child forked by the server for this process.
pub(crate) struct ForkedChild {
    pub(crate) pid: i32,
    pub(crate) pidfd: OwnedFd,
    /// This process's end of the child's `wire` socket.
    pub(crate) conn: OwnedFd,
    /// `None` if the child is this process's own (wait for it); else the status
    /// socket, where [`FromServer::Exited`] will come.
    pub(crate) status: Option<OwnedFd>,
}

/// Has the server (started now if this process has none running) fork a child.
/// `send` writes the request on the child's socket once the server has its other
/// end (the child reads it when it runs).
pub(crate) fn fork_child(send: impl FnOnce(BorrowedFd<'_>)) -> Result<ForkedChild, String> {
    let (conn, child_conn) = stream_pair().map_err(|e| format!("socketpair: {e}"))?;
    let (status, server_status) = stream_pair().map_err(|e| format!("socketpair: {e}"))?;
    {
        let mut server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
        let mut tries = 0;
        loop {
            let usable = server
                .as_ref()
                .is_some_and(|s| s.starter == std::process::id() && s.alive());
            if !usable {
                if let Some(old) = server.take() {
                    drop(old);
                }
                *server =
                    Some(Server::start().map_err(|e| format!("starting the forkserver: {e}"))?);
            }
            let s = server.as_ref().expect("set above");
            match send_with_fds(
                s.control.as_fd(),
                &encode(&ToServer::Fork),
                &[child_conn.as_fd(), server_status.as_fd()],
            ) {
                Ok(()) => break,
                // The server died since the check: start another, once.
                Err(_) if tries == 0 => {
                    tries += 1;
                    server.take();
                }
                Err(e) => return Err(format!("sending to the forkserver: {e}")),
            }
        }
    }
    drop((child_conn, server_status));
    send(conn.as_fd());
    match wire::recv(status.as_fd()) {
        Ok(Some((bytes, mut fds))) => match postcard::from_bytes::<FromServer>(&bytes) {
            Ok(FromServer::Forked { pid, own }) if fds.len() == 1 => Ok(ForkedChild {
                pid,
                pidfd: fds.remove(0),
                conn,
                status: (!own).then_some(status),
            }),
            Ok(FromServer::Failed(why)) => Err(format!("the forkserver could not fork: {why}")),
            Ok(other) => Err(format!("unexpected message from the forkserver: {other:?}")),
            Err(e) => Err(format!("the forkserver's reply does not decode: {e}")),
        },
        Ok(None) => Err("the forkserver died before it forked the child".into()),
        Err(e) => Err(format!("reading the forkserver's reply: {e}")),
    }
}

/// Reads the exit code the server relays on a status socket (which is readable).
pub(crate) fn read_status(sock: BorrowedFd<'_>) -> std::io::Result<i32> {
    match wire::recv(sock)? {
        Some((bytes, _)) => match postcard::from_bytes::<FromServer>(&bytes) {
            Ok(FromServer::Exited { code }) => Ok(code),
            other => Err(std::io::Error::other(format!(
                "unexpected forkserver status {other:?}"
            ))),
        },
        None => Err(std::io::Error::other(
            "the forkserver ended before it relayed the child's exit status",
        )),
    }
}

/// Sets up in the server what each child would otherwise set up for itself on
/// the way to its entry and its exit: the argument collector's thread-local
/// (`transfer::warm_up`) and std's stdout and stderr (a child flushes both before
/// it exits; the first use allocates stdout's buffer). Measured in the children
/// of an empty entry: 35 to 36 page faults each before, 22 to 24 after.
fn warm_up() {
    use std::io::Write;
    crate::sys::transfer::warm_up();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}

/// One child the server forked and has not reaped yet.
struct Kid {
    pid: i32,
    pidfd: OwnedFd,
    status: OwnedFd,
}

/// The server's loop, in the process spawned in server mode. Never returns.
pub(super) fn serve(control: OwnedFd) -> ! {
    let starter = match wire::recv(control.as_fd()) {
        Ok(Some((bytes, mut fds))) => match postcard::from_bytes::<ToServer>(&bytes) {
            Ok(ToServer::Hello { version }) if version == wire::VERSION && fds.len() == 1 => {
                fds.remove(0)
            }
            _ => fork::exit_now(2),
        },
        _ => fork::exit_now(2),
    };
    // Read once here, so that every child inherits it: each child checks its
    // entry against this executable's identity (a `stat` of `/proc/self/exe`).
    let _ = crate::sys::task::exe_id();
    // What every child would otherwise set up for itself, each time in its own
    // copy-on-write pages (see `warm_up`): done once here, inherited by all.
    warm_up();
    let ticks_per_second = rustix::param::clock_ticks_per_second();
    let mut kids: Vec<Kid> = Vec::new();
    loop {
        let mut pfds = Vec::with_capacity(kids.len() + 2);
        pfds.push(PollFd::new(&control, PollFlags::IN));
        pfds.push(PollFd::new(&starter, PollFlags::IN));
        for k in &kids {
            pfds.push(PollFd::new(&k.pidfd, PollFlags::IN));
        }
        match poll(&mut pfds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => fork::exit_now(3),
        }
        let ready: Vec<bool> = pfds.iter().map(|p| !p.revents().is_empty()).collect();
        drop(pfds);
        if ready[1] {
            // The starter has ended: so does the server.
            fork::exit_now(0);
        }
        // Reap and relay (from the back, so that removals keep indexes valid).
        for i in (0..kids.len()).rev() {
            if !ready[i + 2] {
                continue;
            }
            let pid = Pid::from_raw(kids[i].pid).expect("positive");
            if let Ok(Some((_, st))) = waitpid(Some(pid), WaitOptions::NOHANG) {
                let kid = kids.swap_remove(i);
                let _ = send_with_fds(
                    kid.status.as_fd(),
                    &encode(&FromServer::Exited {
                        code: exit_code(st),
                    }),
                    &[],
                );
            }
        }
        if ready[0] {
            let (bytes, mut fds) = match wire::recv(control.as_fd()) {
                Ok(Some(m)) => m,
                // End of file: every holder of the control socket is gone.
                _ => fork::exit_now(0),
            };
            if !matches!(postcard::from_bytes::<ToServer>(&bytes), Ok(ToServer::Fork))
                || fds.len() != 2
            {
                continue; // not a request this server understands: ignore it
            }
            let status = fds.pop().expect("two");
            let conn = fds.pop().expect("two");
            // A sibling when the system allows (the requester's own child: no
            // relay), else a child of the server. Clock readings bracket the fork:
            // the child then knows its start time without reading `/proc`.
            let before = crate::sys::procfs::boottime_ns();
            let forked = match fork::fork_sibling() {
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                    fork::fork().map(|f| (f, None))
                }
                other => other,
            };
            match forked {
                Err(e) => {
                    let _ = send_with_fds(
                        status.as_fd(),
                        &encode(&FromServer::Failed(format!("fork: {e}"))),
                        &[],
                    );
                }
                Ok((Forked::Child, _)) => {
                    // The server's descriptors are not the child's business.
                    let started = crate::sys::procfs::start_ticks_between(
                        before,
                        crate::sys::procfs::boottime_ns_after_fork(),
                        ticks_per_second,
                    );
                    drop((control, starter, status));
                    drop(kids);
                    super::child::run(conn, started)
                }
                Ok((Forked::Parent(pid), Some(pidfd))) => {
                    // The requester's own child: its pidfd and pid are all it
                    // needs from the server.
                    drop(conn);
                    let _ = send_with_fds(
                        status.as_fd(),
                        &encode(&FromServer::Forked { pid, own: true }),
                        &[pidfd.as_fd()],
                    );
                }
                // Forked the usual way (`fork_sibling` always gives a pidfd).
                Ok((Forked::Parent(pid), None)) => {
                    drop(conn);
                    match pidfd_open(Pid::from_raw(pid).expect("positive"), PidfdFlags::empty()) {
                        Ok(pidfd) => {
                            let _ = send_with_fds(
                                status.as_fd(),
                                &encode(&FromServer::Forked { pid, own: false }),
                                &[pidfd.as_fd()],
                            );
                            kids.push(Kid { pid, pidfd, status });
                        }
                        Err(e) => {
                            let raw = Pid::from_raw(pid).expect("positive");
                            let _ =
                                rustix::process::kill_process(raw, rustix::process::Signal::KILL);
                            let _ = waitpid(Some(raw), WaitOptions::empty());
                            let _ = send_with_fds(
                                status.as_fd(),
                                &encode(&FromServer::Failed(format!("pidfd_open: {e}"))),
                                &[],
                            );
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::process::process::{assert_names_itself_as_proc_names_it, report_identity};
    use crate::{StartMethod, get_context};

    /// A forkserver child's identity, taken from the server's clock readings
    /// around the fork, is the word `/proc` gives for it (what every other
    /// process checking it as a lock owner computes).
    #[test]
    fn a_forkserver_child_names_itself_as_proc_names_it() {
        crate::spawn::init();
        for _ in 0..20 {
            assert_names_itself_as_proc_names_it(|w, r, g| {
                get_context(StartMethod::Forkserver).process(report_identity, (w, r, g))
            });
        }
    }
}
