//! Typed elements in shared memory, and the claims that make every `&mut` to them
//! unique within a process.
//!
//! This is the one place where the shared-data types (`Value`, `Array` and their
//! raw twins, in `crate::data`) get references into shared memory, so the whole
//! soundness argument for them is here.
//!
//! ## The problem
//! A `Value` or `Array` handle is `Clone`, may be shared between threads, and its
//! lock is an ordinary lock that other code can also reach (`get_lock()`, a lock
//! shared by `with_lock`, a Condition over it). A lock therefore cannot by itself
//! prove that a `&mut [T]` is the only reference in this process: the holder may
//! release it under a live guard, a second guard may be asked for in the same
//! thread (the lock is recursive, as CPython's), and lock-free chunks do not take
//! the lock at all.
//!
//! ## The design: a claim word per storage per process
//! Every handle to one storage in one process shares one process-local [`Claims`]
//! word (an `Arc`, so clones share it; a forked child inherits a copy that counts
//! the handles of the child's own memory image). Every access to the elements
//! first takes a claim, and the claims exclude each other:
//!
//! ```text
//! 0                     idle: nothing in this process touches the elements
//! 1 .. CHUNKED - 1      k copies in progress (get / set / to_vec / write_all):
//!                       element-wise atomic copies, which may overlap each other
//! EXCLUSIVE (usize::MAX) one live Exclusive: the only `&mut [T]` of the whole
//!                       storage (a Value or Array guard)
//! ```
//! Transitions are compare-exchanges: a copy `k -> k + 1` only from
//! `k < CHUNKED - 1`, an Exclusive `0 -> EXCLUSIVE` (under the data's lock, which also orders copies and
//! splits of locked storages); each ends by undoing its own
//! step. A request that finds the word in a state it excludes fails at once with
//! [`Error::InUse`]: it never waits, so a second guard in one thread is an error,
//! not a deadlock.
//!
//! CHUNKED | n (n >= 1) is the state while n parts of the one live split are alive
//! in this process: a split moves the word `0 -> CHUNKED | n` (for an Array, under
//! its lock), each part's drop takes one off, and the last returns it to 0. Parts
//! travel into forked children: `Process::start` drops the parent's copy of the
//! target, so the parent's word counts only the parts it still holds, and a child
//! inherits a word that counts the parts of its own memory image (it drops only the
//! one it uses, so it stays split there: conservative, never an overlap).
//!
//! Hence, within a process: a `&mut [T]` of the whole storage exists only while the
//! word is EXCLUSIVE, which one holder at a time can make it; a part's `&mut` covers only its own range, disjoint from every other part of
//! the same split (no other split can happen while parts live); and no copy reads
//! or writes the elements while either kind of `&mut` lives. That is the invariant
//! every `unsafe` block below relies on.
//!
//! ## What it does not cover: other processes
//! Claims are per process, because a reference is: other processes do not hold
//! references into this process's memory model. A Value or Array guard also holds
//! the lock, which excludes every other process's guards and locked copies. What
//! other processes do *without* that lock (a RawArray `set`, a chunk written there
//! while this process reads) touches the memory only through atomic word copies,
//! so it is not undefined behaviour in this process; it can make a reader see a
//! mix of old and new elements, as in C.
//!
//! Handles made later from a token (a process that did not inherit its handles,
//! or this one importing its own export) find the existing `Claims` of that
//! storage in the process: the claims live with the process's one hold on the
//! allocation (`Block::claims`: an arena block's `Held`, a large segment's
//! mapping), and an import of an allocation this process already holds shares
//! that hold (`arena`'s registry of `Weak` holds, and of large segments by
//! inode). So a guard on the original and one on an imported handle in one
//! thread exclude each other exactly as two clones' do. (One storage per
//! allocation: `Storage::alloc` always allocates its own.) A directory's object
//! (`Value::open_in` and friends, `crate::named`) has no hold: its claims live in
//! a registry keyed by its place, which every handle opened by name shares.
//!
//! A token is bytes that safe code may edit, so an import must also not place
//! elements where this process uses the allocation otherwise: over a lock's or
//! a ring's words (which other handles change atomically without any claim), or
//! as raw elements (RawValue atomics, which take no claim) where a Value's are,
//! and back. `Block::use_as` records each allocation's uses in this process and
//! refuses an overlapping one (`tests/forged_tokens.rs`).

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytemuck::Pod;

use super::arena::{Block, MAX_SMALL, Use};
use crate::error::{Error, Result};
use crate::sys::mem::Mapping;

const EXCLUSIVE: usize = usize::MAX;
const CHUNKED: usize = 1 << (usize::BITS - 2);

/// The process-local claim word of one storage (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Claims(AtomicUsize);

fn in_use(what: &'static str, state: usize) -> Error {
    let (by, hint) = if state == EXCLUSIVE {
        (
            "a live guard",
            "drop the guard first, or read and write through it",
        )
    } else if state >= CHUNKED {
        (
            "live chunks",
            "drop (or join the processes that took) the chunks first",
        )
    } else {
        (
            "copies in progress in other threads",
            "retry after they finish",
        )
    };
    Error::InUse { what, by, hint }
}

impl Claims {
    fn copy(&self, what: &'static str) -> Result<CopyClaim<'_>> {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            if cur >= CHUNKED - 1 {
                return Err(in_use(what, cur));
            }
            match self
                .0
                .compare_exchange_weak(cur, cur + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Ok(CopyClaim(self)),
                Err(now) => cur = now,
            }
        }
    }

    fn drop_part(&self) {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            debug_assert!(cur > CHUNKED && cur != EXCLUSIVE);
            let next = if cur == CHUNKED | 1 { 0 } else { cur - 1 };
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    fn take(&self, to: usize, what: &'static str) -> Result<()> {
        self.0
            .compare_exchange(0, to, Ordering::Acquire, Ordering::Relaxed)
            .map(drop)
            .map_err(|now| in_use(what, now))
    }
}

/// A copy in progress: holds one count of the claim word.
struct CopyClaim<'a>(&'a Claims);

impl Drop for CopyClaim<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Release);
    }
}

/// A storage in a token (see `crate::token`).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct ElementsToken {
    block: crate::shm::arena::BlockToken,
    at: u64,
    len: u64,
    size: u32,
    align: u32,
    fingerprint: u64,
}

/// `len` elements of `T` in shared memory: the block, where the first one is, and
/// this process's claims on them.
#[derive(Debug)]
pub(crate) struct Storage<T> {
    block: Block,
    offset: usize,
    len: usize,
    claims: Arc<Claims>,
    _t: PhantomData<T>,
}

impl<T> Clone for Storage<T> {
    fn clone(&self) -> Self {
        Storage {
            block: self.block.clone(),
            offset: self.offset,
            len: self.len,
            claims: Arc::clone(&self.claims),
            _t: PhantomData,
        }
    }
}

impl<T: Pod> Storage<T> {
    /// Zeroed storage for `len` elements. When `head` bytes (16-aligned) fit before
    /// the elements in one arena block, they are reserved there and their offset in
    /// [`block`](Self::block) is returned, so that a lock sits in the cache line of
    /// small data; otherwise the elements get an allocation of their own and `None`
    /// says the head was not reserved.
    ///
    /// `locked`: the elements are a Value's or Array's (reached under their lock),
    /// not a RawValue's or RawArray's; an import of the other kind is refused
    /// (`Block::use_as`).
    pub(crate) fn alloc(
        len: usize,
        head: usize,
        locked: bool,
    ) -> Result<(Storage<T>, Option<usize>)> {
        let size = std::mem::size_of::<T>();
        if size == 0 {
            return Err(Error::InvalidArgument(
                "element types of size zero cannot be shared".into(),
            ));
        }
        if std::mem::align_of::<T>() > 16 {
            return Err(Error::InvalidArgument(format!(
                "element alignment {} is over 16 bytes; shared elements must be at most 16-aligned",
                std::mem::align_of::<T>()
            )));
        }
        debug_assert_eq!(head % 16, 0);
        let max = (super::segment::MAX_PAYLOAD as usize) / size;
        let bytes = len
            .checked_mul(size)
            .filter(|_| len <= max)
            .ok_or(Error::SizeOverflow {
                what: "shared array length",
                requested: len as u128,
                max: max as u128,
            })?;
        let (block, offset, head_at) = if head > 0 && head + bytes <= MAX_SMALL {
            let block = Block::alloc_elements(head + bytes, head, locked)?;
            let base = block.offset();
            (block, base + head, Some(base))
        } else {
            let block = Block::alloc_elements(bytes.max(1), 0, locked)?;
            let base = block.offset();
            (block, base, None)
        };
        let storage = Storage {
            claims: block.claims(),
            block,
            offset,
            len,
            _t: PhantomData,
        };
        Ok((storage, head_at))
    }

    /// The storage of `len` elements at `offset` of a directory object's `block`
    /// (opened or created by name), with this process's one `Claims` word for
    /// that object: every handle to those elements in this process shares it,
    /// however many times the name is opened (`Block::claims`).
    pub(crate) fn named(block: Block, offset: usize, len: usize) -> Storage<T> {
        Storage {
            claims: block.claims(),
            block,
            offset,
            len,
            _t: PhantomData,
        }
    }

    /// The storage as a token (the `Elements` of `crate::token`'s format).
    pub(crate) fn token(&self) -> Result<ElementsToken> {
        Ok(ElementsToken {
            block: self.block.token()?,
            at: (self.offset - self.block.offset()) as u64,
            len: self.len as u64,
            size: std::mem::size_of::<T>() as u32,
            align: std::mem::align_of::<T>() as u32,
            fingerprint: crate::token::fingerprint::<T>(),
        })
    }

    /// The storage a token names, its element type and range checked. It shares
    /// the claims of every other handle to it in this process (they live with the
    /// block's hold, which an import shares: see `arena`).
    /// `locked` as for [`alloc`](Self::alloc).
    pub(crate) fn from_token(
        t: &ElementsToken,
        locked: bool,
        what: &'static str,
    ) -> Result<Storage<T>> {
        let (size, align) = (std::mem::size_of::<T>(), std::mem::align_of::<T>());
        if (t.size as usize, t.align as usize, t.fingerprint)
            != (size, align, crate::token::fingerprint::<T>())
        {
            return Err(Error::TokenKind {
                expected: std::any::type_name::<T>(),
                found: format!(
                    "elements of another type ({} bytes, alignment {}, fingerprint {:#x})",
                    t.size, t.align, t.fingerprint
                ),
            });
        }
        let block = Block::from_token(&t.block, what)?;
        let bad = |reason: String| Error::BadToken { what, reason };
        let at = usize::try_from(t.at).map_err(|_| bad(format!("offset {}", t.at)))?;
        let len = usize::try_from(t.len).map_err(|_| bad(format!("length {}", t.len)))?;
        let end = len
            .checked_mul(size)
            .and_then(|b| b.checked_add(at))
            .filter(|&end| end <= block.len());
        if end.is_none() || (block.offset() + at) % align != 0 {
            return Err(bad(format!(
                "{len} elements of {size} bytes at {at} of a {}-byte block",
                block.len()
            )));
        }
        // Elements never overlap a primitive this process uses in the block (the
        // Value's or Array's own lock included): see `Block::use_as`.
        block.use_as(Use::Elements { start: at, locked }, what)?;
        Ok(Storage {
            claims: block.claims(),
            offset: block.offset() + at,
            block,
            len,
            _t: PhantomData,
        })
    }

    /// The allocation the elements (and a reserved head) live in.
    pub(crate) fn block(&self) -> &Block {
        &self.block
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn check(&self, index: usize) -> Result<usize> {
        if index < self.len {
            Ok(self.offset + index * std::mem::size_of::<T>())
        } else {
            Err(Error::IndexOutOfRange {
                index,
                len: self.len,
            })
        }
    }

    /// A copy of element `index`; `what` names the type for errors.
    pub(crate) fn get(&self, index: usize, what: &'static str) -> Result<T> {
        let at = self.check(index)?;
        let _claim = self.claims.copy(what)?;
        Ok(self.block.map().read(at))
    }

    /// Replaces element `index`.
    pub(crate) fn set(&self, index: usize, value: T, what: &'static str) -> Result<()> {
        let at = self.check(index)?;
        let _claim = self.claims.copy(what)?;
        self.block.map().write(at, value);
        Ok(())
    }

    /// A copy of all elements.
    pub(crate) fn to_vec(&self, what: &'static str) -> Result<Vec<T>> {
        let _claim = self.claims.copy(what)?;
        let mut v = vec![T::zeroed(); self.len];
        self.block.map().read_slice(self.offset, &mut v);
        Ok(v)
    }

    /// Copies `values` into the first elements (at most `len`).
    pub(crate) fn write_all(&self, values: &[T], what: &'static str) -> Result<()> {
        let _claim = self.claims.copy(what)?;
        self.block
            .map()
            .write_slice(self.offset, &values[..self.len.min(values.len())]);
        Ok(())
    }

    /// The mapping and offset of the first element, for lock-free atomic operations
    /// (which never form references to the elements, so need no claim).
    #[inline]
    pub(crate) fn atomic_place(&self) -> (&Mapping, usize) {
        (self.block.map(), self.offset)
    }

    /// The only `&mut [T]` to all elements in this process until it is dropped;
    /// [`Error::InUse`] if anything else in this process uses them now.
    ///
    /// Called by a Value's or Array's guard, holding their lock. A
    /// compare-exchange, not a load and a store: the lock does not order every
    /// change of the word (a handle imported from an edited token may pair these
    /// elements with another lock; a load-then-store under two different locks
    /// could give two Exclusives).
    #[inline]
    pub(crate) fn exclusive_locked(&self, what: &'static str) -> Result<Exclusive<'_, T>> {
        self.claims.take(EXCLUSIVE, what)?;
        // SAFETY: the claim word went 0 -> EXCLUSIVE in one compare-exchange (no
        // part, copy or Exclusive alive), and only this Exclusive's drop takes it
        // back: while it lives, no other Exclusive, split or copy starts in this
        // process (module docs), so this is the only reference to the elements
        // here. `Mapping::slice_mut` checks bounds and alignment; the block (and
        // its mapping) outlives `'_` through `&self`.
        let slice = unsafe { self.block.map().slice_mut(self.offset, self.len) };
        Ok(Exclusive {
            slice,
            claims: &self.claims,
        })
    }

    /// Splits the elements into `parts` disjoint parts, sizes differing by at most
    /// one, the larger first.
    pub(crate) fn split(&self, parts: usize, what: &'static str) -> Result<Vec<Part<T>>> {
        if parts == 0 {
            return Err(Error::ZeroSize {
                what: "number of chunks",
            });
        }
        if parts >= CHUNKED - 1 {
            return Err(Error::SizeOverflow {
                what: "number of chunks",
                requested: parts as u128,
                max: (CHUNKED - 2) as u128,
            });
        }
        self.claims.take(CHUNKED | parts, what)?;
        let (base, extra) = (self.len / parts, self.len % parts);
        let mut start = 0;
        Ok((0..parts)
            .map(|i| {
                // The first `len % parts` parts take one element more: every element
                // is in exactly one part.
                let len = base + usize::from(i < extra);
                let part = Part {
                    storage: self.clone(),
                    start,
                    len,
                };
                start += len;
                part
            })
            .collect())
    }
}

/// The exclusive `&mut [T]` of a whole storage (see [`Storage::exclusive`]).
pub(crate) struct Exclusive<'a, T> {
    slice: &'a mut [T],
    claims: &'a Claims,
}

impl<T> Deref for Exclusive<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.slice
    }
}

impl<T> DerefMut for Exclusive<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.slice
    }
}

impl<T> Drop for Exclusive<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // The slice is not used after this: `self` is being dropped.
        self.claims.0.store(0, Ordering::Release);
    }
}

/// One part of a split: a disjoint range, with `&mut` access through `&mut self`.
/// Not `Clone`: each range has one owner.
#[derive(Debug)]
pub(crate) struct Part<T> {
    storage: Storage<T>,
    start: usize,
    len: usize,
}

impl<T: Pod> Part<T> {
    pub(crate) fn start(&self) -> usize {
        self.start
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        let at = self.storage.offset + self.start * std::mem::size_of::<T>();
        // SAFETY: this part counts in the claim word's CHUNKED | n, so no Exclusive,
        // copy or other split exists in this process while it lives; the parts of
        // its split cover disjoint ranges, a Part is not Clone, and `&mut self`
        // makes this the only slice of this range. Bounds are checked by
        // `Mapping::slice_mut`; the storage keeps the block alive.
        unsafe { self.storage.block.map().slice_mut(at, self.len) }
    }
}

impl<T> Drop for Part<T> {
    fn drop(&mut self) {
        self.storage.claims.drop_part();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_exclude_each_other() {
        let (s, _) = Storage::<u32>::alloc(8, 0, true).unwrap();
        let other = s.clone();
        {
            let mut ex = s.exclusive_locked("t").unwrap();
            ex[0] = 5;
            assert!(matches!(
                other.exclusive_locked("t"),
                Err(Error::InUse { .. })
            ));
            assert!(matches!(other.get(0, "t"), Err(Error::InUse { .. })));
            assert!(matches!(other.split(2, "t"), Err(Error::InUse { .. })));
        }
        assert_eq!(other.get(0, "t").unwrap(), 5);
        let mut parts = s.split(3, "t").unwrap();
        assert!(matches!(other.split(3, "t"), Err(Error::InUse { .. })));
        assert!(matches!(
            other.exclusive_locked("t"),
            Err(Error::InUse { .. })
        ));
        assert!(matches!(other.to_vec("t"), Err(Error::InUse { .. })));
        for p in &mut parts {
            let start = p.start() as u32;
            for (i, x) in p.as_mut_slice().iter_mut().enumerate() {
                *x = start + i as u32;
            }
        }
        let last = parts.pop().unwrap();
        drop(parts);
        assert!(other.get(0, "t").is_err(), "one part still lives");
        drop(last);
        assert_eq!(other.to_vec("t").unwrap(), (0..8).collect::<Vec<u32>>());
        assert!(other.exclusive_locked("t").is_ok());
    }

    #[test]
    fn copies_overlap_but_exclude_a_guard() {
        let (s, _) = Storage::<u64>::alloc(2, 0, true).unwrap();
        let c1 = s.claims.copy("t").unwrap();
        let c2 = s.claims.copy("t").unwrap();
        assert!(s.exclusive_locked("t").is_err());
        assert!(s.split(1, "t").is_err());
        drop((c1, c2));
        assert!(s.exclusive_locked("t").is_ok());
    }

    #[test]
    fn split_sizes_cover_every_element() {
        let (s, _) = Storage::<u8>::alloc(10, 0, true).unwrap();
        let parts = s.split(4, "t").unwrap();
        let got: Vec<(usize, usize)> = parts.iter().map(|p| (p.start(), p.len())).collect();
        assert_eq!(got, vec![(0, 3), (3, 3), (6, 2), (8, 2)]);
        assert!(matches!(s.split(0, "t"), Err(Error::ZeroSize { .. })));
    }
}
