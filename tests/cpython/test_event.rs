//! `_TestEvent` from CPython's `Lib/test/_test_multiprocessing.py`. CPython's timing
//! checks are off by default and tests here assert no times: results only.

use std::time::Duration;

use crate::common::{T, join_ok, spawn};
use multiproc::Event;

const TIMEOUT1: Duration = Duration::from_millis(100);

#[test]
fn test_event() {
    let event = Event::new().unwrap();

    assert!(!event.is_set());

    assert!(!event.wait(Some(Duration::ZERO)).unwrap());
    assert!(!event.wait(Some(TIMEOUT1)).unwrap());

    event.set();

    assert!(event.is_set());
    assert!(event.wait(None).unwrap());
    assert!(event.wait(Some(TIMEOUT1)).unwrap());

    event.clear();

    // `_test_event` sleeps TIMEOUT2 before setting, so that `wait()` blocks first;
    // here the parent waits (T for None) whatever the order.
    let e = event.clone();
    let p = spawn(move || e.set());
    assert!(event.wait(T).unwrap());
    join_ok(p);
}
