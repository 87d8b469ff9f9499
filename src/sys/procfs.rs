//! Who is alive: process and thread identity read from `/proc`.
//!
//! A pid alone does not name a process for long: once it dies and is reaped, the
//! kernel may hand the same number to a new process. multiproc therefore names an
//! owner by its pid (or tid) *and* its start time (field 22 of `/proc/<id>/stat`,
//! clock ticks since boot), which no later process with the same pid can share.

use std::io::Read;

/// Identity and state of one task (process or thread) as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskStat {
    /// The one-letter state: `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: u8,
    /// Start time in clock ticks after boot.
    pub start_time: u64,
}

impl TaskStat {
    /// Whether the task has finished running (a zombie waiting to be reaped counts).
    pub fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Reads `/proc/<id>/stat` for a pid or a tid; `None` when no such task exists.
///
/// `/proc/<tid>` resolves for every thread of the pid namespace even though only
/// thread-group leaders are listed in `/proc`.
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

/// Start time of the calling thread (`/proc/thread-self/stat`).
pub fn current_thread_start_time() -> u64 {
    let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    task_stat(tid).map_or(0, |s| s.start_time)
}

/// Start time of the calling process.
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
