//! The tutorial's act 3: the parallel result equals the sequential one for lengths
//! that do and do not divide evenly, and for fewer items than processes.

#[allow(dead_code)]
#[path = "../examples/09_parallel_processing.rs"]
mod act3;

#[test]
fn parallel_equals_sequential_for_awkward_lengths() {
    for len in [0i64, 1, 999, 1000] {
        let data: Vec<i64> = (0..len).map(|x| x * 7 - 3).collect();
        for processes in [1, 3, 4] {
            let got = act3::parallel(&data, processes).unwrap();
            assert_eq!(
                got,
                act3::sequential(&data),
                "length {len}, {processes} processes"
            );
        }
    }
}
