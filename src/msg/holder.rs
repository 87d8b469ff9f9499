//! One handle's hold on a queue's roles: counted in the shared role tables while
//! the handle lives in a process that owns it.
//!
//! ## States of a `Holder`
//! - **open, owned**: its roles count once in this process's slots (`roles`).
//! - **closed** (`close()` or `Drop`): its counts were taken back, once (the
//!   `closed` flag is swapped, so a second close does nothing).
//! - **disowned**: an inherited image in a forked child whose closure did not
//!   capture it (`sys::inherit`): it never counted there and takes nothing back.
//!
//! Fork: when `Process::start` drops the closure it moved into a child, each
//! captured holder adds its roles to the child's slot *before* taking them from
//! the parent's (the child runs no user code until then), so a role handed to a
//! child never looks gone in between. A child forked while the parent held a
//! handle it did not capture does not count as a holder.
//!
//! Whenever a role table becomes empty, sleepers of both sides are woken, so a
//! blocked `get` sees `Disconnected` at the last producer's drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::ring::{Ring, Role};
use super::roles::Who;
use crate::sync::ident;
use crate::sys::inherit::{self, Registration};

/// A producer role, a consumer role, or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Roles {
    pub(crate) produce: bool,
    pub(crate) consume: bool,
}

impl Roles {
    pub(crate) const BOTH: Roles = Roles {
        produce: true,
        consume: true,
    };
    pub(crate) const PRODUCER: Roles = Roles {
        produce: true,
        consume: false,
    };
    pub(crate) const CONSUMER: Roles = Roles {
        produce: false,
        consume: true,
    };

    fn each(self) -> impl Iterator<Item = Role> {
        [
            self.produce.then_some(Role::Producer),
            self.consume.then_some(Role::Consumer),
        ]
        .into_iter()
        .flatten()
    }
}

/// One handle's hold (see the module).
#[derive(Debug)]
pub(crate) struct Holder {
    pub(crate) ring: Arc<Ring>,
    pub(crate) roles: Roles,
    /// A JoinableQueue's handle: its gets count unfinished tasks.
    pub(crate) joinable: bool,
    closed: AtomicBool,
    reg: Registration,
}

impl Holder {
    /// Counts `roles` for this process.
    pub(crate) fn new(ring: Arc<Ring>, roles: Roles, joinable: bool) -> Holder {
        for role in roles.each() {
            ring.table(role).add(Who::Me, 1);
        }
        Holder {
            ring,
            roles,
            joinable,
            closed: AtomicBool::new(false),
            reg: Registration::new(None),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Takes this handle's roles back (once). In `Process::start`'s hand-over,
    /// first gives them to the child.
    pub(crate) fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) || !self.reg.owned() {
            return;
        }
        if let Some(child) = inherit::capturing() {
            let child = Who::Exactly(ident::process_of(child.pid as u32));
            for role in self.roles.each() {
                self.ring.table(role).add(child, 1);
            }
        }
        let mut emptied = false;
        for role in self.roles.each() {
            let table = self.ring.table(role);
            table.remove(Who::Me);
            emptied |= !table.any();
        }
        if emptied {
            self.ring.wake_all();
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.close();
    }
}

/// A queue handle in a token (see `crate::token`): the ring, the message type's
/// fingerprint, and whether it is a JoinableQueue's.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct QueueToken {
    ring: super::ring::RingToken,
    fingerprint: u64,
    joinable: bool,
}

impl Holder {
    /// This handle as a token for messages of type `T`; a closed handle refuses.
    pub(crate) fn token<T>(&self) -> crate::Result<QueueToken> {
        if self.is_closed() {
            return Err(crate::Error::Closed("export"));
        }
        Ok(QueueToken {
            ring: self.ring.token()?,
            fingerprint: crate::token::fingerprint::<T>(),
            joinable: self.joinable,
        })
    }

    /// A new hold with `roles` on the queue a token names: it counts for this
    /// process exactly as a handle made here or inherited does. `joinable`: what
    /// the handle type requires (`None`: either, as a Sender or Receiver).
    pub(crate) fn from_token<T>(
        t: &QueueToken,
        roles: Roles,
        joinable: Option<bool>,
        what: &'static str,
    ) -> crate::Result<Holder> {
        if t.fingerprint != crate::token::fingerprint::<T>() {
            return Err(crate::Error::TokenKind {
                expected: std::any::type_name::<T>(),
                found: format!(
                    "a queue of another message type (fingerprint {:#x})",
                    t.fingerprint
                ),
            });
        }
        if joinable.is_some_and(|j| j != t.joinable) {
            return Err(crate::Error::TokenKind {
                expected: what,
                found: if t.joinable {
                    "a JoinableQueue"
                } else {
                    "a Queue"
                }
                .to_string(),
            });
        }
        let ring = super::ring::Ring::from_token(&t.ring, what)?;
        Ok(Holder::new(Arc::new(ring), roles, t.joinable))
    }
}
