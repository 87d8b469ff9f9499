//! SharedMemory interoperates with CPython: a segment made here attaches in the
//! machine's `python3` (`multiprocessing.shared_memory.SharedMemory(name=...)`) with
//! the same size and bytes, one CPython made attaches here, and `multiproc clean`
//! never touches CPython's segments (they have no owner record), while it does
//! remove the records CPython leaves behind when it unlinks one of ours.
//!
//! Every test is skipped, with the reason printed, when `python3` (with
//! `multiprocessing.shared_memory`) is absent. Every wait on Python is bounded.
//!
//! CPython's resource tracker: before 3.13 every `SharedMemory` a Python program
//! opens (attached or created) is registered with the tracker, which unlinks it
//! when the program exits. The scripts that must leave a segment in place
//! unregister it (or pass `track=False` where it exists), and
//! `cpython_attach_without_unregister_unlinks_at_exit` shows the tracker's effect.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};

use common::{BOUND, dev_shm, get_name, join_ok, put_name, spawn};
use multiproc::shm::clean::{self, Status};
use multiproc::{Error, RawValue, SharedMemory};

/// The bytes both sides write and expect: byte `i` is `(7 i + 3) mod 256`.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

const PATTERN_PY: &str = "def pattern(n): return bytes((i * 7 + 3) % 256 for i in range(n))\n";

/// A running `python3 -c SCRIPT ARGS...`, its stdout as lines, its stderr
/// collected; killed on drop if it has not been waited for.
struct Py {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Receiver<String>,
}

/// Whether `python3` with `multiprocessing.shared_memory` is here; prints why not.
fn have_python() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import multiprocessing.shared_memory"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: no python3 with multiprocessing.shared_memory on this machine");
    }
    ok
}

fn python(script: &str, args: &[&str]) -> Py {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(format!("{PATTERN_PY}{script}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting python3");
    let (tx, lines) = channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Read to EOF: that is when Python *and* its resource tracker (which inherits
    // stderr) are done.
    let (tx, stderr) = channel();
    let mut err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    Py {
        stdin: child.stdin.take(),
        child: Some(child),
        lines,
        stderr,
    }
}

impl Py {
    /// The next line Python prints, within [`BOUND`].
    fn line(&self) -> String {
        self.lines
            .recv_timeout(BOUND)
            .expect("python3 printed no line in time")
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits (bounded) for Python and its resource tracker to finish; returns the
    /// exit status, the lines not read yet and everything it wrote to stderr.
    fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        drop(self.stdin.take());
        let mut child = self.child.take().unwrap();
        let pid = child.id();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = match rx.recv_timeout(BOUND) {
            Ok(status) => status.unwrap(),
            Err(_) => {
                kill_pid(pid);
                panic!("python3 did not finish in time");
            }
        };
        let stderr = self
            .stderr
            .recv_timeout(BOUND)
            .expect("python3's stderr (and its resource tracker) did not close in time");
        // The lines left, up to stdout's end (its reader drops the sender then).
        let mut lines = Vec::new();
        loop {
            match self.lines.recv_timeout(BOUND) {
                Ok(line) => lines.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("python3's stdout did not close in time"),
            }
        }
        (status, lines, stderr)
    }
}

fn kill_pid(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a script to the end and asserts it succeeded; returns the lines it
/// printed and its stderr.
fn run_ok(script: &str, args: &[&str]) -> (Vec<String>, String) {
    let py = python(script, args);
    let (status, lines, stderr) = py.finish();
    assert!(status.success(), "python3 failed: {stderr}");
    (lines, stderr)
}

/// Removes a `/dev/shm` file when dropped (a test that fails leaves nothing).
struct Remove(String);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm/{}", self.0));
    }
}

/// A segment made by a child that exits without unlinking it: its creator is gone.
fn segment_of_a_gone_creator(size: usize) -> String {
    let cell = RawValue::new([0u8; 32]).unwrap();
    let c = cell.clone();
    join_ok(spawn(move || {
        let shm = SharedMemory::create(size).unwrap();
        shm.write_at(0, &pattern(size)).unwrap();
        put_name(&c, shm.name());
    }));
    get_name(&cell)
}

const ATTACH_AND_WRITE: &str = r#"
import sys
from multiprocessing import shared_memory, resource_tracker
name, size = sys.argv[1], int(sys.argv[2])
try:
    shm = shared_memory.SharedMemory(name=name, track=False)
except TypeError:
    # Before 3.13 every attach is tracked (the tracker would unlink it at exit).
    shm = shared_memory.SharedMemory(name=name)
    resource_tracker.unregister(shm._name, "shared_memory")
assert shm.name == name, shm.name
assert shm.size == size, (shm.size, size)
assert bytes(shm.buf[:size]) == pattern(size), "bytes differ"
shm.buf[:11] = b"from python"
shm.close()
print("ok", flush=True)
"#;

#[test]
fn a_rust_segment_attaches_in_cpython_with_the_same_size_and_bytes() {
    if !have_python() {
        return;
    }
    // An odd size: CPython's size is the file's size, no rounding, no header.
    let size = 4099;
    let shm = SharedMemory::create(size).unwrap();
    let _guard = Remove(shm.name().to_string());
    shm.write_at(0, &pattern(size)).unwrap();
    let file = std::fs::metadata(format!("/dev/shm/{}", shm.name())).unwrap();
    assert_eq!(file.len(), size as u64, "the file holds the bytes only");

    let (lines, stderr) = run_ok(ATTACH_AND_WRITE, &[shm.name(), &size.to_string()]);
    assert_eq!(lines, ["ok"], "{stderr}");
    assert!(!stderr.contains("leaked"), "{stderr}");

    let mut head = [0u8; 11];
    shm.read_at(0, &mut head).unwrap();
    assert_eq!(&head, b"from python");
    assert_eq!(shm.to_vec().unwrap()[11..], pattern(size)[11..]);
    // Still there after Python (and its tracker) exited; still ours.
    assert_eq!(
        clean::status(shm.name()).unwrap().status,
        Status::CreatorAlive
    );
    let again = SharedMemory::attach(shm.name()).unwrap();
    assert_eq!(again.size(), size);
    shm.unlink().unwrap();
    assert!(!dev_shm().iter().any(|n| n == shm.name()));
}

const CREATE_AND_WAIT: &str = r#"
import sys
from multiprocessing import shared_memory
size = int(sys.argv[1])
shm = shared_memory.SharedMemory(create=True, size=size)
shm.buf[:size] = pattern(size)
print(shm.name, flush=True)
assert sys.stdin.readline().strip() == "written"
got = bytes(shm.buf[10:14])
shm.close()
shm.unlink()
assert got == b"rust", got
print("ok", flush=True)
"#;

#[test]
fn a_cpython_segment_attaches_in_rust_with_the_same_size_and_bytes() {
    if !have_python() {
        return;
    }
    let size = 777;
    let mut py = python(CREATE_AND_WAIT, &[&size.to_string()]);
    let name = py.line();
    let _guard = Remove(name.clone());
    // CPython's own names: "psm_" and hex digits, without the leading '/'.
    assert!(name.starts_with("psm_"), "{name}");
    {
        let shm = SharedMemory::attach(&name).unwrap();
        assert_eq!(shm.name(), name);
        assert_eq!(shm.size(), size);
        assert_eq!(shm.to_vec().unwrap(), pattern(size));
        shm.write_at(10, b"rust").unwrap();
        // With a leading '/' too, as CPython's own _name.
        assert_eq!(
            SharedMemory::attach(&format!("/{name}")).unwrap().size(),
            size
        );
        // CPython's segment has no owner record: not multiproc's to clean.
        assert!(matches!(clean::status(&name), Err(Error::NotFound { .. })));
        assert!(clean::scan().unwrap().iter().all(|s| s.name != name));
    }
    py.send("written");
    assert_eq!(py.line(), "ok");
    let (status, rest, stderr) = py.finish();
    assert!(status.success() && rest.is_empty(), "{rest:?} {stderr}");
    assert!(!dev_shm().contains(&name), "CPython unlinked it");
}

const LEAVE_BEHIND: &str = r#"
from multiprocessing import shared_memory, resource_tracker
shm = shared_memory.SharedMemory(create=True, size=64)
# As if this program were killed: the tracker will not unlink it.
resource_tracker.unregister(shm._name, "shared_memory")
shm.buf[:4] = b"cpy!"
shm.close()
print(shm.name, flush=True)
"#;

#[test]
fn clean_never_touches_a_cpython_segment_whose_creator_is_gone() {
    if !have_python() {
        return;
    }
    let (lines, stderr) = run_ok(LEAVE_BEHIND, &[]);
    let name = lines.first().cloned().unwrap_or_else(|| panic!("{stderr}"));
    let _guard = Remove(name.clone());
    assert!(dev_shm().contains(&name));
    assert!(clean::scan().unwrap().iter().all(|s| s.name != name));
    assert!(matches!(clean::status(&name), Err(Error::NotFound { .. })));
    assert!(clean::remove_stale(&name).is_err());
    // The command: listed by neither the whole scan (a dry run: other tests'
    // stale segments are not ours to remove) nor by name, nothing removed.
    for args in [vec!["clean"], vec!["clean", "--yes", name.as_str()]] {
        let out = Command::new(env!("CARGO_BIN_EXE_multiproc"))
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success() || args.len() == 3, "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains(&name), "{args:?}: {text}");
        assert!(dev_shm().contains(&name), "{args:?} removed it");
    }
    let shm = SharedMemory::attach(&name).unwrap();
    let mut b = [0u8; 4];
    shm.read_at(0, &mut b).unwrap();
    assert_eq!(&b, b"cpy!", "the bytes are untouched");
    shm.unlink().unwrap();
}

const UNLINK: &str = r#"
import sys
from multiprocessing import shared_memory
shm = shared_memory.SharedMemory(name=sys.argv[1])
assert bytes(shm.buf[:shm.size]) == pattern(shm.size)
shm.close()
shm.unlink()  # also unregisters it from the tracker
print("ok", flush=True)
"#;

#[test]
fn cpython_unlinking_a_rust_segment_leaves_a_record_that_clean_removes() {
    if !have_python() {
        return;
    }
    let name = segment_of_a_gone_creator(100);
    let _guard = Remove(name.clone());
    let record = clean::status(&name).unwrap().record;
    let _record_guard = Remove(record.clone());
    assert_eq!(clean::status(&name).unwrap().status, Status::Stale);

    let (lines, stderr) = run_ok(UNLINK, &[&name]);
    assert_eq!(lines, ["ok"], "{stderr}");
    assert!(!dev_shm().contains(&name));
    assert!(
        dev_shm().contains(&record),
        "CPython knows nothing of the record"
    );

    let info = clean::status(&name).unwrap();
    assert_eq!(info.record, record);
    assert!(!info.file_present);
    assert_eq!(info.status, Status::Stale);
    let removed = clean::remove_stale(&name).unwrap();
    assert_eq!(removed.record, record);
    assert!(!dev_shm().contains(&record));
    assert!(matches!(clean::status(&name), Err(Error::NotFound { .. })));
}

const UNLINK_AND_RECREATE: &str = r#"
import sys
from multiprocessing import shared_memory, resource_tracker
name = sys.argv[1]
old = shared_memory.SharedMemory(name=name)
old.close()
old.unlink()
new = shared_memory.SharedMemory(name=name, create=True, size=32)
resource_tracker.unregister(new._name, "shared_memory")
new.buf[:3] = b"new"
new.close()
print("ok", flush=True)
"#;

#[test]
fn clean_keeps_a_cpython_file_made_under_the_name_of_a_stale_record() {
    if !have_python() {
        return;
    }
    let name = segment_of_a_gone_creator(100);
    let _guard = Remove(name.clone());
    let record = clean::status(&name).unwrap().record;
    let _record_guard = Remove(record.clone());

    let (lines, stderr) = run_ok(UNLINK_AND_RECREATE, &[&name]);
    assert_eq!(lines, ["ok"], "{stderr}");
    // The name is CPython's file now; the record owns the old (gone) inode.
    let info = clean::status(&name).unwrap();
    assert_eq!(info.record, record);
    assert!(!info.file_present);
    assert_eq!(info.status, Status::Stale);
    clean::remove_stale(&name).unwrap();
    assert!(!dev_shm().contains(&record));
    let shm = SharedMemory::attach(&name).expect("CPython's file stays");
    assert_eq!(shm.size(), 32);
    let mut b = [0u8; 3];
    shm.read_at(0, &mut b).unwrap();
    assert_eq!(&b, b"new");
    shm.unlink().unwrap();
}

const ATTACH_TRACKED: &str = r#"
import sys
from multiprocessing import shared_memory
shm = shared_memory.SharedMemory(name=sys.argv[1])  # tracked: the default
assert bytes(shm.buf[:4]) == b"mine"
shm.close()
print("ok", flush=True)
"#;

#[test]
fn cpython_attach_without_unregister_unlinks_at_exit() {
    if !have_python() {
        return;
    }
    let shm = SharedMemory::create(16).unwrap();
    let _guard = Remove(shm.name().to_string());
    let record = clean::status(shm.name()).unwrap().record;
    shm.write_at(0, b"mine").unwrap();
    let (lines, stderr) = run_ok(ATTACH_TRACKED, &[shm.name()]);
    assert_eq!(lines, ["ok"], "{stderr}");
    // CPython's resource tracker unlinked our segment when Python exited (and
    // warned about a "leaked" shared_memory object).
    assert!(!dev_shm().iter().any(|n| n == shm.name()), "{stderr}");
    assert!(stderr.contains("leaked shared_memory"), "{stderr}");
    // This handle still works; unlink says the name is gone and drops the record.
    shm.write_at(0, b"still").unwrap();
    assert!(matches!(shm.unlink(), Err(Error::NotFound { .. })));
    assert!(!dev_shm().contains(&record));
}
