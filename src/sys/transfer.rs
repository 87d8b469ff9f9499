//! The descriptor collector behind `multiproc::token::export` / `import`.
//!
//! A handle serializes as a token (see `crate::token`); what cannot be written as
//! bytes — the descriptors of the shared memory it needs — goes into a
//! thread-local list while an `export` runs, and each token writes the *index* of
//! its descriptor in that list. `import` installs the received list the same way,
//! and tokens take their descriptors back by index.
//!
//! ## States of this thread's collector
//! ```text
//! Idle       no export or import runs on this thread: a token refuses to be
//!            written or read (the handle was given to a plain serializer)
//! Exporting  fds collected so far, deduplicated by (device, inode): one chunk's
//!            1000 Locks give one descriptor
//! Importing  the received fds, indexed as the exporter numbered them
//! ```
//! `export` and `import` save the state they find and put it back when they end
//! (also on panic), so they nest (an import inside a Deserialize impl that runs
//! during an export sees its own list, then the export's again).
//!
//! A failing token cannot pass a typed [`Error`] through serde's error type, so it
//! parks it here ([`fail`]), returns a serde error, and `export`/`import` return the
//! parked error instead of the serializer's.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::error::{Error, Result};

enum State {
    Idle,
    Exporting {
        fds: Vec<OwnedFd>,
        /// (device, inode, access) -> index: the two ends of a pipe are one inode
        /// opened two ways, so the access is part of what tells files apart.
        seen: HashMap<((u64, u64), u32), u32>,
    },
    Importing {
        fds: Vec<OwnedFd>,
    },
}

struct Collector {
    state: State,
    /// The first typed error a token reported in the current export or import.
    failed: Option<Error>,
}

thread_local! {
    static COLLECTOR: RefCell<Collector> = const {
        RefCell::new(Collector { state: State::Idle, failed: None })
    };
}

/// Sets this thread's collector up now. Its first use in a process registers a
/// thread-local destructor with libc, whose first call there resolves a symbol of
/// the loader lazily: eight page faults, measured in each child of the forkserver,
/// which imports its arguments through the collector. The server calls this once
/// before it forks, so that its children inherit the collector set up.
pub(crate) fn warm_up() {
    COLLECTOR.with(|_| {});
}

/// Puts the saved state back when an export or import ends, even by a panic.
struct Restore(Option<(State, Option<Error>)>);

impl Restore {
    fn install(state: State) -> Restore {
        Restore(Some(COLLECTOR.with(|c| {
            let mut c = c.borrow_mut();
            (std::mem::replace(&mut c.state, state), c.failed.take())
        })))
    }

    /// Ends the run: returns this run's state and parked error, restoring the old.
    fn finish(mut self) -> (State, Option<Error>) {
        let (state, failed) = self.0.take().expect("finished once");
        COLLECTOR.with(|c| {
            let mut c = c.borrow_mut();
            (
                std::mem::replace(&mut c.state, state),
                std::mem::replace(&mut c.failed, failed),
            )
        })
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some((state, failed)) = self.0.take() {
            COLLECTOR.with(|c| {
                let mut c = c.borrow_mut();
                c.state = state;
                c.failed = failed;
            });
        }
    }
}

/// Runs `f` (the serializer) with an export collector installed; returns what `f`
/// returned, the collected descriptors, and the first error a token parked.
pub(crate) fn exporting<R>(f: impl FnOnce() -> R) -> (R, Vec<OwnedFd>, Option<Error>) {
    let restore = Restore::install(State::Exporting {
        fds: Vec::new(),
        seen: HashMap::new(),
    });
    let r = f();
    match restore.finish() {
        (State::Exporting { fds, .. }, failed) => (r, fds, failed),
        (_, failed) => (r, Vec::new(), failed),
    }
}

/// Runs `f` (the deserializer) with `fds` installed for tokens to take by index;
/// returns what `f` returned and the first error a token parked. The descriptors
/// are closed when it ends (tokens keep duplicates of those they use).
pub(crate) fn importing<R>(fds: Vec<OwnedFd>, f: impl FnOnce() -> R) -> (R, Option<Error>) {
    let restore = Restore::install(State::Importing { fds });
    let r = f();
    let (_, failed) = restore.finish();
    (r, failed)
}

/// Parks `err` as the reason the current export or import fails (the first one
/// wins) and returns the message for the serde error that unwinds the serializer.
pub(crate) fn fail(err: Error) -> String {
    let msg = err.to_string();
    COLLECTOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.failed.is_none() {
            c.failed = Some(err);
        }
    });
    msg
}

/// What the calling thread is doing, for tokens that must refuse outside
/// `export` / `import`.
pub(crate) fn is_exporting() -> bool {
    COLLECTOR.with(|c| matches!(c.borrow().state, State::Exporting { .. }))
}

/// Whether an import runs on this thread.
pub(crate) fn is_importing() -> bool {
    COLLECTOR.with(|c| matches!(c.borrow().state, State::Importing { .. }))
}

/// The (device, inode) of an open file: what tells two descriptors of one file.
pub(crate) fn file_id(fd: impl AsFd) -> std::io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// Adds the descriptor of file `id` to the export (a close-on-exec duplicate, once
/// per distinct file) and returns its index.
pub(crate) fn add_fd(id: (u64, u64), fd: BorrowedFd<'_>) -> Result<u32> {
    add_fd_as(id, 0, fd)
}

/// [`add_fd`] for a file that may be open in several ways (`access` tells them
/// apart: a pipe's read end and write end share their inode).
pub(crate) fn add_fd_as(id: (u64, u64), access: u32, fd: BorrowedFd<'_>) -> Result<u32> {
    let id = (id, access);
    COLLECTOR.with(|c| {
        let mut c = c.borrow_mut();
        let State::Exporting { fds, seen } = &mut c.state else {
            return Err(Error::TokenOutside {
                op: "serialized",
                hint: "use multiproc::token::export (spawn does it for its arguments)",
            });
        };
        if let Some(&i) = seen.get(&id) {
            return Ok(i);
        }
        let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0)
            .map_err(|e| Error::io("duplicating a descriptor for export", e))?;
        let i = u32::try_from(fds.len()).map_err(|_| Error::SizeOverflow {
            what: "descriptors in one export",
            requested: fds.len() as u128 + 1,
            max: u32::MAX as u128,
        })?;
        fds.push(dup);
        seen.insert(id, i);
        Ok(i)
    })
}

/// A close-on-exec duplicate of received descriptor `index`, for a token being
/// imported; a bad index is [`Error::BadToken`].
pub(crate) fn take_fd(index: u32, what: &'static str) -> Result<OwnedFd> {
    COLLECTOR.with(|c| {
        let c = c.borrow();
        let State::Importing { fds } = &c.state else {
            return Err(Error::TokenOutside {
                op: "deserialized",
                hint: "use multiproc::token::import",
            });
        };
        let fd = fds.get(index as usize).ok_or_else(|| Error::BadToken {
            what,
            reason: format!(
                "descriptor index {index}, but {} descriptors came with it",
                fds.len()
            ),
        })?;
        rustix::io::fcntl_dupfd_cloexec(fd, 0)
            .map_err(|e| Error::io("duplicating a received descriptor", e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_deduplicated_by_file_and_states_nest() {
        let (a, b) = (
            crate::sys::mem::memfd("t", 16).unwrap(),
            crate::sys::mem::memfd("t", 16).unwrap(),
        );
        let (ida, idb) = (file_id(&a).unwrap(), file_id(&b).unwrap());
        let a2 = rustix::io::fcntl_dupfd_cloexec(&a, 0).unwrap();
        let ((ia, ia2, ib, inner), fds, failed) = exporting(|| {
            let ia = add_fd(ida, a.as_fd()).unwrap();
            let ia2 = add_fd(ida, a2.as_fd()).unwrap();
            let (inner, _) = importing(Vec::new(), || take_fd(0, "test").is_err());
            let ib = add_fd(idb, b.as_fd()).unwrap();
            (ia, ia2, ib, inner)
        });
        assert!(failed.is_none());
        assert_eq!((ia, ia2, ib), (0, 0, 1));
        assert!(inner, "the nested import saw its own (empty) list");
        assert_eq!(fds.len(), 2);
        assert_eq!(file_id(&fds[1]).unwrap(), idb);
        assert!(!is_exporting() && !is_importing());
        assert!(matches!(
            add_fd(ida, a.as_fd()),
            Err(Error::TokenOutside { .. })
        ));
    }
}
