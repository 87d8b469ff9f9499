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
//! and plain-data reads and writes at checked offsets; nothing above this layer sees
//! a raw pointer.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64};

use rustix::fs::{MemfdFlags, Mode};
use rustix::mm::{MapFlags, ProtFlags};
use rustix::shm;

/// Creates an anonymous memfd of `len` bytes (zero-filled), close-on-exec.
pub fn memfd(name: &str, len: u64) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, len)?;
    Ok(fd)
}

/// Creates the POSIX shared memory object `name` (`/name`), failing if it exists.
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
pub fn shm_unlink(name: &str) -> io::Result<()> {
    Ok(shm::unlink(name)?)
}

/// Sets the size of a shared memory object.
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
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mapping is a plain address range; all access goes through atomics or
// volatile copies, which are sound from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above: shared access only through atomics and volatile copies.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `fd`, shared, readable and writable.
    pub fn new(fd: impl AsFd, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        // SAFETY: a fresh mapping at an address the kernel picks aliases no Rust
        // object; the object behind `fd` is at least `len` bytes (callers size it
        // first, and `attach` checks fstat), so no access through it can fault.
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

    fn checked<T>(&self, offset: usize, count: usize) -> *mut T {
        let size = std::mem::size_of::<T>().checked_mul(count);
        let end = size.and_then(|s| offset.checked_add(s));
        assert!(
            end.is_some_and(|e| e <= self.len) && offset % std::mem::align_of::<T>() == 0,
            "shared memory access out of bounds or misaligned: offset {offset}, {count} x {} bytes, mapping of {} bytes",
            std::mem::size_of::<T>(),
            self.len
        );
        // SAFETY: `offset + size_of::<T>() * count <= len` was just checked, so the
        // result stays inside the mapping.
        unsafe { self.ptr.as_ptr().add(offset).cast::<T>() }
    }

    /// The atomic `A` at `offset` (aligned, in bounds: checked).
    pub fn atomic<A: AtomicCell>(&self, offset: usize) -> &A {
        let p = self.checked::<A>(offset, 1);
        // SAFETY: in bounds and aligned (checked); `A` is valid for any bits
        // (AtomicCell); the memory lives as long as `self`.
        unsafe { &*p }
    }

    /// The 32-bit atomic at `offset` (4-byte aligned, in bounds: checked).
    pub fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        let p = self.checked::<AtomicU32>(offset, 1);
        // SAFETY: in bounds and aligned (checked); the memory lives as long as `self`;
        // an AtomicU32 may alias memory that other processes access atomically.
        unsafe { &*p }
    }

    /// The 64-bit atomic at `offset` (8-byte aligned, in bounds: checked).
    pub fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        let p = self.checked::<AtomicU64>(offset, 1);
        // SAFETY: as for `atomic_u32`.
        unsafe { &*p }
    }

    /// `len` bytes at `offset` as atomics: a byte view that other processes may
    /// write while this one reads, without undefined behaviour.
    pub fn atomic_bytes(&self, offset: usize, len: usize) -> &[AtomicU8] {
        let p = self.checked::<AtomicU8>(offset, len);
        // SAFETY: in bounds (checked); AtomicU8 has u8's layout and alignment 1; the
        // memory lives as long as `self`.
        unsafe { std::slice::from_raw_parts(p, len) }
    }

    /// Reads a `T` at `offset` with a volatile copy.
    pub fn read<T: bytemuck::Pod>(&self, offset: usize) -> T {
        let p = self.checked::<T>(offset, 1);
        // SAFETY: in bounds and aligned (checked); any bit pattern is a valid `T`
        // (Pod); volatile because another process may write the bytes at any time.
        unsafe { p.read_volatile() }
    }

    /// Writes a `T` at `offset` with a volatile copy.
    pub fn write<T: bytemuck::Pod>(&self, offset: usize, value: T) {
        let p = self.checked::<T>(offset, 1);
        // SAFETY: in bounds and aligned (checked); writing plain data through a raw
        // pointer creates no reference that another access could invalidate.
        unsafe { p.write_volatile(value) }
    }

    /// Copies `count` values starting at `offset` into `out`.
    pub fn read_slice<T: bytemuck::Pod>(&self, offset: usize, out: &mut [T]) {
        let p = self.checked::<T>(offset, out.len());
        // SAFETY: the whole range is in bounds and aligned (checked); `out` is a
        // distinct Rust allocation, so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) }
    }

    /// Copies `values` into the mapping starting at `offset`.
    pub fn write_slice<T: bytemuck::Pod>(&self, offset: usize, values: &[T]) {
        let p = self.checked::<T>(offset, values.len());
        // SAFETY: as for `read_slice`, in the other direction.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), p, values.len()) }
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
    pub unsafe fn slice_mut<T: bytemuck::Pod>(&self, offset: usize, count: usize) -> &mut [T] {
        let p = self.checked::<T>(offset, count);
        // SAFETY: in bounds and aligned (checked); exclusivity is the caller's
        // contract; any bit pattern is a valid `T` (Pod).
        unsafe { std::slice::from_raw_parts_mut(p, count) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+len` was returned by mmap and is unmapped exactly once;
        // every reference into it borrows `self`, so none outlives this call.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
