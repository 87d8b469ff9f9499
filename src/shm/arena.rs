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
//!  0  u32  holders: processes holding the block (not handles), 0 while free
//!  4  u32  size class (informative: a process frees with the class it allocated)
//!  8  u32  next free block (while on a free list)
//! 12  u32  generation: bumped by every allocation of the block (tokens)
//! 16       payload, 16-byte aligned, zeroed on allocation
//! ```
//! ## Invariants
//! - **Holders count processes.** A block's shared word 0 counts the processes
//!   holding it. In one process all clones of a [`Block`] share one `Arc<Held>`: the
//!   process-local count is the `Arc`'s, and the shared count is decremented once,
//!   when the last local handle drops. So `forget(clone)` only leaks a local `Arc`
//!   count (which aborts before it wraps, like every `Arc`); it never touches the
//!   shared word.
//! - **The registry lists this process's holds.** `ARENA.held` names every block
//!   this process holds (one shared count each). A block enters it when allocated
//!   (count 1) and leaves it when its last local handle drops, both under the
//!   `ARENA` lock.
//! - **Fork adds the child's holds first.** `Process::start` takes the `ARENA` lock
//!   (`lock_for_fork`), adds 1 to every registered block for the child, forks, and
//!   unlocks on both sides; a failed fork takes the additions back. The child
//!   inherits the registry and the parent's local handles, so both processes hold
//!   each block once, and the parent may drop whatever the child's closure captured.
//!   A count that would pass `MAX_HOLDERS` refuses the fork
//!   ([`Error::HoldersOverflow`]) instead of wrapping.
//! - **Exit.** A child of `Process` releases its remaining holds just before `_exit`
//!   (`release_all_before_exit`) when it is single-threaded (no thread could still
//!   use a released block). A process killed, or leaving any other way, never
//!   releases: its blocks stay allocated until the chunk itself is freed with the
//!   last process that maps it. Memory is never reused while it may be in use.
//! - **Free lists.** A block is on at most one free list, and only with holders 0.
//!   Free lists are Treiber stacks whose head carries a tag bumped on every change,
//!   so a pop racing with pop-push of the same block (ABA) fails its
//!   compare-exchange. Every change is one compare-exchange, so a process killed at
//!   any instruction leaves the lists well formed (at worst one block is lost).
//! - **One use per byte per process.** Each hold records what this process uses
//!   its payload for (`Uses`: primitives before an offset, locked or raw elements
//!   from one on), set by the allocation and checked by every import
//!   (`Block::use_as`), so that an edited token never lays a `&mut [T]` over
//!   words that other handles change.
//! - **Shared words are untrusted.** Another process (or a bug) may have written
//!   anything into a chunk. A head, `next` or bump offset that is not a block
//!   boundary inside the carved part of the chunk makes that list (or the bump) look
//!   empty; a popped block must have holders 0 and its list's class, or it is left
//!   alone (leaked), so a forged `next` pointing at a live block never hands it out
//!   twice. A holders word already 0 is never decremented (nor the block pushed
//!   twice). Nothing in `Drop` panics on shared state. A writer that forges a block
//!   boundary inside a free block's payload can still corrupt that memory; what is
//!   checked is what a block header lets a reader check.
//!
//! - **Generations tell allocations apart** (what makes a token of a freed block
//!   fail instead of naming its next object). The allocator owns a block it popped
//!   or carved (holders 0, off every list) and bumps its generation *before* its
//!   claim (holders 0 -> 1, Release). An importer that is not holding the block
//!   adds a hold only to a live block (holders n > 0 -> n + 1, Acquire) and then
//!   reads the generation. Its compare-exchange reads a value of the release
//!   sequence headed by the current allocation's claim (every later change of the
//!   word is a read-modify-write), so it sees that allocation's bump; and no later
//!   bump can happen while it holds (that needs holders 0). So the generation it
//!   reads is the current allocation's: equal to the token's means the token's
//!   object (up to 2^32 reuses of one block between export and import).
//! - **One hold per process, also for imports.** The registry keeps a `Weak` of
//!   each `Held`; an import of a block this process holds clones that hold. A
//!   `Held` whose last handle is dropping (its `Weak` no longer upgrades, its drop
//!   waits for the lock) has its count taken over by the import, which replaces the
//!   entry; a `Held` releases on drop only if the entry is still its own.
//! - **Imported chunks join the list.** A token's chunk that this process does not
//!   map yet (found by inode) is mapped after its header is checked and is never
//!   unmapped, as the chunks it allocated. Large segments are deduplicated by
//!   inode while one handle to them lives (the registry `ARENA.large`).
//!
//! Lock order (process-local): `stdout` → `stderr` → `ARENA` → `sys::inherit`'s
//! registry → `process::registry::REGISTRY` (the last in `process`).
//! `Process::start` holds them all across `fork`, so no other thread holds one at
//! the fork and the child can take each.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use serde::{Deserialize, Serialize};

use super::header::{HEADER_SIZE, Kind};
use super::segment::Segment;
use super::storage::Claims;
use crate::error::{Error, Result};
use crate::sys::mem::Mapping;
use crate::sys::transfer;

const CHUNK_PAYLOAD: u64 = (1 << 20) - HEADER_SIZE as u64;
const CHUNK_LEN: u64 = 1 << 20;
const BUMP: usize = 64;
const HEADS: usize = 72;
const FIRST_BLOCK: u64 = 256;
const CLASSES: usize = 8;
const BLOCK_HEADER: usize = 16;
const MIN_BLOCK: usize = 32;
/// The largest payload served from the arena; larger objects get their own segment.
pub const MAX_SMALL: usize = (MIN_BLOCK << (CLASSES - 1)) - BLOCK_HEADER;

/// The most processes a block's shared count records; a fork that would pass it is
/// refused. Half of `u32::MAX`, so that even counts forged up to it cannot wrap.
pub(crate) const MAX_HOLDERS: u32 = u32::MAX / 2;

/// This process's view of the arena, behind one lock.
struct Arena {
    /// Chunks this process knows, newest last. Chunks are never unmapped (they are
    /// leaked on purpose): blocks hand out `&'static` atomics, and a chunk's memory
    /// is freed by the kernel when the last process that maps it exits.
    chunks: Vec<&'static Segment>,
    /// The registry: every block this process holds (one shared count each), keyed
    /// by (chunk address, block offset), with the chunk and the block's class.
    /// and the hold itself (which all local handles share, and imports find).
    held: BTreeMap<(usize, u32), (&'static Mapping, u8, Weak<Held>)>,
    /// Large segments this process maps, by (device, inode), so that an import of
    /// one finds the handles (and the claims) this process already has.
    large: BTreeMap<(u64, u64), Weak<Large>>,
}

static ARENA: Mutex<Arena> = Mutex::new(Arena {
    chunks: Vec::new(),
    held: BTreeMap::new(),
    large: BTreeMap::new(),
});

fn arena() -> MutexGuard<'static, Arena> {
    // A poisoned lock only means another thread panicked while holding it; every
    // change under it is a single push or insert, so the state is intact.
    ARENA.lock().unwrap_or_else(|e| e.into_inner())
}

fn class_of(payload: usize) -> usize {
    let total = payload + BLOCK_HEADER;
    (0..CLASSES)
        .find(|&c| MIN_BLOCK << c >= total)
        .unwrap_or(CLASSES - 1)
}

fn head(chunk: &'static Mapping, class: usize) -> &'static AtomicU64 {
    chunk.atomic_u64(HEADS + 8 * class)
}

fn holders(chunk: &'static Mapping, off: u32) -> &'static AtomicU32 {
    chunk.atomic_u32(off as usize)
}

fn generation(chunk: &'static Mapping, off: u32) -> &'static AtomicU32 {
    chunk.atomic_u32(off as usize + 12)
}

/// Claims a block this allocator owns (popped or freshly carved, holders 0): bumps
/// its generation and writes its class *before* holders 0 -> 1 (Release), so that
/// whoever adds a hold later (Acquire) sees both (see the module invariants).
fn claim(chunk: &'static Mapping, off: u32, class: usize) -> bool {
    let h = holders(chunk, off);
    if h.load(Ordering::Relaxed) != 0 {
        return false; // a forged list or bump over a live block
    }
    generation(chunk, off).fetch_add(1, Ordering::Relaxed);
    chunk
        .atomic_u32(off as usize + 4)
        .store(class as u32, Ordering::Relaxed);
    h.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

/// End of the carved part of `chunk`, or `None` if the bump word is not a block
/// boundary inside the chunk (forged): then nothing more is carved from it.
fn carved_end(chunk: &'static Mapping) -> Option<u64> {
    let end = chunk
        .atomic_u64(BUMP)
        .load(Ordering::Acquire)
        .max(FIRST_BLOCK);
    (end <= CHUNK_LEN && end % MIN_BLOCK as u64 == 0).then_some(end)
}

/// Whether `off` can be a block of `class` in `chunk`: a block boundary at or past
/// [`FIRST_BLOCK`] whose whole block lies in the carved part.
fn is_block(chunk: &'static Mapping, off: u32, class: usize) -> bool {
    let off = off as u64;
    off >= FIRST_BLOCK
        && off % MIN_BLOCK as u64 == 0
        && carved_end(chunk).is_some_and(|end| off + (MIN_BLOCK << class) as u64 <= end)
}

/// Pops a block off `class`'s free list. A head that is not a block of the list
/// (forged) makes the list look empty: its blocks are leaked, never misused.
fn pop(chunk: &'static Mapping, class: usize) -> Option<u32> {
    let head = head(chunk, class);
    let mut cur = head.load(Ordering::Acquire);
    loop {
        let off = cur as u32;
        if off == 0 || !is_block(chunk, off, class) {
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
        // A forged bump (unaligned or past the end) makes the chunk look full.
        if start % MIN_BLOCK as u64 != 0 || start + size > CHUNK_LEN {
            return None;
        }
        match bump.compare_exchange_weak(cur, start + size, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return Some(start as u32),
            Err(now) => cur = now,
        }
    }
}

/// Takes a block of `class` from `chunk` and claims it (holders 0 -> 1). A popped
/// block that is not free (holders not 0) or of another class means a forged list:
/// it is left alone, never handed out a second time, and the block is carved anew.
fn take_from(chunk: &'static Mapping, class: usize) -> Option<u32> {
    if let Some(off) = pop(chunk, class) {
        let class_ok = chunk.atomic_u32(off as usize + 4).load(Ordering::Relaxed) == class as u32;
        if class_ok && claim(chunk, off, class) {
            return Some(off);
        }
    }
    let off = bump(chunk, (MIN_BLOCK << class) as u64)?;
    // Freshly carved memory is zero; anything else is a forged bump over live blocks.
    claim(chunk, off, class).then_some(off)
}

crate::sys::fork::child_path! {
    /// Drops one hold of this process on a block: the last holder anywhere pushes it
    /// back on its free list. A count already 0 (forged, or a bug) is left alone: the
    /// block may be on a free list already, and pushing it twice would hand it out twice.
    fn release(chunk: &'static Mapping, off: u32, class: usize) {
        // AcqRel: the freeing side must see every write of the other holders before the
        // block is reused.
        let was =
            holders(chunk, off).fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1));
        if was == Ok(1) {
            // The class this process allocated it with, whatever the word says now.
            chunk
                .atomic_u32(off as usize + 4)
                .store(class as u32, Ordering::Relaxed);
            push(chunk, class, off);
        }
    }
}

/// A handle to one shared allocation: an arena block or a large segment.
///
/// Cloning shares the allocation. The shared count (in the block) counts the
/// processes holding it; clones in one process share one local count, and the
/// block returns to its free list when the last process drops its last handle.
#[derive(Debug, Clone)]
pub struct Block {
    place: Place,
}

#[derive(Debug, Clone)]
enum Place {
    Arena(Arc<Held>),
    Large(Arc<Large>),
    /// An object of a directory (`crate::named`): `len` bytes at `off` of a named
    /// segment that this process maps once and never unmaps (so the mapping is
    /// `'static`), given to the object for the segment's whole life. No holder
    /// count: that memory is never reused, so no handle can see it change owner
    /// (no ABA). Its claims live in [`NAMED_CLAIMS`], keyed by its place.
    Named {
        map: &'static Mapping,
        off: usize,
        len: usize,
    },
}

/// This process's mapping of a large segment, shared by its local handles.
#[derive(Debug)]
struct Large {
    seg: Segment,
    /// The claims of the storage in it (made on first use).
    claims: OnceLock<Arc<Claims>>,
    /// What this process uses it for.
    uses: Uses,
}

impl Drop for Large {
    fn drop(&mut self) {
        let mut arena = arena();
        let id = self.seg.id();
        // Only its own entry: an import may have replaced a dying one.
        if arena
            .large
            .get(&id)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), self))
        {
            arena.large.remove(&id);
        }
    }
}

/// The claims of the storages of directory objects in this process, keyed by
/// (mapping address, payload offset). A directory's mapping is never unmapped, so
/// a key names one object for the life of the process; entries whose handles all
/// dropped are pruned when a new one is added. A forked child inherits the map
/// with the `Arc`s its handles hold, so it keeps one claim word per object too.
static NAMED_CLAIMS: Mutex<BTreeMap<(usize, usize), Weak<Claims>>> = Mutex::new(BTreeMap::new());

/// The one `Claims` of the directory object at `off` of `map` in this process.
fn named_claims(map: &'static Mapping, off: usize) -> Arc<Claims> {
    // Poisoned only by a panic between lookup and insert: the map is intact.
    let mut claims = NAMED_CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
    let key = (map.addr(), off);
    if let Some(c) = claims.get(&key).and_then(Weak::upgrade) {
        return c;
    }
    claims.retain(|_, w| w.strong_count() > 0);
    let c = Arc::new(Claims::default());
    claims.insert(key, Arc::downgrade(&c));
    c
}

/// What this process uses an allocation for, so that no import makes a handle
/// whose memory overlaps another kind's in this process (see [`Block::use_as`]).
/// Offsets are into the payload: everything before `prims_end` may be primitives
/// (locks, events, rings: words other handles change atomically at any time),
/// everything from `elems_start` on may be typed elements (handed out as `&mut`
/// under a claim). Changed only under the `ARENA` lock (which a fork holds, so a
/// child never inherits a half-made change); the atomics only make the `Arc`
/// shareable.
#[derive(Debug)]
pub(crate) struct Uses {
    prims_end: AtomicUsize,
    elems_start: AtomicUsize,
    /// How the elements are reached: 0 none yet, [`LOCKED`] or [`RAW`]. Never
    /// both: a Value's guard claims its elements with a plain store under its
    /// lock, which a RawValue's lock-free operations (or a RawArray's copies and
    /// chunks) never take.
    elems_kind: AtomicU8,
}

const LOCKED: u8 = 1;
const RAW: u8 = 2;

impl Uses {
    /// Primitives in the whole payload (what [`Block::alloc`] makes).
    fn primitives() -> Uses {
        Uses {
            prims_end: AtomicUsize::new(usize::MAX),
            elems_start: AtomicUsize::new(usize::MAX),
            elems_kind: AtomicU8::new(0),
        }
    }

    fn none() -> Uses {
        Uses {
            prims_end: AtomicUsize::new(0),
            elems_start: AtomicUsize::new(usize::MAX),
            elems_kind: AtomicU8::new(0),
        }
    }
}

/// One use of an allocation's payload (see [`Uses`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Use {
    /// Primitives in `..end` (`usize::MAX`: the whole payload).
    Primitives { end: usize },
    /// Elements from `start` on, `locked` (a Value's or Array's: reached under
    /// their lock) or not (a RawValue's or RawArray's).
    Elements { start: usize, locked: bool },
}

/// This process's hold on an arena block: one shared count, released when the last
/// local handle drops.
#[derive(Debug)]
struct Held {
    chunk: &'static Mapping,
    off: u32,
    /// The class this process allocated the block with: `Drop` trusts this, not the
    /// shared class word.
    class: u8,
    /// The claims of the storage in the block, if it holds one (made on first use):
    /// one per block per process, so that imported handles share them.
    claims: OnceLock<Arc<Claims>>,
    /// What this process uses it for.
    uses: Uses,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut arena = arena();
        let key = (self.chunk.addr(), self.off);
        // Released only through its own entry. No entry: a child that already
        // released everything before `_exit` (no drop can run after that). Another
        // `Held`'s entry: an import took this one's count over while it was
        // dropping. Either way this never double-releases.
        if arena
            .held
            .get(&key)
            .is_some_and(|e| std::ptr::eq(e.2.as_ptr(), self))
        {
            arena.held.remove(&key);
            release(self.chunk, self.off, self.class as usize);
        }
    }
}

/// A block as written in a token (see `crate::token` for the byte layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum BlockToken {
    /// An arena block.
    Arena {
        /// Index of the chunk's descriptor in the export.
        fd: u32,
        /// The chunk's inode, checked against the descriptor's.
        inode: u64,
        /// The block's offset in the chunk (its header).
        off: u32,
        /// The block's generation when exported.
        generation: u32,
        /// The block's size class.
        class: u8,
    },
    /// A large segment: the descriptor is the segment.
    Large {
        /// Index of the segment's descriptor in the export.
        fd: u32,
        /// The segment's inode.
        inode: u64,
        /// The payload size in its header.
        size: u64,
    },
}

fn bad(what: &'static str, reason: String) -> Error {
    Error::BadToken { what, reason }
}

/// Drops a hold the import added to a block that is not the token's (stale or
/// forged): released with the class its allocator wrote, or, if that word is not
/// a class, only decremented while others still hold it (else the block is lost,
/// never pushed to a wrong list).
fn take_back_import(chunk: &'static Mapping, off: u32) {
    let class = chunk.atomic_u32(off as usize + 4).load(Ordering::Relaxed) as usize;
    if class < CLASSES && is_block(chunk, off, class) {
        release(chunk, off, class);
    } else {
        let _ = holders(chunk, off).fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
            (n > 1).then(|| n - 1)
        });
    }
}

impl Block {
    /// Allocates `size` zeroed bytes of shared memory, 16-byte aligned.
    pub fn alloc(size: usize) -> Result<Block> {
        Block::alloc_for(size, Uses::primitives())
    }

    /// [`alloc`](Self::alloc) for typed elements from payload offset `start` on
    /// (a primitive, the data's lock, may sit before them): see [`Uses`].
    pub(crate) fn alloc_elements(size: usize, start: usize, locked: bool) -> Result<Block> {
        Block::alloc_for(
            size,
            Uses {
                prims_end: AtomicUsize::new(start),
                elems_start: AtomicUsize::new(start),
                elems_kind: AtomicU8::new(if locked { LOCKED } else { RAW }),
            },
        )
    }

    fn alloc_for(size: usize, uses: Uses) -> Result<Block> {
        if size == 0 {
            return Err(Error::ZeroSize {
                what: "shared allocation",
            });
        }
        if size > MAX_SMALL {
            let large = Arc::new(Large {
                seg: Segment::anonymous(Kind::Large, size as u64)?,
                claims: OnceLock::new(),
                uses,
            });
            arena().large.insert(large.seg.id(), Arc::downgrade(&large));
            return Ok(Block {
                place: Place::Large(large),
            });
        }
        let class = class_of(size);
        let mut arena = arena();
        let found = arena
            .chunks
            .iter()
            .rev()
            .find_map(|seg| take_from(seg.map(), class).map(|off| (seg.map(), off)));
        let (chunk, off) = match found {
            Some(found) => found,
            None => {
                let seg: &'static Segment =
                    Box::leak(Box::new(Segment::anonymous(Kind::Arena, CHUNK_PAYLOAD)?));
                arena.chunks.push(seg);
                // Only this process maps the fresh chunk yet: its words are zero.
                let off = take_from(seg.map(), class)
                    .expect("a fresh chunk has room for any small block");
                (seg.map(), off)
            }
        };
        // Claimed (holders 1) and registered under the lock: a fork after this
        // counts the child in.
        let held = Arc::new(Held {
            chunk,
            off,
            class: class as u8,
            claims: OnceLock::new(),
            uses,
        });
        arena.held.insert(
            (chunk.addr(), off),
            (chunk, class as u8, Arc::downgrade(&held)),
        );
        drop(arena);
        let block_len = MIN_BLOCK << class;
        // Zero the payload (a reused block holds its last user's bytes): every
        // object's all-zero state is its valid initial state.
        let zeros = [0u64; (MIN_BLOCK << (CLASSES - 1)) / 8];
        chunk.write_slice::<u64>(
            off as usize + BLOCK_HEADER,
            &zeros[..(block_len - BLOCK_HEADER) / 8],
        );
        Ok(Block {
            place: Place::Arena(held),
        })
    }

    /// The object at `off` of a directory's mapping (`shm::directory`): its
    /// payload starts at `off`; the directory vouches that the bytes are the
    /// object's for the life of the segment.
    pub(crate) fn named(map: &'static Mapping, off: usize, len: usize) -> Block {
        Block {
            place: Place::Named { map, off, len },
        }
    }

    /// The block as a token, for `export`: its descriptor goes into the export's
    /// list (once per file).
    pub(crate) fn token(&self) -> Result<BlockToken> {
        match &self.place {
            Place::Arena(held) => {
                let seg = {
                    let arena = arena();
                    arena
                        .chunks
                        .iter()
                        .copied()
                        .find(|seg| seg.map().addr() == held.chunk.addr())
                        .expect("every chunk a block is in is on the list")
                };
                let (dev, inode) = seg.id();
                Ok(BlockToken::Arena {
                    fd: transfer::add_fd((dev, inode), seg.fd())?,
                    inode,
                    off: held.off,
                    // Stable: this process holds the block, so it is not reallocated.
                    generation: generation(held.chunk, held.off).load(Ordering::Relaxed),
                    class: held.class,
                })
            }
            Place::Large(large) => {
                let (dev, inode) = large.seg.id();
                Ok(BlockToken::Large {
                    fd: transfer::add_fd((dev, inode), large.seg.fd())?,
                    inode,
                    size: large.seg.payload_size(),
                })
            }
            Place::Named { .. } => Err(Error::InvalidArgument(
                "an object of a Directory travels by name: pass the directory's name and the \
                 object's, and open_in there"
                    .into(),
            )),
        }
    }

    /// The block a token names, for `import` (`what`: the object, for errors). See
    /// the module invariants: a chunk already mapped is reused, a block already held
    /// shares its hold, otherwise a hold is added to a live block of the token's
    /// generation only.
    pub(crate) fn from_token(token: &BlockToken, what: &'static str) -> Result<Block> {
        match *token {
            BlockToken::Arena {
                fd,
                inode,
                off,
                generation: gen_at_export,
                class,
            } => {
                let class = class as usize;
                if class >= CLASSES {
                    return Err(bad(
                        what,
                        format!("size class {class} (at most {})", CLASSES - 1),
                    ));
                }
                let fd = transfer::take_fd(fd, what)?;
                let id = transfer::file_id(&fd)
                    .map_err(|e| Error::io("fstat on a received descriptor", e))?;
                if id.1 != inode {
                    return Err(bad(
                        what,
                        format!("the descriptor is inode {}, the token names {inode}", id.1),
                    ));
                }
                let mut arena = arena();
                let chunk = match arena.chunks.iter().find(|seg| seg.id() == id) {
                    Some(seg) => seg.map(),
                    None => {
                        let seg = Segment::from_fd(fd, Kind::Arena, Some(CHUNK_PAYLOAD))?;
                        if seg.map().len() < CHUNK_LEN as usize {
                            return Err(bad(what, "the chunk's file is short".to_string()));
                        }
                        let seg: &'static Segment = Box::leak(Box::new(seg));
                        arena.chunks.push(seg);
                        seg.map()
                    }
                };
                if !is_block(chunk, off, class) {
                    return Err(bad(
                        what,
                        format!("offset {off} is not a block of class {class} in its chunk"),
                    ));
                }
                let key = (chunk.addr(), off);
                let stale = || Error::StaleToken { what };
                let mut replace = false;
                if let Some((_, my_class, weak)) = arena.held.get(&key) {
                    // This process holds the block: its allocation is current, and
                    // its generation stable while the lock is held.
                    if generation(chunk, off).load(Ordering::Relaxed) != gen_at_export {
                        return Err(stale());
                    }
                    if *my_class as usize != class {
                        return Err(bad(what, format!("class {class}, the block is {my_class}")));
                    }
                    if let Some(held) = weak.upgrade() {
                        return Ok(Block {
                            place: Place::Arena(held),
                        });
                    }
                    // Its last handle is dropping (waiting for this lock): take its
                    // count over (it will find the entry is not its own).
                    replace = true;
                }
                if !replace {
                    let added = holders(chunk, off).fetch_update(
                        Ordering::Acquire,
                        Ordering::Relaxed,
                        |n| (n > 0 && n < MAX_HOLDERS).then_some(n + 1),
                    );
                    match added {
                        Err(0) => return Err(stale()),
                        Err(_) => return Err(Error::HoldersOverflow { max: MAX_HOLDERS }),
                        Ok(_) => {}
                    }
                    let now = generation(chunk, off).load(Ordering::Relaxed);
                    let word = chunk.atomic_u32(off as usize + 4).load(Ordering::Relaxed);
                    if now != gen_at_export || word as usize != class {
                        take_back_import(chunk, off);
                        return Err(if now != gen_at_export {
                            stale()
                        } else {
                            bad(what, format!("class {class}, the block is {word}"))
                        });
                    }
                }
                let held = Arc::new(Held {
                    chunk,
                    off,
                    class: class as u8,
                    claims: OnceLock::new(),
                    uses: Uses::none(),
                });
                arena
                    .held
                    .insert(key, (chunk, class as u8, Arc::downgrade(&held)));
                Ok(Block {
                    place: Place::Arena(held),
                })
            }
            BlockToken::Large { fd, inode, size } => {
                let fd = transfer::take_fd(fd, what)?;
                let id = transfer::file_id(&fd)
                    .map_err(|e| Error::io("fstat on a received descriptor", e))?;
                if id.1 != inode {
                    return Err(bad(
                        what,
                        format!("the descriptor is inode {}, the token names {inode}", id.1),
                    ));
                }
                let mut arena = arena();
                if let Some(large) = arena.large.get(&id).and_then(Weak::upgrade) {
                    if large.seg.payload_size() != size {
                        return Err(bad(
                            what,
                            format!("size {size}, the segment's is {}", large.seg.payload_size()),
                        ));
                    }
                    return Ok(Block {
                        place: Place::Large(large),
                    });
                }
                let large = Arc::new(Large {
                    seg: Segment::from_fd(fd, Kind::Large, Some(size))?,
                    claims: OnceLock::new(),
                    uses: Uses::none(),
                });
                arena.large.insert(id, Arc::downgrade(&large));
                Ok(Block {
                    place: Place::Large(large),
                })
            }
        }
    }

    /// Payload bytes of the allocation (what follows [`offset`](Self::offset)).
    pub(crate) fn len(&self) -> usize {
        match &self.place {
            Place::Arena(held) => (MIN_BLOCK << held.class) - BLOCK_HEADER,
            Place::Large(large) => large.seg.payload_size() as usize,
            Place::Named { len, .. } => *len,
        }
    }

    /// This process's claims on the storage in the allocation: one per allocation
    /// per process, shared by every handle to it here, imported ones included.
    pub(crate) fn claims(&self) -> Arc<Claims> {
        let cell = match &self.place {
            Place::Arena(held) => &held.claims,
            Place::Large(large) => &large.claims,
            Place::Named { map, off, .. } => return named_claims(map, *off),
        };
        Arc::clone(cell.get_or_init(Arc::default))
    }

    /// Records that this process uses the payload as `u`, or
    /// [`Error::BadToken`] if that overlaps another use here: elements never
    /// overlap primitives (for `what`, an import, whose token is bytes anyone may
    /// have edited: a Value token moved onto its own lock, a Lock token placed on
    /// an Array's elements, a RawArray token naming a queue's ring would each
    /// give a `&mut` over words that other handles change atomically). Every
    /// import of a block calls it (`Storage::from_token`, `token::At::import`,
    /// `Ring::from_token`); allocations record their use when made. Directory
    /// objects never come from a token (the directory lays them out): always
    /// `Ok`.
    pub(crate) fn use_as(&self, u: Use, what: &'static str) -> Result<()> {
        let uses = match &self.place {
            Place::Arena(held) => &held.uses,
            Place::Large(large) => &large.uses,
            Place::Named { .. } => return Ok(()),
        };
        // The lock makes the check and the record one step for every import.
        let _arena = arena();
        let (prims_end, elems_start) = (
            uses.prims_end.load(Ordering::Relaxed),
            uses.elems_start.load(Ordering::Relaxed),
        );
        let kind = uses.elems_kind.load(Ordering::Relaxed);
        let (prims_end, elems_start, new_kind) = match u {
            Use::Primitives { end } => (prims_end.max(end), elems_start, kind),
            Use::Elements { start, locked } => (
                prims_end,
                elems_start.min(start),
                if locked { LOCKED } else { RAW },
            ),
        };
        if prims_end > elems_start || (kind != 0 && kind != new_kind) {
            return Err(bad(
                what,
                format!(
                    "{u:?} overlaps this process's other use of the block (primitives \
                     before {}, elements from {}, {})",
                    uses.prims_end.load(Ordering::Relaxed),
                    uses.elems_start.load(Ordering::Relaxed),
                    match kind {
                        LOCKED => "locked elements",
                        RAW => "raw elements",
                        _ => "no elements",
                    }
                ),
            ));
        }
        uses.prims_end.store(prims_end, Ordering::Relaxed);
        uses.elems_start.store(elems_start, Ordering::Relaxed);
        uses.elems_kind.store(new_kind, Ordering::Relaxed);
        Ok(())
    }

    /// The mapping the allocation lives in.
    #[inline]
    pub fn map(&self) -> &Mapping {
        match &self.place {
            Place::Arena(held) => held.chunk,
            Place::Large(large) => large.seg.map(),
            Place::Named { map, .. } => map,
        }
    }

    /// The mapping, when it lives as long as the process (arena blocks).
    ///
    /// An arena block's mapping outlives the handle, so a `'static` view (what
    /// [`RawLock::at`](crate::sync::raw_lock::RawLock::at) takes) can be kept:
    #[inline]
    pub fn static_map(&self) -> Option<&'static Mapping> {
        match &self.place {
            Place::Arena(held) => Some(held.chunk),
            Place::Large(_) => None,
            Place::Named { map, .. } => Some(map),
        }
    }

    /// The mapping of a block known to be small ([`MAX_SMALL`] bytes or fewer), which
    /// the arena always serves: the primitives take their `&'static` words from it.
    pub(crate) fn arena_map(&self) -> &'static Mapping {
        self.static_map()
            .expect("blocks of at most MAX_SMALL bytes live in the arena")
    }

    /// Offset of the payload within [`Block::map`].
    #[inline]
    pub fn offset(&self) -> usize {
        match &self.place {
            Place::Arena(held) => held.off as usize + BLOCK_HEADER,
            Place::Large(_) => HEADER_SIZE,
            Place::Named { off, .. } => *off,
        }
    }

    #[cfg(test)]
    /// Processes holding the block (arena blocks; 1 for large segments, which are
    /// per-process mappings). Clones in one process count once; a child started
    /// with [`Process`](crate::Process) adds one while it runs.
    pub fn refcount(&self) -> u32 {
        match &self.place {
            Place::Arena(held) => holders(held.chunk, held.off).load(Ordering::Relaxed),
            Place::Large(_) | Place::Named { .. } => 1,
        }
    }
}

#[cfg(test)]
/// Number of arena chunks (mappings) this process holds.
///
/// Chunks are never unmapped, and small blocks share them:
pub fn chunk_count() -> usize {
    arena().chunks.len()
}

/// The arena locked for a fork (see the module's invariants): while it lives no
/// other thread allocates or drops an arena block, so the registry is exact.
pub(crate) struct ForkGuard {
    arena: MutexGuard<'static, Arena>,
    /// Whether [`add_child_holds`](Self::add_child_holds) succeeded and has not
    /// been taken back.
    added: bool,
}

/// Locks the arena for a fork. Take it after `stdout` and `stderr`, before
/// `sys::inherit`'s registry and `process::registry::REGISTRY` (the lock order in
/// the module docs).
pub(crate) fn lock_for_fork() -> ForkGuard {
    ForkGuard {
        arena: arena(),
        added: false,
    }
}

impl ForkGuard {
    /// Adds the child-to-be's hold to every block this process holds. Refuses
    /// ([`Error::HoldersOverflow`]) if one would pass [`MAX_HOLDERS`], taking back
    /// the holds already added.
    pub(crate) fn add_child_holds(&mut self) -> Result<()> {
        for (done, (&(_, off), &(chunk, _, _))) in self.arena.held.iter().enumerate() {
            let added =
                holders(chunk, off).fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < MAX_HOLDERS).then_some(n + 1)
                });
            if added.is_err() {
                self.take_back(done);
                return Err(Error::HoldersOverflow { max: MAX_HOLDERS });
            }
        }
        self.added = true;
        Ok(())
    }

    /// The fork failed: takes back the holds [`add_child_holds`](Self::add_child_holds)
    /// added (this process still holds each block, so none reaches 0).
    pub(crate) fn fork_failed(&mut self) {
        if std::mem::take(&mut self.added) {
            self.take_back(usize::MAX);
        }
    }

    fn take_back(&self, count: usize) {
        for (&(_, off), &(chunk, _, _)) in self.arena.held.iter().take(count) {
            let _ = holders(chunk, off)
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
}

crate::sys::fork::child_path! {
    /// Releases every hold of this process, for a child about to `_exit`: its handles
    /// will never drop. Only when the process has a single thread (`alone` says
    /// whether the caller's thread is the only one): a thread still running could use
    /// a released block after another process reused it, so a multi-threaded child
    /// keeps its holds (leaks them until the chunk dies). Returns how many holds were
    /// released.
    pub(crate) fn release_all_before_exit(alone: impl FnOnce() -> bool) -> usize {
        // Nothing held: no need to ask about threads.
        if arena().held.is_empty() || !alone() {
            return 0;
        }
        let mut arena = arena();
        let held = std::mem::take(&mut arena.held);
        let n = held.len();
        for (&(_, off), &(chunk, class, _)) in held.iter() {
            release(chunk, off, class as usize);
        }
        // The process exits next: freeing the map's nodes would only make the kernel
        // copy every heap page they sit on (copy-on-write after the fork) to no end.
        std::mem::forget(held);
        n
    }
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
        assert_eq!(c.refcount(), 1, "clones in one process count once");
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

    use std::time::Duration;

    use crate::{Event, Process};

    const BOUND: Duration = Duration::from_secs(30);

    /// The block's offset in its chunk (its header).
    fn off(b: &Block) -> u32 {
        (b.offset() - BLOCK_HEADER) as u32
    }

    fn join_ok(mut p: Process) {
        let code = p.join(Some(BOUND)).unwrap();
        if code.is_none() {
            let _ = p.kill();
            let _ = p.join(Some(BOUND));
        }
        assert_eq!(code, Some(0));
    }

    #[test]
    fn a_child_holds_its_blocks_while_it_runs_and_releases_them_at_exit() {
        let block = Block::alloc(8).unwrap();
        let (go, running) = (Event::new().unwrap(), Event::new().unwrap());
        let (g, r, b) = (go.clone(), running.clone(), block.clone());
        let mut child = Process::new(move || {
            r.set();
            assert!(g.wait(Some(BOUND)).unwrap());
            b.map().write::<u64>(b.offset(), 5);
        });
        child.start().unwrap();
        // The parent's copy of `b` was dropped by start; two processes hold it.
        assert!(running.wait(Some(BOUND)).unwrap());
        assert_eq!(block.refcount(), 2);
        go.set();
        join_ok(child);
        assert_eq!(block.refcount(), 1, "the child released its hold at exit");
        assert_eq!(block.map().read::<u64>(block.offset()), 5);
        // Freed by the last holder: the next block of its class reuses it.
        let at = off(&block);
        drop(block);
        assert_eq!(off(&Block::alloc(8).unwrap()), at);
    }

    #[test]
    fn a_child_with_threads_still_running_keeps_its_holds() {
        let block = Block::alloc(8).unwrap();
        let b = block.clone();
        let mut child = Process::new(move || {
            // A thread that outlives the closure: it could still use `b`.
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            std::thread::spawn(move || {
                let _keep = b;
                let _ = rx.recv();
            });
            std::mem::forget(tx);
        });
        child.start().unwrap();
        join_ok(child);
        assert_eq!(block.refcount(), 2, "a multi-threaded child's hold is kept");
    }

    #[test]
    fn forgotten_clones_never_touch_the_shared_count() {
        let block = Block::alloc(8).unwrap();
        for _ in 0..10_000 {
            std::mem::forget(block.clone());
        }
        assert_eq!(block.refcount(), 1);
    }

    #[test]
    fn a_fork_that_would_pass_max_holders_is_refused_and_counts_stay() {
        let others: Vec<Block> = (0..10).map(|_| Block::alloc(8).unwrap()).collect();
        let full = Block::alloc(8).unwrap();
        let more: Vec<Block> = (0..10).map(|_| Block::alloc(8).unwrap()).collect();
        holders(full.arena_map(), off(&full)).store(MAX_HOLDERS, Ordering::Relaxed);
        let mut p = Process::new(|| {});
        assert!(matches!(
            p.start(),
            Err(Error::HoldersOverflow { max: MAX_HOLDERS })
        ));
        assert_eq!(p.pid(), None, "nothing was forked");
        assert_eq!(
            full.refcount(),
            MAX_HOLDERS,
            "the count did not wrap or grow"
        );
        assert!(
            others.iter().chain(&more).all(|b| b.refcount() == 1),
            "the holds added before the refusal were taken back"
        );
        // Below the bound again: the same process starts.
        holders(full.arena_map(), off(&full)).store(1, Ordering::Relaxed);
        p.start().unwrap();
        join_ok(p);
        assert_eq!(full.refcount(), 1);
    }

    #[test]
    fn a_forged_class_word_never_panics_in_drop_and_frees_to_the_real_class() {
        let a = Block::alloc(8).unwrap();
        let (chunk, at) = (a.arena_map(), off(&a));
        chunk
            .atomic_u32(at as usize + 4)
            .store(u32::MAX, Ordering::Relaxed);
        drop(a); // would index a free-list head far outside the chunk
        let b = Block::alloc(8).unwrap();
        assert_eq!(off(&b), at, "freed to the class it was allocated with");
    }

    #[test]
    fn a_forged_free_list_head_outside_the_chunk_is_treated_as_empty() {
        let a = Block::alloc(8).unwrap();
        let (chunk, class) = (a.arena_map(), class_of(8));
        for forged in [
            u32::MAX - 7,
            (CHUNK_LEN - 16) as u32,
            100,
            FIRST_BLOCK as u32 + 8,
        ] {
            head(chunk, class).store((7 << 32) | forged as u64, Ordering::Relaxed);
            let b = Block::alloc(8).unwrap(); // no panic: carved anew
            assert_ne!(off(&b), forged);
            assert_eq!(b.offset() % 16, 0);
            assert!(b.offset() != a.offset());
        }
    }

    #[test]
    fn a_forged_free_list_never_hands_out_a_live_block() {
        let live = Block::alloc(8).unwrap();
        let freed = Block::alloc(8).unwrap();
        let (chunk, class) = (live.arena_map(), class_of(8));
        let freed_at = off(&freed);
        drop(freed);
        // The free block's next names the live block.
        chunk
            .atomic_u32(freed_at as usize + 8)
            .store(off(&live), Ordering::Relaxed);
        let first = Block::alloc(8).unwrap();
        assert_eq!(off(&first), freed_at);
        let second = Block::alloc(8).unwrap();
        assert_ne!(
            off(&second),
            off(&live),
            "a live block was handed out twice"
        );
        // And a head naming the live block directly.
        head(chunk, class).store((9 << 32) | off(&live) as u64, Ordering::Relaxed);
        let third = Block::alloc(8).unwrap();
        assert_ne!(off(&third), off(&live), "a live block was handed out twice");
        assert_eq!(live.refcount(), 1);
    }

    #[test]
    fn a_forged_bump_makes_the_chunk_look_full() {
        let a = Block::alloc(8).unwrap();
        let chunk = a.arena_map();
        for forged in [FIRST_BLOCK + 8, CHUNK_LEN + 4096, u64::MAX - 3] {
            chunk.atomic_u64(BUMP).store(forged, Ordering::Relaxed);
            let b = Block::alloc(8).unwrap(); // no panic, no misaligned block
            assert_eq!(b.offset() % 16, 0);
        }
    }
}

/// The examples that documented these crate-private items, kept as tests.
#[cfg(test)]
mod examples {

    #[test]
    fn max_small_1() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::arena::{Block, MAX_SMALL};
        assert!(Block::alloc(MAX_SMALL)?.static_map().is_some()); // an arena block
        assert!(Block::alloc(MAX_SMALL + 1)?.static_map().is_none()); // a segment of its own
        Ok(())
    }

    #[test]
    fn block_2() -> Result<(), Box<dyn std::error::Error>> {
        use crate::Process;
        use crate::shm::arena::Block;
        use std::time::Duration;
        let block = Block::alloc(8)?;
        let handle = block.clone();
        assert_eq!(block.refcount(), 1); // one process holds it, through two handles
        // The child holds it too while it runs; the parent drops `handle` after start.
        let mut child = Process::new(move || handle.map().write::<u64>(handle.offset(), 42));
        child.start()?;
        assert_eq!(child.join(Some(Duration::from_secs(10)))?, Some(0));
        assert_eq!(block.map().read::<u64>(block.offset()), 42);
        assert_eq!(block.refcount(), 1); // the child released its hold when done
        Ok(())
    }

    #[test]
    fn alloc_3() -> Result<(), Box<dyn std::error::Error>> {
        use crate::Error;
        use crate::shm::arena::Block;
        let block = Block::alloc(24)?;
        assert_eq!(block.offset() % 16, 0);
        let mut bytes = [0xffu8; 24];
        block.map().read_slice(block.offset(), &mut bytes);
        assert_eq!(bytes, [0; 24]);
        assert!(matches!(Block::alloc(0), Err(Error::ZeroSize { .. })));
        Ok(())
    }

    #[test]
    fn map_4() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::arena::Block;
        let block = Block::alloc(4)?;
        let map = block.map();
        assert!(block.offset() + 4 <= map.len());
        map.write::<u32>(block.offset(), 7);
        assert_eq!(block.clone().map().read::<u32>(block.offset()), 7);
        Ok(())
    }

    #[test]
    fn static_map_5() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::arena::{Block, MAX_SMALL};
        use std::sync::atomic::{AtomicU32, Ordering};
        let block = Block::alloc(16)?;
        let word: &'static AtomicU32 = block.static_map().unwrap().atomic_u32(block.offset());
        word.store(5, Ordering::Relaxed);
        assert_eq!(block.map().read::<u32>(block.offset()), 5);
        // A large allocation is unmapped with its last handle: no 'static view.
        assert!(Block::alloc(MAX_SMALL + 1)?.static_map().is_none());
        Ok(())
    }

    #[test]
    fn offset_6() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::arena::{Block, MAX_SMALL};
        let small = Block::alloc(16)?;
        let large = Block::alloc(MAX_SMALL + 1)?;
        for block in [&small, &large] {
            assert_eq!(block.offset() % 16, 0);
            assert!(block.offset() + 16 <= block.map().len());
        }
        // Live blocks never overlap.
        let other = Block::alloc(16)?;
        other.map().write_slice(other.offset(), &[u64::MAX; 2]);
        let mut mine = [1u64; 2];
        small.map().read_slice(small.offset(), &mut mine);
        assert_eq!(mine, [0, 0]);
        Ok(())
    }

    #[test]
    fn refcount_7() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::arena::Block;
        let block = Block::alloc(8)?;
        assert_eq!(block.refcount(), 1);
        let copy = block.clone();
        assert_eq!(block.refcount(), 1); // the same process
        std::mem::forget(copy); // leaks a local count only
        assert_eq!(block.refcount(), 1);
        Ok(())
    }

    #[test]
    fn chunk_count_8() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::arena::{Block, chunk_count};
        let before = chunk_count();
        let blocks = (0..1000)
            .map(|_| Block::alloc(16))
            .collect::<Result<Vec<_>, _>>()?;
        assert!(chunk_count() >= 1);
        assert!(chunk_count() <= before + 1); // 1000 blocks, at most one new mapping
        drop(blocks);
        assert!(chunk_count() >= before.max(1));
        Ok(())
    }
}
