//! A creator SIGKILLed at each step of `create_object` leaves either no entry or
//! a complete, usable one, and the next creator goes on.

use std::time::Duration;

use super::*;
use crate::{Process, Value};

const BOUND: Duration = Duration::from_secs(30);

fn dir(tag: &str) -> Directory {
    Directory::create(
        &format!("mp-named-unit-{}-{tag}", std::process::id()),
        64 * 1024,
    )
    .unwrap()
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
        let (d2, n2) = (d.clone(), name.clone());
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
    d.unlink().unwrap();
}

#[test]
fn bytes_a_dead_creator_took_are_never_handed_out_again() {
    let d = dir("bytes");
    let d2 = d.clone();
    let code = child_dying_at(Stage::Built, move || {
        let v = Value::create_in(&d2, "lost", 0u64).unwrap();
        unreachable!("killed before returning {v:?}");
    });
    assert_eq!(code, Some(-9));
    // Built means the child wrote its value (0 -> set) into its bytes; a second
    // creator gets fresh, zeroed bytes past them.
    let lost_at = d.map().read::<u64>(BUMP);
    let v = Value::create_in(&d, "kept", 5u64).unwrap();
    let info = d.objects().unwrap();
    assert_eq!(info.len(), 1);
    let at = d.map().read::<u64>(TABLE + E_OFFSET);
    assert!(
        at >= lost_at,
        "the new object reuses a dead creator's bytes"
    );
    assert_eq!(v.get().unwrap(), 5);
    d.unlink().unwrap();
}
