//! Batches that arrive together are stored together: with a broker sending small BATCH frames and many
//! records waiting, the consumer-app makes far fewer appends (each one flush and one index transaction)
//! than it receives batches, for the live copy and for a full refresh, and the copy is still exact.

mod common;

use common::{AppProcess, start_broker_with_batches};
use serde_json::Value;

/// Records published before the app connects.
const TOTAL: u64 = 3000;

/// Records per BATCH frame, as small as the broker's default so that grouping has work to do.
const BATCH_RECORDS: usize = 10;

/// The value of an unlabelled counter in the app's `/metrics` page.
async fn counter(app: &AppProcess, name: &str) -> u64 {
    let (status, text) = app.get_text("/metrics").await;
    assert_eq!(status, 200, "{text}");
    let sample = format!("consumer_app_{name}_total ");
    text.lines()
        .find_map(|line| line.strip_prefix(&sample))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in {text}"))
}

fn refreshes_completed(stats: &Value) -> usize {
    stats["recent_refreshes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|refresh| refresh["outcome"] == "completed")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_already_received_share_one_append() {
    let broker = start_broker_with_batches(BATCH_RECORDS).await;
    let data = tempfile::tempdir().unwrap();
    // Every record exists before the app connects, so the broker pushes a full window of batches at once.
    broker.inject("prices", TOTAL, 100).await;
    let app = AppProcess::start(broker.consumers, data.path(), &[("CONSUMER_TOPICS", "prices")]).await;
    app.wait_for_position("prices", TOTAL).await;

    let batches = counter(&app, "batches_received").await;
    let appends = counter(&app, "appends").await;
    eprintln!("live copy: {batches} batches in {appends} appends");
    assert!(batches >= TOTAL / BATCH_RECORDS as u64, "{batches} batches for {TOTAL} records");
    assert!(appends * 2 <= batches, "{appends} appends for {batches} batches: no grouping");

    // A full refresh is built from the same small batches, grouped the same way.
    let (status, answer) = app.post("/api/v1/refresh", r#"{"topic":"prices"}"#).await;
    assert_eq!(status, 202, "{answer}");
    let stats = app.wait_for("/api/v1/stats", "the refresh", |stats| refreshes_completed(stats) == 1).await;
    assert_eq!(stats["recent_refreshes"][0]["n_records"].as_u64(), Some(TOTAL));
    let refresh_batches = counter(&app, "batches_received").await - batches;
    let refresh_appends = counter(&app, "appends").await - appends;
    eprintln!("refresh: {refresh_batches} batches in {refresh_appends} appends");
    assert!(refresh_batches >= TOTAL / BATCH_RECORDS as u64, "{refresh_batches} batches in the refresh");
    assert!(
        refresh_appends * 2 <= refresh_batches,
        "{refresh_appends} appends for {refresh_batches} batches"
    );

    let (status, page) = app.get(&format!("/api/v1/topics/prices/messages?limit=5&from={}", TOTAL - 5)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(common::offsets(&page), (TOTAL - 5..TOTAL).collect::<Vec<_>>());
    app.stop().await;
    common::check_copy(data.path(), "prices", TOTAL);
    broker.stop().await;
}
