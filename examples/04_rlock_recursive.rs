//! Twin of the tutorial's `04_rlock_recursive.py`: a child process takes an `RLock`
//! recursively four levels deep. With a plain Lock the second level would deadlock;
//! an RLock counts the levels. The child prints the nesting as the original does and
//! records it in shared memory, so the parent can check the order:
//! acquiring 3, 2, 1, then releasing 0, 1, 2, 3.
//!
//! Its children are `Process::entry` (a plain function and serde arguments: the
//! shared objects travel as tokens), so `multiproc demo --start-method` runs it
//! under fork, spawn and forkserver alike.
//!
//! Run: `cargo run --release --example 04_rlock_recursive`

use multiproc::{Process, RLock, RawArray};

const DEPTH: i32 = 3;

/// Entry `n` of the log: `+d` for "acquiring at depth d", `-(d + 1)` for "releasing".
fn recursive_function(
    lock: &RLock,
    depth: i32,
    log: &RawArray<i32>,
    n: &mut usize,
    levels: &mut Vec<u32>,
) {
    let _guard = lock.lock().expect("no process dies here");
    levels.push(lock.recursion_count());
    if depth > 0 {
        println!("Process {depth} acquiring lock");
        log.set(*n, depth).expect("log is long enough");
        *n += 1;
        recursive_function(lock, depth - 1, log, n, levels);
    }
    println!("Process {depth} releasing lock");
    log.set(*n, -(depth + 1)).expect("log is long enough");
    *n += 1;
}

/// The child: recurses, then writes the recursion count of each level.
fn child((l, lg, ds): (RLock, RawArray<i32>, RawArray<u32>)) {
    let mut n = 0;
    let mut levels = Vec::new();
    recursive_function(&l, DEPTH, &lg, &mut n, &mut levels);
    for (i, level) in levels.into_iter().enumerate() {
        ds.set(i, level).expect("one slot per level");
    }
}

/// Runs the scenario with a real process; returns whether the order is right.
pub fn run() -> multiproc::Result<bool> {
    let lock = RLock::new()?;
    let log = RawArray::<i32>::new(2 * DEPTH as usize + 1)?;
    // The child writes the deepest recursion count it saw into the last slot + 1.
    let depth_seen = RawArray::<u32>::new(DEPTH as usize + 1)?;
    let mut p = Process::entry(child, (lock.clone(), log.clone(), depth_seen.clone()));
    p.start()?;
    let code = p.join(None)?;
    let got = log.to_vec()?;
    let expected = [3, 2, 1, -1, -2, -3, -4];
    let levels = depth_seen.to_vec()?;
    println!(
        "child exit code {code:?}; nesting log {got:?} (expected {expected:?}); recursion counts {levels:?} (expected [1, 2, 3, 4])"
    );
    Ok(code == Some(0) && got == expected && levels == [1, 2, 3, 4] && !lock.is_locked())
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::spawn::init();
    Ok(run()?.then_some(()).ok_or("wrong result")?)
}
