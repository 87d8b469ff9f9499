//! `multiproc dir`: look into a directory of named objects (`multiproc::named`),
//! and the hidden `dir peer` mode that the tests run as *another program* opening
//! objects by name.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use multiproc::{Directory, Lock, Queue, Value};

/// What `multiproc dir` does.
#[derive(Subcommand)]
pub enum DirCommand {
    /// List the objects of the directory NAME with their types and sizes.
    List {
        /// The directory's segment name (as given to `Directory::create`).
        name: String,
    },
    /// A peer for the cross-program tests: opens the Lock `lock`, the
    /// `Value<u64>` `counter` and the `Queue<String>`s `to_peer` and `from_peer`
    /// of directory NAME (made by another program) and uses them.
    #[command(hide = true)]
    Peer {
        /// The directory's segment name.
        name: String,
        /// Waits for "start" on `to_peer`, adds 1 to `counter` this many times
        /// under `lock`, then puts "done <N>" on `from_peer` and waits for "bye".
        #[arg(long, default_value_t = 0)]
        increments: u64,
        /// Instead: takes `lock`, says "holding" on `from_peer`, and waits (to be
        /// killed holding it).
        #[arg(long)]
        hold: bool,
        /// The queue this peer reads instead of `to_peer` (one per peer, so that
        /// no peer takes another's message).
        #[arg(long, default_value = "to_peer")]
        inbox: String,
    },
}

/// Runs a `dir` subcommand.
pub fn main(cmd: DirCommand) -> ExitCode {
    let result = match cmd {
        DirCommand::List { name } => list(&name),
        DirCommand::Peer {
            name,
            increments,
            hold,
            inbox,
        } => peer(&name, increments, hold, &inbox),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("multiproc dir: {e}");
            ExitCode::FAILURE
        }
    }
}

fn list(name: &str) -> multiproc::Result<()> {
    let dir = Directory::open(name)?;
    let objects = dir.objects()?;
    println!("directory {}: {} objects", dir.name(), objects.len());
    for o in objects {
        println!("  {:<24} {:<32} {:>10} bytes", o.name, o.type_name(), o.len);
    }
    Ok(())
}

/// The longest a peer waits for its creator.
const PATIENCE: Duration = Duration::from_secs(60);

fn peer(name: &str, increments: u64, hold: bool, inbox: &str) -> multiproc::Result<()> {
    let dir = Directory::open(name)?;
    let lock = Lock::open_in(&dir, "lock")?;
    let counter = Value::<u64>::open_in(&dir, "counter")?;
    let to_peer = Queue::<String>::open_in(&dir, inbox)?;
    let from_peer = Queue::<String>::open_in(&dir, "from_peer")?;
    if hold {
        let _held = lock.lock();
        from_peer.put(&"holding".to_string(), None)?;
        // Killed here by the test; if it is not, the wait ends and the lock is
        // released by the guard.
        let _ = to_peer.get(Some(PATIENCE));
        return Ok(());
    }
    let start = to_peer.get(Some(PATIENCE))?;
    if start != "start" {
        return Err(multiproc::Error::InvalidArgument(format!(
            "expected \"start\", got {start:?}"
        )));
    }
    for _ in 0..increments {
        let _g = lock.lock().unwrap_or_else(|died| died.into_inner());
        counter.set(counter.get()? + 1)?;
    }
    from_peer.put(&format!("done {increments}"), None)?;
    let bye = to_peer.get(Some(PATIENCE))?;
    from_peer.put(&format!("{bye} back"), None)?;
    Ok(())
}
