//! A creator SIGKILLed at each step of `create_object` leaves either no entry or
//! a complete, usable one, and the next creator goes on.

use std::time::Duration;

use super::*;
use crate::{Process, Value};

const BOUND: Duration = Duration::from_secs(30);

/// A directory unlinked when dropped, even when the test fails.
struct Dir(Directory);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = self.0.unlink();
    }
}

impl std::ops::Deref for Dir {
    type Target = Directory;
    fn deref(&self) -> &Directory {
        &self.0
    }
}

fn dir(tag: &str) -> Dir {
    let name = format!("mp-named-unit-{}-{tag}", std::process::id());
    Dir(Directory::create(&name, 64 * 1024).unwrap())
}

/// Runs `f` in a child that arms the kill at `stage`; returns its exit code.
fn child_dying_at(stage: Stage, f: impl FnOnce() + Send + 'static) -> Option<i32> {
    let mut p = Process::new(move || {
        DIE_AT.store(stage as u32, Ordering::Relaxed);
        f();
    });
    p.start().unwrap();
    let code = p.join(Some(BOUND)).unwrap();
    if code.is_none() {
        let _ = p.kill();
        let _ = p.join(Some(BOUND));
    }
    code
}

#[test]
fn a_creator_killed_at_any_step_leaves_no_entry_or_a_usable_one() {
    let d = dir("killed");
    for stage in [
        Stage::Locked,
        Stage::Bumped,
        Stage::Built,
        Stage::Written,
        Stage::Published,
    ] {
        let name = format!("v{}", stage as u32);
        let (d2, n2) = (d.0.clone(), name.clone());
        let code = child_dying_at(stage, move || {
            let _ = Value::create_in(&d2, &n2, 42u64);
        });
        assert_eq!(code, Some(-9), "the child died at {stage:?}");
        // The table stays readable: no half-written entry is ever published.
        let names = d.names().unwrap();
        match Value::<u64>::open_in(&d, &name) {
            Ok(v) => {
                assert_eq!(stage, Stage::Published, "published before complete");
                assert_eq!(v.get().unwrap(), 42, "an entry whose object is laid out");
                assert!(names.contains(&name));
            }
            Err(Error::ObjectNotFound { .. }) => {
                assert_ne!(stage, Stage::Published, "a complete entry was lost");
                assert!(!names.contains(&name));
                // The dead creator still holds the creators' lock: the next one
                // takes it (OwnerDied) and creates the name.
                let v = Value::create_in(&d, &name, 43u64).unwrap();
                assert_eq!(Value::<u64>::open_in(&d, &name).unwrap().get().unwrap(), 43);
                drop(v);
            }
            Err(e) => panic!("at {stage:?}: {e}"),
        }
    }
    assert_eq!(d.names().unwrap().len(), 5);
    d.0.unlink().unwrap();
}

#[test]
fn bytes_a_dead_creator_took_are_never_handed_out_again() {
    let d = dir("bytes");
    let before = d.map().read::<u64>(BUMP);
    let d2 = d.0.clone();
    // Killed after laying its Value out (its bytes hold 0xdead), before publishing.
    let code = child_dying_at(Stage::Built, move || {
        let v = Value::create_in(&d2, "lost", 0xdeadu64).unwrap();
        unreachable!("killed before returning {v:?}");
    });
    assert_eq!(code, Some(-9));
    // A RawArray writes nothing at creation: it is exactly the bytes it was given,
    // which must be fresh zeros, past the dead creator's.
    let a = crate::RawArray::<u64>::create_in(&d, "kept", 4).unwrap();
    assert_eq!(
        a.to_vec().unwrap(),
        vec![0; 4],
        "handed a dead creator's bytes"
    );
    assert_eq!(d.names().unwrap(), vec!["kept".to_string()]);
    let at = d.map().read::<u64>(TABLE + E_OFFSET);
    assert!(
        at >= before + ALIGN,
        "the new object reuses a dead creator's bytes"
    );
    d.0.unlink().unwrap();
}

#[test]
fn creators_racing_through_a_wide_window_still_make_one_object() {
    const KIDS: usize = 4;
    let d = dir("wide-race");
    let go = crate::Event::new().unwrap();
    let created = crate::RawValue::<u32>::new(0).unwrap();
    let kids: Vec<Process> = (0..KIDS)
        .map(|_| {
            let (d, go, created) = (d.0.clone(), go.clone(), created.clone());
            let mut p = Process::new(move || {
                // Each creator lingers between its name check and its publication.
                LINGER_AT.store(Stage::Bumped as u32, Ordering::Relaxed);
                assert!(go.wait(Some(BOUND)).unwrap());
                match crate::Lock::create_in(&d, "one") {
                    Ok(_) => {
                        created.fetch_add(1);
                    }
                    Err(Error::ObjectExists { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            });
            p.start().unwrap();
            p
        })
        .collect();
    go.set();
    for mut p in kids {
        let code = p.join(Some(BOUND)).unwrap();
        if code.is_none() {
            let _ = p.kill();
            let _ = p.join(Some(BOUND));
        }
        assert_eq!(code, Some(0));
    }
    assert_eq!(created.get(), 1, "one creator, the others found it");
    assert_eq!(d.names().unwrap(), vec!["one".to_string()]);
    d.0.unlink().unwrap();
}
