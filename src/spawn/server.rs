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
//! 2. per child: [`ToServer::Fork`]; descriptor: the child's socket (the end
//!    the child speaks the `wire` protocol on; the requester keeps the other).
//!
//! The child's socket, server → requester, first (the server writes on the
//! child's end, so it comes out at the requester's): [`FromServer::Forked`]
//! with the child's pid; descriptors: a pidfd of the child (for `sentinel`,
//! `kill`, `is_alive`), and if `own: false` a *status* socket the server made;
//! or [`FromServer::Failed`]. The requester sends the child its request only
//! once it has read this answer (then the child's reply cannot come before
//! it), and the two talk exactly as in spawn (`wire`): request, `Ready`, and
//! the child runs the entry. One socket pair per start, one descriptor to the
//! server and one back: every socket and pidfd is a file the kernel makes and
//! frees (measured here: 4 to 10 us each).
//!
//! Status socket (stream; only for a child the server reaps itself), server →
//! requester: [`FromServer::Exited`] with the exit code (Python's convention)
//! once the server has reaped the child.
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
//! # Spares
//!
//! As soon as a start has sent its child the request, the requester sends the
//! next `Fork`, before anyone needs it: the server forks that child (the
//! *spare*) while the started child runs, and the spare waits for its request. The next start
//! finds the server's answer already there, sends its request straight to the
//! spare and waits only for the spare's `Ready`: no wake-up of the server and
//! no fork on the start's path. A spare belongs to the process that asked for
//! it (a fork of that process only closes its copies), runs nothing until it
//! gets a request, and exits when the starter ends (it watches the starter's
//! pidfd, since forks of the starter may hold copies of the requester's end of
//! its socket). A spare found unusable when a start takes it (the server died
//! before forking it, or before it could relay its exit; the spare was killed)
//! is reaped if it is the requester's own, told to go (its socket shut down,
//! which ends the wait whoever holds copies), and the start asks for a new
//! child as if there were no spare: a spare never fails a start. A spare of
//! the requester's own is one more child of that process while it waits (seen
//! in `/proc`, never in [`active_children`](crate::active_children)). A server
//! killed between its fork and its answer leaves a child whose pid the
//! requester never learns: told to go, it exits unreaped, one zombie until the
//! requester ends (protocol 1's status socket had the same gap).
//!
//! # Lifetime
//!
//! The server polls the starter's pidfd and exits as soon as the starter has
//! ended (or when the control socket reaches end of file), leaving nothing:
//! it holds no shared memory and no name; a waiting spare exits with it. The children live on as any orphans,
//! except daemons, which watch their requester's pidfd themselves and die with it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::process::{Pid, PidfdFlags, WaitOptions, pidfd_open, waitpid};
use serde::{Deserialize, Serialize};

use super::launch::stream_pair;
use super::wire;
use crate::process::registry::{self, exit_code};
use crate::sys::fd::{readable_now, send_with_fds};
use crate::sys::fork::{self, Forked};

/// Starter → server, on the control socket.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToServer {
    /// First message: the protocol's version; the starter's pidfd attached.
    Hello { version: u32 },
    /// Fork a child; its socket attached.
    Fork,
}

/// Server → requester: the answer on the child's socket (`Forked`, `Failed`),
/// the relayed exit on a status socket (`Exited`).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromServer {
    /// Forked; the child's pidfd attached. `own`: the child is the requester's
    /// own child (it waits for it); otherwise the server's (it relays the exit
    /// on the status socket attached second).
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
    /// Shared with every [`Asked`] sent to it: a request waits for the answer or
    /// for the server's death.
    pidfd: Arc<OwnedFd>,
}

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
        let pidfd = Arc::new(pidfd_open(
            Pid::from_raw(pid).expect("positive"),
            PidfdFlags::empty(),
        )?);
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
            reap(self.pidfd.as_fd());
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

/// The forkserver as this process knows it: the server, and the spare child
/// asked for ahead of need (see "Spares" in the module's documentation).
struct State {
    server: Option<Server>,
    spare: Option<Spare>,
}

static STATE: Mutex<State> = Mutex::new(State {
    server: None,
    spare: None,
});

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// This process's forkserver state, locked across a fork of it (`Process::start`,
/// `ForeignFork`), so that no other thread holds it then: the child's copy of a
/// lock held at the fork would stay locked forever, and the child's first
/// forkserver start would wait for it. Drop it on both sides after the fork (the
/// child's only thread is the copy of the one that locked it). In the lock order
/// it comes right before the registry's, which `ask` takes under it.
pub(crate) struct ForkHold {
    _state: std::sync::MutexGuard<'static, State>,
}

/// Locks the forkserver state for a fork (see [`ForkHold`]).
pub(crate) fn hold_for_fork() -> ForkHold {
    ForkHold { _state: state() }
}

/// A `Fork` sent to the server: this process's end of the child's socket,
/// where the server's answer comes first, and the server's pidfd (the answer
/// cannot come once the server has died: the child, if forked, holds the
/// other end, so end of file does not come either).
struct Asked {
    conn: OwnedFd,
    server: Arc<OwnedFd>,
}

/// A child asked for before it was needed.
struct Spare {
    /// The process that asked: a fork of it that inherited this record only
    /// closes its copies (the spare is not its child).
    asker: u32,
    asked: Asked,
}

/// Sends one `Fork` to the server (started now if this process has none
/// running, or if it has died).
fn ask(state: &mut State) -> Result<Asked, String> {
    let (conn, child_conn) = stream_pair().map_err(|e| format!("socketpair: {e}"))?;
    let mut tries = 0;
    loop {
        let usable = state
            .server
            .as_ref()
            .is_some_and(|s| s.starter == std::process::id() && s.alive());
        if !usable {
            if let Some(old) = state.server.take() {
                drop(old);
            }
            state.server =
                Some(Server::start().map_err(|e| format!("starting the forkserver: {e}"))?);
        }
        let s = state.server.as_ref().expect("set above");
        match send_with_fds(
            s.control.as_fd(),
            &encode(&ToServer::Fork),
            &[child_conn.as_fd()],
        ) {
            Ok(()) => {
                return Ok(Asked {
                    conn,
                    server: Arc::clone(&s.pidfd),
                });
            }
            // The server died since the check: start another, once.
            Err(_) if tries == 0 => {
                tries += 1;
                state.server.take();
            }
            Err(e) => return Err(format!("sending to the forkserver: {e}")),
        }
    }
}

/// The server's answer, the first message on the child's socket: the child's
/// pid, its pidfd, and the status socket if the server relays its exit.
fn answer(conn: BorrowedFd<'_>) -> Result<(i32, OwnedFd, Option<OwnedFd>), String> {
    match wire::recv(conn) {
        Ok(Some((bytes, mut fds))) => match postcard::from_bytes::<FromServer>(&bytes) {
            Ok(FromServer::Forked { pid, own: true }) if fds.len() == 1 => {
                Ok((pid, fds.remove(0), None))
            }
            Ok(FromServer::Forked { pid, own: false }) if fds.len() == 2 => {
                let status = fds.pop();
                Ok((pid, fds.remove(0), status))
            }
            Ok(FromServer::Failed(why)) => Err(format!("the forkserver could not fork: {why}")),
            Ok(other) => Err(format!("unexpected message from the forkserver: {other:?}")),
            Err(e) => Err(format!("the forkserver's reply does not decode: {e}")),
        },
        Ok(None) => Err("the forkserver died before it forked the child".into()),
        Err(e) => Err(format!("reading the forkserver's reply: {e}")),
    }
}

/// Waits for the server's answer on `asked`, or for the server's death.
fn await_answer(asked: &Asked) -> Result<(i32, OwnedFd, Option<OwnedFd>), String> {
    loop {
        let mut pfds = [
            PollFd::new(&asked.conn, PollFlags::IN),
            PollFd::new(&*asked.server, PollFlags::IN),
        ];
        match poll(&mut pfds, None) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(format!("waiting for the forkserver's answer: {e}")),
            Ok(_) => {}
        }
        // The answer; or the server's death, with the answer it wrote just
        // before, if any, readable already.
        if !pfds[0].revents().is_empty() || readable_now(asked.conn.as_fd()) {
            return answer(asked.conn.as_fd());
        }
        if !pfds[1].revents().is_empty() {
            return Err("the forkserver died before it answered".into());
        }
    }
}

/// Waits for the exit of the child `pidfd` names and reaps it; nothing if it
/// was reaped already (a pid could name another child by then: a pidfd cannot).
fn reap(pidfd: BorrowedFd<'_>) {
    let _ = rustix::process::waitid(
        rustix::process::WaitId::PidFd(pidfd),
        rustix::process::WaitIdOptions::EXITED,
    );
}

/// Reads the server's answer for an asked-for child, then sends it the request
/// (`send`): only then, so that the child's reply comes after the answer.
fn finish(asked: Asked, send: &dyn Fn(BorrowedFd<'_>)) -> Result<ForkedChild, String> {
    let (pid, pidfd, status) = await_answer(&asked)?;
    send(asked.conn.as_fd());
    Ok(ForkedChild {
        pid,
        pidfd,
        conn: asked.conn,
        status,
    })
}

/// Takes a spare: the child, or `None` if the spare cannot be used (the
/// server failed to fork it or died first, or it died waiting), discarded then.
fn take(asked: Asked, send: &dyn Fn(BorrowedFd<'_>)) -> Option<ForkedChild> {
    let discard = |asked: Asked| {
        // End of file for the spare even if forks of this process hold copies
        // of this end: it exits without running anything.
        let _ = rustix::net::shutdown(&asked.conn, rustix::net::Shutdown::Both);
        None
    };
    // Usually there already; else the server is forking it now.
    let Ok((pid, pidfd, status)) = await_answer(&asked) else {
        return discard(asked);
    };
    if readable_now(pidfd.as_fd()) {
        // Died waiting (killed): reap it if it is ours (the server reaps its own).
        // Through its pidfd, not its pid: someone else's `waitpid` may have
        // reaped it already, and its pid then name another child of ours.
        if status.is_none() {
            reap(pidfd.as_fd());
        }
        return discard(asked);
    }
    if status.as_ref().is_some_and(|s| readable_now(s.as_fd())) {
        // The server's own child, and the server has gone (or relays an exit):
        // nobody would relay this child's exit.
        return discard(asked);
    }
    send(asked.conn.as_fd());
    Some(ForkedChild {
        pid,
        pidfd,
        conn: asked.conn,
        status,
    })
}

/// Has the server (started now if this process has none running) fork a child,
/// or takes the spare it forked ahead. `send` writes the request on the child's
/// socket (the child reads it when it runs).
pub(crate) fn fork_child(send: &dyn Fn(BorrowedFd<'_>)) -> Result<ForkedChild, String> {
    let spare = state().spare.take();
    if let Some(spare) = spare {
        if spare.asker == std::process::id() {
            if let Some(child) = take(spare.asked, send) {
                ask_spare();
                return Ok(child);
            }
        }
        // Else a fork's copy of its parent's spare: closed, nothing more.
    }
    let asked = ask(&mut state())?;
    let r = finish(asked, send);
    ask_spare();
    r
}

/// Asks the server for the next child now, so that the next start finds it
/// forked and waiting for its request (unless a spare is there already).
/// Called once a start has sent its request: measured (2,000 starts and joins,
/// alternating), asking here gave means of 233-309 us against 238-319 us when
/// asking at the end of `start`, after the child's `Ready`.
fn ask_spare() {
    let mut state = state();
    if state
        .spare
        .as_ref()
        .is_some_and(|s| s.asker == std::process::id())
    {
        return;
    }
    state.spare = ask(&mut state).ok().map(|asked| Spare {
        asker: std::process::id(),
        asked,
    });
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
                || fds.len() != 1
            {
                continue; // not a request this server understands: ignore it
            }
            let conn = fds.pop().expect("one");
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
                        conn.as_fd(),
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
                    drop(control);
                    drop(kids);
                    super::child::run(conn, started, Some(starter))
                }
                Ok((Forked::Parent(pid), Some(pidfd))) => {
                    // The requester's own child: its pidfd and pid are all it
                    // needs from the server.
                    let _ = send_with_fds(
                        conn.as_fd(),
                        &encode(&FromServer::Forked { pid, own: true }),
                        &[pidfd.as_fd()],
                    );
                }
                // Forked the usual way (`fork_sibling` always gives a pidfd):
                // the server reaps it, and relays its exit on a status socket
                // it hands over with the answer.
                Ok((Forked::Parent(pid), None)) => {
                    let raw = Pid::from_raw(pid).expect("positive");
                    let opened = pidfd_open(raw, PidfdFlags::empty())
                        .map_err(|e| format!("pidfd_open: {e}"))
                        .and_then(|pidfd| {
                            stream_pair()
                                .map(|pair| (pidfd, pair))
                                .map_err(|e| format!("socketpair: {e}"))
                        });
                    match opened {
                        Ok((pidfd, (status, theirs))) => {
                            let _ = send_with_fds(
                                conn.as_fd(),
                                &encode(&FromServer::Forked { pid, own: false }),
                                &[pidfd.as_fd(), theirs.as_fd()],
                            );
                            kids.push(Kid { pid, pidfd, status });
                        }
                        Err(why) => {
                            let _ =
                                rustix::process::kill_process(raw, rustix::process::Signal::KILL);
                            let _ = waitpid(Some(raw), WaitOptions::empty());
                            let _ =
                                send_with_fds(conn.as_fd(), &encode(&FromServer::Failed(why)), &[]);
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

    /// A fork while another thread holds the forkserver state (as `ask` does
    /// while it starts the server) waits for it: the child's copy is free, so the
    /// child's own first forkserver start does not wait forever for a lock no
    /// thread of it holds.
    #[test]
    fn a_fork_does_not_copy_the_forkserver_state_locked() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::mpsc;

        use crate::sync::spin::test_procs::{BOUND, join, poll_until, spawn, until_asleep};

        static STARTING: AtomicBool = AtomicBool::new(false);
        let forker = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        let (held, is_held) = mpsc::channel();
        let holder = std::thread::spawn(move || {
            let g = super::state();
            held.send(()).unwrap();
            // Released once the forking thread sleeps past the point where it
            // said it starts: waiting for this lock (or, were the fork not to
            // wait, in its join of the child).
            poll_until("the fork under way", || STARTING.load(Ordering::SeqCst));
            until_asleep(forker);
            drop(g);
        });
        is_held
            .recv_timeout(BOUND)
            .expect("the holder took the state");
        STARTING.store(true, Ordering::SeqCst);
        let child = spawn(|| {
            let free = super::STATE.try_lock().is_ok();
            std::process::exit(if free { 0 } else { 3 });
        });
        assert_eq!(
            join(child),
            Some(0),
            "the child's copy of the forkserver state was locked"
        );
        holder.join().unwrap();
    }

    /// A fork made by other means holds the forkserver state too, from
    /// `ForeignFork::prepare` until the fork is over.
    #[test]
    fn a_foreign_fork_holds_the_forkserver_state() {
        let locked_elsewhere = || {
            std::thread::spawn(|| super::STATE.try_lock().is_err())
                .join()
                .unwrap()
        };
        let prep = crate::process::ForeignFork::prepare().unwrap();
        assert!(
            locked_elsewhere(),
            "prepare did not take the forkserver state"
        );
        prep.failed();
        assert!(
            !locked_elsewhere(),
            "the state stayed locked after the fork"
        );
    }
}
