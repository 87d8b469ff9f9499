//! `multiproc bench --quick --scenario S1 --json FILE` runs and writes rows of the
//! documented schema. No timing is asserted.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn bench_quick_s1_writes_schema_json() {
    let json =
        std::env::temp_dir().join(format!("multiproc-bench-test-{}.json", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_multiproc"))
        .args(["bench", "--quick", "--scenario", "S1", "--json"])
        .arg(&json)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the multiproc binary starts");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&json);
            panic!("multiproc bench ran longer than 90 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "multiproc bench failed: {status}");
    let text = std::fs::read_to_string(&json).expect("the JSON file is written");
    let _ = std::fs::remove_file(&json);
    let rows: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let rows = rows.as_array().expect("a list of rows");
    assert!(
        rows.len() >= 2,
        "multiproc and threads rows at least: {text}"
    );
    for row in rows {
        let obj = row.as_object().expect("each row is an object");
        let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "impl",
                "max",
                "median",
                "metric",
                "min",
                "processes",
                "scenario",
                "unit"
            ]
        );
        assert_eq!(obj["scenario"], "S1");
        assert!(obj["metric"].is_string());
        assert!(["ns", "us", "ms", "msg/s", "GB/s", "x"].contains(&obj["unit"].as_str().unwrap()));
        let (min, med, max) = (
            obj["min"].as_f64().unwrap(),
            obj["median"].as_f64().unwrap(),
            obj["max"].as_f64().unwrap(),
        );
        assert!(min > 0.0 && min <= med && med <= max, "{row}");
        assert!(obj["processes"].as_u64().unwrap() >= 1);
    }
    let imps: Vec<&str> = rows.iter().map(|r| r["impl"].as_str().unwrap()).collect();
    assert!(
        imps.contains(&"multiproc") && imps.contains(&"threads"),
        "{imps:?}"
    );
}
