//! The forkserver of a program whose `main` calls `spawn::init` first, as a
//! program's does (`harness = false`: under libtest the server would run in a
//! test thread beside libtest's main thread, and fork its children as its own).
//! Such a server is single-threaded and forks each child as the requester's own
//! (`CLONE_PARENT`): this process waits for them itself, so their exit codes and
//! signals, their sentinels, and the server's own death are checked here.

mod common;

use std::os::fd::AsFd;
use std::time::Duration;

use common::BOUND;
use multiproc::{Event, StartMethod, get_context};
use rustix::event::{PollFd, PollFlags, poll};
use rustix::process::{Pid, PidfdFlags, Signal, getpid, pidfd_open};

fn exits_with(code: i32) {
    std::process::exit(code)
}

fn boom(_: ()) {
    panic!("on purpose");
}

/// Exits 0 if this process's parent is `pid` (the requester, not the server).
fn parent_is(pid: u32) {
    let parent = rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32);
    if parent != Some(pid) {
        std::process::exit(4);
    }
}

fn waits(go: Event) {
    assert!(go.wait(Some(BOUND)).unwrap());
}

/// Readable within [`BOUND`].
fn readable(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let t = rustix::time::Timespec {
        tv_sec: BOUND.as_secs() as i64,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&t)), Ok(1))
}

/// This process's children (all started from the main thread).
fn children() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn exit_codes_and_parent() {
    let ctx = get_context(StartMethod::Forkserver);
    let mut p = ctx.process(exits_with, 7);
    p.start().unwrap();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(7));
    assert_eq!(p.exitcode(), Some(7));
    assert!(!p.is_alive());
    let mut p = ctx.process(boom, ());
    p.start().unwrap();
    assert_eq!(
        p.join(Some(BOUND)).unwrap(),
        Some(1),
        "a panic exits with 1"
    );
    let mut p = ctx.process(parent_is, std::process::id());
    p.start().unwrap();
    assert!(
        children().contains(&p.pid().unwrap()),
        "the child is this process's own"
    );
    assert_eq!(
        p.join(Some(BOUND)).unwrap(),
        Some(0),
        "its parent is the requester"
    );
}

fn signals_and_sentinel() {
    let ctx = get_context(StartMethod::Forkserver);
    let never = Event::new().unwrap();
    let mut p = ctx.process(waits, never.clone());
    p.start().unwrap();
    assert!(p.is_alive());
    assert_eq!(p.join(Some(Duration::from_millis(20))).unwrap(), None);
    p.terminate().unwrap();
    assert!(
        readable(p.sentinel().unwrap()),
        "the sentinel becomes readable"
    );
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(-15));
    let mut q = ctx.process(waits, never.clone());
    q.start().unwrap();
    q.kill().unwrap();
    assert_eq!(q.join(Some(BOUND)).unwrap(), Some(-9));
    assert!(
        readable(q.sentinel().unwrap()),
        "and stays readable after the join"
    );
    q.close().unwrap();
    assert!(
        !multiproc::active_children()
            .iter()
            .any(|c| Some(c.pid()) == p.pid() || Some(c.pid()) == q.pid())
    );
}

/// The start time (clock ticks since boot) of process `pid`, from `/proc`.
fn started_at(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    // Fields from the state (field 3) on: the start time is field 22.
    after_comm.split(' ').nth(19).unwrap().parse().unwrap()
}

/// No child of this process is a zombie (every exited child was reaped).
fn no_zombie_child() -> bool {
    children().into_iter().all(|c| {
        std::fs::read_to_string(format!("/proc/{c}/stat"))
            .map(|st| !st[st.rfind(')').unwrap()..].starts_with(") Z"))
            .unwrap_or(true)
    })
}

/// This process's children other than `except`, as (server, spare): the
/// server started first, then forked the spare (the next start's child, forked
/// ahead) as this process's own.
fn server_and_spare(except: &[u32]) -> (u32, u32) {
    let others = || -> Vec<u32> {
        children()
            .into_iter()
            .filter(|c| !except.contains(c))
            .collect()
    };
    // The spare is asked for at the end of a start, and forked by the server
    // while the start returns.
    common::poll_until("the server and its spare", || others().len() == 2);
    let mut others = others();
    assert_eq!(others.len(), 2, "the server and its spare: {others:?}");
    others.sort_by_key(|&c| started_at(c));
    (others[0], others[1])
}

/// The server is killed while its child runs and a spare waits: the child's
/// exit code still arrives (nothing relays it), the spare (this process's own
/// child, no longer the server's business) runs the next start, and the start
/// after that starts a new server. Nothing is left unreaped.
fn the_servers_death_loses_nothing() {
    let ctx = get_context(StartMethod::Forkserver);
    let go = Event::new().unwrap();
    let mut p = ctx.process(waits, go.clone());
    p.start().unwrap();
    let child = p.pid().unwrap();
    let (server, spare) = server_and_spare(&[child]);
    // Asleep in its poll again: it has answered for the spare (killed between
    // its fork and its answer, it would leave a child nobody knows the pid of).
    common::until_asleep(server);
    let server = Pid::from_raw(server as i32).unwrap();
    let server_fd = pidfd_open(server, PidfdFlags::empty()).unwrap();
    rustix::process::pidfd_send_signal(&server_fd, Signal::KILL).unwrap();
    assert!(readable(server_fd.as_fd()), "the server died");
    go.set();
    assert_eq!(
        p.join(Some(BOUND)).unwrap(),
        Some(0),
        "the child's exit code survives the server"
    );
    let mut q = ctx.process(exits_with, 5);
    q.start().unwrap();
    assert_eq!(q.pid(), Some(spare), "the spare ran the next start");
    assert_eq!(q.join(Some(BOUND)).unwrap(), Some(5));
    let mut r = ctx.process(exits_with, 6);
    r.start().unwrap();
    assert_eq!(
        r.join(Some(BOUND)).unwrap(),
        Some(6),
        "a new server forked it"
    );
    assert!(
        !children().contains(&(server.as_raw_nonzero().get() as u32)),
        "the dead server was reaped"
    );
    assert!(no_zombie_child(), "children: {:?}", children());
}

/// A spare killed while it waits is reaped and replaced by the next start,
/// which does not fail for it.
fn a_killed_spare_is_reaped_and_replaced() {
    let ctx = get_context(StartMethod::Forkserver);
    let mut p = ctx.process(exits_with, 0);
    p.start().unwrap();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
    let (_, spare) = server_and_spare(&[]);
    let spare_fd = pidfd_open(Pid::from_raw(spare as i32).unwrap(), PidfdFlags::empty()).unwrap();
    rustix::process::pidfd_send_signal(&spare_fd, Signal::KILL).unwrap();
    assert!(readable(spare_fd.as_fd()), "the spare died");
    let mut q = ctx.process(exits_with, 3);
    q.start().unwrap();
    assert_ne!(q.pid(), Some(spare));
    assert_eq!(q.join(Some(BOUND)).unwrap(), Some(3));
    assert!(!children().contains(&spare), "the dead spare was reaped");
    assert!(no_zombie_child(), "children: {:?}", children());
}

/// A fork of this process inherits the record of this process's spare, and
/// copies of its descriptors: it starts by forkserver with a server of its
/// own, leaving the spare to this process, whose next start it runs.
fn a_fork_leaves_its_parents_spare_alone() {
    let ctx = get_context(StartMethod::Forkserver);
    let mut p = ctx.process(exits_with, 0);
    p.start().unwrap();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
    let (_, spare) = server_and_spare(&[]);
    let mut fork = multiproc::Process::new(move || {
        let mut g = get_context(StartMethod::Forkserver).process(exits_with, 8);
        g.start().unwrap();
        assert_ne!(g.pid(), Some(spare), "the fork took its parent's spare");
        assert_eq!(g.join(Some(BOUND)).unwrap(), Some(8));
    });
    fork.start().unwrap();
    assert_eq!(fork.join(Some(BOUND)).unwrap(), Some(0));
    let mut q = ctx.process(exits_with, 9);
    q.start().unwrap();
    assert_eq!(
        q.pid(),
        Some(spare),
        "this process's spare ran its next start"
    );
    assert_eq!(q.join(Some(BOUND)).unwrap(), Some(9));
}

/// A spare found dead had been reaped by someone else's `waitpid`, and its pid
/// reused by another child of this process (forced here through
/// `ns_last_pid`, where this process may write it; else skipped): the next
/// start neither waits for that child nor takes its exit status.
fn a_dead_spares_reused_pid_is_not_waited_for() {
    const LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";
    if std::fs::OpenOptions::new()
        .write(true)
        .open(LAST_PID)
        .is_err()
    {
        println!("(skipped: {LAST_PID} is not writable)");
        return;
    }
    let ctx = get_context(StartMethod::Forkserver);
    let mut p = ctx.process(exits_with, 0);
    p.start().unwrap();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
    let (_, spare) = server_and_spare(&[]);
    let spare_pid = Pid::from_raw(spare as i32).unwrap();
    let spare_fd = pidfd_open(spare_pid, PidfdFlags::empty()).unwrap();
    rustix::process::pidfd_send_signal(&spare_fd, Signal::KILL).unwrap();
    assert!(readable(spare_fd.as_fd()), "the spare died");
    // Someone else's `waitpid` reaps it.
    rustix::process::waitpid(Some(spare_pid), rustix::process::WaitOptions::empty()).unwrap();
    // A child of this process (forked: not the server's) gets its pid; other
    // processes of the machine may take the pid first, hence the tries.
    let go = Event::new().unwrap();
    let mut reused = None;
    for _ in 0..100 {
        std::fs::write(LAST_PID, format!("{}", spare - 1)).unwrap();
        let mut f = get_context(StartMethod::Fork).process(waits, go.clone());
        f.start().unwrap();
        if f.pid() == Some(spare) {
            reused = Some(f);
            break;
        }
        f.kill().unwrap();
        assert_eq!(f.join(Some(BOUND)).unwrap(), Some(-9));
    }
    let Some(mut f) = reused else {
        println!("(skipped: the spare's pid was not reused)");
        return;
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let starter = std::thread::spawn(move || {
        let mut q = get_context(StartMethod::Forkserver).process(exits_with, 3);
        q.start().unwrap();
        let _ = tx.send(());
        assert_eq!(q.join(Some(BOUND)).unwrap(), Some(3));
    });
    // Bounded well below the fork's own wait (`BOUND`): a start that waits
    // for the fork's exit is still waiting then.
    let started = rx.recv_timeout(Duration::from_secs(5)).is_ok();
    go.set();
    let code = f.join(Some(BOUND));
    starter.join().unwrap();
    assert!(
        started,
        "the start waited for the child that reused the dead spare's pid"
    );
    assert_eq!(code.unwrap(), Some(0), "the fork's exit status was taken");
    assert!(no_zombie_child(), "children: {:?}", children());
}

/// Threads of one process start children at once: each start takes the
/// spare or asks for a child of its own, none fails, and once all are joined
/// this process's children are the server and one spare, none a zombie.
fn threads_starting_at_once_share_one_spare() {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let ctx = get_context(StartMethod::Forkserver);
                for i in 0..25 {
                    let code = (t * 25 + i) % 100;
                    let mut p = ctx.process(exits_with, code);
                    p.start().unwrap();
                    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(code));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let _ = server_and_spare(&[]);
    common::poll_until("no zombie child", no_zombie_child);
    assert_eq!(children().len(), 2, "children: {:?}", children());
}

fn square(x: u64) -> u64 {
    x * x
}

/// A pool of forkserver workers (the requester's own children) maps, and a
/// killed worker is seen through its sentinel and replaced.
fn a_pool_of_forkserver_workers_survives_a_kill() {
    let pool = multiproc::Pool::builder()
        .processes(2)
        .start_method(StartMethod::Forkserver)
        .build()
        .unwrap();
    let pids = pool.worker_pids();
    assert!(
        pids.iter().all(|p| children().contains(p)),
        "the workers are this process's own children"
    );
    assert_eq!(
        pool.map(square, (1..=100u64).collect::<Vec<_>>()).unwrap(),
        (1..=100u64).map(|x| x * x).collect::<Vec<_>>()
    );
    rustix::process::kill_process(Pid::from_raw(pids[0] as i32).unwrap(), Signal::KILL).unwrap();
    common::poll_until("a replacement worker", || {
        !pool.worker_pids().contains(&pids[0])
    });
    let r = pool.apply_async(square, 5).unwrap();
    assert_eq!(r.get(Some(BOUND)).unwrap(), 25);
}

fn main() {
    multiproc::spawn::init();
    let before = common::dev_shm();
    let me = getpid();
    let tests: [(&str, fn()); 8] = [
        ("exit_codes_and_parent", exit_codes_and_parent),
        ("signals_and_sentinel", signals_and_sentinel),
        (
            "a_pool_of_forkserver_workers_survives_a_kill",
            a_pool_of_forkserver_workers_survives_a_kill,
        ),
        (
            "a_fork_leaves_its_parents_spare_alone",
            a_fork_leaves_its_parents_spare_alone,
        ),
        (
            "a_killed_spare_is_reaped_and_replaced",
            a_killed_spare_is_reaped_and_replaced,
        ),
        (
            "threads_starting_at_once_share_one_spare",
            threads_starting_at_once_share_one_spare,
        ),
        (
            "a_dead_spares_reused_pid_is_not_waited_for",
            a_dead_spares_reused_pid_is_not_waited_for,
        ),
        (
            "the_servers_death_loses_nothing",
            the_servers_death_loses_nothing,
        ),
    ];
    for (name, test) in tests {
        test();
        assert_eq!(getpid(), me);
        println!("test {name} ... ok");
    }
    let after = common::dev_shm();
    let new: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
    assert!(
        new.iter().all(|n| !n.starts_with("multiproc")),
        "left in /dev/shm: {new:?}"
    );
    println!("test result: ok. {} passed", tests.len());
}
