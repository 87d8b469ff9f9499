//! The small-object arena: shared blocks carved out of memfd chunks.
//!
//! Creating a Lock must not cost a file descriptor and a mapping: CPython's costs a
//! named semaphore each. Every small object (a Lock's 16 bytes, a Value, a short
//! Array) is a [`Block`] in a 1 MiB memfd *chunk*; a process needs one mapping per
//! chunk, and 100,000 Locks fit in four chunks. Objects larger than
//! [`MAX_SMALL`] get a memfd segment of their own.
//!
//! ## Chunk layout (after the 64-byte segment header)
//! ```text
//!  64  u64  bump: end of the carved part, relative to the chunk; 0 means FIRST_BLOCK
//!  72  u64  free-list heads, one per size class (8): (tag << 32) | block offset
//! 256       first block
//! ```
//! ## Block layout
//! ```text
//!  0  u32  refcount: handles alive in all processes
//!  4  u32  size class
//!  8  u32  next free block (while on a free list)
//! 12  u32  reserved
//! 16       payload, 16-byte aligned, zeroed on allocation
//! ```
//! Invariants: a block is either on exactly one free list (refcount 0) or owned by
//! `refcount` handles. Free lists are Treiber stacks whose head carries a tag bumped
//! on every change, so a pop racing with pop-push of the same block (ABA) fails its
//! compare-exchange. Every change is one compare-exchange, so a process killed at
//! any instruction leaves the lists well formed (at worst one block is lost).
//!
//! Blocks are reference-counted *across processes*: a handle moved into a forked
//! child (see `Process`) carries its count with it, and the block returns to the free
//! list only when the last handle anywhere is dropped. A handle in a process that is
//! killed is never dropped, so its block stays allocated until the chunk itself is
//! freed with the last process — memory is never reused while it may be in use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::header::{HEADER_SIZE, Kind};
use super::segment::Segment;
use crate::error::{Error, Result};
use crate::sys::mem::Mapping;

const CHUNK_PAYLOAD: u64 = (1 << 20) - HEADER_SIZE as u64;
const CHUNK_LEN: u64 = 1 << 20;
const BUMP: usize = 64;
const HEADS: usize = 72;
const FIRST_BLOCK: u64 = 256;
const CLASSES: usize = 8;
const BLOCK_HEADER: usize = 16;
const MIN_BLOCK: usize = 32;
/// The largest payload served from the arena; larger objects get their own segment.
///
/// ```
/// use multiproc::shm::arena::{Block, MAX_SMALL};
/// assert!(Block::alloc(MAX_SMALL)?.static_map().is_some()); // an arena block
/// assert!(Block::alloc(MAX_SMALL + 1)?.static_map().is_none()); // a segment of its own
/// # Ok::<(), multiproc::Error>(())
/// ```
pub const MAX_SMALL: usize = (MIN_BLOCK << (CLASSES - 1)) - BLOCK_HEADER;

/// Chunks this process knows, newest last. Chunks are never unmapped (they are
/// leaked on purpose): blocks hand out `&'static` atomics, and a chunk's memory is
/// freed by the kernel when the last process that maps it exits.
static CHUNKS: Mutex<Vec<&'static Segment>> = Mutex::new(Vec::new());

fn class_of(payload: usize) -> usize {
    let total = payload + BLOCK_HEADER;
    (0..CLASSES)
        .find(|&c| MIN_BLOCK << c >= total)
        .unwrap_or(CLASSES - 1)
}

fn head(chunk: &'static Mapping, class: usize) -> &'static AtomicU64 {
    chunk.atomic_u64(HEADS + 8 * class)
}

fn pop(chunk: &'static Mapping, class: usize) -> Option<u32> {
    let head = head(chunk, class);
    let mut cur = head.load(Ordering::Acquire);
    loop {
        let off = cur as u32;
        if off == 0 {
            return None;
        }
        let next = chunk.atomic_u32(off as usize + 8).load(Ordering::Relaxed);
        let tag = (cur >> 32).wrapping_add(1);
        match head.compare_exchange_weak(
            cur,
            (tag << 32) | next as u64,
            Ordering::Acquire,
            Ordering::Acquire,
        ) {
            Ok(_) => return Some(off),
            Err(now) => cur = now,
        }
    }
}

fn push(chunk: &'static Mapping, class: usize, off: u32) {
    let head = head(chunk, class);
    let mut cur = head.load(Ordering::Relaxed);
    loop {
        chunk
            .atomic_u32(off as usize + 8)
            .store(cur as u32, Ordering::Relaxed);
        let tag = (cur >> 32).wrapping_add(1);
        match head.compare_exchange_weak(
            cur,
            (tag << 32) | off as u64,
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => return,
            Err(now) => cur = now,
        }
    }
}

fn bump(chunk: &'static Mapping, size: u64) -> Option<u32> {
    let bump = chunk.atomic_u64(BUMP);
    let mut cur = bump.load(Ordering::Relaxed);
    loop {
        let start = cur.max(FIRST_BLOCK);
        let end = start + size;
        if end > CHUNK_LEN {
            return None;
        }
        match bump.compare_exchange_weak(cur, end, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Some(start as u32),
            Err(now) => cur = now,
        }
    }
}

fn take_from(chunk: &'static Mapping, class: usize) -> Option<u32> {
    pop(chunk, class).or_else(|| bump(chunk, (MIN_BLOCK << class) as u64))
}

/// A handle to one shared allocation: an arena block or a large segment.
///
/// Cloning shares the allocation (the count lives in shared memory); dropping the
/// last handle in any process frees it.
///
/// ```
/// use std::time::Duration;
/// use multiproc::Process;
/// use multiproc::shm::arena::Block;
/// let block = Block::alloc(8)?;
/// let handle = block.clone();
/// assert_eq!(block.refcount(), 2);
/// // The handle moves into the child with its count; the child writes through it.
/// let mut child = Process::new(move || handle.map().write::<u64>(handle.offset(), 42));
/// child.start()?;
/// assert_eq!(child.join(Some(Duration::from_secs(10)))?, Some(0));
/// assert_eq!(block.map().read::<u64>(block.offset()), 42);
/// assert_eq!(block.refcount(), 1); // the child dropped its handle when done
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub struct Block {
    place: Place,
}

#[derive(Debug)]
enum Place {
    Arena { chunk: &'static Mapping, off: u32 },
    Large(Arc<Segment>),
}

impl Block {
    /// Allocates `size` zeroed bytes of shared memory, 16-byte aligned.
    ///
    /// ```
    /// use multiproc::Error;
    /// use multiproc::shm::arena::Block;
    /// let block = Block::alloc(24)?;
    /// assert_eq!(block.offset() % 16, 0);
    /// let mut bytes = [0xffu8; 24];
    /// block.map().read_slice(block.offset(), &mut bytes);
    /// assert_eq!(bytes, [0; 24]);
    /// assert!(matches!(Block::alloc(0), Err(Error::ZeroSize { .. })));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn alloc(size: usize) -> Result<Block> {
        if size == 0 {
            return Err(Error::ZeroSize {
                what: "shared allocation",
            });
        }
        if size > MAX_SMALL {
            return Ok(Block {
                place: Place::Large(Arc::new(Segment::anonymous(Kind::Large, size as u64)?)),
            });
        }
        let class = class_of(size);
        // A poisoned list only means another thread panicked while pushing a chunk;
        // the Vec itself is intact.
        let mut chunks = CHUNKS.lock().unwrap_or_else(|e| e.into_inner());
        let found = chunks
            .iter()
            .rev()
            .find_map(|seg| take_from(seg.map(), class).map(|off| (seg.map(), off)));
        let (chunk, off) = match found {
            Some(found) => found,
            None => {
                let seg: &'static Segment =
                    Box::leak(Box::new(Segment::anonymous(Kind::Arena, CHUNK_PAYLOAD)?));
                chunks.push(seg);
                let off = take_from(seg.map(), class)
                    .expect("a fresh chunk has room for any small block");
                (seg.map(), off)
            }
        };
        drop(chunks);
        let block_len = MIN_BLOCK << class;
        // Zero the payload (a reused block holds its last user's bytes): every
        // object's all-zero state is its valid initial state.
        let zeros = [0u64; (MIN_BLOCK << (CLASSES - 1)) / 8];
        chunk.write_slice::<u64>(
            off as usize + BLOCK_HEADER,
            &zeros[..(block_len - BLOCK_HEADER) / 8],
        );
        chunk
            .atomic_u32(off as usize + 4)
            .store(class as u32, Ordering::Relaxed);
        chunk.atomic_u32(off as usize).store(1, Ordering::Release);
        Ok(Block {
            place: Place::Arena { chunk, off },
        })
    }

    /// The mapping the allocation lives in.
    ///
    /// ```
    /// use multiproc::shm::arena::Block;
    /// let block = Block::alloc(4)?;
    /// let map = block.map();
    /// assert!(block.offset() + 4 <= map.len());
    /// map.write::<u32>(block.offset(), 7);
    /// assert_eq!(block.clone().map().read::<u32>(block.offset()), 7);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn map(&self) -> &Mapping {
        match &self.place {
            Place::Arena { chunk, .. } => chunk,
            Place::Large(seg) => seg.map(),
        }
    }

    /// The mapping, when it lives as long as the process (arena blocks).
    ///
    /// An arena block's mapping outlives the handle, so a `'static` view (what
    /// [`RawLock::at`](crate::sync::raw_lock::RawLock::at) takes) can be kept:
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use multiproc::shm::arena::{Block, MAX_SMALL};
    /// let block = Block::alloc(16)?;
    /// let word: &'static AtomicU32 = block.static_map().unwrap().atomic_u32(block.offset());
    /// word.store(5, Ordering::Relaxed);
    /// assert_eq!(block.map().read::<u32>(block.offset()), 5);
    /// // A large allocation is unmapped with its last handle: no 'static view.
    /// assert!(Block::alloc(MAX_SMALL + 1)?.static_map().is_none());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn static_map(&self) -> Option<&'static Mapping> {
        match &self.place {
            Place::Arena { chunk, .. } => Some(chunk),
            Place::Large(_) => None,
        }
    }

    /// The mapping of a block known to be small ([`MAX_SMALL`] bytes or fewer), which
    /// the arena always serves: the primitives take their `&'static` words from it.
    pub(crate) fn arena_map(&self) -> &'static Mapping {
        self.static_map()
            .expect("blocks of at most MAX_SMALL bytes live in the arena")
    }

    /// Offset of the payload within [`Block::map`].
    ///
    /// ```
    /// use multiproc::shm::arena::{Block, MAX_SMALL};
    /// let small = Block::alloc(16)?;
    /// let large = Block::alloc(MAX_SMALL + 1)?;
    /// for block in [&small, &large] {
    ///     assert_eq!(block.offset() % 16, 0);
    ///     assert!(block.offset() + 16 <= block.map().len());
    /// }
    /// // Live blocks never overlap.
    /// let other = Block::alloc(16)?;
    /// other.map().write_slice(other.offset(), &[u64::MAX; 2]);
    /// let mut mine = [1u64; 2];
    /// small.map().read_slice(small.offset(), &mut mine);
    /// assert_eq!(mine, [0, 0]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn offset(&self) -> usize {
        match &self.place {
            Place::Arena { off, .. } => *off as usize + BLOCK_HEADER,
            Place::Large(_) => HEADER_SIZE,
        }
    }

    /// Handles alive across all processes (arena blocks; 1 for large segments).
    ///
    /// ```
    /// use multiproc::shm::arena::Block;
    /// let block = Block::alloc(8)?;
    /// assert_eq!(block.refcount(), 1);
    /// let copy = block.clone();
    /// assert_eq!(block.refcount(), 2);
    /// drop(copy);
    /// assert_eq!(block.refcount(), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn refcount(&self) -> u32 {
        match &self.place {
            Place::Arena { chunk, off } => chunk.atomic_u32(*off as usize).load(Ordering::Relaxed),
            Place::Large(_) => 1,
        }
    }
}

impl Clone for Block {
    fn clone(&self) -> Block {
        if let Place::Arena { chunk, off } = &self.place {
            chunk
                .atomic_u32(*off as usize)
                .fetch_add(1, Ordering::Relaxed);
        }
        Block {
            place: match &self.place {
                Place::Arena { chunk, off } => Place::Arena { chunk, off: *off },
                Place::Large(seg) => Place::Large(Arc::clone(seg)),
            },
        }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if let Place::Arena { chunk, off } = self.place {
            // AcqRel: the freeing side must see every write of the other handles
            // before the block is reused.
            if chunk
                .atomic_u32(off as usize)
                .fetch_sub(1, Ordering::AcqRel)
                == 1
            {
                let class = chunk.atomic_u32(off as usize + 4).load(Ordering::Relaxed) as usize;
                push(chunk, class, off);
            }
        }
    }
}

/// Number of arena chunks (mappings) this process holds.
///
/// Chunks are never unmapped, and small blocks share them:
///
/// ```
/// use multiproc::shm::arena::{Block, chunk_count};
/// let before = chunk_count();
/// let blocks = (0..1000).map(|_| Block::alloc(16)).collect::<Result<Vec<_>, _>>()?;
/// assert!(chunk_count() >= 1);
/// assert!(chunk_count() <= before + 1); // 1000 blocks, at most one new mapping
/// drop(blocks);
/// assert!(chunk_count() >= before.max(1));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn chunk_count() -> usize {
    CHUNKS.lock().unwrap_or_else(|e| e.into_inner()).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_zeroed_reused_and_aligned() {
        let a = Block::alloc(24).unwrap();
        assert_eq!(a.offset() % 16, 0);
        a.map().write::<u64>(a.offset(), 77);
        let off = a.offset();
        drop(a);
        let b = Block::alloc(24).unwrap();
        // Same class, freed just now: the block is reused and zeroed.
        assert_eq!(b.offset(), off);
        assert_eq!(b.map().read::<u64>(b.offset()), 0);
        let c = b.clone();
        assert_eq!(c.refcount(), 2);
        drop(b);
        assert_eq!(c.refcount(), 1);
    }

    #[test]
    fn large_allocations_get_their_own_segment() {
        let big = Block::alloc(MAX_SMALL + 1).unwrap();
        assert!(big.static_map().is_none());
        assert!(big.map().len() > MAX_SMALL);
        assert!(matches!(Block::alloc(0), Err(Error::ZeroSize { .. })));
    }
}
