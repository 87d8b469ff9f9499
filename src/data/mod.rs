//! Shared data: typed plain data in shared memory (Python's `sharedctypes`), above
//! the primitives because the locked kinds hold an [`RLock`](crate::RLock).
//!
//! - [`value`]: [`Value`] (locked) and [`RawValue`] (lock-free, atomics for
//!   integers);
//! - [`array`](mod@array): [`Array`] (locked), [`RawArray`], and the disjoint
//!   [`ArrayChunk`]s for lock-free data-parallel writes.
//!
//! No code here is `unsafe`: every reference into shared memory comes from
//! `shm::storage`, which proves it unique within the process.

pub mod array;
pub mod value;

pub use array::{Array, ArrayChunk, ArrayGuard, RawArray};
pub use value::{AtomicInt, RawValue, Value, ValueGuard};
