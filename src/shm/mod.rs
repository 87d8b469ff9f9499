//! Shared memory: segments with a versioned header, the arena that small objects
//! are allocated from, and Python's named [`SharedMemory`].
//!
//! Layers, bottom up:
//! - [`header`]: the 64-byte header at the start of every segment (magic, layout
//!   version, kind, size, creator) — the documented layout other programs read.
//! - [`segment`]: one memfd or `/dev/shm` object, mapped, with its header checked.
//! - [`arena`]: size-classed blocks carved out of shared memfd chunks, so that
//!   100,000 Locks need four mappings, not 100,000.
//! - [`shared_memory`]: the public `SharedMemory` type (create, attach, unlink).
//! - [`clean`]: finding named segments whose creator is gone (`multiproc clean`).
//! - [`value`] and [`array`](mod@array): typed plain data in arena blocks (Python's
//!   `sharedctypes`), with their locks beside them.
//!
//! `unsafe` is confined to this layer and [`crate::sys`].

pub mod arena;
pub mod array;
pub mod clean;
pub mod header;
pub mod segment;
pub mod shared_memory;
pub mod value;

pub use array::{Array, ArrayChunk, ArrayGuard, RawArray};
pub use shared_memory::SharedMemory;
pub use value::{AtomicInt, RawValue, Value, ValueGuard};
