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
