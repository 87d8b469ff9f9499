//! Twin of the tutorial's Pipe example: a parent and a child talk over a duplex
//! `Pipe`, then the parent closes its end and the child sees EOF.
//!
//! The parent sends 1,000 typed requests; the child answers each with the square of
//! its number; then the parent closes its end, and the child's next `recv` returns
//! `Error::Eof` (no closing of unused ends by hand: the child's inherited copy of
//! the parent's end was released when it started). The child records in shared
//! memory that it saw EOF.
//!
//! Its children are `Process::entry` (a plain function and serde arguments: the
//! shared objects travel as tokens), so `multiproc demo --start-method` runs it
//! under fork, spawn and forkserver alike.
//!
//! Run: `cargo run --release --example 11_pipe`

use std::time::Duration;

use multiproc::{Connection, Error, Pipe, Process, RawValue};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug)]
struct Request {
    id: u32,
    n: u64,
}

#[derive(Serialize, Deserialize, Debug)]
struct Reply {
    id: u32,
    square: u64,
}

/// The child: answers requests until end of file.
fn serve((child_end, eof): (Connection, RawValue<u32>)) {
    let bound = Some(Duration::from_secs(30));
    let mut served = 0;
    loop {
        // Bounded, so that a bug fails instead of hangs.
        if !child_end.poll(bound).expect("poll") {
            println!("Child: nothing for 30 s, giving up");
            return;
        }
        match child_end.recv::<Request>() {
            Ok(req) => {
                let reply = Reply {
                    id: req.id,
                    square: req.n * req.n,
                };
                child_end.send(&reply).expect("send");
                served += 1;
            }
            Err(Error::Eof) => {
                println!("Child: served {served} requests, then EOF: the parent closed");
                eof.store(1);
                return;
            }
            Err(e) => panic!("child recv: {e}"),
        }
    }
}

/// Runs the scenario with real processes; returns whether the answer is right.
pub fn run() -> multiproc::Result<bool> {
    let (parent_end, child_end) = Pipe(true)?;
    let saw_eof = RawValue::new(0u32)?;
    let mut child = Process::entry(serve, (child_end, saw_eof.clone()));
    child.start()?;
    let mut right = 0;
    for id in 0..1000u32 {
        parent_end.send(&Request {
            id,
            n: u64::from(id) + 1,
        })?;
        if !parent_end.poll(Some(Duration::from_secs(30)))? {
            break;
        }
        let reply: Reply = parent_end.recv()?;
        if reply.id == id && reply.square == (u64::from(id) + 1).pow(2) {
            right += 1;
        }
    }
    println!("Parent: {right}/1000 replies right; closing my end");
    drop(parent_end);
    let ok = child.join(Some(Duration::from_secs(60)))? == Some(0);
    let eof = saw_eof.load() == 1;
    println!("child saw EOF after the parent closed: {eof}");
    Ok(ok && eof && right == 1000)
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::spawn::init();
    Ok(run()?.then_some(()).ok_or("wrong result")?)
}
