//! Who is alive: process and thread identity read from `/proc`.
//!
//! A pid alone does not name a process for long: once it dies and is reaped, the
//! kernel may hand the same number to a new process. multiproc therefore names an
//! owner by its pid (or tid) *and* its start time (field 22 of `/proc/<id>/stat`,
//! clock ticks since boot), which no later process with the same pid can share.

use std::io::Read;

/// Identity and state of one task (process or thread) as the kernel reports it.
///
/// ```
/// use multiproc::sys::procfs::{TaskStat, task_stat, current_process_start_time};
/// let process: TaskStat = task_stat(std::process::id()).expect("this process exists");
/// assert_eq!(process.start_time, current_process_start_time());
/// let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
/// let thread = task_stat(tid).expect("this thread exists");
/// assert_eq!(thread.state, b'R'); // reading its own stat: running
/// assert!(thread.start_time >= process.start_time);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskStat {
    /// The one-letter state: `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: u8,
    /// Start time in clock ticks after boot.
    pub start_time: u64,
}

impl TaskStat {
    /// Whether the task has finished running (a zombie waiting to be reaped counts).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use multiproc::Process;
    /// use multiproc::sys::procfs::task_stat;
    /// assert!(!task_stat(std::process::id()).unwrap().is_dead());
    /// let mut p = Process::new(|| {});
    /// p.start()?;
    /// let pid = p.pid().unwrap();
    /// // Exited but not yet reaped (nothing polled it): a zombie, dead already.
    /// let give_up = Instant::now() + Duration::from_secs(10);
    /// while !task_stat(pid).is_some_and(|s| s.is_dead()) {
    ///     assert!(Instant::now() < give_up);
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// p.join(Some(Duration::from_secs(10)))?; // reaped
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Reads `/proc/<id>/stat` for a pid or a tid; `None` when no such task exists.
///
/// `/proc/<tid>` resolves for every thread of the pid namespace even though only
/// thread-group leaders are listed in `/proc`.
///
/// ```
/// use multiproc::sys::procfs::task_stat;
/// let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
/// assert!(task_stat(tid).is_some());
/// assert!(task_stat(1 << 23).is_none()); // above any pid_max
/// ```
pub fn task_stat(id: u32) -> Option<TaskStat> {
    let mut file = std::fs::File::open(format!("/proc/{id}/stat")).ok()?;
    let mut buf = [0u8; 1024];
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return None,
        }
    }
    parse_stat(&buf[..len])
}

/// Parses the text of a `stat` file. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the *last* `)`.
fn parse_stat(text: &[u8]) -> Option<TaskStat> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let mut fields = text[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    let state = *fields.next()?.first()?;
    // After the state (field 3) come fields 4..; start time is field 22.
    let start = fields.nth(22 - 4)?;
    let start_time = std::str::from_utf8(start).ok()?.trim().parse().ok()?;
    Some(TaskStat { state, start_time })
}

/// Start time of the calling thread (`/proc/<tid>/stat`); 0 if it cannot be read.
///
/// ```
/// use multiproc::sys::procfs::{current_process_start_time, current_thread_start_time};
/// let main = current_thread_start_time();
/// let later = std::thread::spawn(current_thread_start_time).join().unwrap();
/// assert!(main >= current_process_start_time());
/// assert!(later >= main); // a thread started later
/// ```
pub fn current_thread_start_time() -> u64 {
    let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    task_stat(tid).map_or(0, |s| s.start_time)
}

/// Start time of the calling process (`/proc/<pid>/stat`); 0 if it cannot be
/// read. Recorded as `creator_start` in every segment header.
///
/// ```
/// use multiproc::shm::{header::Kind, segment::Segment};
/// use multiproc::sys::procfs::current_process_start_time;
/// let seg = Segment::anonymous(Kind::Large, 8)?;
/// assert_eq!(seg.header().creator_start, current_process_start_time());
/// assert_ne!(current_process_start_time(), 0);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn current_process_start_time() -> u64 {
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    task_stat(pid).map_or(0, |s| s.start_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = b"42 (a (b) c) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1 2 3\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, b'S');
        assert_eq!(s.start_time, 987654);
    }

    #[test]
    fn reads_self_and_misses_absent() {
        let me = rustix::process::getpid().as_raw_nonzero().get() as u32;
        let s = task_stat(me).unwrap();
        assert!(!s.is_dead());
        assert_eq!(s.start_time, current_process_start_time());
        // pid_max is at most 2^22, so this pid cannot exist.
        assert!(task_stat(1 << 23).is_none());
    }
}
