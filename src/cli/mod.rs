//! The command-line interface: one module per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
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
    /// Measure the DESIGN.md scenarios beside std::sync threads, the hardware floor
    /// and CPython, and print one table.
    Bench(bench::BenchArgs),
}

/// Parses the arguments and runs the subcommand.
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Demo => demo::main(),
        Command::Bench(args) => bench::main(args),
    }
}
