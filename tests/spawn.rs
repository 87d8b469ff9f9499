//! The spawn and forkserver start methods, with real children: a fresh exec of
//! this test binary (filtered to the running test, whose first line
//! `multiproc::spawn::init()` turns it into the child) runs a plain function with
//! serde arguments.
//!
//! Without handles that travel (branch `tokens`), children report back through
//! their exit code and through files named in their arguments.

mod common;

use std::time::Duration;

use common::BOUND;
use multiproc::{Error, Process, StartMethod, get_context};
use serde::{Deserialize, Serialize};

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Forkserver];

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    numbers: Vec<u64>,
    expect_sum: u64,
    out: String,
}

/// Exits 0 if the sum is right (and writes what it saw), 3 otherwise.
fn summer(job: Job) {
    let sum: u64 = job.numbers.iter().sum();
    let me = multiproc::current_process();
    let parent = multiproc::parent_process().expect("a spawned child has a parent");
    std::fs::write(
        &job.out,
        format!(
            "{} {} {} {}",
            me.name(),
            me.pid(),
            parent.pid(),
            parent.name()
        ),
    )
    .unwrap();
    if sum != job.expect_sum {
        multiproc_exit(3);
    }
}

fn multiproc_exit(code: i32) -> ! {
    std::process::exit(code)
}

fn out_path(tag: &str) -> String {
    format!(
        "{}/multiproc-spawn-test-{}-{tag}",
        std::env::temp_dir().display(),
        std::process::id()
    )
}

#[test]
fn a_spawned_child_runs_its_entry_with_its_arguments() {
    multiproc::spawn::init();
    for method in METHODS {
        let out = out_path(method.name());
        let job = Job {
            numbers: (1..=100).collect(),
            expect_sum: 5050,
            out: out.clone(),
        };
        let mut p = get_context(method).process(summer, job).with_name("summer");
        p.start().unwrap();
        assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0), "{method}");
        let seen = std::fs::read_to_string(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        let f: Vec<&str> = seen.split(' ').collect();
        assert_eq!(f[0], "summer", "{method}: the child's current_process name");
        assert_eq!(f[1], p.pid().unwrap().to_string(), "{method}: its pid");
        assert_eq!(
            f[2],
            std::process::id().to_string(),
            "{method}: its parent's pid"
        );
        assert_eq!(f[3], "MainProcess", "{method}: its parent's name");
        // A wrong sum is the child's own verdict, through its exit code.
        let job = Job {
            numbers: vec![1, 2],
            expect_sum: 4,
            out: out.clone(),
        };
        let mut p = get_context(method).process(summer, job);
        p.start().unwrap();
        assert_eq!(p.join(Some(BOUND)).unwrap(), Some(3), "{method}");
        let _ = std::fs::remove_file(&out);
    }
}

fn boom(msg: String) {
    panic!("{msg}");
}

#[test]
fn a_panicking_entry_exits_with_1() {
    multiproc::spawn::init();
    for method in METHODS {
        let mut p = get_context(method).process(boom, "on purpose".to_string());
        p.start().unwrap();
        assert_eq!(p.join(Some(BOUND)).unwrap(), Some(1), "{method}");
        assert_eq!(p.exitcode(), Some(1));
        assert!(!p.is_alive());
    }
}

fn sleeper(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

#[test]
fn terminate_kill_sentinel_and_close_work_as_for_fork() {
    multiproc::spawn::init();
    for method in METHODS {
        let mut p = get_context(method).process(sleeper, 60);
        assert!(p.sentinel().is_err());
        p.start().unwrap();
        assert!(p.is_alive(), "{method}");
        assert!(
            multiproc::active_children()
                .iter()
                .any(|c| Some(c.pid()) == p.pid()),
            "{method}: listed among active children"
        );
        assert!(p.close().is_err(), "still running");
        assert_eq!(p.join(Some(Duration::from_millis(20))).unwrap(), None);
        p.terminate().unwrap();
        assert_eq!(p.join(Some(BOUND)).unwrap(), Some(-15), "{method}");
        let mut q = get_context(method).process(sleeper, 60);
        q.start().unwrap();
        q.kill().unwrap();
        {
            let s = q.sentinel().unwrap();
            assert!(wait_fd(s), "{method}: the sentinel becomes readable");
        }
        assert_eq!(q.join(Some(BOUND)).unwrap(), Some(-9), "{method}");
        q.close().unwrap();
        assert!(q.join(None).is_err());
        assert!(
            !multiproc::active_children()
                .iter()
                .any(|c| Some(c.pid()) == p.pid() || Some(c.pid()) == q.pid()),
        );
    }
}

fn wait_fd(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let t = rustix::time::Timespec {
        tv_sec: 30,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&t)), Ok(1))
}

#[test]
fn a_closure_process_refuses_spawn() {
    multiproc::spawn::init();
    let mut p = Process::new(|| {}).with_start_method(StartMethod::Spawn);
    assert!(matches!(p.start(), Err(Error::ProcessState { .. })));
}

/// Dead or a zombie (waiting for a reaper that is not this test).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The children of every thread of `pid` (under libtest the forkserver runs in
/// a test thread, and forks from it).
fn children_of_any_thread(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .flat_map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// A daemonic child started by spawn or forkserver dies when the process that
/// started it is SIGKILLed, and so do that process's forkserver and the spare
/// child the server forked ahead: nothing is left running, and nothing new is
/// in /dev/shm.
#[test]
fn a_daemonic_child_and_the_forkserver_die_with_their_parent() {
    multiproc::spawn::init();
    let before = common::dev_shm();
    for method in METHODS {
        let daemon_pid = multiproc::RawValue::new(0u32).unwrap();
        let ready = multiproc::Event::new().unwrap();
        let (d, r) = (daemon_pid.clone(), ready.clone());
        let holder_pid = multiproc::RawValue::new(0u32).unwrap();
        let h = holder_pid.clone();
        let parent = common::spawn(move || {
            let mut p = get_context(method).process(sleeper, 60).daemon(true);
            p.start().unwrap();
            d.set(p.pid().unwrap());
            // A fork of the parent inherits its copy of the forkserver's control
            // socket and outlives it: the server must end on its starter's pidfd,
            // not on end of file.
            let mut holder = Process::new(|| sleeper(60));
            holder.start().unwrap();
            h.set(holder.pid().unwrap());
            r.set();
            sleeper(60);
        });
        assert!(ready.wait(Some(BOUND)).unwrap(), "{method}: never ready");
        let daemon = daemon_pid.get();
        assert!(!gone(daemon), "{method}: the daemon runs");
        let holder = holder_pid.get();
        let mut stray: Vec<u32> = children_of(parent.pid().unwrap())
            .into_iter()
            .filter(|&c| c != holder)
            .collect();
        if method == StartMethod::Forkserver {
            // A single-threaded server forks the daemon as the parent's own child;
            // under libtest the server runs in a test thread, and forks it as its own.
            stray.retain(|&c| c != daemon);
            assert_eq!(
                stray.len(),
                1,
                "{method}: the parent's other child is its server"
            );
            // The server's other child: the spare it forks for the parent's
            // next start, which must end with the parent too, though the
            // holder has a copy of the parent's end of the spare's socket.
            let server = stray[0];
            common::poll_until(&format!("{method}: the server's spare"), || {
                children_of_any_thread(server).iter().any(|&c| c != daemon)
            });
            stray.extend(
                children_of_any_thread(server)
                    .into_iter()
                    .filter(|&c| c != daemon),
            );
        } else {
            assert_eq!(stray, vec![daemon]);
            stray.clear();
        }
        stray.push(daemon);
        common::kill(parent);

        for pid in stray {
            common::poll_until(
                &format!("{method}: process {pid} to end with its parent"),
                || gone(pid),
            );
        }
        // The holder is not a daemon: it lives on, until killed here.
        assert!(!gone(holder));
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(holder as i32).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
    let after = common::dev_shm();
    let new: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
    assert!(
        new.is_empty() || new.iter().all(|n| !n.starts_with("multiproc")),
        "{new:?}"
    );
}

/// Every thread of `pid` is asleep (state `S`): a forkserver under libtest
/// polls in a test thread, so this says it has answered the last request.
fn all_threads_asleep(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'))
        })
    })
}

/// Under libtest the forkserver runs in a test thread and reaps its children
/// itself, relaying their exits. A spare of such a server killed while the
/// spare waits could not have its exit relayed: the next start does not use it
/// (it starts a new server instead), and the spare, told to go, ends. In a
/// fork of this process, which starts a server of its own.
#[test]
fn a_relayed_spare_of_a_dead_server_is_not_used() {
    multiproc::spawn::init();
    let p = common::spawn(|| {
        let ctx = get_context(StartMethod::Forkserver);
        let mut a = ctx.process(exits_with, 4);
        a.start().unwrap();
        assert_eq!(a.join(Some(BOUND)).unwrap(), Some(4));
        let me = std::process::id();
        let servers = children_of(me);
        assert_eq!(servers.len(), 1, "the fork's one child is its server");
        let server = servers[0];
        // `a` is reaped by the server (it relayed the exit): its one child now
        // is the spare, forked for the next start.
        common::poll_until("the server's spare", || {
            children_of_any_thread(server).len() == 1
        });
        let spare = children_of_any_thread(server)[0];
        common::poll_until("the server asleep (it has answered)", || {
            all_threads_asleep(server)
        });
        let server_fd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(server as i32).unwrap(),
            rustix::process::PidfdFlags::empty(),
        )
        .unwrap();
        rustix::process::pidfd_send_signal(&server_fd, rustix::process::Signal::KILL).unwrap();
        let mut fds = [rustix::event::PollFd::new(
            &server_fd,
            rustix::event::PollFlags::IN,
        )];
        let bound = rustix::time::Timespec {
            tv_sec: BOUND.as_secs() as i64,
            tv_nsec: 0,
        };
        assert!(
            matches!(rustix::event::poll(&mut fds, Some(&bound)), Ok(1)),
            "the server died"
        );
        let mut b = ctx.process(exits_with, 5);
        b.start().unwrap();
        assert_ne!(b.pid(), Some(spare), "the dead server's spare ran");
        assert_eq!(
            b.join(Some(BOUND)).unwrap(),
            Some(5),
            "a new server relayed it"
        );
        common::poll_until("the dead server's spare to end", || gone(spare));
    });
    common::join_ok(p);
}

/// Never deserializes: the child's import fails.
#[derive(Debug)]
struct Unimportable;

impl Serialize for Unimportable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(0)
    }
}

impl<'de> Deserialize<'de> for Unimportable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "Unimportable refuses to be imported",
        ))
    }
}

fn takes_unimportable(_: Unimportable) {
    std::process::exit(42);
}

/// `start` returns only once the child has imported its arguments: a child that
/// cannot import them makes `start` fail, with the child's reason.
#[test]
fn start_waits_for_the_import_and_reports_its_failure() {
    multiproc::spawn::init();
    for method in METHODS {
        let mut p = get_context(method).process(takes_unimportable, Unimportable);
        match p.start() {
            Err(Error::Start { reason, .. }) => {
                assert!(
                    reason.contains("importing the arguments"),
                    "{method}: {reason}"
                )
            }
            other => panic!("{method}: start did not report the failed import: {other:?}"),
        }
        assert_eq!(p.join(Some(BOUND)).unwrap(), Some(1), "{method}");
    }
}

/// Spawn and forkserver are safe from a parent whose other threads hold locks
/// (a std Mutex, stdout's, the allocator's) at any moment: the children do not
/// inherit those threads' state.
#[test]
fn children_start_while_the_parent_runs_several_threads() {
    multiproc::spawn::init();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let shared = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (stop, shared) = (stop.clone(), shared.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut v = shared.lock().unwrap();
                    v.push(n);
                    if v.len() > 1000 {
                        v.clear();
                    }
                    drop(v);
                    if n % 5000 == 0 {
                        eprint!("{}", i);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    for method in METHODS {
        for i in 0..10u64 {
            let job = Job {
                numbers: vec![i, 1],
                expect_sum: i + 1,
                out: out_path(&format!("threads-{method}-{i}")),
            };
            let out = job.out.clone();
            let mut p = get_context(method).process(summer, job);
            p.start().unwrap();
            assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0), "{method} #{i}");
            std::fs::remove_file(out).unwrap();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
}

fn exits_with(code: i32) {
    std::process::exit(code);
}

/// The entry of a spawned child that starts a grandchild by `method` and exits
/// with the grandchild's exit code (a failed start: 100).
fn starts_a_grandchild(method: String) {
    let method: StartMethod = method.parse().expect("a start method name");
    let mut p = get_context(method).process(exits_with, 7);
    if p.start().is_err() {
        std::process::exit(100);
    }
    let code = p
        .join(Some(BOUND))
        .expect("join")
        .expect("within the bound");
    std::process::exit(code);
}

#[test]
fn a_spawned_child_starts_children_of_its_own_by_every_method() {
    multiproc::spawn::init();
    for outer in METHODS {
        for inner in StartMethod::ALL {
            let mut p = get_context(outer).process(starts_a_grandchild, inner.name().to_string());
            p.start().unwrap();
            // 7: the grandchild ran its entry (100: the child could not start it).
            assert_eq!(
                p.join(Some(BOUND)).unwrap(),
                Some(7),
                "{outer} then {inner}"
            );
        }
    }
}
