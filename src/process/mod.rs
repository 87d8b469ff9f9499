//! Processes: [`Process`] runs a closure in a forked child, as Python's
//! `multiprocessing.Process` with the `fork` start method, or a plain function
//! with serde arguments under any start method (see [`spawn`](crate::spawn)); [`current_process`],
//! [`parent_process`] and [`active_children`] say who this process is, who
//! started it and which of its children still run.

mod current;
mod foreign_fork;
#[allow(clippy::module_inception)]
pub mod process;
pub(crate) mod registry;

pub use current::{
    ActiveChild, CurrentProcess, ParentProcess, active_children, current_process, parent_process,
};
pub use foreign_fork::ForeignFork;
pub use process::Process;
