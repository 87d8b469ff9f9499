//! Role accounting: which processes hold a queue's producer role, its consumer
//! role, or unfinished tasks of a `JoinableQueue`.
//!
//! ## Layout: a table of [`SLOTS`] words of 8 bytes, plus one overflow word
//! ```text
//! slot  u64  0 = free; else owner (low 32 bits: an `ident` process word)
//!            | count << 32 (high 32 bits, >= 1): handles (or tasks) of that
//!            process
//! ```
//! ## Invariants
//! - **Every change is one compare-exchange** of one slot word (or one add on the
//!   overflow word), so a process killed anywhere leaves the table well formed:
//!   at worst its own slot keeps a count, which then belongs to a dead owner.
//! - **Counts are per process.** A slot names a process; only that process changes
//!   its count, except `Process::start`, which adds the child's slot while handing
//!   a handle to it (the child runs no user code meanwhile, see `sys::inherit`).
//!   Two threads of one process may both claim a slot in a race: the process then
//!   has two slots, which changes no answer below.
//! - **Dead is gone, unknown is alive.** [`any_alive`] skips slots whose owner is
//!   gone (pid and start-time tag, `sync::ident`); an owner `/proc` cannot tell
//!   about counts as alive. A slot of a dead owner is reused when the table is full.
//! - **Overflow is alive forever.** When no slot is free (more than [`SLOTS`] live
//!   processes hold one role), the count goes to the overflow word, which always
//!   counts as alive: a queue may then miss a disconnection, never fake one.
//!
//! Written by hand: the table is the queue's own shared state; no crate keeps
//! per-process counts in shared memory with death detection.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::sync::ident;
use crate::sys::mem::Mapping;

/// Slots of one table: the processes that may hold one role of one queue and be
/// told apart (more still work, counted as alive forever).
pub(crate) const SLOTS: usize = 64;
/// Bytes of one table.
pub(crate) const TABLE_BYTES: usize = SLOTS * 8;

fn owner_of(w: u64) -> u32 {
    w as u32
}

fn count_of(w: u64) -> u32 {
    (w >> 32) as u32
}

fn slot(owner: u32, count: u32) -> u64 {
    (count as u64) << 32 | owner as u64
}

/// One table in a mapping: `table` is its offset, `overflow` the offset of its
/// overflow word.
#[derive(Clone, Copy)]
pub(crate) struct Table<'a> {
    pub(crate) map: &'a Mapping,
    pub(crate) table: usize,
    pub(crate) overflow: usize,
    /// The mapping of the overflow word (the ring keeps it with its control words).
    pub(crate) overflow_map: &'a Mapping,
}

/// Whose slot a lookup wants: this process (either form of its owner word, see
/// `ident::is_this_process`) or exactly one word (a child being handed a handle).
#[derive(Clone, Copy)]
pub(crate) enum Who {
    Me,
    Exactly(u32),
}

impl Who {
    fn word(self) -> u32 {
        match self {
            Who::Me => ident::process(),
            Who::Exactly(w) => w,
        }
    }

    fn matches(self, owner: u32) -> bool {
        match self {
            Who::Me => ident::is_this_process(owner),
            Who::Exactly(w) => owner == w,
        }
    }
}

impl<'a> Table<'a> {
    fn word(&self, i: usize) -> &'a AtomicU64 {
        self.map.atomic_u64(self.table + 8 * i)
    }

    fn overflow(&self) -> &'a AtomicU32 {
        self.overflow_map.atomic_u32(self.overflow)
    }

    /// Adds `n` to `who`'s count: its slot, else a free one, else one of a dead
    /// owner, else the overflow word.
    pub(crate) fn add(&self, who: Who, n: u32) {
        for i in 0..SLOTS {
            let s = self.word(i);
            let mut w = s.load(Ordering::Acquire);
            while w != 0 && who.matches(owner_of(w)) && count_of(w) > 0 {
                let next = slot(owner_of(w), count_of(w).saturating_add(n));
                match s.compare_exchange(w, next, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return,
                    Err(now) => w = now,
                }
            }
        }
        let mine = slot(who.word(), n);
        for i in 0..SLOTS {
            if self
                .word(i)
                .compare_exchange(0, mine, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
        for i in 0..SLOTS {
            let s = self.word(i);
            let w = s.load(Ordering::Acquire);
            if w != 0
                && ident::is_process_gone(owner_of(w))
                && s.compare_exchange(w, mine, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
        }
        self.overflow().fetch_add(n, Ordering::AcqRel);
    }

    /// Takes one from `who`'s count (its slot, else the overflow word); false if
    /// neither had any.
    pub(crate) fn remove(&self, who: Who) -> bool {
        for i in 0..SLOTS {
            let s = self.word(i);
            let mut w = s.load(Ordering::Acquire);
            while w != 0 && who.matches(owner_of(w)) && count_of(w) > 0 {
                let next = match count_of(w) {
                    1 => 0,
                    c => slot(owner_of(w), c - 1),
                };
                match s.compare_exchange(w, next, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return true,
                    Err(now) => w = now,
                }
            }
        }
        self.overflow()
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Takes one from any live process's count other than through `who` (a
    /// `task_done` in a process that took no task: another process took it).
    pub(crate) fn remove_any_alive(&self) -> bool {
        for i in 0..SLOTS {
            let s = self.word(i);
            let w = s.load(Ordering::Acquire);
            if w == 0 || count_of(w) == 0 || ident::is_process_gone(owner_of(w)) {
                continue;
            }
            let next = match count_of(w) {
                1 => 0,
                c => slot(owner_of(w), c - 1),
            };
            if s.compare_exchange(w, next, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return true;
            }
        }
        self.overflow()
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// [`any`](Self::any), looking first at slot `hint` (where the caller last
    /// found a count; a process-local guess, any value), which it updates: the
    /// same answer, in one or two loads when the holders stay where they are (a
    /// put asks this every time).
    #[inline(always)]
    pub(crate) fn any_from(&self, hint: &AtomicU32) -> bool {
        let i = hint.load(Ordering::Relaxed) as usize % SLOTS;
        if count_of(self.word(i).load(Ordering::Acquire)) > 0
            || self.overflow().load(Ordering::Acquire) > 0
        {
            return true;
        }
        self.any_scan(hint)
    }

    /// `any_from` when the hinted slot is empty: every slot, the hint moved to
    /// the first that holds a count.
    #[inline(never)]
    fn any_scan(&self, hint: &AtomicU32) -> bool {
        match (0..SLOTS).find(|&i| count_of(self.word(i).load(Ordering::Acquire)) > 0) {
            Some(i) => {
                hint.store(i as u32, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Whether any process holds a count, dead or alive (no `/proc` read).
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.overflow().load(Ordering::Acquire) > 0
            || (0..SLOTS).any(|i| count_of(self.word(i).load(Ordering::Acquire)) > 0)
    }

    /// Whether a process that is not gone holds a count (reads `/proc` for every
    /// other process's slot until one is found alive).
    pub(crate) fn any_alive(&self) -> bool {
        if self.overflow().load(Ordering::Acquire) > 0 {
            return true;
        }
        (0..SLOTS).any(|i| {
            let w = self.word(i).load(Ordering::Acquire);
            count_of(w) > 0
                && (ident::is_this_process(owner_of(w)) || !ident::is_process_gone(owner_of(w)))
        })
    }

    /// How many processes hold a count, dead or alive (no `/proc` read); a full
    /// table's overflow counts as one more than the table holds.
    pub(crate) fn holders(&self) -> usize {
        let slots = (0..SLOTS)
            .filter(|&i| count_of(self.word(i).load(Ordering::Relaxed)) > 0)
            .count();
        slots + usize::from(self.overflow().load(Ordering::Relaxed) > 0)
    }

    /// The sum of the counts of processes that are not gone (overflow included).
    pub(crate) fn alive_total(&self) -> u64 {
        let mut total = self.overflow().load(Ordering::Acquire) as u64;
        for i in 0..SLOTS {
            let w = self.word(i).load(Ordering::Acquire);
            if count_of(w) > 0
                && (ident::is_this_process(owner_of(w)) || !ident::is_process_gone(owner_of(w)))
            {
                total += count_of(w) as u64;
            }
        }
        total
    }

    /// Frees the slots of dead processes; returns the counts they held.
    pub(crate) fn write_off_dead(&self) -> u64 {
        let mut total = 0;
        for i in 0..SLOTS {
            let s = self.word(i);
            let w = s.load(Ordering::Acquire);
            if count_of(w) > 0
                && !ident::is_this_process(owner_of(w))
                && ident::is_process_gone(owner_of(w))
                && s.compare_exchange(w, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                total += count_of(w) as u64;
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::arena::Block;

    fn table(block: &Block) -> Table<'_> {
        Table {
            map: block.map(),
            table: block.offset(),
            overflow: block.offset() + TABLE_BYTES,
            overflow_map: block.map(),
        }
    }

    /// A dead process's word: this pid with another start-time tag.
    fn ghost() -> u32 {
        let me = ident::process();
        let tag = (me >> 22) & 0x1ff;
        (me & ident::ID_MASK) | (tag % 511 + 1) << 22
    }

    #[test]
    fn counts_per_process_and_frees_the_slot_at_zero() {
        let block = Block::alloc(TABLE_BYTES + 8).unwrap();
        let t = table(&block);
        assert!(!t.any());
        t.add(Who::Me, 1);
        t.add(Who::Me, 1);
        assert!(t.any() && t.any_alive());
        assert_eq!(t.alive_total(), 2);
        assert!(t.remove(Who::Me));
        assert!(t.remove(Who::Me));
        assert!(!t.any());
        assert!(!t.remove(Who::Me));
    }

    #[test]
    fn a_dead_owner_is_not_alive_and_is_written_off() {
        let block = Block::alloc(TABLE_BYTES + 8).unwrap();
        let t = table(&block);
        t.add(Who::Exactly(ghost()), 3);
        assert!(t.any());
        assert!(!t.any_alive());
        assert_eq!(t.alive_total(), 0);
        assert_eq!(t.write_off_dead(), 3);
        assert!(!t.any());
    }

    #[test]
    fn a_full_table_reuses_dead_slots_then_overflows_as_alive() {
        let block = Block::alloc(TABLE_BYTES + 8).unwrap();
        let t = table(&block);
        for i in 0..SLOTS {
            // Distinct dead-looking owners (pids that do not run: beyond pid_max).
            t.add(Who::Exactly((ident::ID_MASK - i as u32) | (1 << 22)), 1);
        }
        t.add(Who::Me, 1); // reuses a dead slot
        assert_eq!(t.overflow().load(Ordering::Relaxed), 0);
        assert!(t.any_alive());
        // Fill every slot with this (live) process under other words: overflow.
        for i in 0..SLOTS {
            t.word(i)
                .store(slot(ident::process(), 1), Ordering::Relaxed);
        }
        t.add(Who::Exactly(ghost()), 1);
        assert_eq!(t.overflow().load(Ordering::Relaxed), 1);
        assert!(t.remove(Who::Exactly(ghost()))); // from the overflow word
        assert_eq!(t.overflow().load(Ordering::Relaxed), 0);
    }
}
