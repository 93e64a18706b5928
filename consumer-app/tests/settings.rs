//! Topic settings reach the consumer-app's copy: set at ROOT before the app connects (kept for a topic
//! until its first records are stored), changed while it streams, shown in its topic list and stats, and
//! kept across its restart.

mod common;

use common::{AppProcess, start_broker};
use serde_json::{Value, json};

/// Waits until the app's stats show `expected` as the settings of `topic`.
async fn wait_for_settings(app: &AppProcess, topic: &str, expected: &Value) -> Value {
    let what = format!("{topic} has settings {expected}");
    app.wait_for("/api/v1/stats", &what, |stats| stats["topics"][topic]["settings"] == *expected).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_set_at_root_reach_the_copy_and_follow_changes() {
    let broker = start_broker().await;
    let data = tempfile::tempdir().unwrap();
    let (status, _) =
        broker.put("/api/v1/topics/prices", r#"{"cleanup": "compact", "tombstone_retention": "1d"}"#).await;
    assert_eq!(status, 201);
    broker.publish("prices", json!({"key": "AAPL", "value": 100})).await;
    let app = AppProcess::start(broker.consumers, data.path(), &[("CONSUMER_TOPICS", "prices")]).await;
    let compact = json!({"explicit": true, "cleanup": "compact", "retention_bytes": null,
        "retention_age_ms": null, "tombstone_retention_ms": 86_400_000u64});
    wait_for_settings(&app, "prices", &compact).await;
    let (_, topics) = app.get("/api/v1/topics").await;
    assert_eq!(topics[0]["settings"], compact);

    // A change at ROOT while the app streams.
    let (status, _) =
        broker.put("/api/v1/topics/prices", r#"{"retention_bytes": "1G", "retention_age": "7d"}"#).await;
    assert_eq!(status, 200);
    let deleting = json!({"explicit": true, "cleanup": "delete", "retention_bytes": 1u64 << 30,
        "retention_age_ms": 7 * 86_400_000u64, "tombstone_retention_ms": null});
    wait_for_settings(&app, "prices", &deleting).await;
    broker.publish("prices", json!({"key": "MSFT", "value": 101})).await;
    app.wait_for_position("prices", 2).await;

    // Kept across a restart of the app, with the broker gone.
    app.stop().await;
    let broker_addr = broker.consumers;
    broker.stop().await;
    let app = AppProcess::start(broker_addr, data.path(), &[("CONSUMER_TOPICS", "prices")]).await;
    let (_, stats) = app.get("/api/v1/stats").await;
    assert_eq!(stats["topics"]["prices"]["settings"], deleting);
    app.stop().await;
}
