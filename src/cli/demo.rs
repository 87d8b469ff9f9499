//! `multiproc demo`: every tutorial scenario, run with real processes, checked.
//!
//! The scenarios are the example programs themselves (`examples/NN_*.rs`), compiled
//! into the command, so the demo and the examples can never disagree.

use std::process::ExitCode;
use std::time::Instant;

macro_rules! scenarios {
    ($($module:ident = $file:literal, $title:literal;)*) => {
        $(
            #[allow(dead_code)]
            #[path = $file]
            pub(crate) mod $module;
        )*
        /// (title, run) for each scenario, in tutorial order.
        const SCENARIOS: &[(&str, fn() -> multiproc::Result<bool>)] = &[$(($title, $module::run)),*];
    };
}

scenarios! {
    value_counter = "../../examples/01_value_counter.rs", "01 Value counter: 4 processes x 100,000 locked increments";
    array_update = "../../examples/02_array_update.rs", "02 Array update: 3 processes add 1 to each of 5 elements";
    lock_counter = "../../examples/03_lock_counter.rs", "03 Lock counter: 2 processes x 100,000 increments under one Lock";
    rlock_recursive = "../../examples/04_rlock_recursive.rs", "04 RLock: recursive acquisition 4 levels deep in a child";
    semaphore_workers = "../../examples/05_semaphore_workers.rs", "05 Semaphore: 5 workers, at most 2 inside at once";
    event_signal = "../../examples/06_event_signal.rs", "06 Event: a signaler process wakes a waiter process";
    condition_producer_consumer = "../../examples/07_condition_producer_consumer.rs", "07 Condition: producer/consumer, all 5 items through shared memory";
    barrier_workers = "../../examples/08_barrier_workers.rs", "08 Barrier: 3 workers pass only when all have arrived";
    parallel_processing = "../../examples/09_parallel_processing.rs", "09 Act 3: 1,000 CPU-bound items over worker processes, lock-free chunks";
    queue_producers_consumers = "../../examples/10_queue_producers_consumers.rs", "10 Queue: 3 producers x 10,000 messages to 2 consumers, each once, in order per producer";
    pipe = "../../examples/11_pipe.rs", "11 Pipe: 1,000 typed requests and replies with a child, then EOF at the parent's close";
    pool_act3 = "../../examples/12_pool_act3.rs", "12 Act 3 at full scale: 1,000,000 CPU-bound items, Array chunks and Pool::map";
}

/// Scenarios with children that stay closures, started by fork under every
/// method, and what they are.
const FORK_ONLY: &[(&str, &str)] = &[
    (
        "09",
        "its workers are closures over lock-free ArrayChunks (which do not travel as tokens), started by fork",
    ),
    (
        "12",
        "its Array-chunk workers are closures, started by fork; its Pool's workers start by the method",
    ),
];

/// Runs each scenario with `method` as the default start method (the scenarios
/// start their processes with `Process::entry`), prints what happened, ends with
/// `demo: N/M scenarios correct`.
pub fn main(method: multiproc::StartMethod) -> ExitCode {
    if let Err(e) = multiproc::set_start_method(method, true) {
        println!("demo: {e}");
        return ExitCode::FAILURE;
    }
    println!("start method: {method}\n");
    let mut correct = 0;
    for (title, run) in SCENARIOS {
        println!("== {title}");
        if method != multiproc::StartMethod::Fork {
            if let Some((_, why)) = FORK_ONLY.iter().find(|(n, _)| title.starts_with(n)) {
                println!("   (under {method}: {why})");
            }
        }
        let start = Instant::now();
        let verdict = match run() {
            Ok(true) => {
                correct += 1;
                "correct".to_string()
            }
            Ok(false) => "WRONG".to_string(),
            Err(e) => format!("ERROR: {e}"),
        };
        println!(
            "-> {verdict} ({:.1} ms)\n",
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    println!("demo: {correct}/{} scenarios correct", SCENARIOS.len());
    if correct == SCENARIOS.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
