//! Which inherited handles a forked child owns.
//!
//! `fork` copies every handle of the parent into the child, also those the child's
//! closure never captured. Those copies are unreachable (the child runs only its
//! closure and leaves through `_exit`), yet they would count: a child forked while
//! the parent held a queue's sender would count as a producer until it exits, and a
//! child holding an inherited copy of a pipe's write end keeps the reader from ever
//! seeing EOF (CPython's classic hang: its users must close unused ends by hand).
//!
//! Handles that must not be over-counted hold a [`Registration`]. `Process::start`
//! runs a handshake around the fork ([`prepare`] before it, [`capture`] in the
//! parent, [`adopt`] in the child):
//!
//! 1. The child waits on a pipe before it runs any user code.
//! 2. The parent drops the closure it moved into the child. Every registration
//!    dropped by that drop belongs to a handle the child *captured*; its handle's
//!    `Drop` can ask [`capturing`] for the child, to hand a count over to it with no
//!    race (the child runs nothing yet).
//! 3. The parent writes the captured ids, then an end marker, into the pipe.
//! 4. The child marks every other registration not [owned](Registration::owned)
//!    and runs its hook (for example to let go of an inherited descriptor), then
//!    runs the closure.
//!
//! If the parent dies or fails before the end marker, the child owns everything it
//! inherited, as without the handshake: it over-counts, which delays a
//! disconnection but never fakes one. Without any registration alive, `prepare`
//! returns `None` and a fork costs no handshake.
//!
//! The registry's lock is taken by `Process::start` across the fork, after the
//! arena's and before the process registry's (see `shm::arena` for the whole order).
//!
//! Limit: a handle reachable in the child other than through the closure (a global
//! static) is not owned there unless the closure captured it.
//!
//! Written by hand: this is multiproc's own fork protocol, no crate provides it.

// Its users (the message layer's queues and connections) land after it.
#![cfg_attr(not(test), allow(dead_code))]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

type Hook = Arc<dyn Fn() + Send + Sync>;

struct Entry {
    owned: Arc<AtomicBool>,
    hook: Option<Hook>,
}

struct Registry {
    next: u64,
    entries: BTreeMap<u64, Entry>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next: 1,
    entries: BTreeMap::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    // A panic while holding it leaves the map consistent (each operation is one
    // insert or remove), so a poisoned lock is still usable.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The child a handle is being handed to, while the parent drops its closure.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Child {
    /// The child's pid.
    pub(crate) pid: i32,
}

struct Capture {
    child: Child,
    ids: Vec<u64>,
}

thread_local! {
    static CAPTURE: RefCell<Option<Capture>> = const { RefCell::new(None) };
}

/// A handle's entry in the registry; one per handle value (not `Clone`).
pub(crate) struct Registration {
    id: u64,
    owned: Arc<AtomicBool>,
}

impl Registration {
    /// Registers a handle. `hook` runs in a forked child, before its closure, if the
    /// child did not capture the handle (e.g. to release an inherited descriptor).
    pub(crate) fn new(hook: Option<Box<dyn Fn() + Send + Sync>>) -> Registration {
        let owned = Arc::new(AtomicBool::new(true));
        let mut reg = registry();
        let id = reg.next;
        reg.next += 1;
        reg.entries.insert(
            id,
            Entry {
                owned: owned.clone(),
                hook: hook.map(Hook::from),
            },
        );
        Registration { id, owned }
    }

    /// False in a child that did not capture this handle: its copy is a dead image
    /// of the parent's, and its `Drop` must not release shared counts again.
    pub(crate) fn owned(&self) -> bool {
        self.owned.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .field("owned", &self.owned())
            .finish()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        registry().entries.remove(&self.id);
        CAPTURE.with(|c| {
            if let Some(cap) = c.borrow_mut().as_mut() {
                cap.ids.push(self.id);
            }
        });
    }
}

/// Inside a handle's `Drop`: the child the handle is being handed to when this drop
/// is `Process::start` dropping the closure the child captured (the child runs no
/// user code until the drop ends); `None` for every other drop.
pub(crate) fn capturing() -> Option<Child> {
    CAPTURE.with(|c| c.borrow().as_ref().map(|cap| cap.child))
}

/// Held by `Process::start` across the fork: the registry's lock, and the pipe of
/// the handshake when some registration is alive.
pub(crate) struct ForkGuard {
    lock: Option<MutexGuard<'static, Registry>>,
    pipe: Option<(OwnedFd, OwnedFd)>,
}

/// Takes the registry's lock for a fork and, if any handle is registered, opens the
/// handshake's pipe.
pub(crate) fn prepare() -> std::io::Result<ForkGuard> {
    let lock = registry();
    let pipe = if lock.entries.is_empty() {
        None
    } else {
        Some(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
    };
    Ok(ForkGuard {
        lock: Some(lock),
        pipe,
    })
}

/// The parent's half of a started handshake, after the fork.
pub(crate) struct ParentEnd(Option<OwnedFd>);

/// The child's half of a started handshake, after the fork.
pub(crate) struct ChildEnd(Option<OwnedFd>);

impl ForkGuard {
    /// After the fork, in the parent: lets the registry go, keeps the writing end.
    pub(crate) fn parent(mut self) -> ParentEnd {
        self.lock = None;
        ParentEnd(self.pipe.take().map(|(_, w)| w))
    }

    super::fork::child_path! {
        /// After the fork, in the child: lets the registry go, keeps the reading end.
        pub(crate) fn child(mut self) -> ChildEnd {
            self.lock = None;
            ChildEnd(self.pipe.take().map(|(r, _)| r))
        }
    }
}

const END: u64 = u64::MAX;

/// In the parent: runs `drop_target` (the drop of the closure moved into `child`)
/// with [`capturing`] set, then tells the child which registrations it captured.
pub(crate) fn capture(end: ParentEnd, child: Child, drop_target: impl FnOnce()) {
    let Some(w) = end.0 else {
        drop_target();
        return;
    };
    let previous = CAPTURE.with(|c| {
        c.replace(Some(Capture {
            child,
            ids: Vec::new(),
        }))
    });
    // A panicking `Drop` in the closure must not leave capture mode on: catch it,
    // finish the handshake, then resume the panic.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(drop_target));
    let ids = CAPTURE
        .with(|c| c.replace(previous))
        .map(|cap| cap.ids)
        .unwrap_or_default();
    let mut bytes: Vec<u8> = ids
        .iter()
        .chain([&END])
        .flat_map(|id| id.to_le_bytes())
        .collect();
    if result.is_err() {
        // The child would own less than it holds: leave out the end marker, so it
        // owns everything it inherited.
        bytes.truncate(bytes.len() - 8);
    }
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        match rustix::io::write(&w, rest) {
            Ok(n) => rest = &rest[n..],
            Err(rustix::io::Errno::INTR) => {}
            // The child is gone: nobody to tell.
            Err(_) => break,
        }
    }
    drop(w);
    if let Err(payload) = result {
        std::panic::resume_unwind(payload);
    }
}

super::fork::child_path! {
    /// In the child, before its closure: waits for the parent's list of captured
    /// registrations, then disowns every other one and runs its hook. Returns how many
    /// it disowned.
    pub(crate) fn adopt(end: ChildEnd) -> usize {
        let Some(r) = end.0 else { return 0 };
        let mut bytes = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            match rustix::io::read(&r, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    bytes.extend_from_slice(&buf[..n]);
                    // Stop at the end marker, not at EOF: a sibling forked by another
                    // thread while this handshake ran inherited the parent's writing
                    // end too, and may keep it open (waiting on its own handshake).
                    if bytes.len() % 8 == 0 && bytes.ends_with(&END.to_le_bytes()) {
                        break;
                    }
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => break,
            }
        }
        drop(r);
        let ids: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        if ids.last() != Some(&END) {
            return 0; // the parent did not finish: own everything, as without a handshake
        }
        let captured: std::collections::HashSet<u64> = ids.into_iter().collect();
        let mut disowned = 0;
        let mut hooks: Vec<Hook> = Vec::new();
        for (id, e) in registry().entries.iter() {
            if !captured.contains(id) {
                e.owned.store(false, Ordering::Relaxed);
                disowned += 1;
                hooks.extend(e.hook.clone());
            }
        }
        // Hooks run outside the registry's lock: they may drop or create handles.
        for hook in hooks {
            hook();
        }
        disowned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_start_owned_and_leave_the_registry_on_drop() {
        let a = Registration::new(None);
        let b = Registration::new(None);
        assert!(a.owned() && b.owned());
        assert!(registry().entries.contains_key(&a.id));
        let id = a.id;
        drop(a);
        assert!(!registry().entries.contains_key(&id));
        assert!(registry().entries.contains_key(&b.id));
    }

    #[test]
    fn capture_collects_exactly_the_registrations_dropped_inside_it() {
        let outside = Registration::new(None);
        let inside = Registration::new(None);
        let inside_id = inside.id;
        let seen = std::cell::Cell::new(None);
        let (r, w) = rustix::pipe::pipe().unwrap();
        capture(ParentEnd(Some(w)), Child { pid: 7 }, || {
            seen.set(capturing().map(|c| c.pid));
            drop(inside);
        });
        assert_eq!(seen.get(), Some(7));
        assert!(capturing().is_none(), "capture mode ends with the drop");
        let mut bytes = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            let n = rustix::io::read(&r, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        let ids: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(ids, vec![inside_id, END]);
        drop(outside);
    }

    struct Handle {
        reg: Registration,
        handed_to: Arc<Mutex<Vec<Option<i32>>>>,
    }

    impl Drop for Handle {
        fn drop(&mut self) {
            let owned = self.reg.owned();
            self.handed_to
                .lock()
                .unwrap()
                .push(capturing().filter(|_| owned).map(|c| c.pid));
        }
    }

    #[test]
    fn a_child_owns_what_its_closure_captured_and_runs_the_hooks_of_the_rest() {
        use crate::{Process, RawValue};
        use std::time::Duration;
        let kept_hook = RawValue::<u32>::new(0).unwrap();
        let moved_hook = RawValue::<u32>::new(0).unwrap();
        let report = RawValue::<u32>::new(0).unwrap();
        let (k, m) = (kept_hook.clone(), moved_hook.clone());
        let kept = Registration::new(Some(Box::new(move || {
            k.fetch_add(1);
        })));
        let handed_to = Arc::new(Mutex::new(Vec::new()));
        let moved = Handle {
            reg: Registration::new(Some(Box::new(move || {
                m.fetch_add(1);
            }))),
            handed_to: handed_to.clone(),
        };
        let (kh, r) = (kept_hook.clone(), report.clone());
        let mut p = Process::new(move || {
            // The parent's `kept` is inherited but not captured: its hook ran
            // before this closure; `moved` was captured and stays owned.
            let bits = u32::from(moved.reg.owned()) | u32::from(kh.get() == 1) << 1;
            r.set(bits | 4);
        });
        p.start().unwrap();
        assert_eq!(p.join(Some(Duration::from_secs(30))).unwrap(), Some(0));
        assert_eq!(
            report.get(),
            0b111,
            "captured handle owned, the other's hook ran"
        );
        assert_eq!(
            kept_hook.get(),
            1,
            "exactly the uncaptured handle's hook ran, once"
        );
        assert_eq!(moved_hook.get(), 0, "a captured handle's hook never runs");
        assert!(kept.owned(), "the parent still owns its own handle");
        // The parent's copy of `moved` was dropped while being handed to the child.
        assert_eq!(
            *handed_to.lock().unwrap(),
            vec![Some(p.pid().unwrap() as i32)]
        );
    }
}
