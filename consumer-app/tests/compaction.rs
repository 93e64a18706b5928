//! A compacted topic through the real consumer-app binary syncing from a real broker: the app compacts
//! its own copy and its key API still answers every key as the model says; stopped while keys are deleted
//! and the broker's delete horizon moves past it, it comes back to a full refresh and no longer serves the
//! deleted keys (their tombstones were dropped: `unknown_key`).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{AppProcess, Model, check_keys, listed_keys};
use serde_json::{Value, json};
use testkit::TestBroker;

/// The app's settings: small segments and frequent compaction of its own copy.
const APP_ENV: [(&str, &str); 4] = [
    ("CONSUMER_TOPICS", "prices"),
    ("CONSUMER_SEGMENT_BYTES", "16K"),
    ("CONSUMER_COMPACTION_INTERVAL", "100ms"),
    ("CONSUMER_COMPACTION_RATE", "0"),
];

/// Publishes `n` updates over `keys` keys (one in `delete_every` a tombstone, 0 for none), then a sentinel
/// key whose value says the round is done.
async fn publish(broker: &TestBroker, model: &mut Model, round: u64, n: u64, keys: u64, delete_every: u64) {
    let mut batch = Vec::new();
    for i in 0..n {
        let key = format!("item-{}", i % keys);
        if delete_every > 0 && i % delete_every == 1 {
            batch.push(json!({"key": key, "tombstone": true}));
            model.insert(key, None);
        } else {
            let value = format!("price {round}-{i}");
            batch.push(json!({"key": key, "value_text": value}));
            model.insert(key, Some(value));
        }
        if batch.len() == 100 || i + 1 == n {
            broker.publish("prices", Value::Array(std::mem::take(&mut batch))).await;
        }
    }
    broker.publish("prices", json!({"key": "sentinel", "value_text": format!("round {round}")})).await;
}

/// Waits until the app has indexed round `round`'s sentinel.
async fn wait_for_round(app: &AppProcess, round: u64) {
    let expected = format!("round {round}");
    app.wait_for("/api/v1/topics/prices/keys/sentinel", &format!("round {round} indexed"), |body| {
        body["value_text"].as_str() == Some(expected.as_str())
    })
    .await;
}

/// The model's live keys and values, with the sentinel the app also lists.
fn live_with_sentinel(model: &Model, round: u64) -> BTreeMap<String, String> {
    let mut live = common::live(model);
    live.insert("sentinel".to_string(), format!("round {round}"));
    live
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_compacts_its_copy_and_comes_back_across_the_delete_horizon_without_the_deleted_keys() {
    let broker = TestBroker::start_with(|config| {
        config.segment_bytes = 16 * 1024;
        config.compaction_interval = Duration::from_millis(100);
        config.compaction_rate = 0;
        config.group_commit_interval = Duration::from_millis(5);
    })
    .await;
    let (status, answer) = broker
        .put("/api/v1/topics/prices", r#"{"cleanup": "compact", "tombstone_retention": "300ms"}"#)
        .await;
    assert_eq!(status, 201, "{answer}");
    let data = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    // Half the keys stop changing half way, so their latest records end up inside compacted ranges.
    // The first half ends with the sentinel of round 0, so waiting for round 1 waits for both halves.
    publish(&broker, &mut model, 0, 1_500, 50, 0).await;
    publish(&broker, &mut model, 1, 1_500, 25, 0).await;
    let app = AppProcess::start(broker.consumers, data.path(), &APP_ENV).await;
    wait_for_round(&app, 1).await;
    assert_eq!(check_keys(&app, "prices", &model).await, 0);
    assert_eq!(listed_keys(&app, "prices").await, live_with_sentinel(&model, 1));
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while app.metric("consumer_app_compaction_passes_total").await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the app never compacted its copy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check_keys(&app, "prices", &model).await;
    let (_, stats) = app.get("/api/v1/stats").await;
    let position = stats["topics"]["prices"]["position"].as_u64().unwrap();
    app.stop().await;

    // While the app is away, a third of the keys are deleted, the tombstones run out and ROOT drops them.
    publish(&broker, &mut model, 2, 2_000, 50, 3).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    publish(&broker, &mut model, 3, 2_000, 50, 0).await;
    let log = broker.node.store.topic("prices").unwrap();
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while log.delete_horizon() <= position {
        assert!(tokio::time::Instant::now() < deadline, "the delete horizon never passed the app");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Round 3 publishes every key again; delete some for good, after the horizon moved.
    let deleted: Vec<String> = (0..50).step_by(5).map(|key| format!("item-{key}")).collect();
    let tombstones: Vec<Value> = deleted.iter().map(|key| json!({"key": key, "tombstone": true})).collect();
    broker.publish("prices", Value::Array(tombstones)).await;
    for key in &deleted {
        model.insert(key.clone(), None);
    }
    broker.publish("prices", json!({"key": "sentinel", "value_text": "round 4"})).await;

    let app = AppProcess::start(broker.consumers, data.path(), &APP_ENV).await;
    wait_for_round(&app, 4).await;
    check_keys(&app, "prices", &model).await;
    assert_eq!(listed_keys(&app, "prices").await, live_with_sentinel(&model, 4));
    let (_, stats) = app.get("/api/v1/stats").await;
    let refreshes = stats["recent_refreshes"].as_array().unwrap();
    assert!(!refreshes.is_empty(), "the app came back to a full refresh: {stats}");

    // Once the last tombstones run out and the copy compacts, deleted keys are unknown to it.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        if check_keys(&app, "prices", &model).await == deleted.len() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the app's copy never dropped the tombstones");
        broker.publish("prices", json!({"key": "filler", "value_text": "x".repeat(2000)})).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}
