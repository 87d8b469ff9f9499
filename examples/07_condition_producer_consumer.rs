//! Twin of the tutorial's `07_condition_producer_consumer.py`, done right: a
//! producer process makes five items, a consumer process receives all five,
//! coordinated by a `Condition`.
//!
//! **Why the Python original waits forever:** its `items = []` is a plain list. Each
//! process gets its own copy (fork copies memory; spawn pickles it), so the
//! producer's `items.append(i)` never reaches the consumer's list: the consumer
//! sees an empty list after every notify and waits again, forever. (Its consumer
//! also takes only one item.) Here the list lives in shared memory: a `RawArray`
//! for the items plus a `RawValue` for their count, both changed only while
//! holding the Condition's lock, and the consumer loops until it has all five.
//!
//! Its children are `Process::entry` (a plain function and serde arguments: the
//! shared objects travel as tokens), so `multiproc demo --start-method` runs it
//! under fork, spawn and forkserver alike.
//!
//! Run: `cargo run --release --example 07_condition_producer_consumer`

use std::time::Duration;

use multiproc::{Condition, Process, RawArray, RawValue};

const ITEMS: u32 = 5;

/// The consumer: pops every item, waiting on the condition while none is there.
fn consume((c, it, n, got): (Condition, RawArray<u32>, RawValue<u32>, RawArray<u32>)) {
    for k in 0..ITEMS {
        let _g = c.lock().expect("no process dies here");
        // Python: `while not items: condition.wait()`
        while n.load() == 0 {
            println!("Consumer: Waiting for items...");
            let notified = c.wait(Some(Duration::from_secs(30))).expect("lock held");
            assert!(notified || n.load() > 0, "no item came within 30 s");
        }
        let top = n.load() - 1;
        let item = it.get(top as usize).expect("in bounds");
        n.store(top);
        got.set(k as usize, item).expect("in bounds");
        println!("Consumer: Consumed item {item}");
    }
}

/// The producer: pushes the items one by one, notifying the consumer.
fn produce((c, it, n): (Condition, RawArray<u32>, RawValue<u32>)) {
    for i in 0..ITEMS {
        std::thread::sleep(Duration::from_millis(5)); // simulated production time
        let _g = c.lock().expect("no process dies here");
        let top = n.load();
        it.set(top as usize, i).expect("in bounds");
        n.store(top + 1);
        println!("Producer: Produced item {i}");
        c.notify(1).expect("lock held");
    }
}

/// Runs the scenario with real processes; returns whether the answer is right.
pub fn run() -> multiproc::Result<bool> {
    let condition = Condition::new()?; // over an RLock, as Python's default
    // The shared list: items[..len], used as a stack (Python's `items.pop()`).
    let items = RawArray::<u32>::new(ITEMS as usize)?;
    let len = RawValue::new(0u32)?;
    // What the consumer received, for the check.
    let received = RawArray::<u32>::new(ITEMS as usize)?;

    let mut consumer = Process::entry(
        consume,
        (
            condition.clone(),
            items.clone(),
            len.clone(),
            received.clone(),
        ),
    );
    let mut producer = Process::entry(produce, (condition.clone(), items.clone(), len.clone()));
    consumer.start()?;
    producer.start()?;
    let ok = consumer.join(Some(Duration::from_secs(60)))? == Some(0)
        && producer.join(Some(Duration::from_secs(60)))? == Some(0);
    let mut got = received.to_vec()?;
    got.sort_unstable();
    println!("consumer received {got:?} (expected [0, 1, 2, 3, 4])");
    Ok(ok && got == (0..ITEMS).collect::<Vec<_>>() && len.load() == 0)
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::spawn::init();
    Ok(run()?.then_some(()).ok_or("wrong result")?)
}
