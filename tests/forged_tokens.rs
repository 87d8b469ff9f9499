//! A token is bytes that safe code can edit (`token::Exported` has public fields),
//! so an import must never make a handle whose memory overlaps memory another
//! kind of handle in this process uses: a forged Value/Array token whose
//! elements cover a lock's words, or a Lock token placed on an Array's elements,
//! would hand out a `&mut [T]` over words that a lock changes atomically (a data
//! race on memory the API hands out as `&mut`). Each probe below forges such a
//! token with the token format of `multiproc::token`'s docs and checks that the
//! import is refused. All of them imported before the block-use check of
//! `shm::arena` (the probes then showed the lock's writes through the `&mut`).

mod common;

use common::BlockT as BlockTok;
use multiproc::token::{self, Exported};
use multiproc::{Array, Error, Lock, RawArray, Value};
use serde::{Deserialize, Serialize};

/// `At` of the token format.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct At {
    block: BlockTok,
    at: u32,
}

/// `Elements` of the token format.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct Elements {
    block: BlockTok,
    at: u64,
    len: u64,
    size: u32,
    align: u32,
    fingerprint: u64,
}

/// A whole token: version, tag, payload.
type Tok<P> = (u16, u16, P);

const LOCK: u16 = 1;
const RAW_ARRAY: u16 = 11;

fn decode<P: serde::de::DeserializeOwned>(e: &Exported) -> Tok<P> {
    postcard::from_bytes(&e.bytes).expect("the token format of the docs")
}

fn forged<P: Serialize>(tok: &Tok<P>, fds: Vec<std::os::fd::OwnedFd>) -> Exported {
    Exported {
        bytes: postcard::to_stdvec(tok).unwrap(),
        fds,
    }
}

/// FNV-1a 64 of a type name, as the token's fingerprint.
fn fingerprint(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn refused<T>(r: &multiproc::Result<T>) -> bool {
    matches!(r, Err(Error::BadToken { reason, .. }) if reason.contains("overlaps"))
}

/// A Value whose forged elements start at its own lock: its guard would be a
/// `&mut u64` over the lock word the guard's own lock holds.
#[test]
fn a_value_token_moved_onto_its_own_lock_is_refused() {
    let v = Value::new(7u64).unwrap();
    let e = token::export(&v).unwrap();
    let (version, tag, (mut el, lock)): Tok<(Elements, Tok<At>)> = decode(&e);
    assert_ne!(
        el.at,
        u64::from(lock.2.at),
        "the lock sits before the element"
    );
    // Genuine: the same bytes import.
    let again: Value<u64> =
        token::import(forged(&(version, tag, (el.clone(), lock.clone())), e.fds)).unwrap();
    assert_eq!(again.get().unwrap(), 7);
    let e = token::export(&v).unwrap();
    el.at = u64::from(lock.2.at);
    let r = token::import::<Value<u64>>(forged(&(version, tag, (el, lock)), e.fds));
    if let Ok(bad) = &r {
        let g = bad.lock().unwrap();
        let word = *g;
        drop(g);
        panic!("imported: its guard's &mut u64 read the held lock's word {word:#x}");
    }
    assert!(refused(&r), "{:?}", r.err());
}

/// A Lock placed on an Array's elements: acquiring it would write under the
/// Array's live guard.
#[test]
fn a_lock_token_placed_on_array_elements_is_refused() {
    let a = Array::<u32>::new(4).unwrap();
    let e = token::export(&a).unwrap();
    let (version, _, (el, _lock)): Tok<(Elements, Tok<At>)> = decode(&e);
    let at = At {
        block: el.block,
        at: el.at as u32,
    };
    let r = token::import::<Lock>(forged(&(version, LOCK, at), e.fds));
    if let Ok(l) = &r {
        let mut g = a.lock().unwrap();
        g[0] = 0;
        let _ = l.acquire(false, None);
        let seen = g[0];
        drop(g);
        panic!("imported: acquiring it wrote {seen:#x} under the Array's live guard");
    }
    assert!(refused(&r), "{:?}", r.err());
}

/// A RawArray on a Lock's block: its chunk's `&mut [u32]` would cover the lock
/// word that any acquire changes.
#[test]
fn a_raw_array_token_on_a_lock_s_block_is_refused() {
    let l = Lock::new().unwrap();
    let e = token::export(&l).unwrap();
    let (version, _, at): Tok<At> = decode(&e);
    let el = Elements {
        block: at.block,
        at: u64::from(at.at),
        len: 4,
        size: 4,
        align: 4,
        fingerprint: fingerprint(std::any::type_name::<u32>()),
    };
    let r = token::import::<RawArray<u32>>(forged(&(version, RAW_ARRAY, el), e.fds));
    if let Ok(arr) = &r {
        let mut chunks = arr.chunks(1).unwrap();
        let slice = chunks[0].as_mut_slice();
        slice[0] = 0;
        l.acquire(true, None).unwrap();
        let seen = slice[0];
        l.release().unwrap();
        panic!("imported: the lock's acquire wrote {seen:#x} under a live &mut [u32]");
    }
    assert!(refused(&r), "{:?}", r.err());
}

/// A RawArray on a Queue's ring segment (a large block): its `&mut [u8]` would
/// cover the ring's frames, which producers write.
#[test]
fn a_raw_array_token_on_a_queue_s_ring_is_refused() {
    let q = multiproc::Queue::<u64>::new().unwrap();
    let e = token::export(&q).unwrap();
    // Queue: Ring (At, Block), fingerprint, joinable.
    let (version, _, ((_ctl, data), _fp, _j)): Tok<((At, BlockTok), u64, bool)> = decode(&e);
    let el = Elements {
        block: data,
        at: 0,
        len: 4096,
        size: 1,
        align: 1,
        fingerprint: fingerprint(std::any::type_name::<u8>()),
    };
    let r = token::import::<RawArray<u8>>(forged(&(version, RAW_ARRAY, el), e.fds));
    if let Ok(arr) = &r {
        let mut chunks = arr.chunks(1).unwrap();
        let slice = chunks[0].as_mut_slice();
        let before = slice.to_vec();
        q.put(&u64::MAX, None).unwrap();
        let changed = slice.iter().zip(&before).filter(|(a, b)| a != b).count();
        panic!("imported: a put changed {changed} bytes under a live &mut [u8]");
    }
    assert!(refused(&r), "{:?}", r.err());
}

const SHARED_MEMORY: u16 = 12;
const ARRAY: u16 = 10;

/// A SharedMemory token carrying a large Array's segment: its byte writes
/// would land under the Array's live guard in this process.
#[test]
fn a_shared_memory_token_on_an_array_s_segment_is_refused() {
    let a = Array::<u8>::new(1 << 20).unwrap();
    let e = token::export(&a).unwrap();
    let (version, tag, (el, _lock)): Tok<(Elements, Tok<At>)> = decode(&e);
    assert_eq!(tag, ARRAY);
    let BlockTok::Large { fd, inode, .. } = el.block else {
        panic!("a 1 MiB Array has a segment of its own");
    };
    let tok = (
        version,
        SHARED_MEMORY,
        (fd, inode, "mp-s16-forged".to_string()),
    );
    let r = token::import::<multiproc::SharedMemory>(forged(&tok, e.fds));
    if let Ok(shm) = &r {
        let mut g = a.lock().unwrap();
        g[0] = 1;
        let _ = shm.write_at(0, &[0xee; 4096]);
        let seen = g.iter().position(|&b| b == 0xee);
        drop(g);
        panic!("imported: its writes showed under a live guard at {seen:?}");
    }
    assert!(r.is_err(), "a SharedMemory over an Array's segment");
}

const RAW_VALUE: u16 = 9;

/// A Value's token re-tagged as a RawValue: the RawValue's atomic operations
/// take no lock and no claim, so they would change the element under the
/// Value's live guard.
#[test]
fn a_value_token_retagged_raw_is_refused() {
    let v = Value::new(5u64).unwrap();
    let e = token::export(&v).unwrap();
    let (version, _, (el, _lock)): Tok<(Elements, Tok<At>)> = decode(&e);
    let r = token::import::<multiproc::RawValue<u64>>(forged(&(version, RAW_VALUE, el), e.fds));
    if let Ok(raw) = &r {
        let g = v.lock().unwrap();
        raw.fetch_add(1);
        let seen = *g;
        drop(g);
        panic!("imported: its fetch_add changed the element under a live guard ({seen})");
    }
    assert!(refused(&r), "{:?}", r.err());
}

/// A RawArray's token re-tagged as an Array (with a lock of its own): the
/// Array's guard and the RawArray's lock-free copies would not exclude each
/// other (the guard's claim is a plain store under a lock the copies never take).
#[test]
fn a_raw_array_token_retagged_locked_is_refused() {
    let raw = RawArray::<u32>::new(4).unwrap();
    let lock = multiproc::RLock::new().unwrap();
    let e = token::export(&(&raw, &lock)).unwrap();
    let (rt, lt): (Tok<Elements>, Tok<At>) = postcard::from_bytes(&e.bytes).unwrap();
    let r = token::import::<Array<u32>>(forged(&(rt.0, ARRAY, (rt.2, lt)), e.fds));
    if r.is_ok() {
        panic!("imported: an Array over a RawArray's elements");
    }
    assert!(refused(&r), "{:?}", r.err());
}
