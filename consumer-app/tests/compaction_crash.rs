//! kill -9 of the real consumer-app binary while it compacts its copy of a compacted topic: small segments
//! and a slow `CONSUMER_COMPACTION_RATE` make a pass take a while; the app is killed while a rewritten
//! group's `.compact` file exists (mid-way through a pass), while a later group's does (one switched in
//! before it), and twice the moment one is renamed in (right after a switch), restarted on the same data
//! directory, and once its compaction has run again every key of the model is checked through the key API,
//! the key list matches the model's live keys, the copy's records replay to the model with offsets strictly
//! rising, and no `.compact` file is left over.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{AppProcess, WAIT};
use serde_json::{Value, json};
use testkit::TestBroker;

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

/// Each key's latest value, or `None` once deleted.
type Model = BTreeMap<String, Option<String>>;

/// The live keys of `model` (deleted keys left out).
fn live(model: &Model) -> BTreeMap<String, String> {
    model.iter().filter_map(|(key, value)| Some((key.clone(), value.clone()?))).collect()
}

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

/// The `.compact` files of the topic's copy under the app's data directory, with their inodes.
fn compact_files(data_dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    let topic_root = consumer_app::copy::store_dir(data_dir).join("topics").join(TOPIC);
    let Ok(generations) = std::fs::read_dir(topic_root) else { return files };
    for generation in generations.flatten() {
        let Ok(entries) = std::fs::read_dir(generation.path()) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|extension| extension == "compact")
                && let Ok(metadata) = std::fs::metadata(&path)
            {
                files.push((path, metadata.ino()));
            }
        }
    }
    files
}

/// A counter from the app's `/metrics`.
async fn app_metric(app: &AppProcess, name: &str) -> u64 {
    let (_, page) = app.get_text("/metrics").await;
    page.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
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

/// When to kill the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    /// While a rewritten group's `.compact` file exists.
    MidWay,
    /// The moment a `.compact` file is gone again (renamed in, mostly).
    AfterRename,
    /// While a `.compact` file exists that is not the first one seen: a later group of a pass, with an
    /// earlier one switched in (or the first group of a later pass).
    LaterGroup,
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
    // The first `.compact` file seen, when waiting for a later one.
    let mut first = Vec::new();
    for _ in 0..10 {
        *round += 1;
        publish_round(broker, model, *round).await;
        let deadline = Instant::now() + WAIT / 4;
        while Instant::now() < deadline {
            let seen = compact_files(data_dir);
            if moment == Moment::LaterGroup && first.is_empty() {
                first = seen;
            } else if seen.iter().any(|file| !first.contains(file)) {
                if moment == Moment::AfterRename {
                    // Looked for without sleeping, to kill as close to the rename as possible.
                    let gone = Instant::now() + WAIT;
                    while compact_files(data_dir).iter().any(|file| seen.contains(file)) {
                        assert!(Instant::now() < gone, "the app never switched {seen:?} in");
                        tokio::task::yield_now().await;
                    }
                }
                app.kill9();
                let left = compact_files(data_dir);
                println!("app killed (-9) {moment:?} after round {round}, seen {seen:?}, left {left:?}");
                return left;
            }
            if first.is_empty() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            } else {
                // A later group's file may exist for a few milliseconds only: looked for without sleeping.
                tokio::task::yield_now().await;
            }
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
    let remaining = compact_files(data_dir);
    assert!(
        !remaining.iter().any(|file| left.contains(file)),
        "recovery kept a leftover .compact file: {remaining:?}"
    );
    wait_for_round(&app, round).await;
    let deadline = Instant::now() + WAIT;
    while app_metric(&app, "consumer_app_compaction_passes_total").await == 0
        || !compact_files(data_dir).is_empty()
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
    for (key, value) in model {
        let (status, body) = app.get(&format!("/api/v1/topics/{TOPIC}/keys/{key}")).await;
        match value {
            Some(value) => {
                assert_eq!(
                    (status, body["value_text"].as_str()),
                    (200, Some(value.as_str())),
                    "{key}: {body}"
                )
            }
            None => {
                assert_eq!(status, 404, "{key} was deleted: {body}");
                let error = body["error"].as_str();
                assert!(matches!(error, Some("deleted" | "unknown_key")), "{key}: {body}");
            }
        }
    }

    // The key list, page by page (bounded: each page but the last is full).
    let mut listed = BTreeMap::new();
    let mut after: Option<String> = None;
    for _ in 0..=model.len() / 100 + 1 {
        let path = match &after {
            Some(after) => format!("/api/v1/topics/{TOPIC}/keys?after={after}&limit=100"),
            None => format!("/api/v1/topics/{TOPIC}/keys?limit=100"),
        };
        let (status, page) = app.get(&path).await;
        assert_eq!(status, 200, "{page}");
        for record in page["keys"].as_array().unwrap() {
            let key = record["key"].as_str().unwrap().to_string();
            let value = record["value_text"].as_str().unwrap().to_string();
            assert!(listed.insert(key.clone(), value).is_none(), "{key} listed twice");
        }
        after = page["next_after"].as_str().map(ToString::to_string);
        if after.is_none() {
            break;
        }
    }
    assert!(after.is_none(), "the key list did not end");
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
    assert!(compact_files(data.path()).is_empty(), "a .compact file outlived the app");
    broker.stop().await;
}
