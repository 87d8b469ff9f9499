//! Pipe rows (for S5, messages): a multiproc `Pipe` between two processes, one way
//! with 8-byte and 4 KiB messages (msg/s) and the 8-byte round trip, duplex
//! (socket pair) and one-way (pipe); CPython's `multiprocessing.Pipe` runs the same
//! in `scripts/bench/pipe.py`.
//!
//! [`measure`] records the rows into any scenario's [`Ctx`]; [`SCENARIO`] runs it
//! alone (`multiproc bench --scenario PIPE`) until it is folded into S5.

use std::time::{Duration, Instant};

use multiproc::{Connection, Pipe, Process, RawArray};

use super::{Ctx, Goal, Scenario, join_all, ns_since};

pub const SCENARIO: Scenario = Scenario {
    id: "PIPE",
    title: "Pipe between two processes: one way and round trip",
    steps: 6,
    run: measure,
    python: python_script!("pipe.py"),
    // A Pipe is a kernel stream like CPython's: one system call a message each
    // side, so the goal is only to beat it, not the Queue's shared-memory margins.
    goals: &[
        Goal {
            metric: ONE_WAY_8,
            processes: 2,
            reference: "cpython",
            at_least: 1.0,
            text: "faster than CPython's Pipe on 8-byte messages",
        },
        Goal {
            metric: ROUND_TRIP,
            processes: 2,
            reference: "cpython",
            at_least: 1.0,
            text: "round trip faster than CPython's Pipe",
        },
    ],
};

/// Metric names (CPython's script uses the same).
pub const ONE_WAY_8: &str = "pipe one way, 8 B";
/// 4 KiB one way.
pub const ONE_WAY_4K: &str = "pipe one way, 4 KiB";
/// 8-byte round trip.
pub const ROUND_TRIP: &str = "pipe round trip, 8 B";

/// How long a side waits for the other before the measurement fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// Records the Pipe rows into `ctx` (under its scenario id).
pub fn measure(ctx: &mut Ctx) -> multiproc::Result<()> {
    let reps = ctx.pick(5, 11);
    for (duplex, imp) in [(true, "multiproc"), (false, "multiproc one-way")] {
        for (size, metric, n) in [
            (8usize, ONE_WAY_8, ctx.pick(200_000u64, 1_000_000)),
            (4096, ONE_WAY_4K, ctx.pick(50_000, 200_000)),
        ] {
            ctx.step(&format!("{imp} {metric}"));
            let ns = one_way(duplex, size, n, reps)?;
            let rates: Vec<f64> = ns.iter().map(|&t| n as f64 * 1e9 / t as f64).collect();
            ctx.record(imp, metric, 2, "msg/s", &rates);
        }
    }
    ctx.step("multiproc round trip");
    let n = ctx.pick(20_000u64, 100_000);
    let ns = round_trip(n, reps)?;
    let per: Vec<f64> = ns.iter().map(|&t| t as f64 / n as f64).collect();
    ctx.record("multiproc", ROUND_TRIP, 2, "ns", &per);
    Ok(())
}

fn wait_readable(c: &Connection) {
    assert!(
        c.poll(Some(PATIENCE)).expect("poll"),
        "the other side went quiet"
    );
}

/// `reps` timings (ns) of `n` messages of `size` bytes from one child to another,
/// from the first send to the receiver's acknowledgement of the last.
fn one_way(duplex: bool, size: usize, n: u64, reps: usize) -> multiproc::Result<Vec<u64>> {
    let (rx, tx) = Pipe(duplex)?;
    let (ack_rx, ack_tx) = Pipe(false)?;
    let out = RawArray::<u64>::new(reps)?;
    let o = out.clone();
    let mut sender = Process::new(move || {
        let msg = vec![7u8; size];
        for r in 0..reps {
            let t = Instant::now();
            for _ in 0..n {
                tx.send_bytes(&msg, 0, None).expect("send");
            }
            wait_readable(&ack_rx);
            ack_rx.recv::<u8>().expect("ack");
            o.set(r, ns_since(t)).expect("slot in range");
        }
    })
    .with_name("pipe-sender");
    let mut receiver = Process::new(move || {
        let mut buf = vec![0u8; size];
        for _ in 0..reps {
            // Blocking receives: a stuck side is killed by `join_all`'s timeout.
            for _ in 0..n {
                rx.recv_bytes_into(&mut buf, 0).expect("recv");
            }
            ack_tx.send(&1u8).expect("ack");
        }
    })
    .with_name("pipe-receiver");
    receiver.start()?;
    sender.start()?;
    join_all(vec![sender, receiver])?;
    out.to_vec()
}

/// `reps` timings (ns) of `n` 8-byte round trips between two children.
fn round_trip(n: u64, reps: usize) -> multiproc::Result<Vec<u64>> {
    let (a, b) = Pipe(true)?;
    let out = RawArray::<u64>::new(reps)?;
    let o = out.clone();
    let mut ping = Process::new(move || {
        let mut buf = [0u8; 8];
        for r in 0..reps {
            let t = Instant::now();
            for i in 0..n {
                a.send_bytes(&i.to_le_bytes(), 0, None).expect("send");
                a.recv_bytes_into(&mut buf, 0).expect("recv");
            }
            o.set(r, ns_since(t)).expect("slot in range");
        }
    })
    .with_name("pipe-ping");
    let mut pong = Process::new(move || {
        let mut buf = [0u8; 8];
        for _ in 0..reps as u64 * n {
            b.recv_bytes_into(&mut buf, 0).expect("recv");
            b.send_bytes(&buf, 0, None).expect("send");
        }
    })
    .with_name("pipe-pong");
    pong.start()?;
    ping.start()?;
    join_all(vec![ping, pong])?;
    out.to_vec()
}
