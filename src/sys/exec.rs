//! Starting a fresh image of this executable with one descriptor inherited.
//!
//! `std::process::Command` forks (or `posix_spawn`s) and execs; between the two,
//! in a child of a possibly multi-threaded parent, only async-signal-safe calls
//! are allowed. The one thing multiproc adds there is [`fcntl`]`(F_SETFD, 0)` on a
//! single descriptor (async-signal-safe, no allocation): the parent keeps that
//! descriptor close-on-exec, so no other child started meanwhile by another thread
//! inherits it; only this child's copy loses the flag, just before its exec.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Starts `/proc/self/exe` (this process's own executable, even if its path was
/// since replaced) with `args`, `env` added to the environment, the standard
/// streams inherited, and `keep` inherited at its number.
pub(crate) fn spawn_self(
    args: &[String],
    env: (&str, &str),
    keep: BorrowedFd<'_>,
) -> std::io::Result<Child> {
    let raw = keep.as_raw_fd();
    let mut cmd = Command::new("/proc/self/exe");
    if let Some(arg0) = std::env::args_os().next() {
        cmd.arg0(arg0);
    }
    cmd.args(args).env(env.0, env.1);
    // SAFETY: the closure runs in the forked child before exec and calls only
    // `fcntl(F_SETFD)`, which is async-signal-safe, on a descriptor number the
    // parent holds open (borrowed for this call) and therefore valid in the
    // child's copy of the descriptor table; it allocates and locks nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(raw, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// In a process started by [`spawn_self`]: takes ownership of the inherited
/// descriptor `raw`, after checking it is the socket its parent named (`ino`, its
/// inode), and sets close-on-exec on it again so that this process's own children
/// do not inherit it.
///
/// Contract: called at most once per process for a given number, before any other
/// code of the process could have opened, closed or claimed that number (the
/// spawn hook runs at the top of `main` and guards this with a `Once`).
pub(crate) fn take_inherited(raw: i32, ino: u64) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: `fstat` on any integer is sound (a closed number is EBADF); `st` is
    // plain data the call fills.
    let st = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(raw, &mut st) == -1 {
            return Err(std::io::Error::last_os_error());
        }
        st
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK || st.st_ino != ino {
        return Err(std::io::Error::other(format!(
            "descriptor {raw} is not the socket the parent passed (inode {ino})"
        )));
    }
    // SAFETY: `raw` is open (fstat succeeded) and is the very socket the parent
    // made for this process (same inode, inherited through exec); by the contract
    // nothing else in this process owns the number, so this `OwnedFd` is its one
    // owner.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
    Ok(fd)
}
