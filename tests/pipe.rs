//! Pipe and Connection with real processes: duplex and one-way messages, EOF at
//! close and at death, a writer SIGKILLed mid-message (never half a message, never
//! a hang), fork inheritance (a child that did not capture an end does not keep it
//! open), messages of any size, the error cases, threads, and `wait`.
//!
//! Every blocking receive is preceded by a bounded `poll`, so a bug fails the test
//! instead of hanging it.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{BOUND, T, join_ok, spawn};
use multiproc::connection::wait;
use multiproc::{Connection, Error, Event, Pipe, Process, RawValue};

/// `conn.recv::<X>()` after a bounded wait for something to read.
fn recv_t<X: serde::de::DeserializeOwned>(conn: &Connection) -> multiproc::Result<X> {
    assert!(conn.poll(T)?, "nothing to read within {T:?}");
    conn.recv()
}

fn recv_bytes_t(conn: &Connection) -> multiproc::Result<Vec<u8>> {
    assert!(conn.poll(T)?, "nothing to read within {T:?}");
    conn.recv_bytes(None)
}

/// A message that says which it is: seq, length, then a pattern of both.
fn message(seq: u64, len: usize) -> Vec<u8> {
    let len = len.max(16);
    let mut m: Vec<u8> = (0..len).map(|j| (seq as usize * 31 + j) as u8).collect();
    m[..8].copy_from_slice(&seq.to_le_bytes());
    m[8..16].copy_from_slice(&(len as u64).to_le_bytes());
    m
}

/// Checks that `m` is exactly `message(seq, len)` for the seq it names.
fn check_message(m: &[u8], expect_seq: u64) {
    assert!(m.len() >= 16, "a message of {} bytes: cut", m.len());
    let seq = u64::from_le_bytes(m[..8].try_into().unwrap());
    let len = u64::from_le_bytes(m[8..16].try_into().unwrap()) as usize;
    assert_eq!(seq, expect_seq, "messages out of order or lost");
    assert_eq!(m.len(), len, "message {seq}: {} of {len} bytes", m.len());
    assert!(m == message(seq, len), "message {seq} corrupted");
}

/// A small deterministic generator (xorshift), seeded per test run.
struct Rng(u64);
impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("rng seed {seed}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn connections_are_send_and_sync() {
    fn both<T: Send + Sync>() {}
    both::<Connection>();
}

#[test]
fn duplex_exchange_with_a_child_and_eof_after_close() {
    let (parent, child) = Pipe(true).unwrap();
    let p = spawn(move || {
        // Echo doubled until the parent closes its end.
        loop {
            match recv_t::<u64>(&child) {
                Ok(n) => child.send(&(n * 2)).unwrap(),
                Err(Error::Eof) => break,
                Err(e) => panic!("child recv: {e}"),
            }
        }
        child.send(&u64::MAX).unwrap_err(); // the parent's end is closed: BrokenPipe
    });
    for i in 0..100u64 {
        parent.send(&i).unwrap();
        assert_eq!(recv_t::<u64>(&parent).unwrap(), i * 2);
    }
    drop(parent);
    join_ok(p);
}

#[test]
fn one_way_pipe_reader_and_writer_in_two_children() {
    let (reader, writer) = Pipe(false).unwrap();
    assert!(!reader.writable() && reader.readable());
    assert!(writer.writable() && !writer.readable());
    let sum = RawValue::new(0u64).unwrap();
    let s = sum.clone();
    let r = spawn(move || {
        let mut total = 0;
        loop {
            match recv_t::<u64>(&reader) {
                Ok(n) => total += n,
                Err(Error::Eof) => break,
                Err(e) => panic!("reader: {e}"),
            }
        }
        s.set(total);
    });
    let w = spawn(move || {
        for i in 1..=1000u64 {
            writer.send(&i).unwrap();
        }
    });
    // The parent holds neither end now (both moved into children): the reader
    // sees EOF when the writer child exits.
    join_ok(w);
    join_ok(r);
    assert_eq!(sum.get(), 500_500);
}

#[test]
fn eof_when_the_peer_process_is_killed() {
    for duplex in [true, false] {
        let (reader, writer) = Pipe(duplex).unwrap();
        let ready = Event::new().unwrap();
        let r = ready.clone();
        let p = spawn(move || {
            writer.send(&"hello").unwrap();
            r.set();
            // Hold the writer until killed.
            let _keep = &writer;
            let _ = Event::new().unwrap().wait(Some(BOUND));
        });
        assert!(ready.wait(T).unwrap());
        assert_eq!(recv_t::<String>(&reader).unwrap(), "hello");
        common::kill(p);
        assert!(matches!(recv_t::<String>(&reader), Err(Error::Eof)));
        assert!(
            matches!(reader.recv::<String>(), Err(Error::Eof)),
            "EOF stays"
        );
    }
}

#[test]
fn a_writer_killed_mid_message_gives_a_cut_not_half_a_message() {
    // The writer sends one 8 MiB message; the socket holds far less, so once the
    // first bytes are readable the writer is blocked inside the message.
    for duplex in [true, false] {
        let (reader, writer) = Pipe(duplex).unwrap();
        let p = spawn(move || {
            writer.send_bytes(&message(0, 8 << 20), 0, None).unwrap();
        });
        assert!(reader.poll(T).unwrap(), "the message never started");
        common::kill(p);
        match reader.recv_bytes(None) {
            Err(Error::MessageCut { received, expected }) => {
                assert!(received < expected);
                assert_eq!(expected, 4 + (8 << 20));
            }
            other => panic!("expected MessageCut, got {:?}", other.map(|m| m.len())),
        }
        assert!(matches!(reader.recv_bytes(None), Err(Error::Eof)));
    }
}

#[test]
fn writers_killed_at_random_points_never_deliver_half_a_message() {
    let shm_before = common::multiproc_shm();
    let mut rng = Rng::new();
    let (mut cuts, mut eofs) = (0, 0);
    for round in 0..40 {
        let duplex = round % 2 == 0;
        let (reader, writer) = Pipe(duplex).unwrap();
        let sizes: Vec<usize> = (0..64).map(|_| 16 + rng.below(3 << 20) as usize).collect();
        let s = sizes.clone();
        let p = spawn(move || {
            for (seq, &len) in s.iter().enumerate() {
                writer
                    .send_bytes(&message(seq as u64, len), 0, None)
                    .unwrap();
            }
        });
        // Read a random number of whole messages, then kill the writer wherever it
        // is (usually blocked inside a message, sometimes between two).
        let before = rng.below(4);
        for seq in 0..before {
            check_message(&recv_bytes_t(&reader).unwrap(), seq);
        }
        // A random amount of the next message may be read into the buffer first.
        if rng.below(2) == 0 {
            assert!(reader.poll(T).unwrap());
        }
        common::kill(p);
        let mut seq = before;
        loop {
            match recv_bytes_t(&reader) {
                Ok(m) => {
                    check_message(&m, seq);
                    seq += 1;
                }
                Err(Error::MessageCut { received, expected }) => {
                    assert!(received < expected);
                    cuts += 1;
                    break;
                }
                Err(Error::Eof) => {
                    eofs += 1;
                    break;
                }
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert!(
            seq < sizes.len() as u64,
            "the writer was killed before the end"
        );
        assert!(matches!(reader.recv_bytes(None), Err(Error::Eof)));
    }
    eprintln!("{cuts} kills inside a message, {eofs} between messages");
    assert!(
        cuts > 0,
        "no kill landed inside a message: the test did not test"
    );
    assert_eq!(
        common::multiproc_shm(),
        shm_before,
        "nothing new in /dev/shm"
    );
}

#[test]
fn messages_of_64_mib_both_ways_while_the_other_side_reads() {
    for duplex in [true, false] {
        let big = message(7, 64 << 20);
        let (a, b) = Pipe(duplex).unwrap();
        let (back_r, back_w) = Pipe(false).unwrap();
        let expect = big.clone();
        let p = spawn(move || {
            let m = recv_bytes_t(&a).unwrap();
            assert!(m == expect, "64 MiB message corrupted");
            // And a typed one back.
            back_w.send(&m).unwrap();
        });
        b.send_bytes(&big, 0, None).unwrap(); // blocks until the child has read it
        assert!(back_r.poll(T).unwrap());
        let echoed: Vec<u8> = back_r.recv().unwrap();
        assert!(echoed == big);
        join_ok(p);
    }
}

#[test]
fn recv_bytes_with_too_small_maxlength_breaks_reads_as_cpython() {
    let (a, b) = Pipe(true).unwrap();
    a.send_bytes(&[9u8; 100], 0, None).unwrap();
    a.send_bytes(&[1u8; 10], 0, None).unwrap();
    match b.recv_bytes(Some(99)) {
        Err(e @ Error::MessageTooLong { .. }) => {
            let text = e.to_string();
            assert!(text.contains("100") && text.contains("99"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!b.readable());
    assert!(matches!(
        b.recv_bytes(None),
        Err(Error::ConnectionBroken {
            reason: "bad message length",
            ..
        })
    ));
    assert!(matches!(
        b.recv::<u8>(),
        Err(Error::ConnectionBroken { .. })
    ));
    assert!(matches!(b.poll(T), Err(Error::ConnectionBroken { .. })));
    // Its sending side still works.
    b.send(&5u8).unwrap();
    assert_eq!(recv_t::<u8>(&a).unwrap(), 5);
    // A maxlength equal to the size is fine.
    let (a, b) = Pipe(false).unwrap();
    b.send_bytes(b"four", 0, None).unwrap();
    assert_eq!(a.recv_bytes(Some(4)).unwrap(), b"four");
}

#[test]
fn send_bytes_ranges_recv_bytes_into_and_buffer_too_short() {
    let (a, b) = Pipe(true).unwrap();
    let data = b"0123456789";
    for (offset, size) in [
        (11, None),
        (10, Some(1)),
        (3, Some(8)),
        (usize::MAX, Some(2)),
        (2, Some(usize::MAX)),
    ] {
        match a.send_bytes(data, offset, size) {
            Err(Error::BufferRange {
                op: "send_bytes",
                len: 10,
                ..
            }) => {}
            other => panic!("offset {offset} size {size:?}: {other:?}"),
        }
    }
    a.send_bytes(data, 10, None).unwrap(); // empty, at the end: fine
    a.send_bytes(data, 3, Some(4)).unwrap();
    a.send_bytes(data, 0, None).unwrap();
    a.send_bytes(data, 0, None).unwrap();
    assert_eq!(recv_bytes_t(&b).unwrap(), b"");
    let mut buf = [b'.'; 12];
    assert_eq!(b.recv_bytes_into(&mut buf, 1).unwrap(), 4);
    assert_eq!(&buf, b".3456.......");
    assert!(matches!(
        b.recv_bytes_into(&mut buf, 13),
        Err(Error::BufferRange {
            op: "recv_bytes_into",
            offset: 13,
            ..
        })
    ));
    match b.recv_bytes_into(&mut buf, 3) {
        Err(Error::BufferTooShort {
            needed: 10,
            available: 9,
            message,
        }) => {
            assert_eq!(message, data)
        }
        other => panic!("{other:?}"),
    }
    // The connection is still in step: the next message is whole.
    assert_eq!(b.recv_bytes_into(&mut buf, 2).unwrap(), 10);
    assert_eq!(&buf[2..], data);
}

#[test]
fn a_closed_connection_says_so_for_every_operation() {
    let (mut a, b) = Pipe(true).unwrap();
    a.close();
    assert!(a.closed());
    let closed = |r: multiproc::Result<()>, what: &str| match r {
        Err(Error::ConnectionClosed { op }) => assert_eq!(op, what),
        other => panic!("{what}: {other:?}"),
    };
    closed(a.send(&1u8), "send");
    closed(a.send_bytes(b"x", 0, None), "send_bytes");
    closed(a.recv::<u8>().map(drop), "recv");
    closed(a.recv_bytes(None).map(drop), "recv_bytes");
    closed(
        a.recv_bytes_into(&mut [0; 4], 0).map(drop),
        "recv_bytes_into",
    );
    closed(a.poll(Some(Duration::ZERO)).map(drop), "poll");
    closed(a.fileno().map(drop), "fileno");
    closed(wait(&[&a], Some(Duration::ZERO)).map(drop), "wait");
    // The other end sees EOF at once, and its sends fail without a signal.
    assert!(matches!(recv_t::<u8>(&b), Err(Error::Eof)));
    assert!(matches!(b.send(&1u8), Err(Error::BrokenPipe)));
    assert!(matches!(
        b.send_bytes(&[0; 1 << 20], 0, None),
        Err(Error::BrokenPipe)
    ));
    let (r, mut w) = Pipe(false).unwrap();
    drop(r);
    assert!(matches!(w.send(&1u8), Err(Error::BrokenPipe)));
    w.close();
    closed(w.send(&1u8), "send");
}

#[test]
fn wrong_end_and_bad_types() {
    let (r, w) = Pipe(false).unwrap();
    assert!(matches!(
        r.send(&1u8),
        Err(Error::WrongEnd {
            op: "send",
            end: "read-only"
        })
    ));
    assert!(matches!(
        w.recv::<u8>(),
        Err(Error::WrongEnd {
            op: "recv",
            end: "write-only"
        })
    ));
    assert!(matches!(w.poll(None), Err(Error::WrongEnd { .. })));
    w.send(&"a string").unwrap();
    w.send(&3u8).unwrap();
    // postcard reads "a string" as a u64 8 (its length) with 8 bytes left over:
    // a leftover means the message was not a u64.
    match recv_t::<u64>(&r) {
        Err(e @ Error::Codec { op: "recv", .. }) => assert!(e.to_string().contains("left over")),
        other => panic!("{other:?}"),
    }
    // Decoding consumed exactly one message: the next is in step.
    assert_eq!(recv_t::<u8>(&r).unwrap(), 3);
    w.send(&true).unwrap();
    assert!(matches!(recv_t::<String>(&r), Err(Error::Codec { .. })));
}

/// Parent keeps the writer; a reader child captured only the reader; the parent
/// drops the writer: the child must see EOF. Without the inherit hook the child's
/// inherited copy of the writer keeps the pipe open and EOF never comes.
#[test]
fn a_child_that_did_not_capture_the_writer_does_not_keep_it_open() {
    for duplex in [true, false] {
        let (reader, writer) = Pipe(duplex).unwrap();
        let got_eof = RawValue::new(0u32).unwrap();
        let g = got_eof.clone();
        let p = spawn(move || {
            assert_eq!(recv_t::<u32>(&reader).unwrap(), 1);
            if matches!(recv_t::<u32>(&reader), Err(Error::Eof)) {
                g.set(1);
            }
        });
        writer.send(&1u32).unwrap();
        drop(writer);
        join_ok(p);
        assert_eq!(got_eof.get(), 1, "duplex={duplex}: the child saw no EOF");
    }
}

/// A child started later that captured nothing does not keep the first pipe open.
#[test]
fn an_unrelated_child_does_not_keep_a_pipe_open() {
    for duplex in [true, false] {
        let (reader, writer) = Pipe(duplex).unwrap();
        let done = Event::new().unwrap();
        let d = done.clone();
        let bystander = spawn(move || {
            assert!(d.wait(T).unwrap());
        });
        drop(writer);
        // Only the bystander could still hold the writer now.
        let eof = matches!(recv_t::<u8>(&reader), Err(Error::Eof));
        done.set();
        join_ok(bystander);
        assert!(
            eof,
            "duplex={duplex}: a bystander child kept the writer open"
        );
    }
}

static GLOBAL: OnceLock<Connection> = OnceLock::new();

/// A connection reachable from a global in a child that did not capture it is a
/// dead copy: EOF on read, BrokenPipe on write, and its number stays taken.
#[test]
fn an_uncaptured_global_connection_is_dead_in_the_child() {
    let (mine, global) = Pipe(true).unwrap();
    GLOBAL.set(global).unwrap();
    let fd = GLOBAL.get().unwrap().fileno().unwrap();
    let p = spawn(move || {
        let g = GLOBAL.get().unwrap();
        assert!(matches!(recv_t::<u8>(g), Err(Error::Eof)));
        assert!(matches!(g.send(&1u8), Err(Error::BrokenPipe)));
        assert_eq!(g.fileno().unwrap(), fd);
        // A file opened now cannot reuse that number.
        let f = std::fs::File::open("/dev/null").unwrap();
        assert_ne!(std::os::fd::AsRawFd::as_raw_fd(&f), fd);
    });
    join_ok(p);
    // The parent's copy is intact: the pair still works here.
    mine.send(&5u8).unwrap();
    assert_eq!(recv_t::<u8>(GLOBAL.get().unwrap()).unwrap(), 5);
}

/// A parent thread blocks in `recv` (holding the read lock) while another thread
/// forks a child that got only an `Arc` clone (so it did not capture the
/// connection): the child's copy is dead and answers at once, never waiting on the
/// lock copied held.
#[test]
fn an_uncaptured_copy_never_waits_on_a_lock_copied_held() {
    let (a, b) = Pipe(true).unwrap();
    let a = Arc::new(a);
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let reader = Arc::clone(&a);
        let t = s.spawn(move || {
            tid_tx
                .send(rustix::thread::gettid().as_raw_nonzero().get() as u32)
                .unwrap();
            // No poll first: the thread must sleep in `read`, holding the lock. The
            // guard below ends this wait whatever happens.
            reader.recv::<u8>().unwrap()
        });
        struct Release<'a>(&'a Connection);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.send(&9u8).unwrap();
            }
        }
        let release = Release(&b);
        let tid = tid_rx.recv_timeout(BOUND).unwrap();
        common::until_asleep(tid); // asleep in read, the read lock held
        let copy = Arc::clone(&a);
        let p = spawn(move || {
            assert!(copy.poll(T).unwrap());
            assert!(matches!(copy.recv::<u8>(), Err(Error::Eof)));
            assert!(matches!(copy.recv_bytes(None), Err(Error::Eof)));
            assert!(matches!(copy.send(&1u8), Err(Error::BrokenPipe)));
        });
        join_ok(p);
        drop(release);
        assert_eq!(t.join().unwrap(), 9);
    });
}

#[test]
fn two_threads_send_on_one_connection_without_interleaving() {
    let (a, b) = Pipe(true).unwrap();
    let a = Arc::new(a);
    let reader = spawn(move || {
        let mut next = [0u64; 2];
        for _ in 0..400 {
            let m = recv_bytes_t(&b).unwrap();
            let who = m[0] as usize;
            check_message(&m[1..], next[who]);
            next[who] += 1;
        }
        // And a recv blocked in one thread while another sends on the same end.
        b.send(&"ping").unwrap();
    });
    std::thread::scope(|s| {
        for who in 0..2u8 {
            let a = &a;
            s.spawn(move || {
                for seq in 0..200u64 {
                    let mut m = vec![who];
                    m.extend(message(seq, 1 + (seq as usize * 7919) % 300_000));
                    a.send_bytes(&m, 0, None).unwrap();
                }
            });
        }
    });
    assert_eq!(recv_t::<String>(&a).unwrap(), "ping");
    join_ok(reader);
}

#[test]
fn recv_in_one_thread_while_another_sends_on_the_same_end() {
    let (a, b) = Pipe(true).unwrap();
    let echo = spawn(move || {
        while let Ok(n) = recv_t::<u32>(&b) {
            b.send(&n).unwrap();
        }
    });
    std::thread::scope(|s| {
        let a = &a;
        let r = s.spawn(move || (0..1000).map(|_| recv_t::<u32>(a).unwrap()).sum::<u32>());
        for i in 0..1000u32 {
            a.send(&i).unwrap();
        }
        assert_eq!(r.join().unwrap(), 999 * 1000 / 2);
    });
    drop(a);
    join_ok(echo);
}

#[test]
fn wait_over_connections_and_process_sentinels() {
    let (a1, b1) = Pipe(true).unwrap();
    let (a2, b2) = Pipe(false).unwrap();
    let go = Event::new().unwrap();
    let g = go.clone();
    let mut p = Process::new(move || {
        assert!(g.wait(T).unwrap());
        b2.send(&"late").unwrap();
    });
    p.start().unwrap();
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(p.pid().unwrap() as i32).unwrap(),
        rustix::process::PidfdFlags::empty(),
    )
    .unwrap();
    // Nothing ready: a timeout gives an empty list.
    assert_eq!(
        wait(&[&a1, &a2, &pidfd], Some(Duration::from_millis(20))).unwrap(),
        Vec::<usize>::new()
    );
    b1.send(&1u8).unwrap();
    assert_eq!(wait(&[&a1, &a2, &pidfd], T).unwrap(), [0]);
    go.set();
    let mut seen = Vec::new();
    while !(seen.contains(&1) && seen.contains(&2)) {
        let r = wait(&[&a1, &a2, &pidfd], T).unwrap();
        assert!(!r.is_empty(), "wait timed out");
        seen = r;
    }
    assert_eq!(seen, [0, 1, 2]); // message, message + EOF, process ended
    assert_eq!(a2.recv::<String>().unwrap(), "late");
    assert_eq!(p.join(Some(BOUND)).unwrap(), Some(0));
}

/// Two messages arrive in one read; after the first is taken the descriptor is
/// no longer readable, yet a message is waiting: poll and wait must say so.
#[test]
fn poll_and_wait_see_messages_already_buffered() {
    let (a, b) = Pipe(true).unwrap();
    a.send(&1u8).unwrap();
    a.send(&2u8).unwrap();
    assert!(b.poll(T).unwrap());
    assert_eq!(b.recv::<u8>().unwrap(), 1); // one read took both
    let zero = Some(Duration::ZERO);
    assert!(
        b.poll(zero).unwrap(),
        "a buffered message is not seen by poll"
    );
    let (_x, y) = Pipe(true).unwrap();
    assert_eq!(wait(&[&y, &b], zero).unwrap(), [1]);
    assert_eq!(b.recv::<u8>().unwrap(), 2);
    assert!(!b.poll(zero).unwrap());
    assert_eq!(wait(&[&y, &b], zero).unwrap(), Vec::<usize>::new());
}

#[test]
fn typed_messages_of_many_shapes_between_processes() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug, Clone)]
    enum Shape {
        Unit,
        Pair(i64, String),
        Record {
            id: u32,
            tags: Vec<String>,
            data: Option<Vec<u8>>,
        },
    }
    let shapes = vec![
        Shape::Unit,
        Shape::Pair(-5, "five".into()),
        Shape::Record {
            id: 9,
            tags: vec!["a".into(), "bc".into()],
            data: Some(vec![0; 70_000]),
        },
        Shape::Record {
            id: 10,
            tags: vec![],
            data: None,
        },
    ];
    let (a, b) = Pipe(true).unwrap();
    let s = shapes.clone();
    let p = spawn(move || {
        for shape in &s {
            let got: Shape = recv_t(&b).unwrap();
            assert_eq!(&got, shape);
            b.send(&got).unwrap();
        }
    });
    for shape in &shapes {
        a.send(shape).unwrap();
        assert_eq!(&recv_t::<Shape>(&a).unwrap(), shape);
    }
    join_ok(p);
}
