//! The command-line interface: one module per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod clean;
mod demo;

/// Python's multiprocessing shared memory and synchronization, for Rust.
#[derive(Parser)]
#[command(name = "multiproc", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every tutorial scenario with real processes and check each result.
    Demo,
    /// List named segments in /dev/shm whose creator is gone; remove them with --yes.
    ///
    /// Only this user's multiproc segments whose creating process no longer runs and
    /// that no process maps are removed. Without --yes nothing is removed.
    Clean {
        /// Remove the stale segments (without it, only list them).
        #[arg(long, short = 'y', conflicts_with = "dry_run")]
        yes: bool,
        /// Only list (the default; accepted for scripts that want to be explicit).
        #[arg(long)]
        dry_run: bool,
        /// Look only at these segment names (default: every segment in /dev/shm).
        names: Vec<String>,
    },
}

/// Parses the arguments and runs the subcommand.
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Demo => demo::main(),
        Command::Clean { yes, names, .. } => clean::main(yes, &names),
    }
}
