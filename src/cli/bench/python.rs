//! The CPython column: runs a script of `scripts/bench/` (compiled into the binary)
//! with `python3 -c`, with a timeout, and reads its rows (one JSON object a line).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Row;

/// `python3` when it runs, else `None` (the CPython column is then skipped).
pub fn find() -> Option<String> {
    let ok = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| "python3".to_string())
}

/// Runs one script; its rows, or why there are none.
pub fn run(python: &str, file: &str, source: &str, quick: bool) -> Result<Vec<Row>, String> {
    let timeout = Duration::from_secs(if quick { 60 } else { 600 });
    let mut cmd = Command::new(python);
    cmd.arg("-c").arg(source);
    if quick {
        cmd.arg("--quick");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {python} for {file}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{file} ran longer than {}s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {file}: {e}")),
        }
    };
    // The scripts print a few lines: they fit in the pipe buffer.
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    if !status.success() {
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        return Err(format!(
            "{file} failed ({status}): {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ));
    }
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Row>(l).map_err(|e| format!("{file} printed {l:?}: {e}")))
        .collect()
}
