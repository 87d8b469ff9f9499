//! Messages between processes, named as in Python's `multiprocessing`:
//! - [`Queue`] (with [`Sender`] and [`Receiver`] single-role handles),
//!   [`SimpleQueue`] and [`JoinableQueue`], with crossbeam-channel's
//!   disconnection. All of them are one shared ring (`msg::ring`): framed messages
//!   in a memfd segment, a producer lock and a consumer lock (the crate's robust
//!   `RawLock`), position words published by one store, futex sleeps only when a
//!   side waits. `roles` counts which processes hold each role, `holder` is one
//!   handle's hold on its roles.
//! - [`Pipe`] and its [`Connection`]s, and [`wait`](connection::wait) over
//!   connections and process sentinels.

pub mod connection;
pub(crate) mod holder;
#[macro_use]
pub mod queue;
pub mod joinable_queue;
mod pipe;
pub(crate) mod ring;
pub(crate) mod roles;
pub mod simple_queue;
mod wait;

pub use connection::Connection;
pub use joinable_queue::JoinableQueue;
pub use pipe::Pipe;
pub use queue::{Queue, Receiver, Sender};
pub use simple_queue::SimpleQueue;
