//! The shared ring under every queue: a two-lock byte ring of framed messages in
//! one memfd segment, safe against a SIGKILL at any instruction.
//!
//! ## Layout
//! The control words live in an arena block (64-byte aligned inside it, each group
//! on its own cache line), the role tables and the frames in a memfd segment of
//! their own:
//! ```text
//! control block
//!    0 config     u64 cap (ring bytes, a power of two), u64 limit (bytes that may
//!                 be buffered, <= cap), u64 maxsize (messages, 0 = no bound)
//!   64 producers  u64 tail @80 | u32 p_partial @88 | u64 cached_head @96
//!  128 consumers  u64 head @144 | u64 cached_tail @152
//!  192 items      u32 items_seq | u32 c_sleeping      (consumers' futex)
//!  256 space      u32 space_seq | u32 p_sleeping      (producers' futex)
//!  320 tasks      u32 done_seq | u32 joiners | u32 overflow words of the 3 tables
//!  384 plock      BiasedLock plock (64): apart from `tail`, which consumers read
//!                 while they wait, so that the producer's lock words never have
//!                 to be won back from them
//!  448 clock      BiasedLock clock (64)
//! data segment
//!    0 tables     producers, consumers, tasks (`roles`, 512 bytes each)
//! 2048 data       `cap` bytes of frames
//! ```
//! `tail` and `head` are *position words*: `count << 36 | pos`, where `pos` is a
//! byte position (mod 2^36, a multiple of 8; the ring index is `pos & (cap - 1)`)
//! and `count` counts whole messages (mod 2^28) published (tail) or taken (head).
//! One store moves both, so `qsize = count(tail) - count(head)` and
//! `used = pos(tail) - pos(head)` are exact at every instant.
//!
//! ## Frames
//! A frame is a header `u64 = kind << 32 | len` at an 8-aligned position, then
//! `len` payload bytes (wrapping around the end of the ring), padded to 8. Kinds:
//! `FIRST | LAST` (a whole message), `FIRST` / none / `LAST` (the pieces of a
//! message larger than the ring can hold at once), `ABORT` (the message being
//! pieced is abandoned: its producer died or timed out), and nothing else.
//!
//! ## Invariants
//! - **One lock per side**, each a `sync::biased::BiasedLock`: a lone producer
//!   (consumer) thread keeps its side's lock between calls and enters and leaves
//!   it with plain stores; a second one revokes that bias (a heavy barrier, once)
//!   and the lock works as a raw lock from then on. Whatever the states, one
//!   thread at a time is inside, and a holder killed inside passes the lock on
//!   with `OwnerDied` (killed idle, it passes it on Clean).
//! - **Side state.** Only the holder of `plock` writes past `tail` and
//!   stores `tail`, `p_partial`, `cached_head`, `p_sleeping`; only the holder of
//!   `clock` reads frames and stores `head`, `cached_tail`, `c_sleeping`. Producers
//!   never take `clock`; a consumer may take `plock` while holding `clock` (to
//!   repair a dead producer, below): the order is `clock` then `plock`.
//! - **Publish by one store.** A producer copies a frame into the free space, then
//!   stores `tail` (release): before that store the frame does not exist for any
//!   consumer, so a producer killed mid-copy leaves nothing half written. A
//!   payload of [`STREAM_MIN`] bytes or more may be copied with non-temporal
//!   stores (see `CopyChoice`), which an `sfence` orders before that store. A
//!   consumer copies a frame out, then stores `head`: killed before that store, the
//!   frame is still there for the next consumer (nothing lost); after it, only the
//!   message it was taking is lost.
//! - **Pieces.** While a message is published in pieces, `p_partial` is 1 (set
//!   before the first piece is published, cleared after the last) and the writer
//!   holds `plock` throughout; every piece leaves 8 free bytes, room for an
//!   `ABORT`. A consumer pieces a message together holding `clock` throughout.
//!   Whoever next takes `plock` with `OwnerDied` (a producer, or the consumer
//!   waiting for the next piece, which checks the lock's owner every slice) finds
//!   `p_partial` 1, publishes `ABORT` and clears it. A consumer drops a half
//!   message at `ABORT`, and skips pieces that do not begin a message (the rest of
//!   a message whose consumer died): so a dead producer leaves no half message
//!   visible, and a dead consumer loses at most the message it was taking.
//! - **Sleepers.** Only a lock holder sleeps on its side's futex, so one flag says
//!   whether it sleeps: it stores the flag (SeqCst), runs a heavy barrier
//!   (`sys::membarrier`) when the store set it, reads the sequence word, looks at
//!   the other side's position word (SeqCst), and sleeps only if nothing changed;
//!   the other side stores its position word, then reads the flag and, if set,
//!   bumps the sequence and wakes. The waker's store and load are a release store
//!   and a plain load in a process registered for the heavy barrier (no fence per
//!   message: the sleeper's barrier splits them), SeqCst in any other. Either the
//!   sleeper sees the change or the waker sees the flag: no lost wake-up, and no
//!   system call while nobody sleeps (if the heavy barrier fails, the sleeper
//!   looks again every [`UNCOVERED_SLICE`]). A lock taken with `OwnerDied` clears its side's flag (the dead
//!   sleeper's). Sleeps last at most a slice ([`OWNER_CHECK_INTERVAL`]), after
//!   which deaths are looked for: the other side's role holders (Disconnected) and,
//!   for a consumer waiting on a piece, the producer that was writing it.
//! - **Untrusted words.** A position word more than `cap` ahead of the other side,
//!   or a frame longer than what is published, is reported as
//!   [`Error::Corrupt`]; nothing is read outside the ring.
//!
//! Written by hand: this ring is the product (no crate offers a multi-process ring
//! that survives a SIGKILL of any party).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, compiler_fence};
use std::time::{Duration, Instant};

use super::roles::{TABLE_BYTES, Table};
use crate::error::{Error, Result};
use crate::shm::arena::{Block, MAX_SMALL};
use crate::sync::biased::{self, BiasedLock, Hold};
use crate::sync::raw_lock::{Acquired, OWNER_CHECK_INTERVAL};
use crate::sync::spin::AdaptiveSpin;
use crate::sys::futex;
use crate::sys::mem::Mapping;
use crate::sys::membarrier;
use crate::sys::time::Deadline;

const CAP: usize = 0;
const LIMIT: usize = 8;
const MAXSIZE: usize = 16;
const PLOCK: usize = 384;
const TAIL: usize = 80;
const P_PARTIAL: usize = 88;
const CACHED_HEAD: usize = 96;
const CLOCK: usize = 448;
const HEAD: usize = 144;
const CACHED_TAIL: usize = 152;
const ITEMS_SEQ: usize = 192;
const C_SLEEPING: usize = 196;
const SPACE_SEQ: usize = 256;
const P_SLEEPING: usize = 260;
pub(crate) const DONE_SEQ: usize = 320;
pub(crate) const JOINERS: usize = 324;
const OVERFLOWS: usize = 328;
const CONTROL_BYTES: usize = 512;
const _: () = assert!(PLOCK + biased::SIZE <= CLOCK && CLOCK + biased::SIZE <= CONTROL_BYTES);
const TABLES: usize = 0;
const DATA: usize = 2048;

const POS_BITS: u32 = 36;
const POS_MASK: u64 = (1 << POS_BITS) - 1;
const COUNT_MASK: u64 = (1 << (64 - POS_BITS)) - 1;

const FIRST: u32 = 1;
const LAST: u32 = 2;
const ABORT: u32 = 4;
const HEADER: u64 = 8;
/// Pauses between two looks at the other side's position word while spinning.
const BACKOFF: u32 = 1;
/// Yields of the CPU before a waiter sleeps (see `yield_until`).
const YIELDS: u32 = 8;
/// Payloads of at least this many bytes are copied into the ring with
/// non-temporal stores (`Mapping::stream_bytes`): they do not wait to own lines
/// that the consumer read a lap ago, which costs most when the two processes run
/// on far-apart cores.
const STREAM_MIN: usize = 2048;
/// How many times cheaper per byte than plain stores non-temporal ones must be
/// timed for a producer to use them: the copy's cost is the producer's, but
/// streamed lines cost the consumer a read from memory, so a small gain is not
/// worth it. Measured (ns per KiB, plain / non-temporal): vCPUs near 135-150 / 50-85
/// (about 2x: plain gives the better throughput, 2.3-2.9M vs 1.4-1.9M msg/s),
/// far about 550 / 125 (4-5x: non-temporal, 1.6M vs 0.45M), one CPU 40-55 / 65-80.
const STREAM_GAIN: u32 = 3;
/// Contended waits for a side lock between two counts of the queue's users
/// (`Ring::yield_if_crowded`).
const CROWD_REFRESH: u32 = 256;
/// One large copy in this many is timed, with the stores [`CopyChoice`] picks...
const COPY_SAMPLE: u32 = 32;
/// ...and one in this many with the other kind, to see whether it became the
/// cheaper (seldom: a copy with the wrong kind costs up to a few microseconds).
const COPY_PROBE: u32 = 256;
/// Where in each [`COPY_PROBE`] copies the probe falls (between two samples).
const PROBE_AT: u32 = COPY_PROBE / 2 + COPY_SAMPLE / 2;

/// Which stores a producer copies large payloads with, learned from what they
/// cost in this process (process-local, like `AdaptiveSpin`; a hint, races among
/// a process's threads merely blur it).
///
/// Plain stores must own each line before writing it; the ring's lines were last
/// read by the consumer, so each line's ownership comes from the consumer's
/// cache. How long that takes depends on where the virtual machine's vCPUs sit on
/// the host, and changes while a program runs: with the two vCPUs near (a
/// core-to-core round trip of 70-100 ns) a 4 KiB plain copy is fast; far apart
/// (350-400 ns) it is several times slower, and a 1->1 stream of 4 KiB messages
/// fell from about 2M to 0.4M msg/s. Non-temporal stores do not wait for the line
/// (1.6-1.9M msg/s far, about 2M near), but send it to memory: when both
/// processes share one CPU (a loaded machine), where plain stores hit this core's
/// own cache, they cost the consumer a read from memory (2.6M -> 1.6M msg/s). So
/// neither is right everywhere: each copy uses non-temporal stores when the
/// timed samples show them [`STREAM_GAIN`] times cheaper per byte than plain ones.
#[derive(Debug)]
struct CopyChoice {
    /// Large copies so far (mod 2^32).
    n: AtomicU32,
    /// Smoothed ns per KiB of the timed plain and non-temporal copies (0: none yet).
    plain: AtomicU32,
    stream: AtomicU32,
}

impl CopyChoice {
    const fn new() -> CopyChoice {
        CopyChoice {
            n: AtomicU32::new(0),
            plain: AtomicU32::new(0),
            stream: AtomicU32::new(0),
        }
    }

    /// Whether this copy streams, and whether it is timed.
    #[inline]
    fn pick(&self) -> (bool, bool) {
        let n = self.n.load(Ordering::Relaxed);
        self.n.store(n.wrapping_add(1), Ordering::Relaxed);
        let streams = self.streams();
        if n % COPY_SAMPLE == 0 {
            (streams, true)
        } else if n % COPY_PROBE == PROBE_AT {
            (!streams, true)
        } else {
            (streams, false)
        }
    }

    /// Whether the samples show non-temporal stores clearly cheaper.
    fn streams(&self) -> bool {
        let plain = self.plain.load(Ordering::Relaxed);
        let stream = self.stream.load(Ordering::Relaxed);
        stream != 0 && stream.saturating_mul(STREAM_GAIN) < plain
    }

    /// Folds in a timed copy of `bytes` bytes. A sample is clamped to 8x the
    /// smoothed figure, so that one copy interrupted by the kernel moves it little.
    fn timed(&self, stream: bool, took: Duration, bytes: usize) {
        let per_kib = (took.as_nanos().saturating_mul(1024) / bytes.max(1) as u128)
            .clamp(1, u32::MAX as u128 / 8) as u32;
        let avg = if stream { &self.stream } else { &self.plain };
        let old = avg.load(Ordering::Relaxed);
        let new = if old == 0 {
            per_kib
        } else {
            (old * 3 + per_kib.min(old.saturating_mul(8))) / 4
        };
        avg.store(new.max(1), Ordering::Relaxed);
    }
}

/// How long a waiter whose heavy barrier failed sleeps between looks (a light
/// waker's wake-up may then be missed; see `arm_sleep`).
const UNCOVERED_SLICE: Duration = Duration::from_millis(1);

/// The ring bytes of a queue created without a byte bound: large enough that
/// producers rarely wait, small enough to cost little (memfd pages are allocated
/// when first touched).
pub(crate) const DEFAULT_CAP: u64 = 1 << 20;
/// The smallest ring.
pub(crate) const MIN_CAP: u64 = 64;
/// The largest ring (and byte bound): positions are 36 bits, counts 28 bits.
pub(crate) const MAX_CAP: u64 = 1 << 31;

/// Which role table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Producer = 0,
    Consumer = 1,
    Tasks = 2,
}

fn pos(w: u64) -> u64 {
    w & POS_MASK
}

fn count(w: u64) -> u64 {
    w >> POS_BITS
}

fn advance(w: u64, bytes: u64, msgs: u64) -> u64 {
    ((count(w) + msgs) & COUNT_MASK) << POS_BITS | (pos(w) + bytes) & POS_MASK
}

fn pad8(n: u64) -> u64 {
    (n + 7) & !7
}

/// Bytes a frame of `len` payload bytes takes.
fn frame_bytes(len: u64) -> u64 {
    HEADER + pad8(len)
}

/// The process-local view of one ring. Its shared words are the segment's; the
/// config is read once, at creation (a forked child inherits it), so nothing
/// another process writes later can change the sizes this process trusts.
#[derive(Debug)]
pub(crate) struct Ring {
    /// The control words: an arena block (so its mapping is `'static`).
    _ctl_block: Block,
    ctl_map: &'static Mapping,
    /// Offset of the control words in `ctl_map`, 64-byte aligned.
    ctl: usize,
    /// The control words, as arrays (`u64` / `u32` index them with constants).
    w64: &'static [AtomicU64; CONTROL_BYTES / 8],
    w32: &'static [AtomicU32; CONTROL_BYTES / 4],
    /// The role tables and the frames: a segment of its own.
    block: Block,
    /// Offset of the frames (`DATA`) in `block`'s mapping.
    data: usize,
    plock: BiasedLock,
    clock: BiasedLock,
    cap: u64,
    limit: u64,
    maxsize: u64,
    /// Largest payload of one piece of a message that does not fit whole.
    piece: u64,
    // Process-local: how long waits spin before sleeping.
    p_spin: AdaptiveSpin,
    c_spin: AdaptiveSpin,
    /// Process-local: which stores large payloads are copied with.
    copy: CopyChoice,
    /// Process-local: whether more processes use the queue than this thread has
    /// CPUs, and how many contended waits may go before that is counted again.
    crowded: AtomicBool,
    crowd_left: AtomicU32,
    /// Process-local: the consumer slot where a count was last found
    /// (`has_consumers`).
    consumer_hint: AtomicU32,
    /// Monotonic ns of this process's last look at `/proc` for dead holders of
    /// each role (one per role, so that a waiting put and a waiting get in two
    /// threads of one process never take each other's turn).
    last_death_check: [AtomicU64; 3],
}

/// How a call may wait: whether it blocks, its timeout, and its deadline, computed
/// at the first moment the call has to wait (a call served at once never reads
/// the clock), so that sleeping in slices never extends it.
pub(crate) struct Wait {
    pub(crate) block: bool,
    pub(crate) timeout: Option<Duration>,
    deadline: std::cell::Cell<Option<Deadline>>,
    /// The call, for errors.
    pub(crate) what: &'static str,
}

impl Wait {
    /// A wait of `timeout` (forever with `None`) when `block`; refuses a timeout
    /// the clock cannot hold, as `Deadline::after` does.
    pub(crate) fn new(block: bool, timeout: Option<Duration>, what: &'static str) -> Result<Wait> {
        Deadline::check(timeout)?;
        Ok(Wait {
            block,
            timeout,
            deadline: std::cell::Cell::new(None),
            what,
        })
    }

    /// A wait with no end (the rest of a message being pieced).
    fn forever(what: &'static str) -> Wait {
        Wait {
            block: true,
            timeout: None,
            deadline: std::cell::Cell::new(Some(Deadline::NEVER)),
            what,
        }
    }

    /// The deadline, computed now if this is the first time it is needed.
    pub(crate) fn deadline(&self) -> Deadline {
        if let Some(d) = self.deadline.get() {
            return d;
        }
        // `check` passed, so `after` cannot overflow.
        let d = Deadline::after(self.timeout).unwrap_or(Deadline::NEVER);
        self.deadline.set(Some(d));
        d
    }

    pub(crate) fn timed_out(&self) -> Error {
        timed_out(self.what, self.timeout)
    }
}

/// What the consumer side found.
enum Took {
    /// A whole message is in the sink.
    Message,
    /// Nothing published yet.
    Nothing,
}

impl Ring {
    /// A new ring buffering at most `max_bytes` bytes of frames (0: [`DEFAULT_CAP`])
    /// and `maxsize` messages (0: no bound).
    pub(crate) fn new(maxsize: u64, max_bytes: u64) -> Result<Ring> {
        let (cap, limit) = Ring::bounds(maxsize, max_bytes)?;
        let ctl_block = Block::alloc(CONTROL_BYTES + 64)?;
        // Arena chunks are mapped page-aligned: offsets align as addresses do.
        let ctl = ctl_block.offset().next_multiple_of(64);
        // Always a segment of its own (larger than the arena's blocks).
        let block = Block::alloc((DATA as u64 + cap).max(MAX_SMALL as u64 + 1) as usize)?;
        Ok(Ring::at(ctl_block, ctl, block, cap, limit, maxsize, true))
    }

    /// The ring size `cap` and byte bound `limit` of a ring of at most `maxsize`
    /// messages and `max_bytes` bytes (the rules of [`new`](Self::new)).
    pub(crate) fn bounds(maxsize: u64, max_bytes: u64) -> Result<(u64, u64)> {
        let limit = if max_bytes == 0 {
            DEFAULT_CAP
        } else {
            max_bytes.max(MIN_CAP)
        };
        if limit > MAX_CAP {
            return Err(Error::SizeOverflow {
                what: "queue byte bound",
                requested: limit as u128,
                max: MAX_CAP as u128,
            });
        }
        if maxsize > COUNT_MASK / 2 {
            return Err(Error::SizeOverflow {
                what: "queue maxsize",
                requested: maxsize as u128,
                max: (COUNT_MASK / 2) as u128,
            });
        }
        Ok((limit.next_power_of_two(), limit))
    }

    /// Bytes of control words a ring needs (at a 64-aligned offset).
    pub(crate) const CONTROL: usize = CONTROL_BYTES;

    /// Bytes of tables and frames a ring of `cap` ring bytes needs.
    pub(crate) fn data_bytes(cap: u64) -> u64 {
        DATA as u64 + cap
    }

    /// The config `(cap, limit, maxsize)` written in the control words at `ctl`
    /// of `map`, if it is one that [`bounds`](Self::bounds) can give (shared words
    /// are untrusted: an opener checks them before laying the ring out).
    pub(crate) fn config_at(map: &Mapping, ctl: usize) -> Option<(u64, u64, u64)> {
        let maxsize = map.atomic_u64(ctl + MAXSIZE).load(Ordering::Acquire);
        let cap = map.atomic_u64(ctl + CAP).load(Ordering::Relaxed);
        let limit = map.atomic_u64(ctl + LIMIT).load(Ordering::Relaxed);
        let ok = cap.is_power_of_two()
            && (MIN_CAP..=MAX_CAP).contains(&cap)
            && (MIN_CAP..=cap).contains(&limit)
            && maxsize <= COUNT_MASK / 2;
        ok.then_some((cap, limit, maxsize))
    }

    /// The ring whose control words are at `ctl` (64-aligned) of `ctl_block`'s
    /// `'static` mapping and whose tables and frames are `block`'s payload (at
    /// least [`data_bytes`](Self::data_bytes)`(cap)` bytes); `init` writes a
    /// fresh ring's config, else it is an existing ring's (read by the caller).
    pub(crate) fn at(
        ctl_block: Block,
        ctl: usize,
        block: Block,
        cap: u64,
        limit: u64,
        maxsize: u64,
        init: bool,
    ) -> Ring {
        let ctl_map = ctl_block.arena_map();
        let ring = Ring {
            _ctl_block: ctl_block,
            ctl_map,
            ctl,
            w64: ctl_map.atomic_array(ctl),
            w32: ctl_map.atomic_array(ctl),
            data: block.offset() + DATA,
            block,
            plock: BiasedLock::at(ctl_map, ctl + PLOCK),
            clock: BiasedLock::at(ctl_map, ctl + CLOCK),
            cap,
            limit,
            maxsize,
            piece: ((limit / 4) & !7).max(8),
            p_spin: AdaptiveSpin::new(),
            c_spin: AdaptiveSpin::new(),
            copy: CopyChoice::new(),
            crowded: AtomicBool::new(false),
            crowd_left: AtomicU32::new(0),
            consumer_hint: AtomicU32::new(0),
            last_death_check: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
        };
        if init {
            ring.u64(CAP).store(cap, Ordering::Relaxed);
            ring.u64(LIMIT).store(limit, Ordering::Relaxed);
            ring.u64(MAXSIZE).store(maxsize, Ordering::Release);
        }
        ring
    }

    /// The control word at `off` (a multiple of 8 below `CONTROL_BYTES`): an
    /// index into `w64`, whose bounds check a constant `off` folds away.
    #[inline(always)]
    fn u64(&self, off: usize) -> &'static AtomicU64 {
        debug_assert!(off % 8 == 0);
        &self.w64[off / 8]
    }

    /// The control word at `off` (a multiple of 4 below `CONTROL_BYTES`).
    #[inline(always)]
    fn u32(&self, off: usize) -> &'static AtomicU32 {
        debug_assert!(off % 4 == 0);
        &self.w32[off / 4]
    }

    /// A control word (the JoinableQueue's words live there too).
    #[inline]
    pub(crate) fn word(&self, off: usize) -> &'static AtomicU32 {
        self.u32(off)
    }

    /// One of the three role tables.
    #[inline]
    pub(crate) fn table(&self, role: Role) -> Table<'_> {
        Table {
            map: self.block.map(),
            table: self.block.offset() + TABLES + TABLE_BYTES * role as usize,
            overflow: self.ctl + OVERFLOWS + 4 * role as usize,
            overflow_map: self.ctl_map,
        }
    }

    /// Whether any process holds the consumer role, dead or alive (the table's
    /// `any`, starting at the slot where one was last found).
    #[inline(always)]
    pub(crate) fn has_consumers(&self) -> bool {
        self.table(Role::Consumer).any_from(&self.consumer_hint)
    }

    pub(crate) fn maxsize(&self) -> u64 {
        self.maxsize
    }

    /// Messages published and not yet taken.
    pub(crate) fn qsize(&self) -> u64 {
        let h = self.u64(HEAD).load(Ordering::Acquire);
        let t = self.u64(TAIL).load(Ordering::Acquire);
        (count(t).wrapping_sub(count(h))) & COUNT_MASK
    }

    /// Whether a put of a small message would have to wait now.
    pub(crate) fn full(&self) -> bool {
        let h = self.u64(HEAD).load(Ordering::Acquire);
        let t = self.u64(TAIL).load(Ordering::Acquire);
        !self.fits(t, h, frame_bytes(1), true)
    }

    #[inline]
    fn fits(&self, t: u64, h: u64, need: u64, one_more: bool) -> bool {
        let used = pos(t).wrapping_sub(pos(h)) & POS_MASK;
        let queued = count(t).wrapping_sub(count(h)) & COUNT_MASK;
        used <= self.limit
            && used + need <= self.limit
            && (!one_more || self.maxsize == 0 || queued < self.maxsize)
    }

    /// Whether `/proc` may be read again for dead role holders (at most once per
    /// slice per process, so a busy queue does not pay for it).
    fn death_check_due(&self, role: Role) -> bool {
        let now = now_ns();
        let last = &self.last_death_check[role as usize];
        if now.saturating_sub(last.load(Ordering::Relaxed)) < OWNER_CHECK_INTERVAL.as_nanos() as u64
        {
            return false;
        }
        last.store(now, Ordering::Relaxed);
        true
    }

    /// Before a blocking wait for a side lock that another thread holds: yields
    /// this CPU once when the processes that use the queue (producers and
    /// consumers) outnumber this thread's CPUs.
    ///
    /// Oversubscribed (4 producers and 4 consumers on 2 CPUs), the lock's holder
    /// usually runs on the other CPU and releases within a spin, so two producers
    /// (or two consumers) that the scheduler runs at the same time would pass the
    /// lock back and forth at the price of a cache-line transfer per message,
    /// while the other side's processes, which could use this CPU, wait for it.
    /// The yield hands the CPU to one of them (measured, 4->4 8-byte messages:
    /// about 1.25e7 -> 1.7e7 msg/s). Not oversubscribed, a waiter keeps its CPU
    /// and spins as before. The count is read again every [`CROWD_REFRESH`]
    /// calls (process-local, a hint).
    #[inline(never)]
    pub(crate) fn yield_if_crowded(&self) {
        let left = self.crowd_left.load(Ordering::Relaxed);
        let crowded = if left == 0 {
            let users = self.table(Role::Producer).holders() + self.table(Role::Consumer).holders();
            let crowded = users > crate::sync::spin::cores();
            self.crowded.store(crowded, Ordering::Relaxed);
            self.crowd_left.store(CROWD_REFRESH, Ordering::Relaxed);
            crowded
        } else {
            self.crowd_left.store(left - 1, Ordering::Relaxed);
            self.crowded.load(Ordering::Relaxed)
        };
        if crowded {
            std::thread::yield_now();
        }
    }

    /// Whether every holder of `role` is gone: none holds it, or (when `slow`, or
    /// a check is due) every holder is dead.
    pub(crate) fn gone(&self, role: Role, slow: bool) -> bool {
        let t = self.table(role);
        if !t.any() {
            return true;
        }
        (slow || self.death_check_due(role)) && !t.any_alive()
    }

    /// Wakes every sleeper of both sides (a role table emptied: they look again).
    pub(crate) fn wake_all(&self) {
        for seq in [ITEMS_SEQ, SPACE_SEQ] {
            let w = self.u32(seq);
            w.fetch_add(1, Ordering::SeqCst);
            futex::wake_all(w);
        }
    }

    // ---- copies -------------------------------------------------------------

    #[inline(always)]
    fn write_at(&self, p: u64, bytes: &[u8]) {
        self.write_in(self.block.map(), p, bytes)
    }

    /// `write_at` with the data mapping already at hand (`block.map()` is a match
    /// on where the block lives: a fast path looks it up once).
    #[inline(always)]
    fn write_in(&self, map: &Mapping, p: u64, bytes: &[u8]) {
        let i = p & (self.cap - 1);
        let first = (bytes.len() as u64).min(self.cap - i) as usize;
        let base = self.data;
        if bytes.len() >= STREAM_MIN {
            self.write_large(base, i as usize, first, bytes);
            return;
        }
        map.write_bytes(base + i as usize, &bytes[..first]);
        if first < bytes.len() {
            map.write_bytes(base, &bytes[first..]);
        }
    }

    /// `write_at` of a large payload, with the stores that `copy` picks: plain, or
    /// non-temporal and fenced before the publication that follows (see
    /// `Mapping::stream_bytes`); a few copies are timed for it.
    #[inline(never)]
    fn write_large(&self, base: usize, i: usize, first: usize, bytes: &[u8]) {
        let map = self.block.map();
        let (stream, timed) = self.copy.pick();
        let start = timed.then(Instant::now);
        let copy = |at: usize, part: &[u8]| {
            if stream {
                map.stream_bytes(at, part)
            } else {
                map.write_bytes(at, part)
            }
        };
        copy(base + i, &bytes[..first]);
        if first < bytes.len() {
            copy(base, &bytes[first..]);
        }
        if let Some(start) = start {
            self.copy.timed(stream, start.elapsed(), bytes.len());
        }
    }

    #[inline(always)]
    fn read_at(&self, p: u64, out: &mut [u8]) {
        self.read_in(self.block.map(), p, out)
    }

    /// `read_at` with the data mapping at hand (as `write_in`).
    #[inline(always)]
    fn read_in(&self, map: &Mapping, p: u64, out: &mut [u8]) {
        let i = p & (self.cap - 1);
        let first = (out.len() as u64).min(self.cap - i) as usize;
        let base = self.data;
        let (a, b) = out.split_at_mut(first);
        map.read_bytes(base + i as usize, a);
        if !b.is_empty() {
            map.read_bytes(base, b);
        }
    }

    #[inline]
    fn header_at(&self, p: u64) -> &AtomicU64 {
        self.header_in(self.block.map(), p)
    }

    /// `header_at` with the data mapping at hand (as `write_in`).
    #[inline(always)]
    fn header_in<'m>(&self, map: &'m Mapping, p: u64) -> &'m AtomicU64 {
        map.atomic_u64(self.data + (p & (self.cap - 1)) as usize)
    }

    // ---- producer side ------------------------------------------------------

    /// Takes the producer lock (repairing after a dead holder); false at the
    /// deadline.
    pub(crate) fn lock_producer(&self, deadline: Deadline) -> Option<Hold> {
        let lock = &self.plock;
        taken(lock.lock(deadline), lock, || self.repair_producer())
    }

    /// Takes the producer lock if no one is inside it (or its holder died) now.
    #[inline]
    pub(crate) fn try_lock_producer(&self) -> Option<Hold> {
        let lock = &self.plock;
        taken(lock.try_lock(), lock, || self.repair_producer())
    }

    /// Takes the producer lock under this thread's bias, or if it is free now (as
    /// [`lock_consumer_free`](Self::lock_consumer_free) does the consumer lock):
    /// the fast path of a put; `try_lock_producer` also revokes an idle bias.
    #[inline]
    pub(crate) fn lock_producer_free(&self) -> Option<Hold> {
        let lock = &self.plock;
        taken(lock.try_free(), lock, || self.repair_producer())
    }

    /// Whether the producer lock's holder sleeps waiting for room (the queue is
    /// full for everyone behind it).
    pub(crate) fn producer_sleeping(&self) -> bool {
        self.u32(P_SLEEPING).load(Ordering::Relaxed) != 0
    }

    /// Whether the consumer lock's holder sleeps waiting for a message.
    pub(crate) fn consumer_sleeping(&self) -> bool {
        self.u32(C_SLEEPING).load(Ordering::Relaxed) != 0
    }

    #[inline]
    pub(crate) fn unlock_producer(&self, hold: Hold) {
        self.plock.unlock(hold);
    }

    /// After a producer died holding the lock: it slept no more, and a message it
    /// was publishing in pieces is abandoned.
    fn repair_producer(&self) {
        self.u32(P_SLEEPING).store(0, Ordering::Relaxed);
        if self.u32(P_PARTIAL).load(Ordering::Acquire) != 0 {
            // Room for the ABORT is reserved while a message is pieced.
            self.abort_pieces();
        }
    }

    fn abort_pieces(&self) {
        let t = self.u64(TAIL).load(Ordering::Relaxed);
        self.header_at(pos(t))
            .store((ABORT as u64) << 32, Ordering::Relaxed);
        self.publish(advance(t, HEADER, 0));
        self.u32(P_PARTIAL).store(0, Ordering::Release);
    }

    /// Stores `tail` and wakes a sleeping consumer. Holding `plock`.
    #[inline]
    fn publish(&self, t: u64) {
        self.store_and_wake(TAIL, t, C_SLEEPING, ITEMS_SEQ);
    }

    /// Stores a side's position word (SeqCst) and, if the other side's sleeper
    /// flag is set, wakes it: the waker's half of the sleeper protocol (module
    /// docs). The first store after the other side went to sleep clears the flag
    /// and wakes it; the next ones see no sleeper (it sets the flag again before
    /// it sleeps again) and make no system call.
    ///
    /// In a process registered for `membarrier` (nearly always) the pair is a
    /// release store and a plain load, ordered only against the compiler: the
    /// sleeper's heavy barrier orders them (`arm_sleep`), so a publication costs
    /// no fence. Otherwise both are SeqCst, as the sleeper's flag store and load.
    #[inline(always)]
    fn store_and_wake(&self, word: usize, value: u64, flag: usize, seq: usize) {
        let flag = self.u32(flag);
        let sleeping = if membarrier::light() {
            self.u64(word).store(value, Ordering::Release);
            compiler_fence(Ordering::SeqCst);
            flag.load(Ordering::Relaxed)
        } else {
            self.u64(word).store(value, Ordering::SeqCst);
            flag.load(Ordering::SeqCst)
        };
        if sleeping != 0 {
            self.wake_one(flag, seq);
        }
    }

    /// Clears a side's sleeper flag and, if this call cleared it, bumps the side's
    /// sequence word and wakes its sleeper (out of line: rarely anybody sleeps).
    #[cold]
    #[inline(never)]
    fn wake_one(&self, flag: &AtomicU32, seq: usize) {
        if flag.swap(0, Ordering::SeqCst) != 0 {
            let seq = self.u32(seq);
            seq.fetch_add(1, Ordering::SeqCst);
            futex::wake(seq, 1);
        }
    }

    /// Puts one message whole if it fits now (holding `plock`); false if it would
    /// wait, go in pieces, or the words do not look sane (the caller then goes
    /// the general way, [`put_locked`](Self::put_locked), which waits or reports).
    #[inline(always)]
    pub(crate) fn put_now(&self, msg: &[u8]) -> bool {
        let need = frame_bytes(msg.len() as u64);
        let t = self.u64(TAIL).load(Ordering::Relaxed);
        let h = self.u64(CACHED_HEAD).load(Ordering::Relaxed);
        if need > self.limit || !self.fits(t, h, need, true) || !self.sane(t, h) {
            return false;
        }
        self.write_whole(t, msg, need);
        true
    }

    /// Writes `msg` as one whole frame of `need` bytes at `tail` = `t` and
    /// publishes it (holding `plock`, the room already known).
    #[inline(always)]
    fn write_whole(&self, t: u64, msg: &[u8], need: u64) {
        let p = pos(t);
        let map = self.block.map();
        self.write_in(map, p + HEADER, msg);
        self.header_in(map, p).store(
            ((FIRST | LAST) as u64) << 32 | msg.len() as u64,
            Ordering::Relaxed,
        );
        self.publish(advance(t, need, 1));
    }

    /// Puts one message (holding `plock`): whole when its frame fits in the byte
    /// bound, else in pieces.
    #[inline]
    pub(crate) fn put_locked(&self, msg: &[u8], wait: &Wait) -> Result<()> {
        let need = frame_bytes(msg.len() as u64);
        // `limit <= MAX_CAP < u32::MAX`: a whole frame's length fits its header.
        if need <= self.limit {
            let t = self.wait_space(need, true, wait, false)?;
            self.write_whole(t, msg, need);
            return Ok(());
        }
        self.put_pieces(msg, wait)
    }

    /// Puts a message larger than the byte bound in pieces (holding `plock`).
    #[inline(never)]
    fn put_pieces(&self, msg: &[u8], wait: &Wait) -> Result<()> {
        let len = msg.len() as u64;
        if len > u32::MAX as u64 {
            return Err(Error::SizeOverflow {
                what: "queue message",
                requested: len as u128,
                max: u32::MAX as u128,
            });
        }
        // In pieces: the first waits like a whole message (and for the message
        // bound); each piece leaves room for an ABORT.
        let mut rest = msg;
        let mut first = true;
        while !rest.is_empty() {
            let n = (rest.len() as u64).min(self.piece) as usize;
            let (piece, after) = rest.split_at(n);
            let need = frame_bytes(n as u64) + HEADER;
            let t = match self.wait_space(need, first, wait, !first) {
                Ok(t) => t,
                Err(e) => {
                    if !first {
                        self.abort_pieces();
                    }
                    return Err(e);
                }
            };
            let kind = if first { FIRST } else { 0 } | if after.is_empty() { LAST } else { 0 };
            if first {
                self.u32(P_PARTIAL).store(1, Ordering::Release);
            }
            let p = pos(t);
            self.write_at(p + HEADER, piece);
            self.header_at(p)
                .store((kind as u64) << 32 | n as u64, Ordering::Relaxed);
            self.publish(advance(
                t,
                frame_bytes(n as u64),
                u64::from(after.is_empty()),
            ));
            first = false;
            rest = after;
        }
        self.u32(P_PARTIAL).store(0, Ordering::Release);
        Ok(())
    }

    /// Waits (holding `plock`) until `need` bytes (and, with `one_more`, one more
    /// message) fit; returns `tail`. `mid` = in the middle of a pieced message,
    /// where a timeout still applies (the pieces are then aborted) but a
    /// disconnection is not looked for.
    #[inline]
    fn wait_space(&self, need: u64, one_more: bool, wait: &Wait, mid: bool) -> Result<u64> {
        let t = self.u64(TAIL).load(Ordering::Relaxed);
        let h = self.u64(CACHED_HEAD).load(Ordering::Relaxed);
        if self.fits(t, h, need, one_more) && self.sane(t, h) {
            return Ok(t);
        }
        self.wait_space_slow(t, need, one_more, wait, mid)
    }

    /// `wait_space` when the cached `head` shows no room: reads `head`, then waits.
    #[inline(never)]
    fn wait_space_slow(
        &self,
        t: u64,
        need: u64,
        one_more: bool,
        wait: &Wait,
        mid: bool,
    ) -> Result<u64> {
        let cached = self.u64(CACHED_HEAD);
        let h = self.u64(HEAD).load(Ordering::Acquire);
        cached.store(h, Ordering::Relaxed);
        if !self.sane(t, h) {
            return Err(Error::Corrupt(format!(
                "{}: head {h:#x} and tail {t:#x} are more than the ring's {} bytes apart",
                wait.what, self.cap
            )));
        }
        if self.fits(t, h, need, one_more) {
            return Ok(t);
        }
        if !mid && self.gone(Role::Consumer, false) {
            return Err(consumers_gone());
        }
        if !wait.block {
            return Err(Error::Full);
        }
        let head = self.u64(HEAD);
        let room = || self.fits(t, head.load(Ordering::Acquire), need, one_more);
        // 1: no yield phase in the spin; the ring's own yields follow.
        if self.p_spin.spin(room, 1) || yield_until(room) {
            return Ok(t);
        }
        let deadline = wait.deadline();
        let flag = self.u32(P_SLEEPING);
        let seq = self.u32(SPACE_SEQ);
        let mut covered = None;
        let result = loop {
            // Armed at every round: a consumer's wake clears the flag.
            let slice = arm_sleep(flag, &mut covered);
            let s = seq.load(Ordering::SeqCst);
            let h = head.load(Ordering::SeqCst);
            if self.fits(t, h, need, one_more) {
                cached.store(h, Ordering::Relaxed);
                break Ok(t);
            }
            if !mid && self.gone(Role::Consumer, false) {
                break Err(consumers_gone());
            }
            if deadline.expired() {
                break Err(wait.timed_out());
            }
            futex::wait(seq, s, Some(deadline.slice(slice)));
        };
        flag.store(0, Ordering::Relaxed);
        result
    }

    fn sane(&self, t: u64, h: u64) -> bool {
        pos(t).wrapping_sub(pos(h)) & POS_MASK <= self.cap
    }

    // ---- consumer side ------------------------------------------------------

    /// Takes the consumer lock (clearing a dead holder's sleeper flag); false at
    /// the deadline.
    pub(crate) fn lock_consumer(&self, deadline: Deadline) -> Option<Hold> {
        let lock = &self.clock;
        taken(lock.lock(deadline), lock, || self.repair_consumer())
    }

    #[inline]
    pub(crate) fn try_lock_consumer(&self) -> Option<Hold> {
        let lock = &self.clock;
        taken(lock.try_lock(), lock, || self.repair_consumer())
    }

    /// Takes the consumer lock under this thread's bias, or if it is free now:
    /// plain stores or one compare-exchange, no revocation and no look for a dead
    /// holder (the fast path of a get; `try_lock_consumer` and `lock_consumer` do
    /// those).
    #[inline]
    pub(crate) fn lock_consumer_free(&self) -> Option<Hold> {
        let lock = &self.clock;
        taken(lock.try_free(), lock, || self.repair_consumer())
    }

    #[inline]
    pub(crate) fn unlock_consumer(&self, hold: Hold) {
        self.clock.unlock(hold);
    }

    /// After a consumer died holding the lock: nothing to undo (head moves by one
    /// store; the rest of a message it was piecing is skipped by the next get).
    fn repair_consumer(&self) {
        self.u32(C_SLEEPING).store(0, Ordering::Relaxed);
    }

    /// Stores `head` and wakes a sleeping producer. Holding `clock`.
    #[inline]
    fn consume(&self, h: u64) {
        self.store_and_wake(HEAD, h, P_SLEEPING, SPACE_SEQ);
    }

    /// Takes the next message into `buf` when it is published now, whole (not in
    /// pieces) and at most `buf.len()` bytes long; returns its length. Holding
    /// `clock`, at the start of a get (no message being pieced). `None` for
    /// anything else (nothing published, a piece, an `ABORT`, a longer message, a
    /// word that does not look sane): the caller then goes the general way
    /// ([`get_locked`](Self::get_locked)), which takes, waits for or reports it.
    /// Takes a message exactly as `take_frame` would: `on_take`, then one store
    /// of `head`.
    #[inline(always)]
    pub(crate) fn take_small(&self, buf: &mut [u8], on_take: &mut dyn FnMut()) -> Option<usize> {
        let h = self.u64(HEAD).load(Ordering::Relaxed);
        let cached = self.u64(CACHED_TAIL);
        let mut t = cached.load(Ordering::Relaxed);
        if pos(t) == pos(h) || !self.sane(t, h) {
            t = self.u64(TAIL).load(Ordering::Acquire);
            cached.store(t, Ordering::Relaxed);
            if pos(t) == pos(h) || !self.sane(t, h) {
                return None;
            }
        }
        let avail = pos(t).wrapping_sub(pos(h)) & POS_MASK;
        let p = pos(h);
        let map = self.block.map();
        let header = self.header_in(map, p).load(Ordering::Relaxed);
        let (kind, len) = ((header >> 32) as u32, header as u32 as u64);
        let bytes = frame_bytes(len);
        if kind != FIRST | LAST || len > buf.len() as u64 || bytes > avail {
            return None;
        }
        let out = &mut buf[..len as usize];
        self.read_in(map, p + HEADER, out);
        on_take();
        self.consume(advance(h, bytes, 1));
        Some(len as usize)
    }

    /// Takes one whole message into `out` (cleared first), holding `clock`.
    /// `on_take` runs just before the store of `head` that takes the message out
    /// of the ring (a JoinableQueue counts its task there).
    #[inline]
    pub(crate) fn get_locked(
        &self,
        out: &mut Vec<u8>,
        on_take: &mut dyn FnMut(),
        wait: &Wait,
    ) -> Result<()> {
        out.clear();
        let mut piecing = false;
        loop {
            match self.take_frame(out, on_take, &mut piecing, wait.what)? {
                Took::Message => return Ok(()),
                Took::Nothing => {}
            }
            if piecing {
                // The rest of this message comes from a producer that holds `plock`
                // (or died holding it): wait for it past our timeout.
                self.wait_items(true, &Wait::forever(wait.what))?;
                continue;
            }
            if !wait.block {
                return Err(
                    if self.gone(Role::Producer, false) && self.nothing_published() {
                        disconnected()
                    } else {
                        Error::Empty
                    },
                );
            }
            self.wait_items(false, wait)?;
        }
    }

    fn nothing_published(&self) -> bool {
        let h = self.u64(HEAD).load(Ordering::SeqCst);
        pos(self.u64(TAIL).load(Ordering::SeqCst)) == pos(h)
    }

    /// Reads the next frame, if one is published; returns what it completed.
    #[inline]
    fn take_frame(
        &self,
        out: &mut Vec<u8>,
        on_take: &mut dyn FnMut(),
        piecing: &mut bool,
        what: &'static str,
    ) -> Result<Took> {
        loop {
            let h = self.u64(HEAD).load(Ordering::Relaxed);
            let cached = self.u64(CACHED_TAIL);
            let mut t = cached.load(Ordering::Relaxed);
            if pos(t) == pos(h) || !self.sane(t, h) {
                t = self.u64(TAIL).load(Ordering::Acquire);
                cached.store(t, Ordering::Relaxed);
                if pos(t) == pos(h) {
                    return Ok(Took::Nothing);
                }
                if !self.sane(t, h) {
                    return Err(Error::Corrupt(format!(
                        "{what}: tail {t:#x} is more than the ring's {} bytes past head {h:#x}",
                        self.cap
                    )));
                }
            }
            let avail = pos(t).wrapping_sub(pos(h)) & POS_MASK;
            let p = pos(h);
            let header = self.header_at(p).load(Ordering::Relaxed);
            let (kind, len) = ((header >> 32) as u32, header as u32 as u64);
            let bytes = frame_bytes(len);
            if bytes > avail || kind & !(FIRST | LAST | ABORT) != 0 {
                return Err(Error::Corrupt(format!(
                    "{what}: a frame of kind {kind} and {len} bytes at position {p:#x}, with {avail} bytes published"
                )));
            }
            if kind == ABORT {
                // The message being pieced was abandoned (or a stray ABORT).
                out.clear();
                *piecing = false;
                self.consume(advance(h, HEADER, 0));
                continue;
            }
            let last = kind & LAST != 0;
            let keep = kind & FIRST != 0 || *piecing;
            if kind & FIRST != 0 {
                out.clear();
            }
            if keep {
                let at = out.len();
                out.resize(at + len as usize, 0);
                self.read_at(p + HEADER, &mut out[at..]);
            }
            // A piece that begins no message of ours is the rest of a message whose
            // consumer died: skipped (counted as taken at its LAST).
            if keep && last {
                on_take();
            }
            self.consume(advance(h, bytes, u64::from(last)));
            if keep && last {
                *piecing = false;
                return Ok(Took::Message);
            }
            *piecing = keep;
        }
    }

    /// Waits (holding `clock`) for a frame to be published. `piecing`: the
    /// producer writing the rest is checked every slice, and repaired when dead.
    #[inline(never)]
    fn wait_items(&self, piecing: bool, wait: &Wait) -> Result<()> {
        let head = pos(self.u64(HEAD).load(Ordering::Relaxed));
        let tail = self.u64(TAIL);
        // Look at `tail` only every few pauses: each look takes its cache line from
        // the producer, which must win it back to publish; looking less often lets
        // it publish several messages per line transfer.
        if self.c_spin.spin(
            || {
                for _ in 0..BACKOFF {
                    std::hint::spin_loop();
                }
                pos(tail.load(Ordering::Acquire)) != head
            },
            1,
        ) || yield_until(|| pos(tail.load(Ordering::Acquire)) != head)
        {
            return Ok(());
        }
        let deadline = wait.deadline();
        let flag = self.u32(C_SLEEPING);
        let seq = self.u32(ITEMS_SEQ);
        let mut next_check = Instant::now() + OWNER_CHECK_INTERVAL;
        let mut covered = None;
        let result = loop {
            // Armed at every round: a producer's wake clears the flag.
            let slice = arm_sleep(flag, &mut covered);
            let s = seq.load(Ordering::SeqCst);
            if pos(tail.load(Ordering::SeqCst)) != head {
                break Ok(());
            }
            if !piecing && self.gone(Role::Producer, false) {
                // Re-read: the last producer may have published just before leaving.
                if pos(tail.load(Ordering::SeqCst)) != head {
                    break Ok(());
                }
                break Err(disconnected());
            }
            if deadline.expired() {
                break Err(wait.timed_out());
            }
            futex::wait(seq, s, Some(deadline.slice(slice)));
            if piecing && Instant::now() >= next_check {
                next_check = Instant::now() + OWNER_CHECK_INTERVAL;
                // The piece writer holds `plock`: taking it means it died (repaired
                // on the way) or finished; either way let it go at once.
                if let Some(hold) = self.try_lock_producer() {
                    self.unlock_producer(hold);
                }
            }
        };
        flag.store(0, Ordering::Relaxed);
        result
    }
}

/// The sleeper's half of the handshake with `store_and_wake`: sets the sleeper
/// flag (SeqCst) and, when this round set it (a wake cleared it, or this is the
/// first round), runs the heavy barrier that orders it against the light wakers
/// (`sys::membarrier`). Returns the slice to sleep: [`OWNER_CHECK_INTERVAL`], or
/// [`UNCOVERED_SLICE`] when the barrier failed and a light waker's wake-up could
/// be missed (the wait then looks again soon). `covered` keeps the last barrier's
/// answer: while the flag stays set, that barrier still orders every waker.
fn arm_sleep(flag: &AtomicU32, covered: &mut Option<bool>) -> Duration {
    if flag.swap(1, Ordering::SeqCst) == 0 || covered.is_none() {
        *covered = Some(membarrier::heavy());
    }
    if *covered == Some(true) {
        OWNER_CHECK_INTERVAL
    } else {
        UNCOVERED_SLICE
    }
}

/// Yields the CPU a few times, looking at `ready` after each, before a waiter goes
/// to sleep: when the other side shares this CPU (more runnable processes than
/// cores), it runs and makes progress in bulk, and nobody pays for a futex wake and
/// a context switch per message. False if `ready` never held.
fn yield_until(mut ready: impl FnMut() -> bool) -> bool {
    for _ in 0..YIELDS {
        std::thread::yield_now();
        if ready() {
            return true;
        }
    }
    false
}

fn consumers_gone() -> Error {
    Error::Disconnected("put: every consumer of the queue is gone (dropped, closed or dead)")
}

fn disconnected() -> Error {
    Error::Disconnected(
        "get: the queue is empty and every producer is gone (dropped, closed or dead)",
    )
}

pub(crate) fn timed_out(what: &'static str, timeout: Option<Duration>) -> Error {
    Error::Timeout {
        what,
        timeout: timeout.unwrap_or_default(),
    }
}

fn now_ns() -> u64 {
    use std::sync::OnceLock;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

/// How a side's lock is held, if it was taken (`got` from `lock`/`try_lock`);
/// after a dead holder, `repair` puts the side's state right before the lock is
/// declared consistent again.
#[inline]
fn taken(got: Option<(Acquired, Hold)>, lock: &BiasedLock, repair: impl FnOnce()) -> Option<Hold> {
    match got {
        None => None,
        Some((Acquired::Clean, hold)) => Some(hold),
        Some((Acquired::OwnerDied, hold)) => {
            repair();
            lock.mark_consistent();
            Some(hold)
        }
    }
}

/// A ring in a token (see `crate::token`): its control words (a 64-aligned
/// `At` in an arena block) and its data segment.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct RingToken {
    ctl: crate::token::At,
    data: crate::shm::arena::BlockToken,
}

impl Ring {
    /// The ring as a token.
    pub(crate) fn token(&self) -> Result<RingToken> {
        Ok(RingToken {
            ctl: crate::token::At::of(&self._ctl_block, self.ctl)?,
            data: self.block.token()?,
        })
    }

    /// The ring a token names. The config (capacity, byte bound, maxsize) is read
    /// from its control words once, as a forked child inherits it, and checked to
    /// be one `new` can make: a forged one is refused, never trusted for sizes.
    pub(crate) fn from_token(t: &RingToken, what: &'static str) -> Result<Ring> {
        let (ctl_block, ctl) = t.ctl.import(CONTROL_BYTES, what)?;
        let ctl_map = ctl_block.arena_map();
        let block = Block::from_token(&t.data, what)?;
        // Frames fill the segment (see `Block::use_as`).
        block.use_as(crate::shm::arena::Use::Primitives { end: usize::MAX }, what)?;
        let bad = |reason: String| Error::BadToken { what, reason };
        if ctl % 64 != 0 {
            return Err(bad(format!("control words at {ctl}, not 64-aligned")));
        }
        let word = |off: usize| ctl_map.atomic_u64(ctl + off).load(Ordering::Acquire);
        let (maxsize, limit, cap) = (word(MAXSIZE), word(LIMIT), word(CAP));
        let ok = cap.is_power_of_two()
            && (MIN_CAP..=MAX_CAP.next_power_of_two()).contains(&cap)
            && (MIN_CAP..=cap.min(MAX_CAP)).contains(&limit)
            && maxsize <= COUNT_MASK / 2
            && (DATA as u64)
                .checked_add(cap)
                .is_some_and(|n| n <= block.len() as u64);
        if !ok {
            return Err(bad(format!(
                "ring of {cap} bytes, bound {limit}, maxsize {maxsize} in a {}-byte segment",
                block.len()
            )));
        }
        Ok(Ring {
            _ctl_block: ctl_block,
            ctl_map,
            ctl,
            w64: ctl_map.atomic_array(ctl),
            w32: ctl_map.atomic_array(ctl),
            data: block.offset() + DATA,
            block,
            plock: BiasedLock::at(ctl_map, ctl + PLOCK),
            clock: BiasedLock::at(ctl_map, ctl + CLOCK),
            cap,
            limit,
            maxsize,
            piece: ((limit / 4) & !7).max(8),
            p_spin: AdaptiveSpin::new(),
            c_spin: AdaptiveSpin::new(),
            copy: CopyChoice::new(),
            crowded: AtomicBool::new(false),
            crowd_left: AtomicU32::new(0),
            consumer_hint: AtomicU32::new(0),
            last_death_check: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Process, Queue};

    const PATIENCE: Option<Duration> = Some(Duration::from_secs(30));

    /// Polls `ready` until it holds; false after 30 s.
    fn poll(mut ready: impl FnMut() -> bool) -> bool {
        let deadline = Deadline::after(PATIENCE).unwrap();
        while !ready() {
            if deadline.expired() {
                return false;
            }
            std::thread::yield_now();
        }
        true
    }

    /// Which way the other side sleeps in the handshake test.
    fn woken_by_the_waker(consumer_sleeps: bool) {
        let q = Queue::<u64>::with_maxsize(1).unwrap();
        if !consumer_sleeps {
            q.put(&1, None).unwrap();
        }
        let h = q.clone();
        let mut child = Process::new(move || {
            if consumer_sleeps {
                assert_eq!(h.get(PATIENCE).unwrap(), 7);
            } else {
                h.put(&7, PATIENCE).unwrap();
            }
        });
        child.start().unwrap();
        let ring = &*q.holder.ring;
        let (flag, seq) = if consumer_sleeps {
            (C_SLEEPING, ITEMS_SEQ)
        } else {
            (P_SLEEPING, SPACE_SEQ)
        };
        assert!(
            poll(|| ring.u32(flag).load(Ordering::SeqCst) != 0),
            "the child never went to sleep"
        );
        let before = ring.u32(seq).load(Ordering::SeqCst);
        if consumer_sleeps {
            q.put(&7, None).unwrap();
        } else {
            assert_eq!(q.get(None).unwrap(), 1);
        }
        // The publication saw the sleeper's flag: it bumped the sequence (and woke
        // the futex) instead of leaving the sleeper to its slice.
        assert_ne!(
            ring.u32(seq).load(Ordering::SeqCst),
            before,
            "the waker did not wake the sleeper"
        );
        child.join(PATIENCE).unwrap();
        assert_eq!(child.exitcode(), Some(0));
        if !consumer_sleeps {
            assert_eq!(q.get(None).unwrap(), 7);
        }
    }

    #[test]
    fn a_publication_wakes_a_consumer_asleep_in_another_process() {
        woken_by_the_waker(true);
    }

    #[test]
    fn a_get_wakes_a_producer_asleep_on_a_full_queue_in_another_process() {
        woken_by_the_waker(false);
    }

    /// The copy choice: the kind it picks is timed once in `COPY_SAMPLE` copies and
    /// the other once in `COPY_PROBE`; it streams only while streaming's smoothed
    /// cost per byte is under a `STREAM_GAIN`th of the plain one, and follows a change.
    #[test]
    fn the_copy_choice_streams_only_when_streaming_is_clearly_cheaper() {
        let c = CopyChoice::new();
        let picks: Vec<(bool, bool)> = (0..COPY_PROBE).map(|_| c.pick()).collect();
        assert_eq!(picks[0], (false, true), "the first copy is plain, timed");
        let timed = picks.iter().filter(|p| p.1).count() as u32;
        assert_eq!(timed, COPY_PROBE / COPY_SAMPLE + 1);
        assert_eq!(picks[PROBE_AT as usize], (true, true), "the probe streams");
        assert!(!c.streams(), "nothing known of streaming yet");
        let us = Duration::from_micros;
        c.timed(false, us(4), 4096);
        c.timed(true, us(1), 4096);
        assert!(c.streams(), "4x cheaper");
        for _ in 0..20 {
            c.timed(true, us(2), 4096);
        }
        assert!(!c.streams(), "2x cheaper is not enough");
        for _ in 0..20 {
            c.timed(false, us(10), 4096);
        }
        assert!(c.streams(), "plain became slow");
        // One sample far off (a copy interrupted) moves the average little.
        let before = c.plain.load(Ordering::Relaxed);
        c.timed(false, Duration::from_millis(50), 4096);
        assert!(c.plain.load(Ordering::Relaxed) <= before * 3);
    }

    /// Messages of every size around the streaming threshold, put by a child in
    /// another process through a small ring (so that they wrap around its end),
    /// with both kinds of copy (the probe takes the other kind): each arrives
    /// whole and in order.
    #[test]
    fn large_messages_arrive_whole_with_either_kind_of_copy() {
        let q = Queue::<()>::with_bounds(0, 16 * 1024).unwrap();
        let sizes: Vec<usize> = (0..600).map(|i| STREAM_MIN - 9 + (i * 13) % 5000).collect();
        let body = |i: usize, n: usize| -> Vec<u8> {
            (0..n)
                .map(|k| (k as u32 * 31 + i as u32 * 7) as u8)
                .collect()
        };
        let (tx, sz) = (q.sender(), sizes.clone());
        let mut child = Process::new(move || {
            for (i, &n) in sz.iter().enumerate() {
                tx.put_bytes(&body(i, n), PATIENCE).unwrap();
            }
        });
        child.start().unwrap();
        let mut buf = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            assert_eq!(q.get_bytes_into(&mut buf, PATIENCE).unwrap(), n);
            assert!(buf == body(i, n), "message {i} of {n} bytes is not whole");
        }
        child.join(PATIENCE).unwrap();
        assert_eq!(child.exitcode(), Some(0));
    }

    /// The queue's users are counted per process (a parent holding both roles and
    /// three children holding a producer handle each: 4 producers, 1 consumer),
    /// and a contended wait yields exactly when they outnumber this thread's CPUs.
    #[test]
    fn a_contended_wait_yields_when_the_queue_has_more_processes_than_cpus() {
        let q = Queue::<u64>::new().unwrap();
        let done = crate::Event::new().unwrap();
        let mut kids = Vec::new();
        for _ in 0..3 {
            let (tx, d) = (q.sender(), done.clone());
            let mut child = Process::new(move || {
                assert!(d.wait(PATIENCE).unwrap());
                drop(tx);
            });
            child.start().unwrap();
            kids.push(child);
        }
        let ring = &*q.holder.ring;
        assert_eq!(ring.table(Role::Producer).holders(), 4);
        assert_eq!(ring.table(Role::Consumer).holders(), 1);
        ring.yield_if_crowded();
        let crowded = 5 > crate::sync::spin::cores();
        assert_eq!(ring.crowded.load(Ordering::Relaxed), crowded);
        done.set();
        for mut k in kids {
            assert_eq!(k.join(PATIENCE).unwrap(), Some(0));
        }
    }

    /// A lone producer keeps its bias between puts; a second producer, while the
    /// first lives idle and after it is SIGKILLed idle, puts at once (the bias
    /// revoked), and every message arrives once, in order.
    #[test]
    fn a_second_producer_takes_over_an_idle_biased_producer_alive_or_killed() {
        if !membarrier::light() {
            return; // no bias without the heavy barrier
        }
        for kill in [false, true] {
            let q = Queue::<u64>::new().unwrap();
            let (ready, done) = (crate::Event::new().unwrap(), crate::Event::new().unwrap());
            let (tx, r, d) = (q.sender(), ready.clone(), done.clone());
            let mut child = Process::new(move || {
                for i in 0..100 {
                    tx.put(&i, PATIENCE).unwrap();
                }
                r.set();
                assert!(d.wait(PATIENCE).unwrap());
            });
            child.start().unwrap();
            assert!(ready.wait(PATIENCE).unwrap());
            let ring = &*q.holder.ring;
            assert!(
                ring.plock.biased_to().is_some(),
                "the lone producer is not biased"
            );
            if kill {
                child.kill().unwrap();
                assert_eq!(child.join(PATIENCE).unwrap(), Some(-9));
            }
            q.put(&100, PATIENCE).unwrap();
            assert_eq!(ring.plock.biased_to(), None);
            for i in 0..=100 {
                assert_eq!(q.get(PATIENCE).unwrap(), i);
            }
            if !kill {
                done.set();
                assert_eq!(child.join(PATIENCE).unwrap(), Some(0));
            }
        }
    }
}
