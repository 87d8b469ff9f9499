//! Producers and consumers through a `Queue` (Python's `multiprocessing.Queue`):
//! 3 producer processes put 10,000 numbered messages each, 2 consumer processes
//! take them until every producer is gone (`Disconnected`, not a sentinel), and
//! send back what they received. Checked: every message arrived exactly once, and
//! each consumer saw each producer's messages in the order they were put.
//!
//! Its children are `Process::entry` (a plain function and serde arguments: the
//! shared objects travel as tokens), so `multiproc demo --start-method` runs it
//! under fork, spawn and forkserver alike.
//!
//! Run: `cargo run --release --example 10_queue_producers_consumers`

use std::time::Duration;

use multiproc::{Error, Process, Queue, Receiver, Sender};

const PRODUCERS: u32 = 3;
const PER_PRODUCER: u32 = 10_000;
const CONSUMERS: u32 = 2;
const PATIENCE: Option<Duration> = Some(Duration::from_secs(60));

/// One message: which producer, its sequence number, and a payload.
#[derive(serde::Serialize, serde::Deserialize)]
struct Msg {
    producer: u32,
    seq: u32,
    text: String,
}

/// A consumer: takes messages until every producer is gone, reporting each.
fn consumer((c, rx, out): (u32, Receiver<Msg>, Sender<(u32, u32, bool)>)) {
    let mut last = vec![None; PRODUCERS as usize];
    let mut n = 0;
    loop {
        match rx.get(PATIENCE) {
            Ok(m) => {
                let slot = &mut last[m.producer as usize];
                let in_order = *slot < Some(m.seq) && m.text == format!("item {}", m.seq);
                *slot = Some(m.seq);
                out.put(&(m.producer, m.seq, in_order), PATIENCE)
                    .expect("report");
                n += 1;
            }
            // Every producer is gone and the queue is empty: done.
            Err(Error::Disconnected(_)) => break,
            Err(e) => panic!("consumer {c}: {e}"),
        }
    }
    println!("consumer {c}: took {n} messages");
}

/// A producer: puts its messages, in order.
fn producer((p, tx): (u32, Sender<Msg>)) {
    for seq in 0..PER_PRODUCER {
        let m = Msg {
            producer: p,
            seq,
            text: format!("item {seq}"),
        };
        tx.put(&m, PATIENCE).expect("put");
    }
    println!("producer {p}: put {PER_PRODUCER} messages");
}

/// Runs the scenario with real processes; returns whether the answer is right.
pub fn run() -> multiproc::Result<bool> {
    let work = Queue::<Msg>::with_maxsize(256)?;
    // Consumers report (producer, seq, in order so far) for every message taken.
    let report = Queue::<(u32, u32, bool)>::new()?;
    let mut kids = Vec::new();
    for c in 0..CONSUMERS {
        kids.push(Process::entry(
            consumer,
            (c, work.receiver(), report.sender()),
        ));
    }
    for p in 0..PRODUCERS {
        kids.push(Process::entry(producer, (p, work.sender())));
    }
    for k in kids.iter_mut() {
        k.start()?;
    }
    // The children hold the roles now: the parent lets go of both ends of `work`.
    drop(work);
    let total = (PRODUCERS * PER_PRODUCER) as usize;
    let mut seen = vec![false; total];
    let (mut once, mut ordered) = (true, true);
    for _ in 0..total {
        let (p, seq, in_order) = report.get(PATIENCE)?;
        let i = (p * PER_PRODUCER + seq) as usize;
        once &= !std::mem::replace(&mut seen[i], true);
        ordered &= in_order;
    }
    let mut ok = true;
    for mut k in kids {
        ok &= k.join(PATIENCE)? == Some(0);
    }
    let all = seen.iter().all(|&s| s);
    println!(
        "received {total} messages: each exactly once: {}, in order per producer: {ordered}",
        once && all
    );
    Ok(ok && once && all && ordered && report.empty())
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::spawn::init();
    Ok(run()?.then_some(()).ok_or("wrong result")?)
}
