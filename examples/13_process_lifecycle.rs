//! The `Process` lifecycle as in Python's `multiprocessing`: names across
//! generations (`Process-1`, `Process-1:1`), `current_process()` and
//! `parent_process()` in a child, `active_children()`, waiting on several
//! processes at once through their `sentinel`s, `close()`, and a daemon that
//! follows its parent process.
//!
//! Run: `cargo run --release --example 13_process_lifecycle`

use std::time::Duration;

use multiproc::{Event, Process, RawValue, active_children, current_process, parent_process};
use rustix::event::{PollFd, PollFlags, poll};

/// Runs the scenario with real processes; returns whether the answer is right.
pub fn run() -> multiproc::Result<bool> {
    let go = Event::new()?;
    let grandchild_ok = RawValue::new(0u32)?;

    // A worker that starts a process of its own: named after its parent.
    let (g, ok) = (go.clone(), grandchild_ok.clone());
    let mut worker = Process::new(move || {
        let me = current_process();
        let parent = parent_process().expect("started by a Process");
        println!(
            "{}: pid {}, parent {} (pid {})",
            me.name(),
            me.pid(),
            parent.name(),
            parent.pid()
        );
        let ok2 = ok.clone();
        let mut sub = Process::new(move || {
            println!(
                "{}: my parent is {}",
                current_process().name(),
                parent_process().unwrap().name()
            );
            ok2.store(1);
        });
        println!("{} starts {}", me.name(), sub.name()); // Process-N:1
        sub.start().unwrap();
        sub.join(Some(Duration::from_secs(30))).unwrap();
        g.wait(Some(Duration::from_secs(30))).unwrap();
    });
    // A daemon: killed if this process ends first, however it ends.
    let g = go.clone();
    let mut daemon = Process::new(move || {
        g.wait(Some(Duration::from_secs(30))).unwrap();
    })
    .daemon(true);

    worker.start()?;
    daemon.start()?;
    let ours = [worker.pid(), daemon.pid()];
    let running: Vec<String> = active_children()
        .iter()
        .filter(|c| ours.contains(&Some(c.pid())))
        .map(|c| c.name().to_string())
        .collect();
    println!("active children: {running:?}");
    go.set();

    // Wait for both at once: each sentinel becomes readable when its child ends.
    let mut pending = vec![worker.sentinel()?, daemon.sentinel()?];
    let bound = rustix::time::Timespec {
        tv_sec: 30,
        tv_nsec: 0,
    };
    while !pending.is_empty() {
        let mut fds: Vec<PollFd<'_>> = pending
            .iter()
            .map(|s| PollFd::new(s, PollFlags::IN))
            .collect();
        match poll(&mut fds, Some(&bound)) {
            Ok(0) => break, // timed out: the checks below fail
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(multiproc::Error::Io {
                    context: "polling the sentinels".into(),
                    source: e.into(),
                });
            }
        }
        let ended: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        let mut i = 0;
        pending.retain(|_| {
            i += 1;
            !ended[i - 1]
        });
        println!("{} process(es) still running", pending.len());
    }
    let codes = (
        worker.join(Some(Duration::ZERO))?,
        daemon.join(Some(Duration::ZERO))?,
    );
    println!("exit codes: {codes:?}");
    worker.close()?;
    daemon.close()?;
    Ok(codes == (Some(0), Some(0))
        && grandchild_ok.load() == 1
        && running.len() == 2
        && !active_children()
            .iter()
            .any(|c| ours.contains(&Some(c.pid()))))
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    Ok(run()?.then_some(()).ok_or("wrong result")?)
}
