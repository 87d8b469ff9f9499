//! The child's side of spawn and forkserver: receive the entry and its
//! arguments, import them, say so, run the entry, exit.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::{PollFd, PollFlags, poll};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use super::wire::{self, Exported, Reply, Request, Trampoline};
use crate::process::process::{ParentWatcher, alone_before_exit};
use crate::shm::arena;
use crate::sys::fd::send_with_fds;
use crate::sys::fork;

/// Called by [`init`](super::init) when the environment says this process was
/// started by spawn: `value` is `child:<fd>:<inode>` or `server:<fd>:<inode>`.
/// Does not return if the socket is there; returns if the variable names no
/// socket of this process (then it was not meant for it).
pub(super) fn become_inherited(value: &str) {
    let fail = |why: String| -> ! {
        let _ = writeln!(
            std::io::stderr(),
            "multiproc: {}={value:?}: {why}",
            wire::ENV
        );
        fork::exit_now(1)
    };
    let mut parts = value.split(':');
    let (Some(role), Some(fd), Some(ino), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        fail("not role:fd:inode".into())
    };
    let (Ok(fd), Ok(ino)) = (fd.parse::<i32>(), ino.parse::<u64>()) else {
        fail("not role:fd:inode".into())
    };
    let Ok(sock) = crate::sys::exec::take_inherited(fd, ino) else {
        // Not our socket: the variable was inherited by a program a spawned
        // child ran by other means (its socket is close-on-exec, so that program
        // does not have it). This process was not started by spawn: go on.
        return;
    };
    match role {
        "child" => run(sock, None, None),
        "server" => super::server::serve(sock),
        _ => fail(format!("unknown role {role:?}")),
    }
}

/// Runs the child on its socket `sock` (spawn: inherited through exec;
/// forkserver: received by the server, which forked this process). `started`:
/// this process's start time in clock ticks when the fork's clock readings tell
/// it (forkserver; see `procfs::start_ticks_between`), else `None` (`/proc` is
/// read). `starter`: forkserver only, a pidfd of the process that started the
/// server: the child may be a spare, forked before anyone asked for it (see
/// `server`), that waits for its request, or for the starter's end (then it
/// exits, having run nothing). Never returns.
pub(crate) fn run(sock: OwnedFd, started: Option<u64>, starter: Option<OwnedFd>) -> ! {
    let refuse = |why: String| -> ! {
        let reply = postcard::to_allocvec(&Reply::Refused(why)).unwrap_or_default();
        let _ = send_with_fds(sock.as_fd(), &reply, &[]);
        fork::exit_now(1)
    };
    if let Some(starter) = starter {
        wait_for_request(sock.as_fd(), starter.as_fd());
    }
    let (bytes, mut fds) = match wire::recv(sock.as_fd()) {
        Ok(Some(m)) => m,
        // The parent went away before asking anything: nothing to run.
        Ok(None) => fork::exit_now(1),
        Err(e) => refuse(format!("reading the request: {e}")),
    };
    let request: Request = match postcard::from_bytes(&bytes) {
        Ok(r) => r,
        Err(e) => refuse(format!("decoding the request: {e}")),
    };
    if request.version != wire::VERSION {
        refuse(format!(
            "protocol version {} asked, this binary speaks {}",
            request.version,
            wire::VERSION
        ));
    }
    if fds.is_empty() {
        refuse("no parent pidfd came with the request".into());
    }
    let parent_pidfd = fds.remove(0);
    {
        let mut reg = crate::process::registry::registry();
        reg.become_child(
            crate::process::registry::ChildRecord {
                identity: request.identity.clone(),
                name: request.name.clone(),
                daemon: request.daemon,
                parent_name: request.parent_name.clone(),
                parent_pid: request.parent_pid,
            },
            Arc::new(parent_pidfd),
        );
    }
    let trampoline = match request.entry.trampoline::<Trampoline>() {
        Ok(t) => t,
        Err(why) => refuse(why),
    };
    let exported = Exported {
        bytes: request.args,
        fds,
    };
    let call = match trampoline(request.entry, exported) {
        Ok(c) => c,
        Err(why) => refuse(why),
    };
    match started {
        Some(ticks) => crate::sync::ident::prime_started_at(ticks),
        None => crate::sync::ident::prime(),
    }
    let watcher = request.daemon.then(ParentWatcher::start);
    // Ready: the parent may let go of the arguments now.
    let ready = postcard::to_allocvec(&Reply::Ready).expect("a unit variant serializes");
    let _ = send_with_fds(sock.as_fd(), &ready, &[]);
    drop(sock);
    let code = match catch_unwind(AssertUnwindSafe(call)) {
        Ok(()) => 0,
        Err(payload) => {
            let msg = crate::pool::worker::panic_message(&*payload);
            let _ = writeln!(
                std::io::stderr(),
                "multiproc: process {:?} (pid {}) panicked: {msg}",
                request.name,
                std::process::id()
            );
            1
        }
    };
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let stopped = watcher.map(|w| w.stop());
    arena::release_all_before_exit(|| alone_before_exit(stopped));
    fork::exit_now(code)
}

/// Waits until `sock` is readable (a request, or end of file), or exits if the
/// process `starter` names has ended first: a spare waits on both, since forks
/// of the starter may hold copies of the starter's end of `sock`, and keep end
/// of file from coming when the starter dies.
fn wait_for_request(sock: BorrowedFd<'_>, starter: BorrowedFd<'_>) {
    loop {
        let mut pfds = [
            PollFd::new(&sock, PollFlags::IN),
            PollFd::new(&starter, PollFlags::IN),
        ];
        match poll(&mut pfds, None) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => fork::exit_now(1),
            Ok(_) => {}
        }
        if !pfds[0].revents().is_empty() {
            return;
        }
        if !pfds[1].revents().is_empty() {
            fork::exit_now(1);
        }
    }
}
