//! `_TestSharedMemory`: the tests of `multiprocessing.shared_memory.SharedMemory`
//! that apply (ShareableList, SharedMemoryManager and pickling are not
//! offered: see `tests/cpython/README.md`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use multiproc::shm::clean::{self, Status};
use multiproc::{Error, Event, Process, RawValue, SharedMemory};

/// The bound on every wait: a hang fails the test.
const BOUND: Duration = Duration::from_secs(30);

/// The entries of /dev/shm.
fn dev_shm() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// CPython's `_new_shm_name`: a prefix and this process's pid, so that parallel
/// runs do not collide.
fn new_shm_name(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id())
}

/// Unlinks a segment by name when dropped (CPython's `addCleanup(sms.unlink)`).
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(shm) = SharedMemory::attach(&self.0) {
            let _ = shm.unlink();
        }
    }
}

/// CPython's `_attach_existing_shmem_then_write`, by name.
fn attach_existing_shmem_then_write(name: &str, binary_data: &[u8]) {
    let local_sms = SharedMemory::attach(name).unwrap();
    local_sms.write_at(0, binary_data).unwrap();
    local_sms.close();
}

fn run_daemon(f: impl FnOnce() + Send + 'static) {
    let mut p = Process::new(f).daemon(true);
    p.start().unwrap();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
}

#[test]
fn test_shared_memory_basics() {
    let name_tsmb = new_shm_name("test01_tsmb");
    let sms = SharedMemory::new(Some(&name_tsmb), true, 512).unwrap();
    let _cleanup = Cleanup(name_tsmb.clone());

    // Verify attributes are readable.
    assert_eq!(sms.name(), name_tsmb);
    assert!(sms.size() >= 512);
    assert!(sms.buf().len() >= sms.size());

    // Verify __repr__ (Debug here).
    let repr = format!("{sms:?}");
    assert!(repr.contains(sms.name()), "{repr}");
    assert!(repr.contains(&sms.size().to_string()), "{repr}");

    // Modify contents of shared memory segment through memoryview.
    sms.buf()[0].store(42, Ordering::Relaxed);
    assert_eq!(sms.buf()[0].load(Ordering::Relaxed), 42);

    // Attach to existing shared memory segment.
    let also_sms = SharedMemory::new(Some(&name_tsmb), false, 0).unwrap();
    assert_eq!(also_sms.buf()[0].load(Ordering::Relaxed), 42);
    also_sms.close();

    // Attach to existing shared memory segment but specify a new size.
    let same_sms = SharedMemory::new(Some(&name_tsmb), false, 20 * sms.size()).unwrap();
    assert!(same_sms.size() < 20 * sms.size()); // Size was ignored.
    same_sms.close();

    // Creating Shared Memory Segment with -ve size: a usize cannot be negative
    // (see the README); zero is the size refused at run time.
    assert!(matches!(
        SharedMemory::new(None, true, 0),
        Err(Error::ZeroSize { .. })
    ));

    // Attaching Shared Memory Segment without a name
    assert!(matches!(
        SharedMemory::new(None, false, 0),
        Err(Error::InvalidArgument(_))
    ));

    // Posix Shared Memory can only be unlinked once.
    let name_dblunlink = new_shm_name("test01_dblunlink");
    let sms_uno = SharedMemory::new(Some(&name_dblunlink), true, 5000).unwrap();
    let _cleanup_dbl = Cleanup(name_dblunlink.clone());
    assert!(sms_uno.size() >= 5000);
    let sms_duo = SharedMemory::new(Some(&name_dblunlink), false, 0).unwrap();
    sms_duo.unlink().unwrap(); // First shm_unlink() call.
    sms_duo.close();
    // A second shm_unlink() call is bad (FileNotFoundError). multiproc's close
    // consumes the handle, so uno unlinks before it closes.
    assert!(matches!(sms_uno.unlink(), Err(Error::NotFound { .. })));
    sms_uno.close();

    // Attempting to create a new shared memory segment with a name that is
    // already in use triggers an exception (FileExistsError).
    assert!(matches!(
        SharedMemory::new(Some(&name_tsmb), true, 512),
        Err(Error::AlreadyExists { .. })
    ));

    // Attempting to attach to an existing shared memory segment when no segment
    // exists with the supplied name triggers an exception.
    assert!(matches!(
        SharedMemory::new(Some("test01_notthere"), false, 0),
        Err(Error::NotFound { .. })
    ));

    sms.close();
}

#[test]
fn test_invalid_shared_memory_cration() {
    // Negative sizes (size=-1) cannot be written: the size is a usize.
    // Test creating a shared memory segment with size 0
    assert!(matches!(
        SharedMemory::new(None, true, 0),
        Err(Error::ZeroSize { .. })
    ));
    // Test creating a shared memory segment without size argument (Python's
    // default size is 0).
    assert!(matches!(
        SharedMemory::create(0),
        Err(Error::ZeroSize { .. })
    ));
}

#[test]
fn test_shared_memory_across_processes() {
    let sms = SharedMemory::create(512).unwrap();
    let _cleanup = Cleanup(sms.name().to_string());

    // Verify remote attachment to existing block by name is working.
    let name = sms.name().to_string();
    run_daemon(move || attach_existing_shmem_then_write(&name, b"howdy"));
    let mut five = [0u8; 5];
    sms.read_at(0, &mut five).unwrap();
    assert_eq!(&five, b"howdy");

    // Verify that passing the SharedMemory object itself also works (CPython
    // pickles it; here the child inherits the handle).
    let sms = Arc::new(sms);
    let passed = Arc::clone(&sms);
    run_daemon(move || {
        passed.write_at(0, b"HELLO").unwrap();
        drop(passed); // local_sms.close()
    });
    sms.read_at(0, &mut five).unwrap();
    assert_eq!(&five, b"HELLO");
}

#[test]
fn test_shared_memory_cleaned_after_process_termination() {
    // A process creates a segment, sends its name, and is terminated abruptly.
    let cell = RawValue::new([0u8; 32]).unwrap();
    let ready = Event::new().unwrap();
    let never = Event::new().unwrap();
    let (c, r, n) = (cell.clone(), ready.clone(), never.clone());
    let mut p = Process::new(move || {
        let sm = SharedMemory::create(10).unwrap();
        let mut b = [0u8; 32];
        b[..sm.name().len()].copy_from_slice(sm.name().as_bytes());
        c.set(b);
        r.set();
        n.wait(Some(BOUND)).unwrap(); // time.sleep(100)
    });
    p.start().unwrap();
    assert!(ready.wait(Some(BOUND)).unwrap());
    let b = cell.get();
    let name = String::from_utf8(b[..b.iter().position(|&x| x == 0).unwrap()].to_vec()).unwrap();
    let _cleanup = Cleanup(name.clone());
    p.terminate().unwrap();
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(-15));

    // Killing abruptly processes holding reference to a shared memory segment
    // should not leak the given memory segment. CPython's resource tracker
    // unlinks it (and warns); multiproc has no tracker (a named segment lives
    // until unlinked, Python's documented rule) and its `clean` removes it once
    // the creator is gone: no retry loop needed, the creator is reaped.
    assert_eq!(clean::status(&name).unwrap().status, Status::Stale);
    let record = clean::remove_stale(&name).unwrap().record;
    assert!(matches!(
        SharedMemory::attach(&name),
        Err(Error::NotFound { .. })
    ));
    let left = dev_shm();
    assert!(
        !left.contains(&name) && !left.contains(&record),
        "A SharedMemory segment was leaked after a process was abruptly terminated"
    );
}
