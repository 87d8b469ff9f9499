//! Shared memory objects and their mappings.
//!
//! Two kinds of object back every segment:
//! - **memfd** (`memfd_create`): anonymous, no name in any file system, freed by the
//!   kernel with the last mapping or descriptor — even after `kill -9` of everyone.
//!   The default for every object multiproc allocates.
//! - **POSIX shared memory** (`shm_open`, a file in `/dev/shm`): named, so unrelated
//!   programs can attach; lives until `shm_unlink`. Created only on request,
//!   `O_EXCL`, mode `0600`.
//!
//! A [`Mapping`] is one `mmap(MAP_SHARED)` of such an object. It gives out atomics
//! and race-free plain-data copies (relaxed atomic words) at checked offsets;
//! nothing above this layer sees a raw pointer. memfds are size-sealed, so no one
//! can truncate them under a mapping (SIGBUS); `/dev/shm` objects cannot be sealed.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64};

use rustix::fs::{MemfdFlags, Mode};
use rustix::mm::{MapFlags, ProtFlags};
use rustix::shm;

/// Creates an anonymous memfd of `len` bytes (zero-filled), close-on-exec, its size
/// sealed.
///
/// `name` is only a label (seen in `/proc/<pid>/fd`): nothing appears in `/dev/shm`.
///
/// Once sized, the object is sealed with `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`:
/// no process holding the descriptor (a child, or one it was passed to) can
/// truncate it under a mapping — which would make touching the lost pages raise
/// SIGBUS — nor remove the seals. Its bytes stay writable.
pub fn memfd(name: &str, len: u64) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, len)?;
    rustix::fs::fcntl_add_seals(
        &fd,
        rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::GROW | rustix::fs::SealFlags::SEAL,
    )?;
    Ok(fd)
}

#[cfg(test)]
/// Creates the POSIX shared memory object `name` (`/name`), failing if it exists.
///
/// The new object is empty (size it with [`set_len`]) and readable by its owner only.
pub fn shm_create(name: &str) -> io::Result<OwnedFd> {
    Ok(shm::open(
        name,
        shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR,
        Mode::RUSR | Mode::WUSR,
    )?)
}

/// Opens the existing POSIX shared memory object `name` for reading and writing.
///
/// With `O_NOFOLLOW`, as glibc's `shm_open` does (rustix's does not): a symbolic
/// link planted in `/dev/shm` under a segment's name is refused (`ELOOP`), never
/// followed to whatever file it points at.
pub fn shm_open(name: &str) -> io::Result<OwnedFd> {
    let path = format!("/dev/shm/{}", name.trim_start_matches('/'));
    Ok(rustix::fs::open(
        path,
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Removes the name of a POSIX shared memory object.
///
/// The object itself lives on while it is open or mapped.
pub fn shm_unlink(name: &str) -> io::Result<()> {
    Ok(shm::unlink(name)?)
}

/// Sets the size of a shared memory object (a `/dev/shm` one: [`memfd`]s are sealed).
pub fn set_len(fd: impl AsFd, len: u64) -> io::Result<()> {
    Ok(rustix::fs::ftruncate(fd, len)?)
}

/// Size, owner uid and permission bits of an open object.
pub fn stat(fd: impl AsFd) -> io::Result<(u64, u32, u32)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_size as u64, st.st_uid, st.st_mode & 0o7777))
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The atomic integer types a [`Mapping`] hands out.
///
/// # Safety
/// Implementors must be atomics whose size equals their alignment and which are
/// valid for every bit pattern (so any shared bytes may be viewed as one).
pub unsafe trait AtomicCell: Sync {}
// SAFETY: std atomics: size == align, every bit pattern valid.
unsafe impl AtomicCell for AtomicU8 {}
// SAFETY: as above.
unsafe impl AtomicCell for AtomicU16 {}
// SAFETY: as above.
unsafe impl AtomicCell for AtomicU32 {}
// SAFETY: as above.
unsafe impl AtomicCell for AtomicU64 {}

/// One `mmap(MAP_SHARED, PROT_READ | PROT_WRITE)` of a shared memory object.
///
/// Invariant: `ptr..ptr+len` is mapped for as long as the `Mapping` lives, and every
/// accessor checks its offset against `len` and its type's alignment.
///
/// # Concurrent writers
/// Other processes and threads may write the bytes at any time, so every safe
/// access is atomic, and none is a data race (undefined behaviour) in Rust's
/// memory model: [`atomic`](Self::atomic) and friends hand out atomics, and
/// [`read`](Self::read), [`write`](Self::write), [`read_slice`](Self::read_slice)
/// and [`write_slice`](Self::write_slice) copy through relaxed atomic loads and
/// stores of `min(align_of::<T>(), 8)` bytes each (the width lock-free atomic
/// operations on one element use; bytes for `u8` data). What a reader sees while
/// a writer runs:
/// - each word (each `u64`, `f64`, `i32`... element; each byte of `u8` data) is
///   either its old or its new value, never a mix of the two;
/// - a value made of several words (an array, a struct, a slice) may be torn
///   between words: some old, some new. Take a lock around both sides (as
///   `Value`/`Array` do) to see whole values;
/// - relaxed means unordered: a copy publishes nothing by itself; pair it with an
///   acquire/release atomic or a lock to order other memory.
///
/// Relaxed atomic loads and stores of aligned words compile to plain moves, so a
/// copy runs at memory speed (the compiler does not merge them into vector moves).
///
/// Mappings of one object share its bytes, in this process and in forked children:
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mapping is a plain address range; every safe access to it is atomic
// (the atomics it hands out, and the copies, which are relaxed atomic loads and
// stores word by word), so any thread may use it; the unsafe `slice`/`slice_mut`
// put exclusivity on their callers.
unsafe impl Send for Mapping {}
// SAFETY: as above: shared access only through atomics, whatever the thread.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `fd`, shared, readable and writable; an
    /// object shorter than `len` is refused (`InvalidInput`).
    ///
    /// The mapping stays valid after `fd` is closed.
    pub fn new(fd: impl AsFd, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        // Pages past the end of the object would fault (SIGBUS) when touched.
        let size = rustix::fs::fstat(&fd)?.st_size as u64;
        if size < len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("mapping {len} bytes of an object of {size} bytes"),
            ));
        }
        // SAFETY: a fresh mapping at an address the kernel picks aliases no Rust
        // object; the object behind `fd` is at least `len` bytes (checked just
        // above), so no access through it faults unless someone truncates it later.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )?
        };
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: mappings have at least one byte).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Address of the first byte, for identity comparisons only.
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    #[inline(always)]
    fn checked<T>(&self, offset: usize, count: usize) -> *mut T {
        let size = std::mem::size_of::<T>().checked_mul(count);
        let end = size.and_then(|s| offset.checked_add(s));
        if !(end.is_some_and(|e| e <= self.len) && offset % std::mem::align_of::<T>() == 0) {
            // Out of line, its arguments in registers: an `assert!` with a message
            // stores them to the stack before every access, taken or not.
            out_of_bounds(offset, count, std::mem::size_of::<T>(), self.len);
        }
        // SAFETY: `offset + size_of::<T>() * count <= len` was just checked, so the
        // result stays inside the mapping.
        unsafe { self.ptr.as_ptr().add(offset).cast::<T>() }
    }

    /// The atomic `A` at `offset` (aligned, in bounds: checked).
    #[inline]
    pub fn atomic<A: AtomicCell>(&self, offset: usize) -> &A {
        let p = self.checked::<A>(offset, 1);
        // SAFETY: in bounds and aligned (checked); `A` is valid for any bits
        // (AtomicCell); the memory lives as long as `self`.
        unsafe { &*p }
    }

    /// The 32-bit atomic at `offset` (4-byte aligned, in bounds: checked).
    ///
    /// A counter that two processes increment:
    ///
    /// An offset that is misaligned or out of bounds panics:
    #[inline]
    pub fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        let p = self.checked::<AtomicU32>(offset, 1);
        // SAFETY: in bounds and aligned (checked); the memory lives as long as `self`;
        // an AtomicU32 may alias memory that other processes access atomically.
        unsafe { &*p }
    }

    /// The 64-bit atomic at `offset` (8-byte aligned, in bounds: checked).
    #[inline]
    pub fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        let p = self.checked::<AtomicU64>(offset, 1);
        // SAFETY: as for `atomic_u32`.
        unsafe { &*p }
    }

    /// `N` atomics `A` from `offset` on (aligned, in bounds: checked once), as an
    /// array: indexing it with a constant costs no bounds check, so a structure
    /// whose words sit at fixed offsets (a ring's control block) reaches each with
    /// one address computation.
    #[inline]
    pub fn atomic_array<A: AtomicCell, const N: usize>(&self, offset: usize) -> &[A; N] {
        let p = self.checked::<A>(offset, N);
        // SAFETY: `N` values of `A` from `offset` are in bounds and aligned
        // (checked); `[A; N]` has `A`'s alignment and `N` times its size; `A` is
        // valid for any bits (AtomicCell); the memory lives as long as `self`.
        unsafe { &*p.cast::<[A; N]>() }
    }

    /// `len` bytes at `offset` as atomics: a byte view that other processes may
    /// write while this one reads, without undefined behaviour.
    pub fn atomic_bytes(&self, offset: usize, len: usize) -> &[AtomicU8] {
        let p = self.checked::<AtomicU8>(offset, len);
        // SAFETY: in bounds (checked); AtomicU8 has u8's layout and alignment 1; the
        // memory lives as long as `self`.
        unsafe { std::slice::from_raw_parts(p, len) }
    }

    /// Reads a `T` at `offset` (in bounds and aligned: checked), race-free.
    ///
    /// The copy is a sequence of relaxed atomic loads of
    /// `min(align_of::<T>(), 8)` bytes each (see [`Mapping`] on concurrent writers):
    /// a `u64` or `f64` is one 8-byte atomic load, so it is never torn.
    #[inline]
    pub fn read<T: bytemuck::Pod>(&self, offset: usize) -> T {
        let p = self.checked::<T>(offset, 1);
        let mut value = T::zeroed();
        // SAFETY: `p` is in bounds and aligned to `T` (checked), so to the word
        // width; `value` is a distinct local `T`, equally aligned and as long; any
        // bytes make a valid `T` (Pod).
        unsafe {
            copy_words(
                p.cast(),
                (&raw mut value).cast(),
                std::mem::size_of::<T>(),
                Direction::Load,
                width_of::<T>(),
            )
        };
        value
    }

    /// Writes a `T` at `offset` (in bounds and aligned: checked), race-free: relaxed
    /// atomic stores of `min(align_of::<T>(), 8)` bytes each.
    #[inline]
    pub fn write<T: bytemuck::Pod>(&self, offset: usize, value: T) {
        let p = self.checked::<T>(offset, 1);
        // SAFETY: `p` is in bounds and aligned to `T` (checked); `value` is a local
        // `T`, equally aligned and as long, only read.
        unsafe {
            copy_words(
                p.cast(),
                (&raw const value).cast_mut().cast(),
                std::mem::size_of::<T>(),
                Direction::Store,
                width_of::<T>(),
            )
        }
    }

    /// Copies `out.len()` values starting at `offset` into `out`, race-free: relaxed
    /// atomic loads of `min(align_of::<T>(), 8)` bytes each.
    #[inline]
    pub fn read_slice<T: bytemuck::Pod>(&self, offset: usize, out: &mut [T]) {
        let p = self.checked::<T>(offset, out.len());
        // SAFETY: the whole range is in bounds and aligned to `T` (checked); `out` is
        // a distinct Rust allocation of the same length in bytes, aligned to `T`,
        // borrowed mutably so nothing else touches it; any bytes make valid `T`s.
        unsafe {
            copy_words(
                p.cast(),
                out.as_mut_ptr().cast(),
                std::mem::size_of_val(out),
                Direction::Load,
                width_of::<T>(),
            )
        }
    }

    /// Copies `values` into the mapping starting at `offset`, race-free: relaxed
    /// atomic stores of `min(align_of::<T>(), 8)` bytes each.
    #[inline]
    pub fn write_slice<T: bytemuck::Pod>(&self, offset: usize, values: &[T]) {
        let p = self.checked::<T>(offset, values.len());
        // SAFETY: as for `read_slice`, in the other direction: `values` is only read.
        unsafe {
            copy_words(
                p.cast(),
                values.as_ptr().cast_mut().cast(),
                std::mem::size_of_val(values),
                Direction::Store,
                width_of::<T>(),
            )
        }
    }

    /// Copies `src` into the mapping at `offset` (in bounds: checked), race-free and
    /// at word speed: relaxed 8-byte atomic stores where the shared side is 8-byte
    /// aligned, single bytes at the unaligned edges. `src` needs no alignment.
    ///
    /// What the message rings copy: `write_slice::<u8>` stores byte by byte, eight
    /// times the instructions. Use one width per range: a reader of these bytes
    /// should copy them out with [`read_bytes`](Self::read_bytes) at the same offset.
    ///
    #[inline]
    pub fn write_bytes(&self, offset: usize, src: &[u8]) {
        let p = self.checked::<u8>(offset, src.len());
        // SAFETY: the range is in bounds (checked); `src` is a distinct Rust slice of
        // the same length, only read.
        unsafe { copy_bytes(p, src.as_ptr().cast_mut(), src.len(), Direction::Store) }
    }

    /// [`write_bytes`](Self::write_bytes) for large messages: the same bytes at the
    /// same offsets, written on x86-64 with non-temporal stores (`movnti`, 8-byte
    /// aligned words, each one machine store like the atomic word it replaces;
    /// bytes at the unaligned edges) and ended by an `sfence`, so that every store
    /// after this call (a release store publishing the bytes) is ordered after
    /// them. Elsewhere it is `write_bytes`.
    ///
    /// Why: a plain store must first own the line, and the line of a ring that
    /// another process read a lap ago sits in that process's cache. When the
    /// virtual machine's two vCPUs sit far apart on the host (a core-to-core round
    /// trip of 350-400 ns instead of 70-100 ns), each of the 64 lines of a 4 KiB
    /// message waited for that: 4 KiB copies between two processes fell to about
    /// 0.4M msg/s with plain stores against 1.6-1.9M with non-temporal ones, which
    /// go to memory without reading the line (measured alternately, same pair of
    /// processes; near, both about 1.8-2.2M).
    #[inline]
    pub fn stream_bytes(&self, offset: usize, src: &[u8]) {
        let p = self.checked::<u8>(offset, src.len());
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the range is in bounds (checked); `src` is a distinct Rust slice of
        // the same length, only read.
        unsafe {
            stream_store(p, src.as_ptr(), src.len())
        }
        #[cfg(not(target_arch = "x86_64"))]
        // SAFETY: as for `write_bytes`.
        unsafe {
            copy_bytes(p, src.as_ptr().cast_mut(), src.len(), Direction::Store)
        }
    }

    /// Copies `dst.len()` bytes at `offset` (in bounds: checked) into `dst`,
    /// race-free: the loads mirror [`write_bytes`](Self::write_bytes)'s stores.
    ///
    #[inline]
    pub fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
        let p = self.checked::<u8>(offset, dst.len());
        // SAFETY: the range is in bounds (checked); `dst` is a distinct Rust slice of
        // the same length, borrowed mutably, valid for any bytes.
        unsafe { copy_bytes(p, dst.as_mut_ptr(), dst.len(), Direction::Load) }
    }

    /// A shared slice of `count` `T`s at `offset`.
    ///
    /// # Safety
    /// No `&mut` to any part of the range may exist in this process while the
    /// returned slice lives.
    pub unsafe fn slice<T: bytemuck::Pod>(&self, offset: usize, count: usize) -> &[T] {
        let p = self.checked::<T>(offset, count);
        // SAFETY: in bounds and aligned (checked); no aliasing `&mut` (caller).
        unsafe { std::slice::from_raw_parts(p, count) }
    }

    /// A mutable slice of `count` `T`s at `offset`.
    ///
    /// # Safety
    /// The caller must hold exclusive access to the range in this process (a lock
    /// that all other accessors take, or sole ownership of the range) for as long as
    /// the returned slice lives.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub unsafe fn slice_mut<T: bytemuck::Pod>(&self, offset: usize, count: usize) -> &mut [T] {
        let p = self.checked::<T>(offset, count);
        // SAFETY: in bounds and aligned (checked); exclusivity is the caller's
        // contract; any bit pattern is a valid `T` (Pod).
        unsafe { std::slice::from_raw_parts_mut(p, count) }
    }
}

/// Which way [`copy_words`] copies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Shared memory to private memory: atomic loads.
    Load,
    /// Private memory to shared memory: atomic stores.
    Store,
}

/// Bytes per access when copying `T`s: `min(align_of::<T>(), 8)`.
///
/// The width that lock-free atomic operations on one `T` element use (an
/// `AtomicU64` on a `u64`, an `AtomicI32` on an `i32`), so that a copy never mixes
/// access sizes with them on the same bytes (Rust's memory model forbids
/// concurrent atomic accesses of different sizes to overlapping memory). Bytes for
/// `u8` data and for types of alignment 1.
#[inline(always)]
const fn width_of<T>() -> usize {
    let align = std::mem::align_of::<T>();
    if align < 8 { align } else { 8 }
}

/// An atomic word the copies go through, and its plain integer.
trait Word: AtomicCell {
    type Int: Copy;
    fn load_relaxed(&self) -> Self::Int;
    fn store_relaxed(&self, v: Self::Int);
}

macro_rules! word {
    ($($atomic:ty => $int:ty),*) => {$(
        impl Word for $atomic {
            type Int = $int;
            #[inline(always)]
            fn load_relaxed(&self) -> $int {
                self.load(std::sync::atomic::Ordering::Relaxed)
            }
            #[inline(always)]
            fn store_relaxed(&self, v: $int) {
                self.store(v, std::sync::atomic::Ordering::Relaxed)
            }
        }
    )*};
}
word!(AtomicU8 => u8, AtomicU16 => u16, AtomicU32 => u32, AtomicU64 => u64);

/// Copies `bytes` bytes between `shared` (in a mapping) and `private` (a Rust
/// object of this process), one relaxed atomic access of `W` per word on the
/// shared side, plain accesses on the private side.
///
/// # Safety
/// `shared..shared+bytes` lies in a live mapping; `private..private+bytes` is one
/// Rust object that nothing else accesses during the call (written only for
/// `Load`), valid for any bytes; both are aligned to `size_of::<W>()`, which
/// divides `bytes`.
#[inline(always)]
unsafe fn copy_as<W: Word>(shared: *mut u8, private: *mut u8, bytes: usize, dir: Direction) {
    let n = bytes / std::mem::size_of::<W>();
    let (shared, private) = (shared.cast::<W>(), private.cast::<W::Int>());
    if dir == Direction::Load {
        for i in 0..n {
            // SAFETY: word `i` is in both ranges and aligned (caller); a shared `&W`
            // may alias memory that others access, atomically, at the same width;
            // the private word is ours alone and any bits are valid.
            unsafe { private.add(i).write((*shared.add(i)).load_relaxed()) }
        }
    } else {
        for i in 0..n {
            // SAFETY: as above; the private word is only read.
            unsafe { (*shared.add(i)).store_relaxed(private.add(i).read()) }
        }
    }
}

/// [`copy_as`] with the atomic word of `width` bytes (1, 2, 4 or 8).
///
/// # Safety
/// As for [`copy_as`], with `width` for `size_of::<W>()`.
#[inline(always)]
unsafe fn copy_words(
    shared: *mut u8,
    private: *mut u8,
    bytes: usize,
    dir: Direction,
    width: usize,
) {
    // SAFETY: forwarded contract; the word type matches `width`.
    unsafe {
        match width {
            8 => copy_as::<AtomicU64>(shared, private, bytes, dir),
            4 => copy_as::<AtomicU32>(shared, private, bytes, dir),
            2 => copy_as::<AtomicU16>(shared, private, bytes, dir),
            _ => copy_as::<AtomicU8>(shared, private, bytes, dir),
        }
    }
}

/// The panic of a [`Mapping`] access out of bounds or misaligned.
#[cold]
#[inline(never)]
#[track_caller]
fn out_of_bounds(offset: usize, count: usize, size: usize, len: usize) -> ! {
    panic!(
        "shared memory access out of bounds or misaligned: offset {offset}, {count} x {size} bytes, mapping of {len} bytes"
    )
}

/// Copies `len` bytes between `shared` and `private`: single relaxed atomic bytes up
/// to the first 8-byte boundary of `shared`, relaxed 8-byte atomic words (unaligned
/// plain accesses on the private side) through the middle, bytes for the rest.
///
/// # Safety
/// `shared..shared+len` lies in a live mapping; `private..private+len` is one Rust
/// object that nothing else accesses during the call (written only for `Load`).
#[inline(always)]
unsafe fn copy_bytes(shared: *mut u8, private: *mut u8, len: usize, dir: Direction) {
    if len == 8 && (shared as usize) % 8 == 0 {
        // One aligned word (a small message's payload, at its 8-aligned frame
        // position): the loop below would do the same with three loops' checks.
        // SAFETY: bytes `0..8` are in both ranges; `shared` is 8-byte aligned, so it
        // may be viewed as an AtomicU64; the private side is accessed unaligned.
        unsafe {
            let a = &*shared.cast::<AtomicU64>();
            let q = private.cast::<u64>();
            if dir == Direction::Load {
                q.write_unaligned(a.load(std::sync::atomic::Ordering::Relaxed));
            } else {
                a.store(q.read_unaligned(), std::sync::atomic::Ordering::Relaxed);
            }
        }
        return;
    }
    let head = shared.align_offset(8).min(len);
    let words = (len - head) / 8;
    let tail_start = head + words * 8;
    let byte = |i: usize| {
        // SAFETY: `i < len`, so byte `i` is in both ranges (caller); an AtomicU8 may
        // alias shared memory others access atomically; the private byte is ours.
        unsafe {
            let a = &*shared.add(i).cast::<AtomicU8>();
            if dir == Direction::Load {
                private
                    .add(i)
                    .write(a.load(std::sync::atomic::Ordering::Relaxed));
            } else {
                a.store(private.add(i).read(), std::sync::atomic::Ordering::Relaxed);
            }
        }
    };
    for i in 0..head {
        byte(i);
    }
    for w in 0..words {
        let i = head + 8 * w;
        // SAFETY: bytes `i..i+8` are in both ranges; `shared + i` is 8-byte aligned
        // (past `head`), so it may be viewed as an AtomicU64; the private side is
        // read or written unaligned.
        unsafe {
            let a = &*shared.add(i).cast::<AtomicU64>();
            let q = private.add(i).cast::<u64>();
            if dir == Direction::Load {
                q.write_unaligned(a.load(std::sync::atomic::Ordering::Relaxed));
            } else {
                a.store(q.read_unaligned(), std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    for i in tail_start..len {
        byte(i);
    }
}

/// Copies `len` bytes from `private` to `shared` as [`copy_bytes`] stores them
/// (atomic bytes up to the first 8-byte boundary of `shared`, 8-byte words, bytes
/// for the rest), the words with non-temporal stores (`movnti`), then an `sfence`
/// that orders them before every later store of this thread.
///
/// # Safety
/// `shared..shared+len` lies in a live mapping; `private..private+len` is one Rust
/// object, only read.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn stream_store(shared: *mut u8, private: *const u8, len: usize) {
    let head = shared.align_offset(8).min(len);
    let words = (len - head) / 8;
    let tail_start = head + words * 8;
    let byte = |i: usize| {
        // SAFETY: `i < len`, so byte `i` is in both ranges (caller); an AtomicU8 may
        // alias shared memory others access atomically.
        unsafe {
            (*shared.add(i).cast::<AtomicU8>())
                .store(private.add(i).read(), std::sync::atomic::Ordering::Relaxed)
        }
    };
    for i in 0..head {
        byte(i);
    }
    for w in 0..words {
        let i = head + 8 * w;
        // SAFETY: bytes `i..i+8` are in both ranges and `shared + i` is 8-byte
        // aligned (past `head`): one aligned 8-byte machine store, as the atomic
        // word store of `copy_bytes` is; the private side is read unaligned. The
        // asm touches no stack or flags.
        unsafe {
            let v = private.add(i).cast::<u64>().read_unaligned();
            std::arch::asm!(
                "movnti qword ptr [{p}], {v}",
                p = in(reg) shared.add(i),
                v = in(reg) v,
                options(nostack, preserves_flags)
            );
        }
    }
    for i in tail_start..len {
        byte(i);
    }
    // SAFETY: a store fence: no memory operand, no stack, no flags.
    unsafe { std::arch::asm!("sfence", options(nostack, preserves_flags)) };
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+len` was returned by mmap and is unmapped exactly once;
        // every reference into it borrows `self`, so none outlives this call.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Eight words whose bytes are all `k`: a torn word has two different bytes.
    fn words(k: u8) -> [u64; 8] {
        [u64::from_ne_bytes([k; 8]); 8]
    }

    fn whole(bytes: &[u8]) -> bool {
        bytes.windows(2).all(|b| b[0] == b[1])
    }

    /// One thread copies into the mapping while another copies out of it, with
    /// every copy: each word a reader sees is one the writer wrote, never a mix
    /// (and, by construction, no data race). Both loops are bounded.
    ///
    /// Also run under ThreadSanitizer (nightly, std not instrumented):
    /// `RUSTFLAGS="-Zsanitizer=thread -Cunsafe-allow-abi-mismatch=sanitizer"
    /// cargo +nightly test --lib --target x86_64-unknown-linux-gnu sys::mem::tests
    /// -- --test-threads=1`: no report in these copies (one false positive in
    /// libtest's own uninstrumented channel); memcpy copies gave four.
    #[test]
    fn concurrent_copies_never_tear_a_word() {
        const ROUNDS: u32 = 200_000;
        let map = Mapping::new(memfd("test-copies", 4096).unwrap(), 4096).unwrap();
        let torn = std::thread::scope(|s| {
            let writer = s.spawn(|| {
                for r in 0..ROUNDS {
                    let k = r as u8;
                    map.write_slice(0, &words(k));
                    map.write::<[u64; 8]>(64, words(!k));
                    map.write_slice(128, &[u32::from_ne_bytes([k; 4]); 16]);
                    map.write::<[i16; 32]>(192, [i16::from_ne_bytes([k; 2]); 32]);
                }
            });
            let mut torn = 0u64;
            for _ in 0..ROUNDS {
                let mut a = [0u64; 8];
                map.read_slice(0, &mut a);
                let b = map.read::<[u64; 8]>(64);
                let mut c = [0u32; 16];
                map.read_slice(128, &mut c);
                let d = map.read::<[i16; 32]>(192);
                let seen = a.iter().chain(&b).map(|w| whole(&w.to_ne_bytes()));
                let seen = seen.chain(c.iter().map(|w| whole(&w.to_ne_bytes())));
                let seen = seen.chain(d.iter().map(|w| whole(&w.to_ne_bytes())));
                torn += seen.filter(|ok| !ok).count() as u64;
            }
            writer.join().unwrap();
            torn
        });
        assert_eq!(torn, 0, "words torn between an old and a new value");
    }

    /// The non-temporal copy writes exactly the bytes `write_bytes` writes, at
    /// every alignment of the shared side and every length of the unaligned edges,
    /// and nothing around them.
    #[test]
    fn stream_bytes_writes_what_write_bytes_writes() {
        let map = Mapping::new(memfd("test-stream", 8192).unwrap(), 8192).unwrap();
        let src: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 1) as u8).collect();
        for offset in 0..17 {
            for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 2047, 2048, 2999] {
                map.write_bytes(0, &[0xaa; 4096]);
                map.stream_bytes(offset + 100, &src[..len]);
                let mut got = vec![0u8; 4096];
                map.read_bytes(0, &mut got);
                let mut want = vec![0xaa; 4096];
                want[offset + 100..offset + 100 + len].copy_from_slice(&src[..len]);
                assert!(got == want, "offset {offset}, {len} bytes");
            }
        }
    }
}

/// The examples that documented these crate-private items, kept as tests.
#[cfg(test)]
mod examples {

    #[test]
    fn memfd_1() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{Mapping, memfd, set_len, stat};
        let fd = memfd("doc-memfd", 4096)?;
        assert_eq!(stat(&fd)?.0, 4096);
        assert!(rustix::io::fcntl_getfd(&fd)?.contains(rustix::io::FdFlags::CLOEXEC));
        let map = Mapping::new(&fd, 4096)?;
        assert_eq!(map.read::<u64>(4088), 0); // zero-filled
        assert!(set_len(&fd, 0).is_err()); // sealed: EPERM
        Ok(())
    }

    #[test]
    fn shm_create_2() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{euid, shm_create, shm_unlink, stat};
        use std::io::ErrorKind;
        let name = format!("/multiproc-doc-create-{}", std::process::id());
        let fd = shm_create(&name)?;
        let again = shm_create(&name);
        shm_unlink(&name)?; // before any assertion: leave nothing in /dev/shm
        assert_eq!(again.unwrap_err().kind(), ErrorKind::AlreadyExists);
        assert_eq!(stat(&fd)?, (0, euid(), 0o600));
        Ok(())
    }

    #[test]
    fn shm_open_3() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{Mapping, set_len, shm_create, shm_open, shm_unlink};
        let name = format!("/multiproc-doc-open-{}", std::process::id());
        let created = shm_create(&name)?;
        let opened = shm_open(&name);
        shm_unlink(&name)?;
        let opened = opened?;
        set_len(&created, 64)?;
        let (a, b) = (Mapping::new(&created, 64)?, Mapping::new(&opened, 64)?);
        a.write::<u32>(0, 9);
        assert_eq!(b.read::<u32>(0), 9); // one object

        // A symbolic link under a segment's name is refused, not followed.
        let link = format!("/dev/shm/multiproc-doc-link-{}", std::process::id());
        std::os::unix::fs::symlink("/dev/null", &link)?;
        let through = shm_open(&link["/dev/shm".len()..]);
        std::fs::remove_file(&link)?;
        assert_eq!(through.unwrap_err().raw_os_error(), Some(libc::ELOOP));
        Ok(())
    }

    #[test]
    fn shm_unlink_4() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{Mapping, set_len, shm_create, shm_open, shm_unlink};
        use std::io::ErrorKind;
        let name = format!("/multiproc-doc-unlink-{}", std::process::id());
        let fd = shm_create(&name)?;
        shm_unlink(&name)?;
        assert_eq!(shm_open(&name).unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(shm_unlink(&name).unwrap_err().kind(), ErrorKind::NotFound);
        set_len(&fd, 8)?;
        let map = Mapping::new(&fd, 8)?; // still usable through the descriptor
        map.write::<u64>(0, 1);
        assert_eq!(map.read::<u64>(0), 1);
        Ok(())
    }

    #[test]
    fn set_len_5() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{memfd, set_len, shm_create, shm_unlink, stat};
        let name = format!("/multiproc-doc-set-len-{}", std::process::id());
        let fd = shm_create(&name)?;
        shm_unlink(&name)?;
        set_len(&fd, 100)?;
        assert_eq!(stat(&fd)?.0, 100);
        set_len(&fd, 10)?;
        assert_eq!(stat(&fd)?.0, 10);
        assert!(set_len(memfd("doc-set-len", 10)?, 20).is_err()); // sealed
        Ok(())
    }

    #[test]
    fn stat_6() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{euid, memfd, stat};
        let (len, uid, mode) = stat(memfd("doc-stat", 10)?)?;
        assert_eq!(len, 10);
        assert_eq!(uid, euid());
        assert_eq!(mode & !0o7777, 0); // permission bits only, no file type
        Ok(())
    }

    #[test]
    fn euid_7() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{euid, memfd, stat};
        // Objects this process creates belong to its effective user.
        assert_eq!(stat(memfd("doc-euid", 1)?)?.1, euid());
        Ok(())
    }

    #[test]
    fn atomiccell_8() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{Mapping, memfd};
        use std::sync::atomic::{AtomicU8, AtomicU16, Ordering};
        let map = Mapping::new(memfd("doc-cell", 8)?, 8)?;
        map.atomic::<AtomicU16>(0).store(0x0102, Ordering::Relaxed);
        let first = map.atomic::<AtomicU8>(0).load(Ordering::Relaxed);
        assert_eq!(first, 0x0102u16.to_ne_bytes()[0]); // two views of the same bytes
        Ok(())
    }

    #[test]
    fn mapping_9() -> Result<(), Box<dyn std::error::Error>> {
        use crate::Process;
        use crate::sys::mem::{Mapping, memfd};
        use std::sync::Arc;
        use std::time::Duration;
        let fd = memfd("doc-mapping", 4096).unwrap();
        let map = Arc::new(Mapping::new(&fd, 4096).unwrap());
        let again = Mapping::new(&fd, 4096).unwrap();
        assert_ne!(map.addr(), again.addr());
        let m = Arc::clone(&map);
        let mut child = Process::new(move || m.write::<u64>(64, 7));
        child.start()?;
        assert_eq!(child.join(Some(Duration::from_secs(10)))?, Some(0));
        assert_eq!(map.read::<u64>(64), 7);
        assert_eq!(again.read::<u64>(64), 7);
        Ok(())
    }

    #[test]
    fn new_10() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{Mapping, memfd};
        use std::io::ErrorKind;
        let fd = memfd("doc-new", 100)?;
        let map = Mapping::new(&fd, 100)?;
        drop(fd);
        map.write::<u32>(96, 5);
        assert_eq!(map.read::<u32>(96), 5);
        assert_eq!(
            Mapping::new(memfd("doc-new", 1)?, 0).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        // Longer than the object: refused, rather than a SIGBUS on first touch.
        assert_eq!(
            Mapping::new(memfd("doc-new", 10)?, 4096)
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
        Ok(())
    }

    #[test]
    fn len_11() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{Mapping, memfd};
        let map = Mapping::new(memfd("doc-len", 100)?, 100)?;
        assert_eq!(map.len(), 100); // as asked, not rounded up to a page
        Ok(())
    }

    #[test]
    fn is_empty_12() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{Mapping, memfd};
        let map = Mapping::new(memfd("doc-is-empty", 1)?, 1)?;
        assert!(!map.is_empty());
        assert!(Mapping::new(memfd("doc-is-empty", 1)?, 0).is_err()); // no empty mappings
        Ok(())
    }

    #[test]
    fn addr_13() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::arena::Block;
        let block = Block::alloc(16)?;
        let copy = block.clone();
        assert_eq!(copy.map().addr(), block.map().addr()); // same mapping
        assert_eq!(block.map().addr() % 4096, 0); // page-aligned
        Ok(())
    }

    #[test]
    fn atomic_14() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{Mapping, memfd};
        use std::sync::atomic::{AtomicU16, Ordering};
        let map = Mapping::new(memfd("doc-atomic", 8)?, 8)?;
        let half: &AtomicU16 = map.atomic(6);
        half.fetch_add(3, Ordering::Relaxed);
        assert_eq!(map.read::<u16>(6), 3);
        Ok(())
    }

    #[test]
    fn atomic_u32_15() -> Result<(), Box<dyn std::error::Error>> {
        use crate::Process;
        use crate::sys::mem::{Mapping, memfd};
        use std::sync::{Arc, atomic::Ordering};
        use std::time::Duration;
        let map = Arc::new(Mapping::new(memfd("doc-atomic-u32", 8).unwrap(), 8).unwrap());
        let mut kids = Vec::new();
        for _ in 0..2 {
            let m = Arc::clone(&map);
            let mut p = Process::new(move || {
                for _ in 0..1000 {
                    m.atomic_u32(4).fetch_add(1, Ordering::Relaxed);
                }
            });
            p.start()?;
            kids.push(p);
        }
        for mut p in kids {
            assert_eq!(p.join(Some(Duration::from_secs(10)))?, Some(0));
        }
        assert_eq!(map.atomic_u32(4).load(Ordering::Relaxed), 2000);
        Ok(())
    }

    #[test]
    fn atomic_u32_16() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{Mapping, memfd};
        use std::panic::catch_unwind;
        let map = Mapping::new(memfd("doc-atomic-u32", 8)?, 8)?;
        assert!(
            catch_unwind(|| {
                map.atomic_u32(2);
            })
            .is_err()
        ); // not 4-byte aligned
        assert!(
            catch_unwind(|| {
                map.atomic_u32(8);
            })
            .is_err()
        ); // past the end
        assert!(
            catch_unwind(|| {
                map.atomic_u32(4);
            })
            .is_ok()
        );
        Ok(())
    }

    #[test]
    fn atomic_u64_17() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{Mapping, memfd};
        use std::sync::atomic::Ordering;
        let map = Mapping::new(memfd("doc-atomic-u64", 16)?, 16)?;
        let word = map.atomic_u64(8);
        word.store(u64::MAX - 1, Ordering::Relaxed);
        assert_eq!(word.fetch_add(1, Ordering::Relaxed), u64::MAX - 1);
        assert_eq!(map.read::<u64>(8), u64::MAX);
        Ok(())
    }

    #[test]
    fn atomic_bytes_18() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{Mapping, memfd};
        use std::sync::atomic::Ordering;
        let map = Mapping::new(memfd("doc-atomic-bytes", 8)?, 8)?;
        let bytes = map.atomic_bytes(2, 4);
        assert_eq!(bytes.len(), 4);
        bytes[1].store(7, Ordering::Relaxed);
        let mut all = [0u8; 8];
        map.read_slice(0, &mut all);
        assert_eq!(all, [0, 0, 0, 7, 0, 0, 0, 0]);
        Ok(())
    }

    #[test]
    fn read_19() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{Mapping, memfd};
        let map = Mapping::new(memfd("doc-read", 16)?, 16)?;
        assert_eq!(map.read::<[u32; 4]>(0), [0; 4]);
        map.write::<f64>(8, 1.5);
        assert_eq!(map.read::<f64>(8), 1.5);
        Ok(())
    }

    #[test]
    fn write_20() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{Mapping, memfd};
        let map = Mapping::new(memfd("doc-write", 8)?, 8)?;
        map.write::<[u16; 4]>(0, [1, 2, 3, 4]);
        assert_eq!(map.read::<u16>(6), 4);
        Ok(())
    }

    #[test]
    fn read_slice_21() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{Mapping, memfd};
        let map = Mapping::new(memfd("doc-read-slice", 16)?, 16)?;
        map.write::<u32>(4, 9);
        let mut out = [1u32; 3];
        map.read_slice(0, &mut out);
        assert_eq!(out, [0, 9, 0]);
        Ok(())
    }

    #[test]
    fn byte_copies_round_trip_at_every_alignment() {
        use crate::sys::mem::{Mapping, memfd};
        let map = Mapping::new(memfd("test-bytes", 128).unwrap(), 128).unwrap();
        let text: Vec<u8> = (1..=45).collect();
        for off in 0..16 {
            map.write_bytes(off, &[0; 64]);
            map.write_bytes(off, &text);
            let mut back = vec![0u8; text.len() + 2];
            map.read_bytes(off.max(1) - 1, &mut back);
            let skip = usize::from(off > 0);
            assert_eq!(&back[skip..skip + text.len()], &text[..], "offset {off}");
            assert_eq!(back[skip + text.len()], 0, "no byte written past the end");
        }
    }

    #[test]
    fn write_slice_22() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{Mapping, memfd};
        let map = Mapping::new(memfd("doc-write-slice", 16)?, 16)?;
        map.write_slice(4, &[1u32, 2, 3]);
        assert_eq!(map.read::<[u32; 4]>(0), [0, 1, 2, 3]);
        Ok(())
    }

    #[test]
    fn slice_23() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{Mapping, memfd};
        let map = Mapping::new(memfd("doc-slice", 16)?, 16)?;
        map.write_slice(0, &[1u32, 2, 3]);
        // SAFETY: no `&mut` into `map` exists in this process while `s` lives.
        let s: &[u32] = unsafe { map.slice(0, 3) };
        assert_eq!(s, [1, 2, 3]);
        assert_eq!(s.iter().sum::<u32>(), 6);
        Ok(())
    }

    #[test]
    fn slice_mut_24() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::mem::{Mapping, memfd};
        let map = Mapping::new(memfd("doc-slice-mut", 16)?, 16)?;
        map.write_slice(0, &[4u32, 3, 2, 1]);
        // SAFETY: `map` belongs to this example alone (a fresh memfd, mapped once) and no
        // other slice of it is alive while `s` lives: the range is exclusively ours.
        let s: &mut [u32] = unsafe { map.slice_mut(0, 4) };
        s.sort();
        assert_eq!(map.read::<[u32; 4]>(0), [1, 2, 3, 4]);
        Ok(())
    }
}
