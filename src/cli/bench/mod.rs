//! `multiproc bench`: the benchmark scenarios (goals in BENCHMARKS.md), measured with real processes side by
//! side with their references (std::sync with threads, the hardware floor, CPython's
//! `multiprocessing`), in one run.
//!
//! Each scenario is one small module exposing a [`Scenario`]; [`SCENARIOS`] lists
//! them. A scenario measures through [`Ctx`]: [`Ctx::step`] names what runs next
//! (the progress bar), [`Ctx::record`] files the samples of one (impl, metric, size).
//! CPython runs the scripts in `scripts/bench/` (compiled into the binary, run with
//! `python3 -c`), which print rows of the same schema, one JSON object per line.
//!
//! Children report their timings through shared memory ([`samples_from_children`]),
//! never through their stdout. The progress bar draws only from the main thread,
//! between measurements: no ticker thread exists while the bench forks.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use multiproc::{Process, RawArray};

/// A CPython script of `scripts/bench/`, compiled in: `Some((file, source))`.
macro_rules! python_script {
    ($file:literal) => {
        Some((
            $file,
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/bench/",
                $file
            )),
        ))
    };
}

mod pipe;
mod pool;
mod python;
mod report;
mod s1_lock;
mod s2_counter;
mod s3_pingpong;
mod s4_barrier;
mod s5_queue;
mod s6_array;
mod s7_act3;
mod s8_start;

/// Every scenario, in scenario order. Adding one is a module and a line here.
const SCENARIOS: &[&Scenario] = &[
    &s1_lock::SCENARIO,
    &s2_counter::SCENARIO,
    &s3_pingpong::SCENARIO,
    &s4_barrier::SCENARIO,
    &s5_queue::SCENARIO,
    &s6_array::SCENARIO,
    &s7_act3::SCENARIO,
    &s8_start::SCENARIO,
    &pipe::SCENARIO,
    &pool::SCENARIO,
];

/// Options of `multiproc bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Fewer repetitions: the whole run stays under a minute.
    #[arg(long)]
    quick: bool,
    /// Run only this scenario (S1, S2, S3, S4, S5, S6, PIPE); repeat for several.
    #[arg(long = "scenario", value_name = "ID")]
    scenarios: Vec<String>,
    /// Write the raw figures as a JSON list of rows to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw a bar chart of the ratios (multiproc vs each reference) as SVG to FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Skip the CPython column even when python3 is found.
    #[arg(long)]
    no_python: bool,
}

/// One measured figure: the JSON schema of `--json` and of the CPython scripts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Row {
    /// Scenario id, `S1`..`S8`.
    pub scenario: String,
    /// `multiproc`, `cpython`, `threads`, `floor`, `futex`, `memcpy`.
    #[serde(rename = "impl")]
    pub imp: String,
    /// What was measured; the same name for every impl of one comparison.
    pub metric: String,
    /// Median over the repetitions.
    pub median: f64,
    /// Fastest repetition (smallest value, whatever the unit).
    pub min: f64,
    /// Slowest repetition (largest value).
    pub max: f64,
    /// `ns`, `us`, `ms`, `msg/s`, `tasks/s`, `MB/s`, `GB/s` or `x`.
    pub unit: String,
    /// Processes (or threads) taking part.
    pub processes: u32,
}

impl Row {
    /// Whether a larger figure is better (throughputs and speedups).
    pub fn higher_is_better(&self) -> bool {
        matches!(
            self.unit.as_str(),
            "msg/s" | "tasks/s" | "MB/s" | "GB/s" | "x"
        )
    }
}

/// A benchmark goal, checked against the figures of the same run.
pub struct Goal {
    /// The metric and size it is about.
    pub metric: &'static str,
    /// Processes of the rows compared.
    pub processes: u32,
    /// The reference impl.
    pub reference: &'static str,
    /// Required advantage of multiproc: `advantage >= at_least`, where advantage is
    /// reference/multiproc for times and multiproc/reference for throughputs (so
    /// `0.667` reads "within 1.5x", `100.0` reads "100x faster").
    pub at_least: f64,
    /// The goal in words.
    pub text: &'static str,
}

/// One benchmark scenario.
pub struct Scenario {
    /// `S1`...
    pub id: &'static str,
    /// What it measures.
    pub title: &'static str,
    /// Progress-bar steps it takes (an estimate: the bar adjusts).
    pub steps: u64,
    /// Measures everything but CPython.
    pub run: fn(&mut Ctx) -> multiproc::Result<()>,
    /// The CPython script: (file name, source).
    pub python: Option<(&'static str, &'static str)>,
    /// The benchmark goals.
    pub goals: &'static [Goal],
}

/// What a scenario measures with: options, the progress bar, collected rows.
pub struct Ctx {
    /// `--quick`.
    pub quick: bool,
    scenario: &'static str,
    bar: ProgressBar,
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Ctx {
    /// `quick` in a quick run, else `full`.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }

    /// Shows what is measured next and advances the bar. Draws from this thread.
    pub fn step(&mut self, what: &str) {
        self.bar.set_message(format!("{} {what}", self.scenario));
        self.bar.inc(1);
    }

    /// Files the samples of one (impl, metric, size).
    pub fn record(&mut self, imp: &str, metric: &str, processes: u32, unit: &str, samples: &[f64]) {
        if let Some((median, min, max)) = stats(samples) {
            self.rows.push(Row {
                scenario: self.scenario.to_string(),
                imp: imp.to_string(),
                metric: metric.to_string(),
                median,
                min,
                max,
                unit: unit.to_string(),
                processes,
            });
        }
    }

    /// A remark printed under the table (a skipped reference, a failure).
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }
}

/// Median, min and max; `None` for no samples.
pub fn stats(samples: &[f64]) -> Option<(f64, f64, f64)> {
    let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Some((median, s[0], s[n - 1]))
}

/// How long a bench child may run before it is killed and the measurement fails.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `body(i, out)` in `n` forked processes (`i` = 0..n), waits for all, and
/// returns the `slots` u64 figures they wrote into the shared `out` array.
///
/// A child that panics, fails or outlives [`CHILD_TIMEOUT`] fails the measurement
/// (the others are killed).
pub fn samples_from_children(
    n: usize,
    slots: usize,
    body: impl Fn(usize, RawArray<u64>) + Clone + Send + 'static,
) -> multiproc::Result<Vec<u64>> {
    let out = RawArray::<u64>::new(slots.max(1))?;
    let mut kids = Vec::with_capacity(n);
    for i in 0..n {
        let (b, o) = (body.clone(), out.clone());
        let mut p = Process::new(move || b(i, o)).with_name(format!("bench-{i}"));
        p.start()?;
        kids.push(p);
    }
    join_all(kids)?;
    out.to_vec()
}

/// Joins every process within [`CHILD_TIMEOUT`]; kills the rest on the first
/// failure or timeout.
pub fn join_all(mut kids: Vec<Process>) -> multiproc::Result<()> {
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let mut failure = None;
    for p in kids.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        match p.join(Some(left))? {
            Some(0) => {}
            Some(code) => {
                failure = Some(format!("{} exited with code {code}", p.name()));
                break;
            }
            None => {
                failure = Some(format!(
                    "{} ran longer than {}s",
                    p.name(),
                    CHILD_TIMEOUT.as_secs()
                ));
                break;
            }
        }
    }
    if let Some(why) = failure {
        for p in kids.iter_mut() {
            let _ = p.kill();
            let _ = p.join(Some(Duration::from_secs(5)));
        }
        return Err(multiproc::Error::InvalidArgument(format!(
            "benchmark child failed: {why}"
        )));
    }
    Ok(())
}

/// Nanoseconds elapsed since `t`.
pub fn ns_since(t: Instant) -> u64 {
    t.elapsed().as_nanos().min(u64::MAX as u128) as u64
}

fn selected(args: &BenchArgs) -> Result<Vec<&'static Scenario>, String> {
    if args.scenarios.is_empty() {
        return Ok(SCENARIOS.to_vec());
    }
    let mut out = Vec::new();
    for want in &args.scenarios {
        match SCENARIOS.iter().find(|s| s.id.eq_ignore_ascii_case(want)) {
            Some(s) => out.push(*s),
            None => {
                let known: Vec<&str> = SCENARIOS.iter().map(|s| s.id).collect();
                return Err(format!(
                    "unknown scenario {want:?}; known: {}",
                    known.join(", ")
                ));
            }
        }
    }
    Ok(out)
}

/// Runs the selected scenarios and prints the table; writes `--json` / `--svg`.
pub fn main(args: BenchArgs) -> ExitCode {
    let scenarios = match selected(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let python = if args.no_python { None } else { python::find() };
    let total: u64 = scenarios
        .iter()
        .map(|s| s.steps + u64::from(python.is_some() && s.python.is_some()))
        .sum();
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed:>4} {wide_msg}")
            .expect("a valid template"),
    );
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut failed = false;
    let started = Instant::now();
    if python.is_none() {
        notes.push(if args.no_python {
            "CPython column skipped (--no-python)".to_string()
        } else {
            "CPython column skipped: python3 not found".to_string()
        });
    }
    for s in &scenarios {
        let mut ctx = Ctx {
            quick: args.quick,
            scenario: s.id,
            bar: bar.clone(),
            rows: Vec::new(),
            notes: Vec::new(),
        };
        if let Err(e) = (s.run)(&mut ctx) {
            ctx.note(format!("{}: measurement failed: {e}", s.id));
            failed = true;
        }
        if let (Some(py), Some((file, source))) = (&python, s.python) {
            ctx.step("cpython");
            match python::run(py, file, source, args.quick) {
                Ok(mut r) => ctx.rows.append(&mut r),
                Err(e) => ctx.note(format!("{}: CPython skipped: {e}", s.id)),
            }
        }
        rows.append(&mut ctx.rows);
        notes.append(&mut ctx.notes);
    }
    bar.finish_and_clear();

    let mode = if args.quick { "--quick" } else { "full" };
    println!(
        "multiproc bench ({mode}, {:.1} s): median [min-max]; ratio = how many times faster multiproc is than the reference (<1: slower)",
        started.elapsed().as_secs_f64()
    );
    for s in &scenarios {
        println!("  {}: {}", s.id, s.title);
    }
    print!("{}", report::table(&rows));
    let goals = report::goals(&scenarios, &rows);
    if !goals.is_empty() {
        println!("\nGoals:");
        print!("{goals}");
    }
    for n in &notes {
        println!("note: {n}");
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&rows).expect("rows serialize");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("error: writing {}: {e}", path.display());
            failed = true;
        }
    }
    if let Some(path) = &args.svg {
        if let Err(e) = std::fs::write(path, report::svg(&rows)) {
            eprintln!("error: writing {}: {e}", path.display());
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
