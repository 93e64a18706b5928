//! A benchmark, not a test (ignored by default): a full refresh of 1,000,000 records of 1 KiB from a real
//! broker into the real consumer-app binary, durable, measured from the refresh request to the swap.
//! Also prints the initial catch-up rate. Run it with:
//!
//! ```text
//! cargo test --release -p consumer-app --test bench_refresh -- --ignored --nocapture
//! ```
//!
//! `BENCH_RECORDS` and `BENCH_RECORD_BYTES` change the size. It prints figures; it asserts no timing.

mod common;

use std::time::Instant;

use common::{AppProcess, start_broker};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| info.lines().find(|line| line.starts_with("model name")).map(str::to_string))
        .and_then(|line| line.split(':').nth(1).map(|model| model.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cores = std::thread::available_parallelism().map_or(0, |cores| cores.get());
    format!("{cpu}, {cores} cores, {} {}", std::env::consts::OS, std::env::consts::ARCH)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --release -- --ignored --nocapture"]
async fn full_refresh_throughput() {
    let n_records = env_u64("BENCH_RECORDS", 1_000_000);
    let record_bytes = env_u64("BENCH_RECORD_BYTES", 1024) as usize;
    let broker = start_broker().await;
    let started = Instant::now();
    let mut injected = 0;
    while injected < n_records {
        let count = (n_records - injected).min(100_000);
        broker.inject("bench", count, record_bytes).await;
        injected += count;
    }
    eprintln!("published {n_records} records of {record_bytes} B at the broker in {:.1?}", started.elapsed());

    let data = tempfile::tempdir().unwrap();
    let env = [("CONSUMER_TOPICS", "bench"), ("CONSUMER_ID", "bench"), ("CONSUMER_SEGMENT_BYTES", "256M")];
    let started = Instant::now();
    let app = AppProcess::start(broker.consumers, data.path(), &env).await;
    let stats = app.wait_for_position("bench", n_records).await;
    let catch_up = started.elapsed();
    let bytes = stats["topics"]["bench"]["bytes"].as_u64().unwrap();
    let mib = bytes as f64 / (1024.0 * 1024.0);
    eprintln!(
        "catch-up: {n_records} records, {mib:.0} MiB in {catch_up:.2?}: {:.0} records/s, {:.0} MiB/s",
        n_records as f64 / catch_up.as_secs_f64(),
        mib / catch_up.as_secs_f64()
    );

    let started = Instant::now();
    let (status, _) = app.post("/api/v1/refresh", r#"{"topic":"bench"}"#).await;
    assert_eq!(status, 202);
    app.wait_for("/api/v1/stats", "the refresh", |stats| {
        stats["recent_refreshes"]
            .as_array()
            .is_some_and(|refreshes| refreshes.iter().any(|refresh| refresh["outcome"] == "completed"))
    })
    .await;
    let refresh = started.elapsed();
    eprintln!(
        "full refresh: {n_records} records, {mib:.0} MiB in {refresh:.2?}: {:.0} records/s, {:.0} MiB/s ({})",
        n_records as f64 / refresh.as_secs_f64(),
        mib / refresh.as_secs_f64(),
        machine()
    );
    app.stop().await;
    broker.stop().await;
}
