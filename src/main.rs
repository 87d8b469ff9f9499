//! The `multiproc` command: `demo` runs the tutorial's scenarios with real processes.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
