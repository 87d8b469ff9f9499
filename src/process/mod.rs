//! Processes: [`Process`] runs a closure in a forked child, as Python's
//! `multiprocessing.Process` with the `fork` start method.

#[allow(clippy::module_inception)]
pub mod process;

pub use process::Process;
