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

/// A pidfd on `pid` (any process, not only a child); `None` if it is already gone.
fn pidfd_of(pid: u32) -> Option<std::os::fd::OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
}

/// Whether the process behind `fd` ends within `timeout`.
fn ends_within(fd: &std::os::fd::OwnedFd, timeout: Duration) -> bool {
    let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    rustix::event::poll(&mut fds, Some(&ts)).unwrap() == 1
}

const DAEMONS: usize = 20;

/// Daemons follow the parent *process*: 20 daemons started by a thread that then
/// exits at once all go on running (each proves it by posting a semaphore after
/// the thread is gone), and all die when their parent process is SIGKILLed.
#[test]
fn daemons_survive_their_starting_thread_and_die_with_their_parent_process() {
    let pids = multiproc::RawArray::<u32>::new(DAEMONS).unwrap();
    let started = Event::new().unwrap();
    let thread_gone = Event::new().unwrap();
    let alive_after = multiproc::Semaphore::new(0).unwrap();
    let (p2, s2, tg2, aa2) = (
        pids.clone(),
        started.clone(),
        thread_gone.clone(),
        alive_after.clone(),
    );
    let mut middle = spawn(move || {
        let starter = std::thread::spawn(move || {
            (0..DAEMONS)
                .map(|i| {
                    let (tg, aa) = (tg2.clone(), aa2.clone());
                    let mut d = Process::new(move || {
                        assert!(tg.wait(Some(BOUND)).unwrap());
                        aa.release().unwrap();
                        // Waits far longer than the test: only its parent's death ends it.
                        Event::new().unwrap().wait(Some(BOUND * 4)).unwrap();
                    })
                    .daemon(true);
                    d.start().unwrap();
                    p2.set(i, d.pid().unwrap()).unwrap();
                    d
                })
                .collect::<Vec<Process>>()
        });
        // The thread exits as soon as it has started them; the handles live on here.
        let daemons = starter.join().unwrap();
        s2.set();
        // Killed by the test long before this wait ends.
        Event::new().unwrap().wait(Some(BOUND * 4)).unwrap();
        drop(daemons);
    });
    assert!(
        started.wait(Some(BOUND)).unwrap(),
        "the middle process did not start its daemons"
    );
    let fds: Vec<_> = (0..DAEMONS)
        .map(|i| pidfd_of(pids.get(i).unwrap()).expect("a daemon died before its thread exited"))
        .collect();
    thread_gone.set();
    for n in 0..DAEMONS {
        assert!(
            alive_after.acquire(true, Some(BOUND)).unwrap(),
            "only {n} of {DAEMONS} daemons ran after their starting thread exited"
        );
    }
    middle.kill().unwrap();
    assert_eq!(middle.join(Some(BOUND)).unwrap(), Some(-9));
    // One shared bound for all 20, so that a bug fails in BOUND, not 20 × BOUND.
    let end = std::time::Instant::now() + BOUND;
    let survivors = fds
        .iter()
        .filter(|fd| !ends_within(fd, end.saturating_duration_since(std::time::Instant::now())))
        .count();
    for fd in &fds {
        let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::KILL);
    }
    assert_eq!(survivors, 0, "daemons outlived their SIGKILLed parent");
}

/// A daemon is killed when its parent process is SIGKILLed (the parent being
/// itself a multiproc child).
#[test]
fn a_daemon_dies_when_its_parent_process_is_sigkilled() {
    let daemon_pid = RawValue::new(0u32).unwrap();
    let ready = Event::new().unwrap();
    let (dp, r) = (daemon_pid.clone(), ready.clone());
    let mut middle = spawn(move || {
        let mut d = Process::new(|| {
            Event::new().unwrap().wait(Some(BOUND * 4)).unwrap();
        })
        .daemon(true);
        d.start().unwrap();
        dp.set(d.pid().unwrap());
        r.set();
        Event::new().unwrap().wait(Some(BOUND * 4)).unwrap();
        drop(d);
    });
    assert!(ready.wait(Some(BOUND)).unwrap());
    let fd = pidfd_of(daemon_pid.get()).expect("the daemon died before its parent");
    assert!(
        !ends_within(&fd, Duration::ZERO),
        "the daemon died before its parent"
    );
    middle.kill().unwrap();
    assert_eq!(middle.join(Some(BOUND)).unwrap(), Some(-9));
    let ended = ends_within(&fd, BOUND);
    let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
    assert!(ended, "the daemon outlived its SIGKILLed parent");
}

/// As in CPython: "daemonic processes are not allowed to have children"; a
/// `Process` created in a daemon is a daemon by default.
#[test]
fn a_daemon_cannot_start_processes() {
    let mut d = Process::new(|| {
        let mut p = Process::new(|| {});
        assert!(p.is_daemon(), "the daemon flag is inherited by default");
        match p.start() {
            Err(Error::ProcessState { reason, .. }) => assert!(reason.contains("daemonic")),
            other => panic!("a daemon started a process: {other:?}"),
        }
        let mut q = Process::new(|| {}).daemon(false);
        assert!(matches!(q.start(), Err(Error::ProcessState { .. })));
    })
    .daemon(true);
    d.start().unwrap();
    assert_eq!(d.join(Some(BOUND)).unwrap(), Some(0));
}

fn number_of(name: &str) -> u32 {
    name.strip_prefix("Process-").unwrap().parse().unwrap()
}

/// Names are unique across generations: the Nth process of the main process is
/// `Process-N`, its first process `Process-N:1`, whose first is `Process-N:1:1`;
/// the parent's next process is `Process-(N+1)`.
#[test]
fn names_follow_the_identity_chain_across_generations() {
    let p = Process::new(|| {});
    let n = number_of(p.name());
    let expected = format!("Process-{}", n + 1);
    let mut p = Process::new(move || {
        let me = multiproc::current_process();
        assert_eq!(me.name(), expected);
        let first = Process::new(|| {});
        assert_eq!(first.name(), format!("{expected}:1"));
        let second = Process::new(|| {});
        assert_eq!(second.name(), format!("{expected}:2"));
        let grand_expected = format!("{expected}:3");
        let mut third = Process::new(move || {
            assert_eq!(multiproc::current_process().name(), grand_expected);
            assert_eq!(Process::new(|| {}).name(), format!("{grand_expected}:1"));
        });
        third.start().unwrap();
        assert_eq!(third.join(Some(BOUND)).unwrap(), Some(0));
    });
    assert_eq!(number_of(p.name()), n + 1);
    let expected_next = format!("Process-{}", n + 2);
    p.start().unwrap();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
    assert_eq!(Process::new(|| {}).name(), expected_next);
}

/// Each of two children's sentinels becomes readable when that child ends, and
/// not before: poll on both returns the one that ended.
#[test]
fn sentinels_poll_readable_when_their_child_ends() {
    let go = Event::new().unwrap();
    let g = go.clone();
    let mut waiting = Process::new(move || assert!(g.wait(Some(BOUND)).unwrap()));
    assert!(matches!(
        waiting.sentinel(),
        Err(Error::ProcessState { .. })
    ));
    waiting.start().unwrap();
    let mut quick = spawn(|| {});
    let (ws, qs) = (waiting.sentinel().unwrap(), quick.sentinel().unwrap());
    let mut fds = [
        rustix::event::PollFd::new(&ws, rustix::event::PollFlags::IN),
        rustix::event::PollFd::new(&qs, rustix::event::PollFlags::IN),
    ];
    let ts = rustix::time::Timespec {
        tv_sec: BOUND.as_secs() as i64,
        tv_nsec: 0,
    };
    assert_eq!(rustix::event::poll(&mut fds, Some(&ts)).unwrap(), 1);
    assert!(fds[1].revents().contains(rustix::event::PollFlags::IN));
    assert!(
        fds[0].revents().is_empty(),
        "the waiting child's sentinel fired early"
    );
    go.set();
    assert_eq!(rustix::event::poll(&mut fds[..1], Some(&ts)).unwrap(), 1);
    assert_eq!(waiting.join(Some(BOUND)).unwrap(), Some(0));
    assert_eq!(quick.join(Some(BOUND)).unwrap(), Some(0));
    // Still valid (and readable) after the reap.
    assert!(ends_within_fd(waiting.sentinel().unwrap()));
}

fn ends_within_fd(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let ts = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut fds, Some(&ts)).unwrap() == 1
}

/// The pid a descriptor of this process is a pidfd for, if it is one.
fn pidfd_target(fd: i32) -> Option<String> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .map(|p| p.trim().to_string())
}

/// `close` refuses while the child runs; afterwards it has released the pidfd and
/// every operation but `pid`/`exitcode`/`is_alive` is an error.
#[test]
fn close_releases_the_pidfd_and_refuses_while_running() {
    use std::os::fd::AsRawFd;
    let go = Event::new().unwrap();
    let g = go.clone();
    let mut p = spawn(move || assert!(g.wait(Some(BOUND)).unwrap()));
    let pid = p.pid().unwrap();
    let fd = p.sentinel().unwrap().as_raw_fd();
    assert_eq!(pidfd_target(fd), Some(pid.to_string()));
    assert!(matches!(p.close(), Err(Error::ProcessState { .. })));
    assert!(p.is_alive(), "a refused close left the process running");
    go.set();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
    p.close().unwrap();
    assert_ne!(
        pidfd_target(fd),
        Some(pid.to_string()),
        "close left the pidfd open"
    );
    assert!(!p.is_alive());
    assert!(matches!(p.join(None), Err(Error::ProcessState { .. })));
    assert!(matches!(p.terminate(), Err(Error::ProcessState { .. })));
    assert!(matches!(p.kill(), Err(Error::ProcessState { .. })));
    assert!(matches!(p.sentinel(), Err(Error::ProcessState { .. })));
    assert!(matches!(p.start(), Err(Error::ProcessState { .. })));
    assert_eq!((p.pid(), p.exitcode()), (Some(pid), Some(0)));
    p.close().unwrap();
    // An unstarted process can be closed, and then not started.
    let mut q = Process::new(|| {});
    q.close().unwrap();
    assert!(matches!(q.start(), Err(Error::ProcessState { .. })));
}

fn listed(pid: Option<u32>) -> bool {
    multiproc::active_children()
        .iter()
        .any(|c| Some(c.pid()) == pid)
}

/// `active_children` lists running children (with name and daemon flag), not
/// unstarted or joined ones, and reaps a child whose `Process` was dropped.
#[test]
fn active_children_lists_running_children_and_reaps_dropped_ones() {
    let go = Event::new().unwrap();
    let g = go.clone();
    let mut p = Process::new(move || assert!(g.wait(Some(BOUND)).unwrap()))
        .with_name("listed")
        .daemon(true);
    assert!(!listed(p.pid()));
    p.start().unwrap();
    let entry = multiproc::active_children()
        .into_iter()
        .find(|c| Some(c.pid()) == p.pid())
        .expect("a running child is listed");
    assert_eq!((entry.name(), entry.is_daemon()), ("listed", true));
    go.set();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
    assert!(!listed(p.pid()));

    // Dropped while running: still listed, then reaped by active_children itself.
    let go = Event::new().unwrap();
    let g = go.clone();
    let dropped = spawn(move || assert!(g.wait(Some(BOUND)).unwrap()));
    let pid = dropped.pid();
    drop(dropped);
    assert!(listed(pid), "a child whose Process was dropped still runs");
    go.set();
    common::poll_until("the dropped child reaped", || !listed(pid));
    let raw = rustix::process::Pid::from_raw(pid.unwrap() as i32).unwrap();
    assert!(
        rustix::process::waitpid(Some(raw), rustix::process::WaitOptions::NOHANG).is_err(),
        "the dropped child was not reaped (a zombie)"
    );
}

/// The main process has no parent; a child's parent is the caller (name, pid,
/// alive); a grandchild sees the same for its own parent.
#[test]
fn current_and_parent_process() {
    let me = multiproc::current_process();
    assert_eq!((me.name(), me.pid()), ("MainProcess", std::process::id()));
    assert!(!me.is_daemon());
    assert!(multiproc::parent_process().is_none());
    let main_pid = std::process::id();
    let go = Event::new().unwrap();
    let g = go.clone();
    let sibling = spawn(move || assert!(g.wait(Some(BOUND)).unwrap()));
    let mut p = Process::new(move || {
        let parent = multiproc::parent_process().unwrap();
        assert_eq!((parent.name(), parent.pid()), ("MainProcess", main_pid));
        assert!(parent.is_alive());
        assert!(
            multiproc::active_children().is_empty(),
            "a child lists its parent's children as its own"
        );
        let me = multiproc::current_process();
        assert_eq!(me.name(), "child");
        let (my_name, my_pid) = (me.name().to_string(), me.pid());
        let mut g = Process::new(move || {
            let parent = multiproc::parent_process().unwrap();
            assert_eq!((parent.name(), parent.pid()), (my_name.as_str(), my_pid));
        });
        g.start().unwrap();
        assert_eq!(g.join(Some(BOUND)).unwrap(), Some(0));
    })
    .with_name("child");
    p.start().unwrap();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
    go.set();
    join_ok(sibling);
}

/// `current_process().pid()` names the caller also in a process forked by a raw
/// system call, which runs no `pthread_atfork` handler (so multiproc's fork
/// generation does not move there). Forked from a child: its one thread holds
/// no lock another thread could have left taken.
#[test]
fn current_process_pid_is_right_after_a_fork_that_bypasses_the_at_fork_handlers() {
    let verdict = RawValue::new(0i32).unwrap();
    let v = verdict.clone();
    let mut p = Process::new(move || {
        // Whatever `current_process` caches, filled in before the fork.
        assert_eq!(multiproc::current_process().pid(), std::process::id());
        // SAFETY: a plain fork (`clone` with only the exit signal): the child
        // calls `getpid`, `current_process` and `_exit`, in a process whose only
        // thread is this one.
        let pid =
            unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) };
        if pid == 0 {
            let right = multiproc::current_process().pid() == std::process::id();
            // SAFETY: `_exit` is always sound.
            unsafe { libc::_exit(if right { 0 } else { 1 }) }
        }
        assert!(pid > 0, "clone: {}", std::io::Error::last_os_error());
        let mut status = 0;
        // SAFETY: waits for the child just forked, writing into a live local.
        assert_eq!(
            unsafe { libc::waitpid(pid as i32, &mut status, 0) },
            pid as i32
        );
        v.set(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        });
    });
    p.start().unwrap();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
    assert_eq!(
        verdict.get(),
        0,
        "the raw-forked child's current_process().pid() was its parent's"
    );
}

/// A grandchild whose closure captured its grandparent's `ParentProcess` (taken
/// in the child) can still use it: the child's registry entry for its own parent
/// is replaced in the grandchild, and its descriptor closed only when nothing
/// else holds it. The grandchild's own parent is the child.
#[test]
fn a_grandchild_keeps_a_captured_parent_process_usable() {
    let seen = RawValue::new(0u32).unwrap();
    let s = seen.clone();
    let main_pid = std::process::id();
    let mut p = Process::new(move || {
        let grandparent = multiproc::parent_process().unwrap();
        let me = multiproc::current_process().pid();
        let s2 = s.clone();
        let mut g = Process::new(move || {
            let zero = rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let sentinel = grandparent.sentinel();
            let mut fds = [rustix::event::PollFd::new(
                &sentinel,
                rustix::event::PollFlags::IN,
            )];
            let quiet = rustix::event::poll(&mut fds, Some(&zero)) == Ok(0);
            let mine = multiproc::parent_process().unwrap();
            let bits = u32::from(grandparent.is_alive())
                | u32::from(quiet) << 1
                | u32::from(grandparent.pid() == main_pid) << 2
                | u32::from(mine.pid() == me && mine.is_alive()) << 3;
            s2.set(bits);
        });
        g.start().unwrap();
        assert_eq!(g.join(Some(BOUND)).unwrap(), Some(0));
    });
    p.start().unwrap();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
    assert_eq!(
        seen.get(),
        0b1111,
        "the grandchild's captured grandparent, or its own parent, was wrong"
    );
}

/// A `Process` reaching another process (here through an `Arc<Mutex<_>>` captured
/// by a sibling) is not that process's child: join, kill and is_alive refuse or
/// say false there, and dropping it there does not kill the (daemon) child.
#[test]
fn only_the_creator_may_join_signal_or_reap() {
    let go = Event::new().unwrap();
    let g = go.clone();
    let mut a = Process::new(move || assert!(g.wait(Some(BOUND)).unwrap())).daemon(true);
    a.start().unwrap();
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(a)));
    let s2 = std::sync::Arc::clone(&slot);
    join_ok(spawn(move || {
        let mut guard = s2.lock().unwrap();
        let sibling = guard.as_mut().unwrap();
        assert!(matches!(
            sibling.join(Some(BOUND)),
            Err(Error::ProcessState { .. })
        ));
        assert!(matches!(sibling.kill(), Err(Error::ProcessState { .. })));
        assert!(matches!(
            sibling.terminate(),
            Err(Error::ProcessState { .. })
        ));
        assert!(!sibling.is_alive());
        // Dropped here, in a process that is not its parent: must not kill it.
        drop(guard.take());
    }));
    let mut a = slot.lock().unwrap().take().unwrap();
    assert!(a.is_alive(), "a non-parent killed the daemon");
    go.set();
    assert_eq!(a.join(Some(BOUND)).unwrap(), Some(0));
}

/// While one thread keeps polling a running child (holding that child's
/// process-local status lock for each `waitpid`), 3000 children are started and
/// list their own children: a child must never touch its parent's entries, whose
/// lock the fork may have copied held (it would hang there).
#[test]
fn a_child_never_touches_its_parent_s_children() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let never = Event::new().unwrap();
    let n = never.clone();
    let mut polled = spawn(move || {
        n.wait(Some(BOUND)).unwrap();
    });
    let s = std::sync::Arc::clone(&stop);
    let poller = std::thread::spawn(move || {
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            assert!(polled.is_alive());
        }
        polled.kill().unwrap();
        assert_eq!(polled.join(Some(BOUND)).unwrap(), Some(-9));
    });
    let kids: Vec<Process> = (0..3000)
        .map(|_| spawn(|| assert!(multiproc::active_children().is_empty())))
        .collect();
    common::join_all_ok(kids);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    poller.join().unwrap();
}

#[allow(dead_code)]
#[path = "../examples/13_process_lifecycle.rs"]
mod lifecycle_example;

#[test]
fn the_lifecycle_example_gives_the_right_answer() {
    assert!(lifecycle_example::run().unwrap());
}

/// `connection::wait` takes process sentinels beside connections (CPython's
/// `wait([p.sentinel, conn])`): a sentinel is ready once its child has ended, and
/// not before.
#[test]
fn connection_wait_takes_sentinels_and_connections() {
    use multiproc::connection::wait;
    let go = Event::new().unwrap();
    let g = go.clone();
    let (a, b) = multiproc::Pipe(true).unwrap();
    let mut waiting = spawn(move || assert!(g.wait(Some(BOUND)).unwrap()));
    let mut sender = spawn(move || b.send(&7u32).unwrap());
    assert_eq!(sender.join(Some(BOUND)).unwrap(), Some(0));
    let (ws, ss) = (waiting.sentinel().unwrap(), sender.sentinel().unwrap());
    assert_eq!(wait(&[&ws, &ss, &a], Some(BOUND)).unwrap(), [1, 2]);
    assert_eq!(a.recv::<u32>().unwrap(), 7);
    go.set();
    assert_eq!(wait(&[&ws], Some(BOUND)).unwrap(), [0]);
    assert_eq!(waiting.join(Some(BOUND)).unwrap(), Some(0));
}
