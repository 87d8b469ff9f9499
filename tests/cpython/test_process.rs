//! CPython's `_TestProcess` (Lib/test/_test_multiprocessing.py), ported: one test
//! per Python method, same numbers and assertions. Python's arguments become values
//! the closure captures; its Queue/Pipe become shared values and Events; a
//! `timeout=None` becomes [`BOUND`]. What cannot be expressed is listed, with the
//! reason, in `tests/cpython/README.md`.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use crate::common::BOUND;
use multiproc::{
    Error, Event, Process, RawArray, RawValue, active_children, current_process, parent_process,
};

/// CPython's `support.SHORT_TIMEOUT`.
const SHORT_TIMEOUT: Duration = Duration::from_secs(30);

fn in_active_children(p: &Process) -> bool {
    active_children().iter().any(|c| Some(c.pid()) == p.pid())
}

/// CPython's `wait([handle], timeout)` on one sentinel: true if it became ready.
fn wait_for_handle(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    rustix::event::poll(&mut fds, Some(&ts)).unwrap() == 1
}

#[test]
fn test_current() {
    let current = current_process();
    // `current.is_alive()` is true and `current.exitcode` None by definition in
    // CPython; `authkey` has no counterpart (see README).
    assert!(!current.is_daemon());
    assert_eq!(current.pid(), std::process::id());
    assert_eq!(current.name(), "MainProcess");
}

#[test]
fn test_daemon_argument() {
    // By default uses the current process's daemon flag.
    let proc0 = Process::new(|| {});
    assert_eq!(proc0.is_daemon(), current_process().is_daemon());
    let proc1 = Process::new(|| {}).daemon(true);
    assert!(proc1.is_daemon());
    let proc2 = Process::new(|| {}).daemon(false);
    assert!(!proc2.is_daemon());
    // And in a daemon, whose flag is true.
    let mut d = Process::new(|| assert!(Process::new(|| {}).is_daemon())).daemon(true);
    d.start().unwrap();
    assert_eq!(d.join(Some(BOUND)).unwrap(), Some(0));
}

#[test]
fn test_parent_process_attributes() {
    assert!(parent_process().is_none());

    let parent_pid = RawValue::new(0u32).unwrap();
    let name_ok = RawValue::new(0u8).unwrap();
    let (pp, nok) = (parent_pid.clone(), name_ok.clone());
    let my_name = current_process().name().to_string();
    let mut p = Process::new(move || {
        let parent = parent_process().unwrap();
        pp.set(parent.pid());
        nok.set((parent.name() == my_name) as u8);
    });
    p.start().unwrap();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
    assert_eq!(parent_pid.get(), current_process().pid());
    assert_eq!(parent_pid.get(), std::process::id());
    assert_eq!(name_ok.get(), 1, "parent_name == current_process().name");
}

/// Status codes a grandchild reports: 0 nothing yet, 1 "alive", 2 "not alive".
fn status(alive: bool) -> u8 {
    if alive { 1 } else { 2 }
}

#[test]
fn test_parent_process() {
    // Launch a child process. Make it launch a grandchild process. Kill the
    // child process and make sure that the grandchild notices the death of its
    // parent (a.k.a the child process).
    let first = RawValue::new(0u8).unwrap();
    let second = RawValue::new(0u8).unwrap();
    let (sent1, sent2) = (Event::new().unwrap(), Event::new().unwrap());
    let (f, s, e1, e2) = (first.clone(), second.clone(), sent1.clone(), sent2.clone());
    let mut p = Process::new(move || {
        // _test_create_grandchild_process
        let mut g = Process::new(move || {
            // _test_report_parent_status
            let parent = parent_process().unwrap();
            f.set(status(parent.is_alive()));
            e1.set();
            parent.join(Some(SHORT_TIMEOUT)).unwrap();
            s.set(status(parent.is_alive()));
            e2.set();
        });
        g.start().unwrap();
        // time.sleep(300): until terminated.
        Event::new().unwrap().wait(Some(BOUND * 10)).unwrap();
    });
    p.start().unwrap();

    assert!(
        sent1.wait(Some(BOUND)).unwrap(),
        "Could not communicate with child process"
    );
    assert_eq!(first.get(), status(true), "alive");

    p.terminate().unwrap();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(-15));

    assert!(
        sent2.wait(Some(BOUND)).unwrap(),
        "Could not communicate with child process"
    );
    assert_eq!(second.get(), status(false), "not alive");
}

#[test]
fn test_process() {
    // args = (q, 1, 2); kwargs = {'hello': 23, 'bye': 2.54}: captured values the
    // child sends back through shared memory, with its name and pid.
    let q = RawArray::<f64>::new(4).unwrap();
    let seen_pid = RawValue::new(0u32).unwrap();
    let name_ok = RawValue::new(0u8).unwrap();
    let e = Event::new().unwrap();
    let (args, kwargs) = ((1.0, 2.0), (23.0, 2.54));
    let name = "SomeProcess";
    let (qc, pc, nc, ec) = (q.clone(), seen_pid.clone(), name_ok.clone(), e.clone());
    let mut p = Process::new(move || {
        // _test
        let current = current_process();
        qc.set(0, args.0).unwrap();
        qc.set(1, args.1).unwrap();
        qc.set(2, kwargs.0).unwrap();
        qc.set(3, kwargs.1).unwrap();
        nc.set((current.name() == name) as u8);
        pc.set(current.pid());
        ec.wait(Some(BOUND)).unwrap();
    })
    .with_name(name)
    .daemon(true);

    // `p.authkey == current.authkey`: no authkey (see README).
    assert!(!p.is_alive());
    assert!(p.is_daemon());
    assert!(!in_active_children(&p));
    let _: Vec<multiproc::ActiveChild> = active_children(); // a list
    assert_eq!(p.exitcode(), None);

    p.start().unwrap();

    assert_eq!(p.exitcode(), None);
    assert!(p.is_alive());
    assert!(in_active_children(&p));

    e.set();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
    assert_eq!(q.to_vec().unwrap(), vec![1.0, 2.0, 23.0, 2.54]);
    assert_eq!(name_ok.get(), 1, "q.get() == p.name");
    assert_eq!(Some(seen_pid.get()), p.pid());

    assert_eq!(p.exitcode(), Some(0));
    assert!(!p.is_alive());
    assert!(!in_active_children(&p));
}

#[test]
fn test_process_mainthread_native_id() {
    // The main thread's native id is the process id on Linux.
    let current_mainthread_native_id = std::process::id();
    let q = RawValue::new(0u32).unwrap();
    let qc = q.clone();
    let mut p = Process::new(move || {
        qc.set(rustix::thread::gettid().as_raw_nonzero().get() as u32);
    });
    p.start().unwrap();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
    let child_mainthread_native_id = q.get();
    assert_ne!(child_mainthread_native_id, 0);
    assert_ne!(current_mainthread_native_id, child_mainthread_native_id);
}

/// CPython's `_kill_process(meth)`: returns the exit code.
fn kill_process(meth: fn(&Process) -> multiproc::Result<()>) -> Option<i32> {
    let event = Event::new().unwrap();
    let never = Event::new().unwrap();
    let (ev, nv) = (event.clone(), never.clone());
    // _sleep_some_event: event.set(); time.sleep(100)
    let mut p = Process::new(move || {
        ev.set();
        nv.wait(Some(BOUND * 4)).unwrap();
    })
    .daemon(true);
    p.start().unwrap();

    assert!(p.is_alive());
    assert!(in_active_children(&p));
    assert_eq!(p.exitcode(), None);

    assert_eq!(p.join(Some(Duration::ZERO)).unwrap(), None);
    assert!(p.is_alive());
    // `join(-1)`: a Duration cannot be negative (see README).

    if !event.wait(Some(SHORT_TIMEOUT)).unwrap() {
        p.terminate().unwrap();
        p.join(Some(BOUND)).unwrap();
        panic!("event not signaled in {SHORT_TIMEOUT:?}");
    }

    meth(&p).unwrap();

    // CPython's `join()` returns None; multiproc's returns the exit code.
    let code = p.join(Some(BOUND)).unwrap();
    assert!(code.is_some(), "join took too long");

    assert!(!p.is_alive());
    assert!(!in_active_children(&p));

    p.join(Some(BOUND)).unwrap();
    p.exitcode()
}

#[test]
fn test_terminate() {
    let exitcode = kill_process(Process::terminate);
    assert_eq!(exitcode, Some(-(libc::SIGTERM)));
}

#[test]
fn test_kill() {
    let exitcode = kill_process(Process::kill);
    assert_eq!(exitcode, Some(-(libc::SIGKILL)));
}

#[test]
fn test_active_children() {
    let _: Vec<multiproc::ActiveChild> = active_children();

    let event = Event::new().unwrap();
    let ev = event.clone();
    let mut p = Process::new(move || {
        ev.wait(Some(BOUND)).unwrap();
    })
    .daemon(true);
    assert!(!in_active_children(&p));

    p.start().unwrap();
    let listed = in_active_children(&p);
    event.set();
    assert!(listed);

    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
    assert!(!in_active_children(&p));
}

/// The id list `[a, b, ...]` as one number: 100 × length, then the digits.
fn encode(id: &[u32]) -> u32 {
    100 * id.len() as u32 + id.iter().fold(0, |acc, d| acc * 10 + d)
}

/// `_test_recursion`: sends its id, then (below depth 2) starts and joins two
/// children with the id extended by 0 and 1.
fn test_recursion_in(log: RawArray<u32>, next: RawValue<u32>, id: Vec<u32>) {
    let at = next.fetch_add(1) as usize;
    log.set(at, encode(&id)).unwrap();
    if id.len() < 2 {
        for i in 0..2 {
            let (l, n) = (log.clone(), next.clone());
            let mut child_id = id.clone();
            child_id.push(i);
            let mut p = Process::new(move || test_recursion_in(l, n, child_id));
            p.start().unwrap();
            assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
        }
    }
}

#[test]
fn test_recursion() {
    let log = RawArray::<u32>::new(16).unwrap();
    let next = RawValue::new(0u32).unwrap();
    test_recursion_in(log.clone(), next.clone(), vec![]);

    let result: Vec<u32> = log.to_vec().unwrap()[..next.get() as usize].to_vec();
    let expected: Vec<u32> = [&[][..], &[0], &[0, 0], &[0, 1], &[1], &[1, 0], &[1, 1]]
        .iter()
        .map(|id| encode(id))
        .collect();
    assert_eq!(result, expected);
}

#[test]
fn test_sentinel() {
    let event = Event::new().unwrap();
    let ev = event.clone();
    // _test_sentinel: event.wait(10.0)
    let mut p = Process::new(move || {
        ev.wait(Some(Duration::from_secs(10))).unwrap();
    });
    assert!(matches!(p.sentinel(), Err(Error::ProcessState { .. })));
    p.start().unwrap();
    let sentinel = p.sentinel().unwrap();
    let _: BorrowedFd<'_> = sentinel.as_fd();
    assert!(!wait_for_handle(sentinel, Duration::ZERO));
    event.set();
    // `p.join()` while the sentinel is borrowed: wait on the sentinel first.
    assert!(wait_for_handle(sentinel, BOUND));
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
    assert!(wait_for_handle(
        p.sentinel().unwrap(),
        Duration::from_secs(1)
    ));
}

#[test]
fn test_close() {
    let q = Event::new().unwrap();
    let qc = q.clone();
    // _test_close(rc=0, q): q.get(); sys.exit(rc)
    let mut p = Process::new(move || {
        qc.wait(Some(BOUND)).unwrap();
        std::process::exit(0);
    })
    .daemon(true);
    p.start().unwrap();
    assert!(p.is_alive());
    // Child is still alive, cannot close
    assert!(matches!(p.close(), Err(Error::ProcessState { .. })));

    q.set();
    p.join(Some(BOUND)).unwrap();
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), Some(0));
    p.close().unwrap();
    // CPython raises ValueError from is_alive(); multiproc's returns false.
    assert!(!p.is_alive());
    assert!(matches!(p.join(None), Err(Error::ProcessState { .. })));
    assert!(matches!(p.terminate(), Err(Error::ProcessState { .. })));
    p.close().unwrap();
    // `weakref.ref(p)` is None after `del p`: ownership drops it (see README).
}

#[test]
fn test_many_processes() {
    const N: usize = 100;

    // _test_sleep(0.01): a child that just finishes.
    let mut procs: Vec<Process> = (0..N).map(|_| Process::new(|| {})).collect();
    for p in &mut procs {
        p.start().unwrap();
    }
    for p in &mut procs {
        p.join(Some(BOUND)).unwrap();
    }
    for p in &mut procs {
        assert_eq!(p.exitcode(), Some(0));
    }

    // _sleep_some: time.sleep(100)
    let never = Event::new().unwrap();
    let mut procs: Vec<Process> = (0..N)
        .map(|_| {
            let n = never.clone();
            Process::new(move || {
                n.wait(Some(BOUND * 4)).unwrap();
            })
        })
        .collect();
    for p in &mut procs {
        p.start().unwrap();
    }
    for p in &procs {
        p.terminate().unwrap();
    }
    for p in &mut procs {
        p.join(Some(BOUND)).unwrap();
    }
    for p in &mut procs {
        assert_eq!(p.exitcode(), Some(-(libc::SIGTERM)));
    }
}

/// `DummyCallable`: a callable object the target holds; `q.put(5)`.
struct DummyCallable;

#[test]
fn test_lose_target_ref() {
    let c = std::sync::Arc::new(DummyCallable);
    let wr = std::sync::Arc::downgrade(&c);
    let q = RawValue::new(0u32).unwrap();
    let qc = q.clone();
    let mut p = Process::new(move || {
        let _: &DummyCallable = &c;
        qc.set(5);
    });
    // `del c`: the closure holds the only strong reference now.
    p.start().unwrap();
    p.join(Some(BOUND)).unwrap();
    assert!(wr.upgrade().is_none());
    assert_eq!(q.get(), 5);
}

/// Breaks this process's stdout or stderr (fd 1 or 2) as Python's test does:
/// "close" points it at a pipe whose reader is closed (writes fail with EPIPE),
/// "remove" at a pipe's read end (not writable at all: EBADF). Only ever called in
/// a child, so the test harness's own streams are never touched.
fn break_stream(stream: i32, how: &str) {
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    let target = match how {
        "close" => {
            drop(reader);
            writer
        }
        "remove" => {
            drop(writer);
            reader // not writable at all
        }
        _ => unreachable!(),
    };
    match stream {
        1 => rustix::stdio::dup2_stdout(&target).unwrap(),
        _ => rustix::stdio::dup2_stderr(&target).unwrap(),
    }
}

#[test]
fn test_error_on_stdio_flush_1() {
    // Check that Process works with broken standard streams (broken in the
    // process that starts the child: here a middle process).
    for stream_name in [1, 2] {
        for how in ["close", "remove"] {
            let evt = Event::new().unwrap();
            let e = evt.clone();
            let mut middle = Process::new(move || {
                break_stream(stream_name, how);
                let e2 = e.clone();
                let mut proc = Process::new(move || e2.set());
                proc.start().unwrap();
                assert_eq!(proc.join(Some(BOUND)).unwrap(), Some(0));
                assert!(e.is_set());
            });
            middle.start().unwrap();
            assert_eq!(middle.join(Some(BOUND)).unwrap(), Some(0));
            assert!(evt.is_set());
        }
    }
}

#[test]
fn test_error_on_stdio_flush_2() {
    // Same as test_error_on_stdio_flush_1(), but standard streams are broken by
    // the child process
    for stream_name in [1, 2] {
        for how in ["close", "remove"] {
            let evt = Event::new().unwrap();
            let e = evt.clone();
            let mut proc = Process::new(move || {
                break_stream(stream_name, how);
                e.set();
            });
            proc.start().unwrap();
            assert_eq!(proc.join(Some(BOUND)).unwrap(), Some(0));
            assert!(evt.is_set());
            assert_eq!(proc.exitcode(), Some(0));
        }
    }
}
