//! Compacted topics in a tree, in-process: ROOT and a child broker both compact their copies of a
//! `cleanup=compact` topic in the background (checked key by key against a model), the child follows the
//! compacted ranges its parent serves, and a consumer group that was away while the delete horizon moved
//! past it comes back to a full refresh that no longer holds the deleted keys.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use broker::config::Level;
use client::Event;
use common::{Groups, TestBroker, next_event, start, wait_until};
use protocol::RecordView;
use protocol::frame::StartPosition;
use serde_json::{Value, json};

/// What a copy says of each key: its latest value, or `None` once deleted.
type State = BTreeMap<String, Option<String>>;

/// Small segments and frequent compaction, so that a few thousand records compact several times.
fn compacting(config: &mut broker::config::Config) {
    config.segment_bytes = 16 * 1024;
    config.compaction_interval = Duration::from_millis(100);
    config.compaction_rate = 0;
}

/// The live keys of `state` (deleted keys left out).
fn live(state: &State) -> BTreeMap<String, String> {
    state.iter().filter_map(|(key, value)| Some((key.clone(), value.clone()?))).collect()
}

/// What the node's copy of `topic` says, replayed front to back, checking offsets rise.
fn state_of(node: &TestBroker, topic: &str) -> (State, u64) {
    let log = node.node.store.topic(topic).expect("the topic exists");
    let mut state = State::new();
    let (mut at, mut n_records, mut last) = (log.log_start(), 0, None);
    while at < log.readable_offset() {
        let chunk = log.read(at, 1000, 1 << 20).unwrap();
        if chunk.is_empty() {
            break;
        }
        for record in chunk.iter() {
            let record = record.unwrap();
            assert!(last.is_none_or(|last| record.offset() > last), "offsets rise");
            last = Some(record.offset());
            n_records += 1;
            let key = String::from_utf8_lossy(record.key()).into_owned();
            let value =
                (!record.is_tombstone()).then(|| String::from_utf8_lossy(record.value()).into_owned());
            state.insert(key, value);
        }
        at = chunk.next_offset;
    }
    (state, n_records)
}

/// Publishes `n` updates over `keys` keys at ROOT in batches of 100; one update in 7 deletes its key.
async fn publish(root: &TestBroker, model: &mut State, from: u64, n: u64, keys: u64) {
    let mut batch = Vec::new();
    for i in from..from + n {
        let key = format!("item-{}", i % keys);
        if i % 7 == 3 {
            batch.push(json!({"key": key, "tombstone": true}));
            model.insert(key, None);
        } else {
            let value = format!("price {i}");
            batch.push(json!({"key": key, "value_text": value}));
            model.insert(key, Some(value));
        }
        if batch.len() == 100 || i + 1 == from + n {
            let (status, answer) =
                root.post("/api/v1/topics/prices/messages", &Value::Array(std::mem::take(&mut batch))).await;
            assert_eq!(status, 200, "{answer}");
        }
    }
}

/// A counter of the node's `/metrics`.
async fn counter(node: &TestBroker, name: &str) -> u64 {
    testkit::metric(&reqwest::get(node.url("/metrics")).await.unwrap().text().await.unwrap(), name)
}

/// The node's compaction passes so far.
async fn compaction_passes(node: &TestBroker) -> u64 {
    counter(node, "relay_compaction_passes_total").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_and_child_compact_and_a_group_below_the_delete_horizon_is_refreshed() {
    let root = TestBroker::start_with(compacting).await;
    let (status, answer) =
        root.put("/api/v1/topics/prices", r#"{"cleanup": "compact", "tombstone_retention": "300ms"}"#).await;
    assert_eq!(status, 201, "{answer}");
    let parent_url = root.http.to_string();
    let child = TestBroker::start_with(|config| {
        compacting(config);
        config.level = Level::L2;
        config.node_id = "l2-compacting".into();
        config.parent_url = Some(parent_url);
        config.pipe_heartbeat = Duration::from_millis(200);
    })
    .await;

    // A till takes the first updates and goes away.
    let mut model = State::new();
    publish(&root, &mut model, 0, 200, 40).await;
    let (mut till, _) = root.consumer("till", vec![start("prices", StartPosition::Earliest)]).await;
    let mut next = 0;
    while next < 200 {
        if let Event::Batch(batch) = next_event(&mut till).await {
            next = batch.last_offset + 1;
            till.ack("prices", next).await.unwrap();
        }
    }
    root.wait_committed("till", "prices", 200).await;
    drop(till);

    // Many more updates; the tombstones of the first ones run out and compaction drops them.
    publish(&root, &mut model, 200, 5_000, 40).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    publish(&root, &mut model, 5_200, 1_000, 40).await;
    let end = root.node.store.topic("prices").unwrap().next_offset();
    wait_until("ROOT dropped a tombstone past the till", || async {
        root.node.store.topic("prices").unwrap().delete_horizon() > 200
    })
    .await;
    wait_until("the child holds everything", || async {
        child.node.store.topic("prices").is_some_and(|log| log.next_offset() == end)
    })
    .await;
    wait_until("the child compacted", || async { compaction_passes(&child).await > 0 }).await;
    assert!(compaction_passes(&root).await > 0);

    // Both copies say what the model says, key by key, in far fewer records than were published.
    for node in [&root, &child] {
        let (state, n_records) = state_of(node, "prices");
        assert_eq!(live(&state), live(&model), "{}", node.node.config.node_id);
        assert!(n_records < end / 3, "{}: {n_records} records of {end}", node.node.config.node_id);
    }

    // The till comes back: it is below ROOT's delete horizon, so it gets the compacted copy whole.
    let (mut till, _) = root.consumer("till", vec![start("prices", StartPosition::Committed)]).await;
    let reset = loop {
        match next_event(&mut till).await {
            Event::Reset(reset) => break reset,
            Event::Batch(batch) => panic!("a batch from {} before the refresh", batch.first_offset),
            _ => {}
        }
    };
    let mut refreshed = State::new();
    loop {
        match next_event(&mut till).await {
            Event::Batch(batch) => {
                let checked = protocol::CheckedBatch::check(batch).unwrap();
                for record in checked.iter() {
                    let record: RecordView<'_> = record;
                    let key = String::from_utf8_lossy(record.key()).into_owned();
                    let value = (!record.is_tombstone())
                        .then(|| String::from_utf8_lossy(record.value()).into_owned());
                    refreshed.insert(key, value);
                }
                till.ack("prices", checked.next_offset()).await.unwrap();
            }
            Event::Ready(ready) => {
                assert_eq!(ready.end_offset, reset.end_offset);
                break;
            }
            _ => {}
        }
    }
    assert_eq!(live(&refreshed), live(&model));
    child.stop().await;
    root.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_compacted_segment_on_a_relay_is_replaced_by_a_full_refresh() {
    let root = TestBroker::start_with(compacting).await;
    let (status, answer) = root.put("/api/v1/topics/prices", r#"{"cleanup": "compact"}"#).await;
    assert_eq!(status, 201, "{answer}");
    let parent_url = root.http.to_string();
    let child = TestBroker::start_with(|config| {
        compacting(config);
        config.level = Level::L2;
        config.node_id = "l2-damaged".into();
        config.parent_url = Some(parent_url);
        config.pipe_heartbeat = Duration::from_millis(200);
    })
    .await;
    let mut model = State::new();
    publish(&root, &mut model, 0, 4_000, 60).await;
    let end = root.node.store.topic("prices").unwrap().next_offset();
    wait_until("the child holds everything", || async {
        child.node.store.topic("prices").is_some_and(|log| log.next_offset() == end)
    })
    .await;
    wait_until("the child compacted", || async { compaction_passes(&child).await > 0 }).await;

    // One byte of a compacted segment on the child's disk flips.
    let log = child.node.store.topic("prices").unwrap();
    let sealed =
        log.segments().into_iter().find(|segment| segment.sealed && segment.size_bytes > 1000).unwrap();
    let path = sealed.path.clone();
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    drop(log);
    let refreshes = counter(&child, "relay_pipe_refreshes_total").await;

    // The scrub finds it, the parent's records differ, and a full refresh replaces the copy.
    wait_until("the child's copy was replaced by a full refresh", || async {
        let Some(log) = child.node.store.topic("prices") else { return false };
        counter(&child, "relay_pipe_refreshes_total").await > refreshes
            && log.damaged_segments().is_empty()
            && log.next_offset() == end
    })
    .await;
    assert!(std::fs::metadata(&path).is_err(), "the damaged copy is gone");
    let (state, _) = state_of(&child, "prices");
    assert_eq!(live(&state), live(&model));
    child.stop().await;
    root.stop().await;
}
