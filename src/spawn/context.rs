//! Choosing how children start: [`StartMethod`], [`Context`], and the
//! process-wide default, as Python's `multiprocessing.get_context`,
//! `set_start_method` and `get_start_method`.

use std::sync::atomic::{AtomicU8, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Process;
use crate::error::{Error, Result};

/// How a child process starts (Python's start methods).
///
/// - `Fork`: `fork(2)`; the child is a copy of the parent and can run a closure
///   ([`Process::new`]). Fast, but only the forking thread is copied: locks other
///   threads held stay held in the child.
/// - `Spawn`: a fresh exec of this executable ([`spawn::init`](super::init) at the
///   top of `main` turns it into the child), which runs a plain function with
///   serde arguments ([`Process::entry`]). Safe from any thread; the cost of an exec.
/// - `Forkserver`: a single-threaded server, itself spawned on first use, forks
///   each child on request: fork's speed without the parent's threads.
///
/// ```
/// use multiproc::StartMethod;
/// assert_eq!("spawn".parse::<StartMethod>()?, StartMethod::Spawn);
/// assert_eq!(StartMethod::Forkserver.name(), "forkserver");
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StartMethod {
    /// `fork(2)`.
    Fork,
    /// A fresh exec of this executable.
    Spawn,
    /// Forked by a single-threaded server process.
    Forkserver,
}

impl StartMethod {
    /// Every method, in Python's order of `get_all_start_methods()` on Linux.
    ///
    /// ```
    /// assert_eq!(multiproc::StartMethod::ALL.len(), 3);
    /// ```
    pub const ALL: [StartMethod; 3] = [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::Forkserver,
    ];

    /// Python's name: `"fork"`, `"spawn"` or `"forkserver"`.
    ///
    /// ```
    /// assert_eq!(multiproc::StartMethod::Fork.name(), "fork");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            StartMethod::Fork => "fork",
            StartMethod::Spawn => "spawn",
            StartMethod::Forkserver => "forkserver",
        }
    }

    fn code(self) -> u8 {
        match self {
            StartMethod::Fork => 1,
            StartMethod::Spawn => 2,
            StartMethod::Forkserver => 3,
        }
    }

    fn from_code(code: u8) -> Option<StartMethod> {
        StartMethod::ALL.into_iter().find(|m| m.code() == code)
    }
}

impl std::fmt::Display for StartMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for StartMethod {
    type Err = Error;

    fn from_str(s: &str) -> Result<StartMethod> {
        StartMethod::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                Error::StartMethod(format!(
                    "cannot find context for {s:?}: use fork, spawn or forkserver"
                ))
            })
    }
}

/// A start method to make processes with (Python's `get_context(method)`).
///
/// ```
/// use std::time::Duration;
/// use multiproc::{StartMethod, get_context};
/// fn work(n: u64) {
///     assert_eq!(n, 7);
/// }
/// let ctx = get_context(StartMethod::Fork);
/// let mut p = ctx.process(work, 7);
/// p.start()?;
/// assert_eq!(p.join(Some(Duration::from_secs(10)))?, Some(0));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    method: StartMethod,
}

impl Context {
    /// The context's start method.
    ///
    /// ```
    /// use multiproc::{StartMethod, get_context};
    /// assert_eq!(get_context(StartMethod::Spawn).start_method(), StartMethod::Spawn);
    /// ```
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// A process that will run `f(args)` started by this context's method
    /// ([`Process::entry`] with [`with_start_method`](Process::with_start_method)).
    ///
    /// ```
    /// use multiproc::{StartMethod, get_context};
    /// fn work(_: ()) {}
    /// let p = get_context(StartMethod::Forkserver).process(work, ());
    /// assert_eq!(p.start_method(), StartMethod::Forkserver);
    /// ```
    pub fn process<A>(&self, f: fn(A), args: A) -> Process
    where
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        Process::entry(f, args).with_start_method(self.method)
    }
}

/// The context of `method` (Python's `multiprocessing.get_context`).
///
/// ```
/// use multiproc::{StartMethod, get_context};
/// assert_eq!(get_context(StartMethod::Fork).start_method(), StartMethod::Fork);
/// ```
pub fn get_context(method: StartMethod) -> Context {
    Context { method }
}

/// The process-wide default: 0 while unset (then [`get_start_method`] fixes it to
/// fork), else a [`StartMethod::code`].
static DEFAULT: AtomicU8 = AtomicU8::new(0);

/// Sets the process-wide default start method, used by [`Process::entry`]
/// (Python's `set_start_method`). As in Python, the default can be set once:
/// setting it again, or after [`get_start_method`] fixed it, is an
/// [`Error::StartMethod`] ("context has already been set") unless `force`.
///
/// ```
/// use multiproc::{StartMethod, get_start_method, set_start_method};
/// set_start_method(StartMethod::Spawn, true)?;
/// assert_eq!(get_start_method(), StartMethod::Spawn);
/// assert!(set_start_method(StartMethod::Fork, false).is_err());
/// set_start_method(StartMethod::Fork, true)?; // force
/// assert_eq!(get_start_method(), StartMethod::Fork);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn set_start_method(method: StartMethod, force: bool) -> Result<()> {
    if force {
        DEFAULT.store(method.code(), Ordering::Relaxed);
        return Ok(());
    }
    DEFAULT
        .compare_exchange(0, method.code(), Ordering::Relaxed, Ordering::Relaxed)
        .map(|_| ())
        .map_err(|_| Error::StartMethod("context has already been set".into()))
}

/// The process-wide default start method (Python's `get_start_method()`): fork
/// unless [`set_start_method`] chose another. Asking fixes it, as in Python.
///
/// ```
/// use multiproc::{StartMethod, get_start_method, set_start_method};
/// let m = get_start_method(); // fork in a process that set nothing
/// assert!(set_start_method(StartMethod::Spawn, false).is_err()); // now fixed
/// assert_eq!(get_start_method(), m);
/// ```
pub fn get_start_method() -> StartMethod {
    let _ = DEFAULT.compare_exchange(
        0,
        StartMethod::Fork.code(),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    StartMethod::from_code(DEFAULT.load(Ordering::Relaxed)).unwrap_or(StartMethod::Fork)
}
