//! Process (fork): lifecycle, exit codes, timeouts, signals, panics, daemons, and
//! that a child never runs the parent's destructors.

mod common;

use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use common::{BOUND, join_ok, spawn};
use multiproc::{Error, Event, Process, RawValue};

#[test]
fn lifecycle_pid_name_exitcode() {
    let mut p = Process::new(|| std::process::exit(3)).with_name("worker");
    assert_eq!(p.name(), "worker");
    assert_eq!(p.pid(), None);
    assert_eq!(p.exitcode(), None);
    assert!(!p.is_alive());
    assert!(matches!(p.join(None), Err(Error::ProcessState { .. })));
    p.start().unwrap();
    assert!(p.pid().is_some_and(|pid| pid != std::process::id()));
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(3));
    assert_eq!(p.exitcode(), Some(3));
    assert!(!p.is_alive());
    assert!(
        matches!(p.start(), Err(Error::ProcessState { .. })),
        "a process starts once"
    );
}

#[test]
fn child_really_is_another_process() {
    let seen = RawValue::new(0u32).unwrap();
    let s = seen.clone();
    join_ok(spawn(move || s.set(std::process::id())));
    let child = seen.get();
    assert_ne!(child, 0);
    assert_ne!(child, std::process::id());
}

#[test]
fn join_timeout_returns_none_while_running() {
    let go = Event::new().unwrap();
    let g = go.clone();
    let mut p = spawn(move || assert!(g.wait(Some(BOUND)).unwrap()));
    assert_eq!(p.join(Some(Duration::ZERO)).unwrap(), None);
    assert_eq!(p.join(Some(Duration::from_millis(20))).unwrap(), None);
    assert!(p.is_alive());
    assert_eq!(p.exitcode(), None);
    go.set();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
    assert!(matches!(
        p.join(Some(Duration::MAX)),
        Err(Error::TimeoutOverflow(_))
    ));
}

#[test]
fn terminate_and_kill_report_the_signal() {
    let never = Event::new().unwrap();
    for (signal, expected) in [(15, -15), (9, -9)] {
        let started = Event::new().unwrap();
        let (n, s) = (never.clone(), started.clone());
        let mut p = spawn(move || {
            s.set();
            n.wait(Some(BOUND)).unwrap();
        });
        assert!(started.wait(Some(BOUND)).unwrap());
        if signal == 15 {
            p.terminate().unwrap()
        } else {
            p.kill().unwrap()
        }
        assert_eq!(p.join(Some(BOUND)).unwrap(), Some(expected));
        // Signalling an exited process is harmless.
        p.kill().unwrap();
    }
}

/// Runs `f` with this process's stderr redirected into a file; returns what was written.
fn capture_stderr(f: impl FnOnce()) -> String {
    let mut file = tempfile();
    let saved = rustix::io::dup(std::io::stderr().as_fd()).unwrap();
    rustix::stdio::dup2_stderr(file.as_fd()).unwrap();
    f();
    rustix::stdio::dup2_stderr(saved.as_fd()).unwrap();
    let mut text = String::new();
    file.rewind().unwrap();
    file.read_to_string(&mut text).unwrap();
    text
}

fn tempfile() -> std::fs::File {
    let path = std::env::temp_dir().join(format!(
        "multiproc-test-{}-{:?}",
        std::process::id(),
        std::time::Instant::now()
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}

#[test]
fn a_panicking_child_exits_nonzero_and_its_message_reaches_stderr() {
    let mut code = None;
    let text = capture_stderr(|| {
        let mut p = Process::new(|| panic!("the sky is falling")).with_name("doomed");
        p.start().unwrap();
        code = p.join(Some(BOUND)).unwrap();
    });
    assert_eq!(code, Some(1));
    assert!(text.contains("the sky is falling"), "stderr was: {text}");
    assert!(
        text.contains("doomed"),
        "the message names the process: {text}"
    );
}

struct CountsDrops(RawValue<u32>);
impl Drop for CountsDrops {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn the_child_runs_no_parent_destructor_and_flushes_no_parent_buffer() {
    let drops = RawValue::new(0u32).unwrap();
    let guard = CountsDrops(drops.clone());
    // Unflushed bytes in a parent's buffer at fork time.
    let mut file = tempfile();
    let mut writer = std::io::BufWriter::new(file.try_clone().unwrap());
    writer.write_all(b"once").unwrap();
    join_ok(spawn(|| {}));
    assert_eq!(drops.get(), 0, "the child ran a parent destructor");
    drop(guard);
    assert_eq!(drops.get(), 1);
    drop(writer);
    let mut text = String::new();
    file.rewind().unwrap();
    file.read_to_string(&mut text).unwrap();
    assert_eq!(text, "once", "the parent's buffer was flushed twice");
}

#[test]
fn a_daemon_does_not_outlive_its_parent() {
    let daemon_pid = RawValue::new(0u32).unwrap();
    let ready = Event::new().unwrap();
    let (dp, r) = (daemon_pid.clone(), ready.clone());
    // The middle process starts a daemon that would wait 30 s, then exits at once.
    join_ok(spawn(move || {
        let never = Event::new().unwrap();
        // It would wait far longer than the parent's check below, so only its
        // death by PDEATHSIG can end it in time.
        let mut daemon = Process::new(move || {
            never.wait(Some(BOUND * 4)).unwrap();
        })
        .daemon(true);
        daemon.start().unwrap();
        dp.set(daemon.pid().unwrap());
        r.set();
        // Leave without joining (exit skips destructors): only PDEATHSIG can stop it.
        std::process::exit(0);
    }));
    assert!(ready.wait(Some(BOUND)).unwrap());
    let pid = rustix::process::Pid::from_raw(daemon_pid.get() as i32).unwrap();
    // A pidfd on the daemon (not our child) becomes readable when it exits.
    match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Err(_) => {} // already gone and reaped by init
        Ok(fd) => {
            let mut fds = [rustix::event::PollFd::new(
                &fd,
                rustix::event::PollFlags::IN,
            )];
            let ts = rustix::time::Timespec {
                tv_sec: BOUND.as_secs() as i64,
                tv_nsec: 0,
            };
            let n = rustix::event::poll(&mut fds, Some(&ts)).unwrap();
            if n == 0 {
                let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
                panic!("the daemon outlived its parent");
            }
        }
    }
}

#[test]
fn dropping_a_running_process_does_not_kill_it() {
    let go = Event::new().unwrap();
    let done = Event::new().unwrap();
    let (g, d) = (go.clone(), done.clone());
    drop(spawn(move || {
        g.wait(Some(BOUND)).unwrap();
        d.set();
    }));
    go.set();
    assert!(done.wait(Some(BOUND)).unwrap());
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Waits (bounded) until `fd` is readable or hung up; false on timeout.
fn readable(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let t = rustix::time::Timespec {
        tv_sec: BOUND.as_secs() as i64,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut fds, Some(&t)).unwrap() == 1
}

/// `start` drops the parent's copy of the closure (as CPython's `Process.start`
/// deletes its target): a pipe's write end captured by the child is closed in the
/// parent, so once the child exits the parent's read end sees end-of-file.
#[test]
fn start_closes_the_parent_s_copy_of_a_captured_pipe_end() {
    let (mut reader, mut writer) = std::io::pipe().unwrap();
    let child = spawn(move || writer.write_all(b"from the child").unwrap());
    join_ok(child);
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        assert!(
            readable(reader.as_fd()),
            "no end-of-file: the parent still holds the write end after start (got {:?})",
            String::from_utf8_lossy(&got)
        );
        match reader.read(&mut buf).unwrap() {
            0 => break,
            n => got.extend_from_slice(&buf[..n]),
        }
    }
    assert_eq!(got, b"from the child");
}

/// 50 children that each captured a `File` leave no descriptor open in the parent.
#[test]
fn captured_files_are_closed_in_the_parent_after_start() {
    let before = open_fds();
    for _ in 0..50 {
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        join_ok(spawn(move || {
            let mut s = String::new();
            (&file).read_to_string(&mut s).unwrap();
            assert!(!s.is_empty());
        }));
    }
    let after = open_fds();
    assert!(
        after <= before + 2,
        "{} descriptors more after 50 starts whose closures captured a File",
        after - before
    );
}

/// An `Arc` captured by the closure is released in the parent after `start`.
#[test]
fn captured_arcs_are_released_in_the_parent_after_start() {
    let shared = std::sync::Arc::new(7u32);
    let copy = std::sync::Arc::clone(&shared);
    let mut p = Process::new(move || assert_eq!(*copy, 7));
    assert_eq!(std::sync::Arc::strong_count(&shared), 2);
    p.start().unwrap();
    assert_eq!(std::sync::Arc::strong_count(&shared), 1);
    join_ok(p);
}
