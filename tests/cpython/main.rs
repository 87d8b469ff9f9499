//! CPython's own test cases for `multiprocessing` (`Lib/test/_test_multiprocessing.py`,
//! CPython 3.11), ported one Rust test per Python test method, named after it, with
//! its numbers and assertions. What cannot be expressed is listed, with the reason,
//! in `tests/cpython/README.md`.

#[path = "../common/mod.rs"]
mod common;

mod test_array;
mod test_shared_memory;
mod test_value;
