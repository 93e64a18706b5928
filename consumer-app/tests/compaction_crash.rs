//! kill -9 of the real consumer-app binary while it compacts its copy of a compacted topic: small segments
//! and a slow `CONSUMER_COMPACTION_RATE` make a pass take a while; the app is killed while a rewritten
//! group's `.compact` file exists (mid-way through a pass), while a later group's does (one switched in
//! before it), and twice the moment one is renamed in (right after a switch), restarted on the same data
//! directory, and once its compaction has run again every key of the model is checked through the key API,
//! the key list matches the model's live keys, the copy's records replay to the model with offsets strictly
//! rising, and no `.compact` file is left over.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{AppProcess, Model, WAIT, check_keys, listed_keys, live};
use serde_json::{Value, json};
use testkit::TestBroker;
use testkit::compaction::{Moment, compact_files, wait_for_moment};

/// The topic.
const TOPIC: &str = "prices";

/// Keys updated by every round.
const KEYS: u64 = 300;

/// Records in one round of updates (about 1 MB).
const ROUND: u64 = 1_000;

/// The app's settings: small segments and a slow, frequent compaction of its own copy.
const APP_ENV: [(&str, &str); 4] = [
    ("CONSUMER_TOPICS", TOPIC),
    ("CONSUMER_SEGMENT_BYTES", "64K"),
    ("CONSUMER_COMPACTION_INTERVAL", "200ms"),
    ("CONSUMER_COMPACTION_RATE", "2M"),
];

/// Publishes round `round`: `ROUND` updates over `KEYS` keys with values of about 1 KB, one in 7 a
/// tombstone, in batches of 100, then a sentinel key whose value names the round.
async fn publish_round(broker: &TestBroker, model: &mut Model, round: u64) {
    let mut batch = Vec::new();
    for i in 0..ROUND {
        let key = format!("item-{}", (i * 7 + round) % KEYS);
        if i % 7 == 3 {
            batch.push(json!({"key": key, "tombstone": true}));
            model.insert(key, None);
        } else {
            let value = format!("price {round}-{i} {}", "x".repeat(1_000));
            batch.push(json!({"key": key, "value_text": value}));
            model.insert(key, Some(value));
        }
        if batch.len() == 100 {
            broker.publish(TOPIC, Value::Array(std::mem::take(&mut batch))).await;
        }
    }
    let sentinel = format!("round {round}");
    broker.publish(TOPIC, json!({"key": "sentinel", "value_text": sentinel})).await;
    model.insert("sentinel".to_string(), Some(sentinel));
}

/// The directory of the topic's generations in the app's copy.
fn topic_root(data_dir: &Path) -> PathBuf {
    consumer_app::copy::store_dir(data_dir).join("topics").join(TOPIC)
}

/// Waits until the app has indexed round `round`'s sentinel.
async fn wait_for_round(app: &AppProcess, round: u64) {
    let expected = format!("round {round}");
    app.wait_for(
        &format!("/api/v1/topics/{TOPIC}/keys/sentinel"),
        &format!("round {round} indexed"),
        |body| body["value_text"].as_str() == Some(expected.as_str()),
    )
    .await;
}

/// Publishes rounds until the app writes a `.compact` file, then kills it (-9) at `moment`. Answers the
/// `.compact` files left on disk (with their inodes). Bounded: at most 10 rounds, each watched for at most
/// [`WAIT`] / 4.
async fn kill_during_compaction(
    broker: &TestBroker,
    app: AppProcess,
    data_dir: &Path,
    model: &mut Model,
    round: &mut u64,
    moment: Moment,
) -> Vec<(PathBuf, u64)> {
    let topic_root = topic_root(data_dir);
    // The first `.compact` file seen, when waiting for a later one.
    let mut first = Vec::new();
    for _ in 0..10 {
        *round += 1;
        publish_round(broker, model, *round).await;
        if let Some(seen) = wait_for_moment(&topic_root, moment, &mut first, WAIT / 4, || {}).await {
            app.kill9();
            let left = compact_files(&topic_root);
            println!("app killed (-9) {moment:?} after round {round}, seen {seen:?}, left {left:?}");
            return left;
        }
    }
    panic!("the app never wrote a .compact file in 10 rounds");
}

/// Restarts the app, waits until it holds round `round` and its compaction ran again with no `.compact`
/// file there: the ones left at the kill were deleted by recovery (the same inode is never seen again).
async fn restart_and_compact(
    broker: &TestBroker,
    data_dir: &Path,
    left: &[(PathBuf, u64)],
    round: u64,
) -> AppProcess {
    let app = AppProcess::start(broker.consumers, data_dir, &APP_ENV).await;
    let remaining = compact_files(&topic_root(data_dir));
    assert!(
        !remaining.iter().any(|file| left.contains(file)),
        "recovery kept a leftover .compact file: {remaining:?}"
    );
    wait_for_round(&app, round).await;
    let deadline = Instant::now() + WAIT;
    while app.metric("consumer_app_compaction_passes_total").await == 0
        || !compact_files(&topic_root(data_dir)).is_empty()
    {
        assert!(Instant::now() < deadline, "the app never compacted its copy after the restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app
}

/// Checks the app's copy against the model: every key through `GET keys/{key}` (a live key's value, a
/// deleted key's 404 `deleted` or `unknown_key`), the key list is exactly the live keys, and the records
/// replay to the model with offsets strictly rising.
async fn check_copy(app: &AppProcess, model: &Model) {
    check_keys(app, TOPIC, model).await;

    let listed = listed_keys(app, TOPIC).await;
    assert_eq!(listed, live(model), "the key list differs from the model's live keys");

    // The records, replayed front to back.
    let mut replayed = Model::new();
    let (mut next, mut last, mut n_records) = (Some(0u64), None, 0u64);
    let (_, stats) = app.get("/api/v1/stats").await;
    let position = stats["topics"][TOPIC]["position"].as_u64().unwrap();
    for _ in 0..=position {
        let Some(from) = next else { break };
        let (status, page) =
            app.get(&format!("/api/v1/topics/{TOPIC}/messages?from={from}&limit=1000")).await;
        assert_eq!(status, 200, "{page}");
        for record in page["messages"].as_array().unwrap() {
            let offset = record["offset"].as_u64().unwrap();
            assert!(last.is_none_or(|last| offset > last), "offset {offset} after {last:?}");
            last = Some(offset);
            n_records += 1;
            let key = record["key"].as_str().unwrap().to_string();
            let value =
                (record["tombstone"] != true).then(|| record["value_text"].as_str().unwrap().to_string());
            replayed.insert(key, value);
        }
        next = page["next"].as_u64();
    }
    assert!(next.is_none(), "the messages did not end");
    assert!(replayed.keys().all(|key| model.contains_key(key)), "a key nobody published");
    assert_eq!(live(&replayed), live(model), "the copy's records replay to other live keys");
    println!("app: {n_records} records up to {position}, {} live keys", listed.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_compaction_of_the_apps_copy_leaves_a_correct_copy() {
    let broker = TestBroker::start_with(|config| {
        config.segment_bytes = 64 * 1024;
        config.compaction_interval = Duration::from_millis(100);
        config.compaction_rate = 0;
        config.group_commit_interval = Duration::from_millis(5);
    })
    .await;
    let (status, answer) =
        broker.put("/api/v1/topics/prices", r#"{"cleanup": "compact", "tombstone_retention": "1s"}"#).await;
    assert_eq!(status, 201, "{answer}");
    let data = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let mut round = 0;
    let mut app = AppProcess::start(broker.consumers, data.path(), &APP_ENV).await;
    for _ in 0..3 {
        round += 1;
        publish_round(&broker, &mut model, round).await;
    }
    wait_for_round(&app, round).await;

    for moment in [Moment::MidWay, Moment::AfterRename, Moment::LaterGroup, Moment::AfterRename] {
        let left = kill_during_compaction(&broker, app, data.path(), &mut model, &mut round, moment).await;
        app = restart_and_compact(&broker, data.path(), &left, round).await;
        check_copy(&app, &model).await;
    }
    app.stop().await;
    assert!(compact_files(&topic_root(data.path())).is_empty(), "a .compact file outlived the app");
    broker.stop().await;
}
