//! Plain functions sent to forked pool workers as addresses.
//!
//! A pool task is a plain `fn` (no captures). A forked worker is a copy of the
//! process that made the pool, code and all, at the same addresses, so a function's
//! address taken in one is the same function in the other. A [`FnToken`] carries
//! such an address with two checks, and [`FnToken::resolve`] turns it back into the
//! function pointer only when both hold:
//!
//! - `image`: a random number drawn once per process image (a static initialised on
//!   first use, before any pool forks). Forks inherit it; an `exec`ed program draws
//!   its own. Equal stamps mean the token was made in this image, where the address
//!   names the same code.
//! - `ty`: a fingerprint of the pointer's type (a hash of its `TypeId`), so a token
//!   made from a `fn(A) -> B` is never read back as a `fn(C) -> D`.
//!
//! Only the pool's own socket pairs carry tokens (private to the pool's process and
//! its workers). In a new image (an exec) the stamp differs: resolution fails,
//! never calls a wrong address.
//!
//! For the spawn and forkserver start methods, whose child is a new image of the
//! same executable, an [`EntryToken`] carries functions as offsets from a fixed
//! function of this crate instead, checked against the executable's identity
//! ([`ExeId`]) and the function's type.
//!
//! Written by hand: no crate sends function pointers between forks.

use std::any::TypeId;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

mod sealed {
    pub trait Sealed {}
}

/// Function pointer types a token may carry: `fn` pointers of up to four arguments
/// (sealed: nothing else can be transmuted from an address).
// `pub` (in a crate-private module, so still unnameable outside the crate) only
// because it bounds the sealed supertrait of the public `pool::StarFn`.
pub trait FnPtr: Copy + 'static + sealed::Sealed {
    /// The address of the function.
    fn addr(self) -> usize;
}

macro_rules! fn_ptr {
    ($($a:ident),*) => {
        impl<$($a: 'static,)* R: 'static> sealed::Sealed for fn($($a),*) -> R {}
        impl<$($a: 'static,)* R: 'static> FnPtr for fn($($a),*) -> R {
            fn addr(self) -> usize {
                self as usize
            }
        }
    };
}
fn_ptr!();
fn_ptr!(A);
fn_ptr!(A, B);
fn_ptr!(A, B, C);
fn_ptr!(A, B, C, D);

/// This process image's stamp (see the module's documentation).
fn image_stamp() -> u64 {
    static STAMP: OnceLock<u64> = OnceLock::new();
    *STAMP.get_or_init(|| {
        let mut b = [0u8; 8];
        // Without randomness, fall back on the pid and the clock: still distinct
        // between an image and an exec'ed one in practice.
        if getrandom::fill(&mut b).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            return t ^ (u64::from(std::process::id()) << 32);
        }
        u64::from_ne_bytes(b)
    })
}

fn fingerprint<F: 'static>() -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    TypeId::of::<F>().hash(&mut h);
    h.finish()
}

/// A function pointer as it travels to a forked worker (see the module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FnToken {
    addr: usize,
    ty: u64,
    image: u64,
}

impl FnToken {
    /// The token of `f`, valid in this process and its forks.
    pub(crate) fn of<F: FnPtr>(f: F) -> FnToken {
        FnToken {
            addr: f.addr(),
            ty: fingerprint::<F>(),
            image: image_stamp(),
        }
    }

    /// Primes the image stamp; call before forking workers, so that they inherit it.
    pub(crate) fn prime() {
        image_stamp();
    }

    /// The function `f` the token was made of, if it was made in this process image
    /// from a pointer of type `F`; `None` otherwise.
    pub(crate) fn resolve<F: FnPtr>(self) -> Option<F> {
        if self.image != image_stamp() || self.ty != fingerprint::<F>() {
            return None;
        }
        // `F` is a fn pointer type (sealed trait), the size of an address.
        debug_assert_eq!(size_of::<F>(), size_of::<usize>());
        // SAFETY: `F` is one of the fn pointer types of the sealed `FnPtr` (same
        // size and representation as `usize`, non-null). The stamp says the token
        // was made by `FnToken::of` in this process image (this process or a fork
        // of the one that drew the stamp, sharing its code at the same addresses),
        // and the fingerprint says from a value of type `F`: `addr` is the address
        // of a live function of exactly this type.
        Some(unsafe { std::mem::transmute_copy::<usize, F>(&self.addr) })
    }
}

/// The identity of an executable file: what `stat` says of `/proc/self/exe`
/// (the file this process image was loaded from, even if it was since deleted or
/// replaced). Two processes with equal ids run the same file, byte for byte, unless
/// someone rewrote it in place keeping its size and forged its mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExeId {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: i64,
    mtime_nsec: i64,
}

/// This process's executable's identity (read once).
pub(crate) fn exe_id() -> std::io::Result<ExeId> {
    static ID: OnceLock<ExeId> = OnceLock::new();
    if let Some(id) = ID.get() {
        return Ok(*id);
    }
    let st = rustix::fs::stat("/proc/self/exe")?;
    let id = ExeId {
        dev: st.st_dev,
        ino: st.st_ino,
        size: st.st_size,
        mtime: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec as i64,
    };
    Ok(*ID.get_or_init(|| id))
}

/// The fixed point code offsets are measured from: the binary is loaded at a new
/// address by every exec (ASLR), but its functions keep their distances.
#[inline(never)]
fn anchor() {}

fn anchor_addr() -> usize {
    std::hint::black_box(anchor as fn()) as usize
}

/// A plain function as it travels to a new image of the same executable: its
/// offset from [`anchor`] and its type's fingerprint. Only [`EntryToken`] resolves
/// it, after checking the executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CodeToken {
    offset: i64,
    ty: u64,
}

impl CodeToken {
    fn of<F: FnPtr>(f: F) -> CodeToken {
        CodeToken {
            offset: (f.addr() as i64).wrapping_sub(anchor_addr() as i64),
            ty: fingerprint::<F>(),
        }
    }
}

/// A spawn entry: a trampoline of type `T` (which decodes the arguments) and the
/// user's function of type `F`, both [`CodeToken`]s, and the executable they are
/// offsets into. [`resolve`](Self::resolve) calls nothing: it checks, then hands
/// back pointers, so a token from another binary (or a forged one naming another
/// file) is refused with a reason instead of jumping to a wrong address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EntryToken {
    pub(crate) trampoline: CodeToken,
    pub(crate) func: CodeToken,
    pub(crate) exe: ExeId,
}

impl EntryToken {
    /// The token of `func` run through `trampoline`, in this executable.
    pub(crate) fn of<T: FnPtr, F: FnPtr>(trampoline: T, func: F) -> std::io::Result<EntryToken> {
        Ok(EntryToken {
            trampoline: CodeToken::of(trampoline),
            func: CodeToken::of(func),
            exe: exe_id()?,
        })
    }

    /// The trampoline, if the token was made in a process running this very
    /// executable, from a trampoline of type `T`.
    pub(crate) fn trampoline<T: FnPtr>(self) -> Result<T, String> {
        self.resolve(self.trampoline)
    }

    /// The user's function, if the token was made in a process running this very
    /// executable, from a function of type `F`.
    pub(crate) fn func<F: FnPtr>(self) -> Result<F, String> {
        self.resolve(self.func)
    }

    fn resolve<F: FnPtr>(self, code: CodeToken) -> Result<F, String> {
        let here = exe_id().map_err(|e| format!("cannot stat /proc/self/exe: {e}"))?;
        if here != self.exe {
            return Err(format!(
                "the entry was made in another executable ({:?}) than this one ({:?}): \
                 a spawned child must run its parent's binary",
                self.exe, here
            ));
        }
        if code.ty != fingerprint::<F>() {
            return Err(format!(
                "the entry's function is not a {}: its type fingerprint differs",
                std::any::type_name::<F>()
            ));
        }
        let addr = (anchor_addr() as i64).wrapping_add(code.offset) as usize;
        debug_assert_eq!(size_of::<F>(), size_of::<usize>());
        // SAFETY: `F` is a fn pointer type of the sealed `FnPtr` (the size and
        // representation of a non-null `usize`). The executable's identity is this
        // process's own, so the token was made by `EntryToken::of` in an image of
        // this same file, where the function sits at this distance from `anchor`;
        // the fingerprint says it was a pointer of exactly this type. Adding the
        // offset to this image's `anchor` gives its address here.
        Ok(unsafe { std::mem::transmute_copy::<usize, F>(&addr) })
    }

    /// Test support: a copy claiming another executable.
    #[cfg(test)]
    pub(crate) fn forged_exe(mut self) -> EntryToken {
        self.exe.ino ^= 1;
        self
    }

    /// Test support: a copy whose function has another type.
    #[cfg(test)]
    pub(crate) fn forged_type(mut self) -> EntryToken {
        self.func.ty ^= 1;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(x: u32) -> u32 {
        x * 2
    }

    #[test]
    fn a_token_resolves_to_its_function_and_only_as_its_type() {
        let t = FnToken::of(double as fn(u32) -> u32);
        let f = t
            .resolve::<fn(u32) -> u32>()
            .expect("same type, same image");
        assert_eq!(f(21), 42);
        assert!(t.resolve::<fn(u64) -> u64>().is_none());
        assert!(t.resolve::<fn(u32, u32) -> u32>().is_none());
    }

    #[test]
    fn a_token_from_another_image_is_refused() {
        let mut t = FnToken::of(double as fn(u32) -> u32);
        t.image ^= 1;
        assert!(t.resolve::<fn(u32) -> u32>().is_none());
    }
}
