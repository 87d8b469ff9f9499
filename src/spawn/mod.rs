//! The spawn and forkserver start methods: children that are fresh images of
//! this executable, running a plain function with serde arguments.
//!
//! A binary that starts processes by spawn or forkserver calls [`init`] as the
//! first line of `main`. In a normal run it returns at once (one environment
//! lookup). In a process started by spawn it *is* the child: it receives the
//! entry and its arguments from the parent, runs the entry and exits, never
//! returning to the rest of `main`. In the forkserver it runs the server.
//!
//! ```no_run
//! use std::time::Duration;
//! use multiproc::{StartMethod, get_context};
//!
//! fn work(n: u64) {
//!     println!("child got {n}");
//! }
//!
//! fn main() -> multiproc::Result<()> {
//!     multiproc::spawn::init(); // a spawned child runs `work` here and exits
//!     let mut p = get_context(StartMethod::Spawn).process(work, 42);
//!     p.start()?;
//!     assert_eq!(p.join(Some(Duration::from_secs(30)))?, Some(0));
//!     Ok(())
//! }
//! ```
//!
//! # Tests
//!
//! Under libtest (no `main` of your own) call [`init`] as the first line of each
//! test that starts processes by spawn or forkserver. It records the test's name
//! (libtest names each test's thread after it); a child then runs the test binary
//! as `BINARY NAME --exact --test-threads=1 --nocapture -q`, so that libtest runs
//! only that test, whose first line turns the process into the child.
//!
//! ```no_run
//! #[test]
//! fn spawns_a_child() {
//!     multiproc::spawn::init();
//!     fn work(_: ()) {}
//!     let mut p = multiproc::get_context(multiproc::StartMethod::Spawn).process(work, ());
//!     p.start().unwrap();
//!     assert_eq!(p.join(Some(std::time::Duration::from_secs(30))).unwrap(), Some(0));
//! }
//! ```
//!
//! # How an entry travels
//!
//! The entry is a plain `fn(A)`. It travels as its offset from a fixed function
//! of this crate (the binary loads at a new address in each exec, but its code
//! keeps its layout), its type's fingerprint and the executable's identity (device,
//! inode, size and mtime of `/proc/self/exe`): a child that is not the same binary
//! refuses with [`Error::Start`] and never jumps to a wrong
//! address. The arguments are serialized; their descriptors, and the parent's
//! pidfd, travel over a private Unix socket pair (`SCM_RIGHTS`), never by a name.
//! The protocol is in `wire`, the forkserver's in `server`.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

mod child;
mod context;
pub(crate) mod launch;
pub(crate) mod server;
pub(crate) mod wire;

pub use context::{Context, StartMethod, get_context, get_start_method, set_start_method};

/// Whether [`init`] ran in the main thread (then children run the binary with no
/// arguments).
static MAIN_INIT: AtomicBool = AtomicBool::new(false);

/// The first test name [`init`] recorded in this process: any test whose first
/// line is `init()` can host any entry (the entry token does not depend on the
/// test), so threads of no test (a pool's manager) use it.
static ANY_TEST: std::sync::OnceLock<String> = std::sync::OnceLock::new();

thread_local! {
    /// The test name [`init`] recorded in this (libtest) thread.
    static TEST_NAME: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The spawn hook: call it as the first line of `main` (or of a test that starts
/// processes by spawn or forkserver; see the module's documentation).
///
/// In a process started by spawn or forkserver it does not return: it runs the
/// child's entry (or the server) and exits. Everywhere else it returns at once,
/// having noted that this binary is ready to be spawned.
///
/// ```no_run
/// // The first line of `main`:
/// multiproc::spawn::init();
/// // ... the program
/// ```
pub fn init() {
    // Noted first: a child started by spawn runs its entry inside this call, and
    // the entry may start processes by spawn or forkserver itself (as in Python).
    let me = std::thread::current();
    match me.name() {
        Some(name) if name != "main" => {
            TEST_NAME.with(|t| *t.borrow_mut() = Some(name.to_string()));
            let _ = ANY_TEST.set(name.to_string());
        }
        _ => MAIN_INIT.store(true, Ordering::Relaxed),
    }
    if let Some(value) = std::env::var_os(wire::ENV) {
        static TAKEN: std::sync::Once = std::sync::Once::new();
        let mut first = false;
        TAKEN.call_once(|| first = true);
        if first {
            child::become_inherited(&value.to_string_lossy());
        }
    }
}

/// The arguments a child of this process is started with: the test filter if
/// this thread's test called [`init`], none if `main` did; an error if nobody did
/// (the child would run the whole program again instead of the entry).
pub(crate) fn harness_args() -> Result<Vec<String>> {
    let test = TEST_NAME
        .with(|t| t.borrow().clone())
        .or_else(|| ANY_TEST.get().cloned());
    if let Some(name) = test {
        return Ok(vec![
            name,
            "--exact".into(),
            "--test-threads=1".into(),
            "--nocapture".into(),
            "-q".into(),
        ]);
    }
    if MAIN_INIT.load(Ordering::Relaxed) {
        return Ok(Vec::new());
    }
    Err(Error::StartMethod(
        "spawn and forkserver need multiproc::spawn::init() as the first line of main \
         (or of the test): without it the child would run the program from the start"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::launch::FORGE;
    use crate::{Error, StartMethod, get_context};

    fn never_called(_: u32) {
        std::process::exit(42);
    }

    /// A child refuses an entry made in another executable, or of another type,
    /// with a reason, and exits with 1 without calling anything.
    #[test]
    fn a_forged_entry_token_is_refused() {
        super::init();
        for method in [StartMethod::Spawn, StartMethod::Forkserver] {
            for (forge, says) in [(1, "another executable"), (2, "type fingerprint")] {
                FORGE.with(|f| f.set(forge));
                let mut p = get_context(method).process(never_called, 7);
                let r = p.start();
                FORGE.with(|f| f.set(0));
                match r {
                    Err(Error::Start { reason, .. }) => assert!(reason.contains(says), "{reason}"),
                    other => panic!("{method}: forged token {forge} accepted: {other:?}"),
                }
                assert_eq!(
                    p.join(Some(Duration::from_secs(30))).unwrap(),
                    Some(1),
                    "{method}"
                );
            }
        }
    }
}
