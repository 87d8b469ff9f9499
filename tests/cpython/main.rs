//! CPython's own test cases (`Lib/test/_test_multiprocessing.py`), ported one Rust
//! test per Python test method; what cannot be expressed is listed in README.md.

mod test_barrier;
mod test_condition;
mod test_event;
mod test_lock;
mod test_semaphore;
