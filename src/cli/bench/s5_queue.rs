//! S5: message throughput through a Queue between processes — 1 producer and 1
//! consumer with 8-byte and 4 KiB messages, and 4 producers with 4 consumers with
//! 8-byte messages — against crossbeam-channel between threads (the in-process
//! ceiling), an OS pipe between processes, and CPython's `Queue` and `Pipe`.
//!
//! The batched run moves the same 8-byte messages with `put_many` / `get_many`
//! (64 a call); crossbeam-channel, which has no batch calls, is shown one by one.
//! The Pod run moves them with `put_pod` / `get_pod` (their bytes copied, no
//! serde); the goal stays on the serde run.
//!
//! Every run times the whole transfer in the parent: from a Barrier that releases
//! every party to the last child's exit. 8-byte messages are typed (`[u8; 8]`
//! through serde); 4 KiB messages are raw bytes (`put_bytes` / `get_bytes_into`).
//! Consumers stop at end markers: each producer puts one per consumer after its
//! data, and each consumer stops after as many markers as there are producers, so
//! every message has been taken when the last consumer stops (the queue is FIFO).

use std::time::{Duration, Instant};

use multiproc::{Barrier, Process, Queue};

use super::{Ctx, Goal, Scenario, join_all};

pub const SCENARIO: Scenario = Scenario {
    id: "S5",
    title: "Queue throughput between processes: 1->1 with 8 B and 4 KiB messages, 4->4 with 8 B",
    steps: 11,
    run,
    python: python_script!("s5_queue.py"),
    goals: &[
        Goal {
            metric: SMALL,
            processes: 2,
            reference: "cpython",
            at_least: 100.0,
            text: ">= 100x CPython's Queue",
        },
        Goal {
            metric: LARGE,
            processes: 2,
            reference: "cpython",
            at_least: 10.0,
            text: ">= 10x CPython's Queue",
        },
        Goal {
            metric: SMALL,
            processes: 2,
            reference: "threads",
            at_least: 0.5,
            text: ">= half of crossbeam-channel between threads",
        },
        Goal {
            metric: MANY,
            processes: 8,
            reference: "threads",
            at_least: 0.5,
            text: ">= half of crossbeam-channel between threads",
        },
    ],
};

const SMALL: &str = "1->1, 8 B messages";
const LARGE: &str = "1->1, 4 KiB messages";
const LARGE_MB: &str = "1->1, 4 KiB messages, bytes";
const MANY: &str = "4->4, 8 B messages";
const BATCHED: &str = "1->1, 8 B messages, in batches of 64";
const POD: &str = "1->1, 8 B messages, put_pod / get_pod";
/// Messages per `put_many` / `get_many` in the batched run.
const BATCH: usize = 64;
const PATIENCE: Option<Duration> = Some(Duration::from_secs(60));
/// An 8-byte message that ends a producer's stream.
const END: [u8; 8] = [0xff; 8];
const KIB4: usize = 4096;

/// Messages per second of `reps` transfers of `total` 8-byte messages from
/// `producers` to `consumers` processes through one multiproc Queue.
fn queue_small(
    producers: usize,
    consumers: usize,
    total: u64,
    reps: usize,
) -> multiproc::Result<Vec<f64>> {
    let mut out = Vec::new();
    for _ in 0..reps {
        let q = Queue::<[u8; 8]>::new()?;
        let start = Barrier::new(producers + consumers + 1)?;
        let per = total / producers as u64;
        let mut kids = Vec::new();
        for _ in 0..producers {
            let (tx, b) = (q.sender(), start.clone());
            kids.push(spawn(move || {
                b.wait(PATIENCE).expect("start");
                for i in 0..per {
                    tx.put(&i.to_le_bytes(), PATIENCE).expect("put");
                }
                for _ in 0..consumers {
                    tx.put(&END, PATIENCE).expect("put");
                }
            })?);
        }
        for _ in 0..consumers {
            let (rx, b) = (q.receiver(), start.clone());
            kids.push(spawn(move || {
                b.wait(PATIENCE).expect("start");
                let mut ends = 0;
                while ends < producers {
                    if rx.get(PATIENCE).expect("get") == END {
                        ends += 1;
                    }
                }
            })?);
        }
        drop(q);
        start.wait(PATIENCE)?;
        let t = Instant::now();
        join_all(kids)?;
        out.push((per * producers as u64) as f64 / t.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// Messages per second of 1->1 transfers of `total` 8-byte messages through the
/// plain-old-data path (`put_pod` / `get_pod`: the bytes copied, no serde).
fn queue_pod(total: u64, reps: usize) -> multiproc::Result<Vec<f64>> {
    let mut out = Vec::new();
    for _ in 0..reps {
        let q = Queue::<[u8; 8]>::new()?;
        let start = Barrier::new(3)?;
        let (tx, b) = (q.sender(), start.clone());
        let producer = spawn(move || {
            b.wait(PATIENCE).expect("start");
            for i in 0..total {
                tx.put_pod(&i.to_le_bytes(), PATIENCE).expect("put");
            }
            tx.put_pod(&END, PATIENCE).expect("put");
        })?;
        let (rx, b) = (q.receiver(), start.clone());
        let consumer = spawn(move || {
            b.wait(PATIENCE).expect("start");
            while rx.get_pod(PATIENCE).expect("get") != END {}
        })?;
        drop(q);
        start.wait(PATIENCE)?;
        let t = Instant::now();
        join_all(vec![producer, consumer])?;
        out.push(total as f64 / t.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// Messages per second of 1->1 transfers of `total` 4 KiB raw messages.
fn queue_large(total: u64, reps: usize) -> multiproc::Result<Vec<f64>> {
    let mut out = Vec::new();
    for _ in 0..reps {
        let q = Queue::<()>::new()?;
        let start = Barrier::new(3)?;
        let (tx, b) = (q.sender(), start.clone());
        let producer = spawn(move || {
            let mut msg = vec![7u8; KIB4];
            b.wait(PATIENCE).expect("start");
            for i in 0..total {
                msg[..8].copy_from_slice(&i.to_le_bytes());
                tx.put_bytes(&msg, PATIENCE).expect("put");
            }
            tx.put_bytes(&[], PATIENCE).expect("put");
        })?;
        let (rx, b) = (q.receiver(), start.clone());
        let consumer = spawn(move || {
            let mut buf = Vec::with_capacity(KIB4);
            b.wait(PATIENCE).expect("start");
            while rx.get_bytes_into(&mut buf, PATIENCE).expect("get") != 0 {}
        })?;
        drop(q);
        start.wait(PATIENCE)?;
        let t = Instant::now();
        join_all(vec![producer, consumer])?;
        out.push(total as f64 / t.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// Messages per second of 1->1 transfers of `total` 8-byte messages, put with
/// `put_many` and taken with `get_many`, [`BATCH`] at a time.
fn queue_batched(total: u64, reps: usize) -> multiproc::Result<Vec<f64>> {
    let mut out = Vec::new();
    for _ in 0..reps {
        let q = Queue::<[u8; 8]>::new()?;
        let start = Barrier::new(3)?;
        let (tx, b) = (q.sender(), start.clone());
        let producer = spawn(move || {
            let batch: Vec<[u8; 8]> = (0..BATCH as u64).map(u64::to_le_bytes).collect();
            b.wait(PATIENCE).expect("start");
            for _ in 0..total / BATCH as u64 {
                tx.put_many(&batch, PATIENCE).expect("put");
            }
            tx.put(&END, PATIENCE).expect("put");
        })?;
        let (rx, b) = (q.receiver(), start.clone());
        let consumer = spawn(move || {
            b.wait(PATIENCE).expect("start");
            'all: loop {
                for m in rx.get_many(BATCH, PATIENCE).expect("get") {
                    if m == END {
                        break 'all;
                    }
                }
            }
        })?;
        drop(q);
        start.wait(PATIENCE)?;
        let t = Instant::now();
        join_all(vec![producer, consumer])?;
        out.push((total / BATCH as u64 * BATCH as u64) as f64 / t.elapsed().as_secs_f64());
    }
    Ok(out)
}

fn spawn(f: impl FnOnce() + Send + 'static) -> multiproc::Result<Process> {
    let mut p = Process::new(f).with_name("bench-s5");
    p.start()?;
    Ok(p)
}

/// Messages per second through an OS pipe between two processes: one `write` and
/// one exact `read` of `size` bytes per message.
fn os_pipe(size: usize, total: u64, reps: usize) -> multiproc::Result<Vec<f64>> {
    use rustix::io::{read, write};
    let mut out = Vec::new();
    for _ in 0..reps {
        let (r, w) = rustix::pipe::pipe()
            .map_err(|e| multiproc::Error::InvalidArgument(format!("pipe: {e}")))?;
        let start = Barrier::new(3)?;
        let b = start.clone();
        let producer = spawn(move || {
            let msg = vec![1u8; size];
            b.wait(PATIENCE).expect("start");
            for _ in 0..total {
                let mut rest = &msg[..];
                while !rest.is_empty() {
                    let n = write(&w, rest).expect("write");
                    rest = &rest[n..];
                }
            }
        })?;
        let b = start.clone();
        let consumer = spawn(move || {
            let mut buf = vec![0u8; size];
            b.wait(PATIENCE).expect("start");
            for _ in 0..total {
                let mut got = 0;
                while got < size {
                    got += read(&r, &mut buf[got..]).expect("read");
                }
            }
        })?;
        start.wait(PATIENCE)?;
        let t = Instant::now();
        join_all(vec![producer, consumer])?;
        out.push(total as f64 / t.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// Messages per second through a bounded crossbeam-channel between threads.
#[allow(clippy::too_many_arguments)]
fn threads<M: Copy + Send + 'static>(
    producers: usize,
    consumers: usize,
    total: u64,
    reps: usize,
    capacity: usize,
    data: M,
    end: M,
    is_end: fn(&M) -> bool,
) -> Vec<f64> {
    let mut out = Vec::new();
    for _ in 0..reps {
        let (tx, rx) = crossbeam_channel::bounded::<M>(capacity);
        let start = std::sync::Arc::new(std::sync::Barrier::new(producers + consumers + 1));
        let per = total / producers as u64;
        let mut hs = Vec::new();
        for _ in 0..producers {
            let (tx, b) = (tx.clone(), start.clone());
            hs.push(std::thread::spawn(move || {
                b.wait();
                for _ in 0..per {
                    tx.send(data).expect("send");
                }
                for _ in 0..consumers {
                    tx.send(end).expect("send");
                }
            }));
        }
        for _ in 0..consumers {
            let (rx, b) = (rx.clone(), start.clone());
            hs.push(std::thread::spawn(move || {
                b.wait();
                let mut ends = 0;
                while ends < producers {
                    if is_end(&rx.recv().expect("recv")) {
                        ends += 1;
                    }
                }
            }));
        }
        start.wait();
        let t = Instant::now();
        for h in hs {
            h.join().expect("a channel thread panicked");
        }
        out.push((per * producers as u64) as f64 / t.elapsed().as_secs_f64());
    }
    out
}

fn to_mb(msgs: &[f64]) -> Vec<f64> {
    msgs.iter().map(|m| m * KIB4 as f64 / 1e6).collect()
}

fn run(ctx: &mut Ctx) -> multiproc::Result<()> {
    let reps = ctx.pick(3, 7);
    let small = ctx.pick(200_000, 2_000_000);
    let large = ctx.pick(20_000, 200_000);
    ctx.step("multiproc Queue 1->1, 8 B");
    let v = queue_small(1, 1, small, reps)?;
    ctx.record("multiproc", SMALL, 2, "msg/s", &v);
    ctx.step("multiproc Queue 1->1, 8 B, batches");
    let v = queue_batched(small, reps)?;
    ctx.record("multiproc", BATCHED, 2, "msg/s", &v);
    ctx.step("multiproc Queue 1->1, 8 B, put_pod / get_pod");
    let v = queue_pod(small, reps)?;
    ctx.record("multiproc", POD, 2, "msg/s", &v);
    ctx.step("multiproc Queue 1->1, 4 KiB");
    let v = queue_large(large, reps)?;
    ctx.record("multiproc", LARGE, 2, "msg/s", &v);
    ctx.record("multiproc", LARGE_MB, 2, "MB/s", &to_mb(&v));
    ctx.step("multiproc Queue 4->4, 8 B");
    let v = queue_small(4, 4, small, reps)?;
    ctx.record("multiproc", MANY, 8, "msg/s", &v);
    ctx.step("OS pipe 1->1, 8 B");
    let v = os_pipe(8, small / 4, reps)?;
    ctx.record("os pipe", SMALL, 2, "msg/s", &v);
    ctx.step("OS pipe 1->1, 4 KiB");
    let v = os_pipe(KIB4, large, reps)?;
    ctx.record("os pipe", LARGE, 2, "msg/s", &v);
    ctx.record("os pipe", LARGE_MB, 2, "MB/s", &to_mb(&v));
    // Threads only after every fork of this scenario.
    ctx.step("threads: crossbeam-channel 1->1, 8 B");
    let v = threads(1, 1, small, reps, 1 << 16, [0u8; 8], END, |m| m[0] == 0xff);
    ctx.record("threads", SMALL, 2, "msg/s", &v);
    // crossbeam-channel has no batch calls: the same transfer, one by one.
    ctx.record("threads", BATCHED, 2, "msg/s", &v);
    // Nor serde: its messages are always moved as they are.
    ctx.record("threads", POD, 2, "msg/s", &v);
    ctx.step("threads: crossbeam-channel 1->1, 4 KiB");
    let v = threads(1, 1, large, reps, 256, [0u8; KIB4], [0xff; KIB4], |m| {
        m[0] == 0xff
    });
    ctx.record("threads", LARGE, 2, "msg/s", &v);
    ctx.record("threads", LARGE_MB, 2, "MB/s", &to_mb(&v));
    ctx.step("threads: crossbeam-channel 4->4, 8 B");
    let v = threads(4, 4, small, reps, 1 << 16, [0u8; 8], END, |m| m[0] == 0xff);
    ctx.record("threads", MANY, 8, "msg/s", &v);
    ctx.note(
        "S5: Boost.Interprocess message_queue moves 8.2M 8-byte msg/s between two processes on these machines (measured outside this run)",
    );
    Ok(())
}
