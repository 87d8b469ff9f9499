//! `multiproc clean`: list, and with `--yes` remove, named segments left in
//! `/dev/shm` by processes that are gone.
//!
//! Without `--yes` nothing is removed (a dry run): the command lists what it would
//! remove and says how to remove it. Only this user's multiproc segments (those with
//! a valid owner record) are considered, never CPython's or other programs'; see
//! `multiproc::shm::clean` for what "stale" means. A record whose segment is gone
//! (unlinked by CPython, say) is listed as "file gone" and removed alone.

use std::process::ExitCode;

use multiproc::shm::clean::{self, SegmentInfo, Status};

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn line(s: &SegmentInfo) -> String {
    format!(
        "  {:<24} {:<12} {:>10}  created by pid {}: {}",
        s.name,
        s.kind.name(),
        if s.file_present {
            human(s.file_size)
        } else {
            "file gone".to_string()
        },
        s.creator_pid,
        clean::describe(s.status)
    )
}

/// Runs `multiproc clean [--yes] [NAME...]`.
pub fn main(yes: bool, names: &[String]) -> ExitCode {
    let found = if names.is_empty() {
        clean::scan()
    } else {
        names.iter().map(|n| clean::status(n)).collect()
    };
    let found = match found {
        Ok(f) => f,
        Err(e) => {
            eprintln!("clean: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (stale, kept): (Vec<_>, Vec<_>) =
        found.into_iter().partition(|s| s.status == Status::Stale);
    if !kept.is_empty() {
        println!("kept (in use):");
        kept.iter().for_each(|s| println!("{}", line(s)));
    }
    if stale.is_empty() {
        println!("clean: no stale segments ({} in use kept)", kept.len());
        return ExitCode::SUCCESS;
    }
    let bytes: u64 = stale.iter().map(|s| s.file_size).sum();
    if !yes {
        println!("stale (would be removed):");
        stale.iter().for_each(|s| println!("{}", line(s)));
        println!(
            "clean: {} stale segment(s), {}; dry run, nothing removed: run `multiproc clean --yes` to remove them",
            stale.len(),
            human(bytes)
        );
        return ExitCode::SUCCESS;
    }
    let (mut removed, mut freed, mut failed) = (0, 0, 0);
    for s in &stale {
        match clean::remove_stale(&s.name) {
            Ok(info) => {
                println!("removed {}", line(&info).trim_start());
                removed += 1;
                freed += info.file_size;
            }
            Err(e) => {
                eprintln!("not removed {}: {e}", s.name);
                failed += 1;
            }
        }
    }
    println!(
        "clean: removed {removed} stale segment(s), {}; {} in use kept{}",
        human(freed),
        kept.len(),
        if failed > 0 {
            format!("; {failed} could not be removed")
        } else {
            String::new()
        }
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
