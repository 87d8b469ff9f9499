//! CPython's own multiprocessing test cases, ported (one module per class).

mod test_process;
