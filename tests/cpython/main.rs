//! CPython's own test cases (`Lib/test/_test_multiprocessing.py`), ported one Rust
//! test per Python test method; what cannot be expressed is listed in README.md.

// The integration tests' helpers (tests/common), shared by the files below.
#[path = "../common/mod.rs"]
mod common;
mod test_array;
mod test_barrier;
mod test_condition;
mod test_event;
mod test_lock;
mod test_process;
mod test_semaphore;
mod test_shared_memory;
mod test_value;
