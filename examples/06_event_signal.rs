//! Twin of the tutorial's `06_event_signal.py`: a waiter process blocks on an
//! `Event` until a signaler process sets it.
//!
//! The signaler's "preparation" is a short sleep (20 ms instead of 3 s); the waiter
//! records in shared memory that its wait returned because the event was set.
//!
//! Its children are `Process::entry` (a plain function and serde arguments: the
//! shared objects travel as tokens), so `multiproc demo --start-method` runs it
//! under fork, spawn and forkserver alike.
//!
//! Run: `cargo run --release --example 06_event_signal`

use std::time::Duration;

use multiproc::{Event, Process, RawValue};

/// The waiter process.
fn wait_for_event((e, w): (Event, RawValue<u32>)) {
    println!("Waiter: Waiting for event...");
    // Python: `event.wait()`; bounded here so that a bug fails instead of hangs.
    if e.wait(Some(Duration::from_secs(30)))
        .expect("valid timeout")
    {
        w.store(1);
        println!("Waiter: Event occurred!");
    }
}

/// The signaler process.
fn set_event(e: Event) {
    std::thread::sleep(Duration::from_millis(20)); // simulated preparation
    println!("Signaler: Setting event...");
    e.set();
}

/// Runs the scenario with real processes; returns whether the answer is right.
pub fn run() -> multiproc::Result<bool> {
    let event = Event::new()?;
    let woken = RawValue::new(0u32)?;

    let mut waiter = Process::entry(wait_for_event, (event.clone(), woken.clone()));
    let mut signaler = Process::entry(set_event, event.clone());
    waiter.start()?;
    signaler.start()?;
    let ok = waiter.join(Some(Duration::from_secs(60)))? == Some(0)
        && signaler.join(Some(Duration::from_secs(60)))? == Some(0);
    let woke = woken.load() == 1;
    println!("waiter woken by the event: {woke}");
    Ok(ok && woke && event.is_set())
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::spawn::init();
    Ok(run()?.then_some(()).ok_or("wrong result")?)
}
