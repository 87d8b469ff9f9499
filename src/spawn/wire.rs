//! What travels between a parent and the child it starts by spawn or forkserver:
//! the messages on their private socket, the erased entry call, and (for now) the
//! export of arguments.
//!
//! # The child's socket (a `SOCK_STREAM` Unix socket pair, one per child)
//!
//! Every message is one [`send_with_fds`](crate::sys::fd::send_with_fds) frame:
//! a 12-byte header (`u64` byte count, `u32` descriptor count, native-endian)
//! carrying the descriptors as `SCM_RIGHTS` (in batches of 253), then that many
//! bytes of postcard.
//!
//! 1. parent → child: [`Request`]; descriptors: the parent's pidfd on itself, then
//!    the descriptors of the exported arguments, in order.
//! 2. child → parent: [`Reply`]: `Ready` once the child has imported the
//!    arguments (the parent holds them alive until then: a token is valid only
//!    while some process holds its object), or `Refused(why)`; then the child
//!    runs the entry and exits. End of file instead of a reply: the child died.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::sys::task::EntryToken;

/// The protocol's version, first field of a [`Request`] (and of the
/// forkserver's `Hello`). 2: the forkserver answers on the child's socket, no
/// status socket per child unless it relays the exit.
pub(crate) const VERSION: u32 = 2;

/// The environment variable that makes [`init`](super::init) a child or a server:
/// `child:<fd>:<inode>` or `server:<fd>:<inode>` (the inherited socket's number
/// and inode, checked before use).
pub(crate) const ENV: &str = "MULTIPROC_SPAWN";

pub(crate) use crate::token::{Exported, import};

/// One [`send_with_fds`](crate::sys::fd::send_with_fds) message, or `None` at
/// end of file (the peer closed, or died).
pub(crate) fn recv(
    sock: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<Option<(Vec<u8>, Vec<std::os::fd::OwnedFd>)>> {
    match crate::sys::fd::recv_with_fds(sock) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Parent → child, first message.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    /// [`VERSION`].
    pub(crate) version: u32,
    /// The entry to run.
    pub(crate) entry: EntryToken,
    /// The child's `Process` name, identity and daemon flag.
    pub(crate) name: String,
    pub(crate) identity: Vec<u32>,
    pub(crate) daemon: bool,
    /// Who asked: its name and pid (its pidfd comes as the first descriptor).
    pub(crate) parent_name: String,
    pub(crate) parent_pid: u32,
    /// The exported arguments' bytes (their descriptors follow the parent's pidfd).
    pub(crate) args: Vec<u8>,
}

/// Child → parent, once.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// The arguments are imported; the entry runs now.
    Ready,
    /// The child will not run the entry (and exits with code 1): why.
    Refused(String),
}

/// In the child: decodes the arguments and makes the call, or says why not.
pub(crate) type Trampoline =
    fn(EntryToken, Exported) -> std::result::Result<Box<dyn FnOnce()>, String>;

fn trampoline<A: DeserializeOwned + 'static>(
    token: EntryToken,
    args: Exported,
) -> std::result::Result<Box<dyn FnOnce()>, String> {
    let f = token.func::<fn(A)>()?;
    let a: A = import(args).map_err(|e| format!("importing the arguments: {e}"))?;
    Ok(Box::new(move || f(a)))
}

/// An entry function with its arguments, type-erased for `Process`.
pub(crate) trait Call: Send {
    /// The entry's token (this executable, this function, its trampoline).
    fn token(&self) -> std::io::Result<EntryToken>;
    /// The arguments, exported.
    fn export(&self) -> Result<Exported>;
    /// The call as a closure, for the fork start method.
    fn into_closure(self: Box<Self>) -> Box<dyn FnOnce() + Send>;
}

pub(crate) struct EntryCall<A> {
    pub(crate) f: fn(A),
    pub(crate) args: A,
}

impl<A: Serialize + DeserializeOwned + Send + 'static> Call for EntryCall<A> {
    fn token(&self) -> std::io::Result<EntryToken> {
        EntryToken::of(trampoline::<A> as Trampoline, self.f)
    }

    fn export(&self) -> Result<Exported> {
        crate::token::export(&self.args)
    }

    fn into_closure(self: Box<Self>) -> Box<dyn FnOnce() + Send> {
        let EntryCall { f, args } = *self;
        Box::new(move || f(args))
    }
}
