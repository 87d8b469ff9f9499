//! Who is alive: process and thread identity read from `/proc`.
//!
//! A pid alone does not name a process for long: once it dies and is reaped, the
//! kernel may hand the same number to a new process. multiproc therefore names an
//! owner by its pid (or tid) *and* its start time (field 22 of `/proc/<id>/stat`,
//! clock ticks since boot), which no later process with the same pid can share.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, Ordering};

/// Identity and state of one task (process or thread) as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskStat {
    /// The one-letter state: `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: u8,
    /// Start time in clock ticks after boot.
    pub start_time: u64,
    /// Threads in the task's thread group (field 20), the task itself included. A
    /// group leader that called `pthread_exit` is a zombie while its other threads
    /// run, and shows them here: `Z` with `threads > 1` is a running process.
    pub threads: u32,
}

impl TaskStat {
    /// Whether the task has finished running (a zombie waiting to be reaped counts).
    pub fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// What a read of `/proc/<id>/stat` tells about a task: three answers, because
/// "could not read" is not "does not exist".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The task exists (it may be a zombie: see [`TaskStat::is_dead`]).
    Found(TaskStat),
    /// No such task: the kernel said `ENOENT` or `ESRCH`.
    Gone,
    /// The read failed otherwise (`EMFILE`/`ENFILE` at the fd limit, `ENOMEM`,
    /// `EACCES`, a text that does not parse, ...): nothing is known.
    Unknown,
}

/// Reads `/proc/<id>/stat` for a pid or a tid.
///
/// `/proc/<tid>` resolves for every thread of the pid namespace even though only
/// thread-group leaders are listed in `/proc`. Only `ENOENT` and `ESRCH` (the task
/// went away between open and read) are [`Probe::Gone`]; `EINTR` is retried; every
/// other failure is [`Probe::Unknown`].
pub fn probe(id: u32) -> Probe {
    use rustix::fs::{Mode, OFlags};
    use rustix::io::Errno;
    let gone_or_unknown = |e: Errno| match e {
        Errno::NOENT | Errno::SRCH => Probe::Gone,
        _ => Probe::Unknown,
    };
    // The path is built on the stack and the file read with plain system calls:
    // every forked child runs this once before its target (`ident::prime`), and
    // a heap allocation there costs it a copy-on-write fault.
    let mut path = [0u8; 32];
    let path = stat_path(id, &mut path);
    let fd = loop {
        match rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => break fd,
            Err(Errno::INTR) => continue,
            Err(e) => return gone_or_unknown(e),
        }
    };
    let mut buf = [0u8; 1024];
    let mut len = 0;
    // The kernel writes the whole line in one read; it ends with a newline, so a
    // second read (for end of file) is needed only if the first was cut short.
    while len < buf.len() && !buf[..len].ends_with(b"\n") {
        match rustix::io::read(&fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::INTR) => continue,
            Err(e) => return gone_or_unknown(e),
        }
    }
    parse_stat(&buf[..len]).map_or(Probe::Unknown, Probe::Found)
}

/// `/proc/<id>/stat` as a C string, written into `buf`.
fn stat_path(id: u32, buf: &mut [u8; 32]) -> &std::ffi::CStr {
    let mut digits = [0u8; 10];
    let mut n = id;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let parts: [&[u8]; 4] = [b"/proc/", &digits[i..], b"/stat", b"\0"];
    let mut len = 0;
    for p in parts {
        buf[len..len + p.len()].copy_from_slice(p);
        len += p.len();
    }
    std::ffi::CStr::from_bytes_with_nul(&buf[..len]).expect("one nul, at the end")
}

/// A reading of `CLOCK_BOOTTIME` in nanoseconds (through the vDSO: no system
/// call): the clock a task's start time (field 22 of `/proc/<pid>/stat`) is
/// taken from, at its fork.
#[inline]
pub(crate) fn boottime_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

super::fork::child_path! {
    /// [`boottime_ns`] for a process just forked: by the system call instead of the
    /// vDSO. A fork copies no page-table entry of the vDSO's code (the kernel lets a
    /// child fault such mappings in), so a child's first vDSO call takes a page
    /// fault, which costs more than the system call (measured: one fault more per
    /// child of a fork loop; a fault costs about 2.5 us on this 2-vCPU VM, the call
    /// about 0.2 us). Falls back to the vDSO if the call fails.
    ///
    /// The call is made inline (`raw_clock_gettime`), not through libc's
    /// `syscall()`: that function is out of line in libc's code, whose pages a fork
    /// does not copy either, and it was one more page fault per forked child
    /// (rustix, which makes raw calls, offers `clock_gettime` only through the vDSO).
    pub(crate) fn boottime_ns_after_fork() -> u64 {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `clock_gettime` writes one `timespec` into the live local.
        let rc = unsafe { raw_clock_gettime(libc::CLOCK_BOOTTIME, &mut t) };
        if rc != 0 {
            return boottime_ns();
        }
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }
}

/// The `clock_gettime` system call made by the instruction itself: 0, or a
/// negated errno. Safety: `ts` must be valid for a write of one `timespec`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn raw_clock_gettime(clock: libc::clockid_t, ts: *mut libc::timespec) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 Linux system-call convention: number in rax, arguments
    // in rdi and rsi, result in rax; the instruction clobbers rcx and r11 and
    // touches no stack. The kernel writes only `*ts`, which the caller vouches
    // for (the asm is not `nomem`, so the compiler assumes memory may change).
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") libc::SYS_clock_gettime as isize => ret,
            in("rdi") clock as isize,
            in("rsi") ts,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// As on x86_64: number in x8, arguments in x0 and x1, result in x0 (`svc 0`
/// clobbers nothing else).
#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn raw_clock_gettime(clock: libc::clockid_t, ts: *mut libc::timespec) -> isize {
    let ret: isize;
    // SAFETY: the aarch64 Linux system-call convention; the kernel writes only
    // `*ts`, which the caller vouches for.
    unsafe {
        std::arch::asm!(
            "svc 0",
            inlateout("x0") clock as isize => ret,
            in("x1") ts,
            in("x8") libc::SYS_clock_gettime,
            options(nostack),
        );
    }
    ret
}

/// Elsewhere through libc's `syscall()`.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn raw_clock_gettime(clock: libc::clockid_t, ts: *mut libc::timespec) -> isize {
    // SAFETY: `clock_gettime` writes one `timespec` through `ts`, which the
    // caller vouches for.
    let rc = unsafe { libc::syscall(libc::SYS_clock_gettime, clock, ts) };
    if rc == 0 { 0 } else { -1 }
}

super::fork::child_path! {
    /// The start time `/proc/<pid>/stat` shows for a process forked after the
    /// reading `before` and before the reading `after` of [`boottime_ns`], when the
    /// two fall in the same clock tick (`ticks_per_second`, the kernel's `USER_HZ`);
    /// `None` otherwise (then read `/proc`).
    ///
    /// The kernel stamps a new task with `ktime_get_boottime_ns()` inside `fork`
    /// (`start_boottime`), and `/proc` shows it as `ns / (10^9 / USER_HZ)` ticks,
    /// rounded down, for a reader in the same time namespace (the child reading
    /// itself, as `/proc/self/stat` would). The vDSO's `CLOCK_BOOTTIME` is the same
    /// clock: `before <= start <= after`, so if both readings round to the same
    /// tick, so does the start. A fork that straddles a tick boundary (about 1 in
    /// 100 on this path) gets `None`.
    #[inline]
    pub(crate) fn start_ticks_between(before: u64, after: u64, ticks_per_second: u64) -> Option<u64> {
        const NS: u64 = 1_000_000_000;
        if ticks_per_second == 0 || NS % ticks_per_second != 0 || after < before {
            return None;
        }
        let ns_per_tick = NS / ticks_per_second;
        (before / ns_per_tick == after / ns_per_tick).then_some(before / ns_per_tick)
    }
}

/// Whether `/proc` speaks for this process's pid namespace: `/proc/self` names
/// this very pid and its `stat` reads. Only then does "no `/proc/<pid>`" mean "no
/// such process": without a mounted `/proc`, or with one of another pid namespace
/// (a container that did not remount it, a process that `unshare`d its pids), every
/// owner would look gone, or a stranger would answer for it.
///
/// Only a success is cached, with the pid it was checked for: a failure may be
/// transient (the fd limit), so it is asked again; and a forked child (another
/// pid, perhaps in a new pid namespace after `unshare(CLONE_NEWPID)`) checks again
/// instead of trusting the answer its parent inherited to it.
pub fn answers() -> bool {
    static ANSWERED_FOR: AtomicU32 = AtomicU32::new(0);
    let pid = super::fork::pid() as u32;
    answers_by(&ANSWERED_FOR, pid, || {
        std::fs::read_link("/proc/self").is_ok_and(|p| p.as_os_str() == pid.to_string().as_str())
            && matches!(probe(pid), Probe::Found(_))
    })
}

fn answers_by(cache: &AtomicU32, pid: u32, check: impl FnOnce() -> bool) -> bool {
    if cache.load(Ordering::Relaxed) == pid {
        return true;
    }
    let answers = check();
    if answers {
        cache.store(pid, Ordering::Relaxed);
    }
    answers
}

/// A pidfd on the process `pid`, or `None` if it cannot be opened (no such
/// process, the fd limit, a kernel before 5.3). What it refers to must still be
/// checked (the pid may have been reused before the open): see
/// `sync::ident::Watcher`.
pub fn open_pidfd(pid: u32) -> Option<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
}

/// Whether the process behind `pidfd` has exited (all its threads: a pidfd polls
/// readable then, whether or not it was reaped); `None` if the poll failed.
pub fn pidfd_exited(pidfd: &OwnedFd) -> Option<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    poll(&mut fds, Some(&Timespec::default()))
        .ok()
        .map(|n| n > 0)
}

#[cfg(test)]
/// [`probe`] when only a successful read matters: `None` when the task is gone *or*
/// could not be read. Do not take `None` for death: use [`probe`] for that.
pub fn task_stat(id: u32) -> Option<TaskStat> {
    match probe(id) {
        Probe::Found(stat) => Some(stat),
        Probe::Gone | Probe::Unknown => None,
    }
}

/// Parses the text of a `stat` file. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the *last* `)`.
fn parse_stat(text: &[u8]) -> Option<TaskStat> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let mut fields = text[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    let number = |f: &[u8]| std::str::from_utf8(f).ok()?.trim().parse().ok();
    let state = *fields.next()?.first()?;
    // After the state (field 3) come fields 4..; threads is field 20, start time 22.
    let threads = number(fields.nth(20 - 4)?)?;
    let start_time = number(fields.nth(22 - 21)?)?;
    Some(TaskStat {
        state,
        start_time,
        threads: u32::try_from(threads).ok()?,
    })
}

fn own_start_time(id: u32) -> Option<u64> {
    match probe(id) {
        Probe::Found(stat) => Some(stat.start_time),
        Probe::Gone | Probe::Unknown => None,
    }
}

/// Start time of the calling thread (`/proc/<tid>/stat`); `None` if it cannot be
/// read now (at the fd limit, say): then try again later, do not assume a value.
pub fn read_thread_start_time() -> Option<u64> {
    own_start_time(rustix::thread::gettid().as_raw_nonzero().get() as u32)
}

/// Start time of the calling process (`/proc/<pid>/stat`); `None` if it cannot be
/// read now.
pub fn read_process_start_time() -> Option<u64> {
    own_start_time(rustix::process::getpid().as_raw_nonzero().get() as u32)
}

#[cfg(test)]
/// Start time of the calling thread; 0 if it cannot be read.
pub fn current_thread_start_time() -> u64 {
    read_thread_start_time().unwrap_or(0)
}

/// Start time of the calling process; 0 if it cannot be read. Recorded as
/// `creator_start` in every segment header.
pub fn current_process_start_time() -> u64 {
    read_process_start_time().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The system-call reading a forked child makes is the vDSO's clock: it
    /// falls between two vDSO readings (a wrong clock, register or a reading
    /// left unwritten would not).
    #[test]
    fn the_inline_clock_reading_is_the_vdso_s_boottime() {
        for _ in 0..1000 {
            let before = boottime_ns();
            let mid = boottime_ns_after_fork();
            let after = boottime_ns();
            assert!(before <= mid && mid <= after, "{before} {mid} {after}");
        }
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a live local.
        let rc = unsafe { raw_clock_gettime(libc::CLOCK_BOOTTIME, &mut t) };
        assert_eq!(rc, 0);
        assert!(t.tv_sec > 0 || t.tv_nsec > 0, "the call wrote the reading");
    }

    #[test]
    fn a_start_time_is_known_only_when_both_readings_share_a_tick() {
        let tick = 10_000_000; // 100 ticks per second
        assert_eq!(start_ticks_between(5 * tick, 5 * tick, 100), Some(5));
        assert_eq!(
            start_ticks_between(5 * tick + 1, 6 * tick - 1, 100),
            Some(5)
        );
        assert_eq!(start_ticks_between(6 * tick - 1, 6 * tick, 100), None);
        assert_eq!(start_ticks_between(6 * tick, 6 * tick - 1, 100), None);
        assert_eq!(start_ticks_between(0, 0, 0), None);
        assert_eq!(start_ticks_between(0, 0, 7), None); // 10^9 not a multiple of 7
        // This process's own start time was stamped before any reading now.
        let now = boottime_ns();
        let me = read_process_start_time().unwrap();
        let tps = rustix::param::clock_ticks_per_second();
        assert!(me <= now / (1_000_000_000 / tps));
    }

    #[test]
    fn stat_paths_are_built_for_every_width_of_id() {
        let mut buf = [0u8; 32];
        for (id, want) in [
            (0, "/proc/0/stat"),
            (7, "/proc/7/stat"),
            (4_194_304, "/proc/4194304/stat"),
            (u32::MAX, "/proc/4294967295/stat"),
        ] {
            assert_eq!(stat_path(id, &mut buf).to_str().unwrap(), want);
        }
    }

    /// Regression: the "does /proc answer" probe cached `false` for the life of the
    /// process when it first ran during a transient failure; and a cached `true`
    /// was inherited by forked children, which may live in another pid namespace.
    #[test]
    fn only_a_working_proc_is_cached_and_only_for_its_pid() {
        let cache = AtomicU32::new(0);
        let reads = std::cell::Cell::new(0);
        let check = |ok: bool| {
            reads.set(reads.get() + 1);
            ok
        };
        assert!(!answers_by(&cache, 7, || check(false)));
        assert!(answers_by(&cache, 7, || check(true)), "asked again");
        assert_eq!(reads.get(), 2);
        assert!(answers_by(&cache, 7, || check(false)), "cached for pid 7");
        assert_eq!(reads.get(), 2);
        assert!(!answers_by(&cache, 8, || check(false)), "pid 8 asks again");
        assert_eq!(reads.get(), 3);
        assert!(answers());
    }

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = b"42 (a (b) c) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1 2 3\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, b'S');
        assert_eq!(s.start_time, 987654);
        assert_eq!(s.threads, 1);
        // Cut short or garbled: not parsed (Unknown), never a made-up stat.
        let garbled = b"42 (x) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98x654 1\n";
        assert_eq!(parse_stat(garbled), None);
        assert_eq!(parse_stat(b"42 (x) S 1 2"), None);
    }

    #[test]
    fn reads_self_and_misses_absent() {
        let me = rustix::process::getpid().as_raw_nonzero().get() as u32;
        let s = task_stat(me).unwrap();
        assert!(!s.is_dead());
        assert_eq!(s.start_time, current_process_start_time());
        // pid_max is at most 2^22, so this pid cannot exist.
        assert!(task_stat(1 << 23).is_none());
        assert_eq!(probe(1 << 23), Probe::Gone);
    }
}

/// The examples that documented these crate-private items, kept as tests.
#[cfg(test)]
mod examples {

    #[test]
    fn taskstat_1() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::procfs::{TaskStat, current_process_start_time, task_stat};
        let process: TaskStat = task_stat(std::process::id()).expect("this process exists");
        assert_eq!(process.start_time, current_process_start_time());
        assert!(process.threads >= 1);
        let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        let thread = task_stat(tid).expect("this thread exists");
        assert_eq!(thread.state, b'R'); // reading its own stat: running
        assert!(thread.start_time >= process.start_time);
        Ok(())
    }

    #[test]
    fn is_dead_2() -> Result<(), Box<dyn std::error::Error>> {
        use crate::Process;
        use crate::sys::procfs::task_stat;
        use std::time::{Duration, Instant};
        assert!(!task_stat(std::process::id()).unwrap().is_dead());
        let mut p = Process::new(|| {});
        p.start()?;
        let pid = p.pid().unwrap();
        // Exited but not yet reaped (nothing polled it): a zombie, dead already.
        let give_up = Instant::now() + Duration::from_secs(10);
        while !task_stat(pid).is_some_and(|s| s.is_dead()) {
            assert!(Instant::now() < give_up);
            std::thread::sleep(Duration::from_millis(1));
        }
        p.join(Some(Duration::from_secs(10)))?; // reaped
        Ok(())
    }

    #[test]
    fn probe_3() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::procfs::{Probe, probe};
        assert!(matches!(probe(std::process::id()), Probe::Found(_)));
        assert_eq!(probe(1 << 23), Probe::Gone); // above any pid_max
        Ok(())
    }

    #[test]
    fn probe_4() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::procfs::{Probe, probe};
        let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        let Probe::Found(me) = probe(tid) else {
            panic!("this thread exists")
        };
        assert!(!me.is_dead());
        Ok(())
    }

    #[test]
    fn task_stat_5() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::procfs::task_stat;
        let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        assert!(task_stat(tid).is_some());
        assert!(task_stat(1 << 23).is_none()); // above any pid_max
        Ok(())
    }

    #[test]
    fn read_thread_start_time_6() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::procfs::{read_process_start_time, read_thread_start_time};
        let main = read_thread_start_time().unwrap();
        let later = std::thread::spawn(read_thread_start_time)
            .join()
            .unwrap()
            .unwrap();
        assert!(main >= read_process_start_time().unwrap());
        assert!(later >= main); // a thread started later
        Ok(())
    }

    #[test]
    fn read_process_start_time_7() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::procfs::read_process_start_time;
        assert!(read_process_start_time().is_some_and(|t| t > 0));
        Ok(())
    }

    #[test]
    fn current_thread_start_time_8() -> Result<(), Box<dyn std::error::Error>> {
        use crate::sys::procfs::{current_process_start_time, current_thread_start_time};
        let main = current_thread_start_time();
        let later = std::thread::spawn(current_thread_start_time)
            .join()
            .unwrap();
        assert!(main >= current_process_start_time());
        assert!(later >= main); // a thread started later
        Ok(())
    }

    #[test]
    fn current_process_start_time_9() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::{header::Kind, segment::Segment};
        use crate::sys::procfs::current_process_start_time;
        let seg = Segment::anonymous(Kind::Large, 8)?;
        assert_eq!(seg.header().creator_start, current_process_start_time());
        assert_ne!(current_process_start_time(), 0);
        Ok(())
    }
}
