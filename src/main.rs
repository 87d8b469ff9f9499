//! The `multiproc` command: `demo` runs the tutorial's scenarios with real processes.

mod cli;

fn main() -> std::process::ExitCode {
    // A process started by spawn or forkserver runs its entry here and exits.
    multiproc::spawn::init();
    cli::main()
}
