//! The command-line interface: one module per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

/// Parses the arguments and runs the subcommand.
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Demo => demo::main(),
    }
}
