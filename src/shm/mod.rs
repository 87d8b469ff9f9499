//! Shared memory: segments with a versioned header, the arena that small objects
//! are allocated from, typed element storage, and Python's named [`SharedMemory`].
//!
//! Layers, bottom up:
//! - `header`: the 64-byte header at the start of every arena and large-object
//!   segment and of every owner record (magic, layout version, kind, size,
//!   creator) — the documented layout other programs read.
//! - `segment`: one memfd object, mapped, with its header written.
//! - `arena`: size-classed blocks carved out of shared memfd chunks, so that
//!   100,000 Locks need four mappings, not 100,000.
//! - `storage`: typed elements in a block, with the per-process claims that make
//!   every `&mut` to them unique (the soundness argument of `Value` and `Array`).
//! - [`shared_memory`]: the public `SharedMemory` type (create, attach, unlink): a
//!   `/dev/shm` file of the user's bytes only, CPython's layout, so that CPython
//!   and multiproc attach each other's segments.
//! - [`clean`]: the owner records of named segments, and finding those whose
//!   creator is gone (`multiproc clean`).
//!
//! `unsafe` is confined to this layer and the system-call layer below it.

pub(crate) mod arena;
pub mod clean;
pub(crate) mod header;
pub(crate) mod segment;
pub mod shared_memory;
pub(crate) mod storage;

pub use shared_memory::SharedMemory;
