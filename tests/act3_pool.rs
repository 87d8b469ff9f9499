//! Act 3 at full scale (example 12): both parallel ways equal the sequential result
//! for lengths 0, 1, 999,999 and 1,000,000, with several worker counts.

#[allow(dead_code)]
#[path = "../examples/12_pool_act3.rs"]
mod act3;

use std::sync::Arc;

use multiproc::Pool;

#[test]
fn array_chunks_and_pool_map_equal_sequential_for_awkward_lengths() {
    for processes in [3, 4] {
        let pool = Pool::new(processes).unwrap();
        for len in [0i64, 1, 999_999, 1_000_000] {
            let data = Arc::new((0..len).map(|x| x * 7 - 3).collect::<Vec<i64>>());
            let want = act3::sequential(&data);
            assert_eq!(
                act3::with_array_chunks(&data, processes).unwrap(),
                want,
                "Array chunks, length {len}, {processes} processes"
            );
            let got = pool
                .map_async(act3::process_item, data.iter().copied(), None)
                .unwrap()
                .get(Some(std::time::Duration::from_secs(120)))
                .unwrap();
            assert_eq!(got, want, "Pool::map, length {len}, {processes} processes");
        }
    }
}
