use multiproc::Process;
use std::time::{Duration, Instant};
fn main() {
    for daemon in [false, true, false, true] {
        let mut v = Vec::new();
        for _ in 0..300 {
            let t = Instant::now();
            let mut p = Process::new(|| {}).daemon(daemon);
            p.start().unwrap();
            p.join(Some(Duration::from_secs(30))).unwrap();
            v.push(t.elapsed());
        }
        v.sort();
        println!(
            "daemon={daemon}: start+join median {:?}, p90 {:?}",
            v[150], v[270]
        );
    }
}
