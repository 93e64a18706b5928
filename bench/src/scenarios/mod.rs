//! The scenarios, one module each, and what they share: waiting for a condition with a bound, snapshots
//! of every process's CPU and memory, and the per-process table of a report. Each scenario starts what it
//! needs, measures, and fills a [`Report`]; none prints or writes files (main.rs does).

pub mod compact;
pub mod fanout;
pub mod hop;
pub mod idle;
pub mod positions;
pub mod refresh;
pub mod storage;
pub mod tree;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use tokio::task::JoinHandle;

use crate::api::Api;
use crate::load::{self, Destination, LoadOutcome, Plan};

use crate::config::Scenario;
use crate::launch::Launcher;
use crate::machine::{ProcessUsage, own_usage};
use crate::report::{ProcessFigures, Report};
use crate::run::Run;

/// The name of the bench's own process in reports.
pub const BENCH_PROCESS: &str = "relay-bench";

/// Runs `scenario` and returns its report.
pub async fn run(scenario: &Scenario, run: &Run) -> Result<Report> {
    let mut report = run.report();
    match scenario {
        Scenario::Storage(args) => storage::run(args, run, &mut report).await?,
        Scenario::Hop(args) => hop::run(args, run, &mut report).await?,
        Scenario::Tree(args) => tree::run(args, run, &mut report).await?,
        Scenario::Refresh(args) => refresh::run(args, run, &mut report).await?,
        Scenario::Fanout(args) => fanout::run(args, run, &mut report).await?,
        Scenario::Idle(args) => idle::run(args, run, &mut report).await?,
        Scenario::Compact(args) => compact::run(args, run, &mut report).await?,
    }
    Ok(report)
}

/// Calls `check` every `interval` until it returns `Some`, failing after `timeout` with a message naming
/// `what`. The launcher's processes are checked each time, so a crash fails fast with its log.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    launcher: &mut Launcher,
    mut check: impl AsyncFnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        launcher.check_running()?;
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(interval).await;
    }
}

/// The usage of every process of the launcher plus the bench itself, by name.
pub fn usage_snapshot(launcher: &Launcher) -> HashMap<String, ProcessUsage> {
    let mut snapshot: HashMap<String, ProcessUsage> =
        launcher.usages().into_iter().filter_map(|(name, _, usage)| Some((name, usage?))).collect();
    if let Some(own) = own_usage() {
        snapshot.insert(BENCH_PROCESS.to_string(), own);
    }
    snapshot
}

/// One row per process (the bench last): CPU over the measured phase (since `before`) and memory, with CPU
/// per record where `records_of` gives a count for the process.
pub fn process_table(
    launcher: &Launcher,
    before: &HashMap<String, ProcessUsage>,
    records_of: impl Fn(&str) -> Option<u64>,
) -> Vec<ProcessFigures> {
    let mut rows: Vec<ProcessFigures> = launcher
        .usages()
        .into_iter()
        .filter_map(|(name, pid, usage)| {
            let usage = usage?;
            Some(ProcessFigures::from_usage(&name, pid, before.get(&name).copied(), usage, records_of(&name)))
        })
        .collect();
    if let Some(own) = own_usage() {
        rows.push(ProcessFigures::from_usage(
            BENCH_PROCESS,
            std::process::id(),
            before.get(BENCH_PROCESS).copied(),
            own,
            None,
        ));
    }
    rows
}

/// Starts injecting `count` generated records into `destination` from two tasks, in requests of `chunk`,
/// for at most `timeout`; `produced` counts what ROOT accepted.
pub fn spawn_inject(
    api: &Api,
    destination: &Destination,
    count: u64,
    chunk: u64,
    timeout: Duration,
    produced: &Arc<AtomicU64>,
) -> JoinHandle<Result<LoadOutcome>> {
    let (api, destination, produced) = (api.clone(), destination.clone(), Arc::clone(produced));
    let plan = Plan { total: count, batch: chunk, concurrency: 2, deadline: Instant::now() + timeout };
    tokio::spawn(async move { load::inject(&api, &destination, plan, produced).await })
}

/// Bytes per second as MB/s (MB = 10^6 bytes).
pub fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}

/// Records per second.
pub fn per_s(records: u64, elapsed: Duration) -> f64 {
    records as f64 / elapsed.as_secs_f64().max(1e-9)
}
