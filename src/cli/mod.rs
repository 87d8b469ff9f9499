//! The command-line interface: one module per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod chaos;
mod clean;
mod demo;
mod dir;

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
    Demo {
        /// How the scenarios' processes start: fork, spawn or forkserver.
        #[arg(long, default_value = "fork")]
        start_method: multiproc::StartMethod,
    },
    /// Measure the benchmark scenarios (goals in BENCHMARKS.md) beside std::sync threads, the hardware floor
    /// and CPython, and print one table.
    Bench(bench::BenchArgs),
    /// List named segments in /dev/shm whose creator is gone; remove them with --yes.
    ///
    /// Only this user's multiproc segments (found by their owner records, never
    /// CPython's) whose creating process no longer runs and that no process maps
    /// are removed, with their records. Without --yes nothing is removed.
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
    /// Look into a directory of named objects (`multiproc::Directory`).
    #[command(subcommand)]
    Dir(dir::DirCommand),
    /// Kill random worker processes with SIGKILL while they hammer a Value under its
    /// Lock, an RLock, a Condition and a Barrier;
    /// check that nothing hangs, the counter is exact and nothing leaks.
    ///
    /// Ends with `chaos: K kills, H hangs, counter C of E, leaked L` and exits
    /// non-zero unless H = 0, C = E and L = 0.
    Chaos {
        /// How long to run.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// How many worker processes run at once.
        #[arg(long, default_value_t = 4)]
        processes: usize,
        /// Mean time between two kills, in milliseconds.
        #[arg(long, default_value_t = 50)]
        kill_every_ms: u64,
    },
}

/// Parses the arguments and runs the subcommand.
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Demo { start_method } => demo::main(start_method),
        Command::Bench(args) => bench::main(args),
        Command::Clean { yes, names, .. } => clean::main(yes, &names),
        Command::Dir(cmd) => dir::main(cmd),
        Command::Chaos {
            seconds,
            processes,
            kill_every_ms,
        } => chaos::main(seconds, processes, kill_every_ms),
    }
}
