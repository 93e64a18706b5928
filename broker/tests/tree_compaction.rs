//! kill -9 during compaction, on ROOT and on an L2 child, as real processes: small segments and a slow
//! `--compaction-rate` make a pass over a compacted topic take a while. Each node is killed while a
//! rewritten group's `.compact` file exists (mid-way through a pass), while a later group's does (one
//! switched in before it), and twice the moment one is renamed in (right after a switch), restarted on the
//! same data directory, and once its compaction has run again, its copy is read back through the HTTP API
//! record by record: it replays to exactly the model's live keys and values (a deleted key absent or a
//! tombstone), offsets strictly rising, nothing doubled, and no `.compact` file is left over.

mod tree;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};
use testkit::compaction::{Moment, compact_files, wait_for_moment};
use testkit::metric;
use tree::{DEADLINE, Tree, wait_until};

/// The topic.
const TOPIC: &str = "prices";

/// Keys updated by every round.
const KEYS: u64 = 300;

/// Records in one round of updates (about 1 MB).
const ROUND: u64 = 1_000;

/// Small segments and a slow, frequent compaction, so that a pass over a few MB takes seconds.
const COMPACTING: [&str; 6] =
    ["--segment-bytes", "64K", "--compaction-rate", "2M", "--compaction-interval", "200ms"];

/// What a copy says of each key: its latest value, or `None` once deleted.
type State = BTreeMap<String, Option<String>>;

/// The live keys of `state` (deleted keys left out).
fn live(state: &State) -> BTreeMap<String, String> {
    state.iter().filter_map(|(key, value)| Some((key.clone(), value.clone()?))).collect()
}

/// Publishes round `round` at ROOT: `ROUND` updates over `KEYS` keys with values of about 1 KB, one in 7 a
/// tombstone, in batches of 100, then a sentinel key (so the log never ends on a tombstone).
async fn publish_round(tree: &Tree, model: &mut State, round: u64) {
    let url = format!("http://{}/api/v1/topics/{TOPIC}/messages", tree.http_of("root"));
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
            post(tree, &url, Value::Array(std::mem::take(&mut batch))).await;
        }
    }
    let sentinel = format!("round {round}");
    post(tree, &url, json!([{"key": "sentinel", "value_text": sentinel}])).await;
    model.insert("sentinel".to_string(), Some(sentinel));
}

/// POSTs a batch of records at ROOT.
async fn post(tree: &Tree, url: &str, body: Value) {
    let response = tree.http.post(url).json(&body).send().await.unwrap();
    let status = response.status();
    assert_eq!(status, 200, "publish: {}", response.text().await.unwrap_or_default());
}

/// The directory of the topic's generations in a node's data directory.
fn topic_root(tree: &Tree, id: &str) -> PathBuf {
    tree.nodes[id].data_dir.join("topics").join(TOPIC)
}

/// A node's compaction passes since it started, from `/metrics`.
async fn passes(tree: &Tree, id: &str) -> u64 {
    let url = format!("http://{}/metrics", tree.http_of(id));
    let Ok(response) = tree.http.get(url).send().await else { return 0 };
    metric(&response.text().await.unwrap_or_default(), "relay_compaction_passes_total")
}

/// A node's topic info.
async fn topic_info(tree: &Tree, id: &str) -> Value {
    tree.get(id, &format!("/api/v1/topics/{TOPIC}")).await.expect("the topic exists")
}

/// Publishes rounds at ROOT until `victim` writes a `.compact` file, then kills it (-9) at `moment`.
/// Answers the `.compact` files left on disk (with their inodes). Bounded: at most 10 rounds, each
/// watched for at most [`DEADLINE`] / 4.
async fn kill_during_compaction(
    tree: &mut Tree,
    victim: &str,
    model: &mut State,
    round: &mut u64,
    moment: Moment,
) -> Vec<(PathBuf, u64)> {
    let topic_root = topic_root(tree, victim);
    // The first `.compact` file seen, when waiting for a later one.
    let mut first = Vec::new();
    for _ in 0..10 {
        *round += 1;
        publish_round(tree, model, *round).await;
        let alive = || tree.assert_all_running();
        if let Some(seen) = wait_for_moment(&topic_root, moment, &mut first, DEADLINE / 4, alive).await {
            tree.kill(victim);
            let left = compact_files(&topic_root);
            println!("{victim} killed (-9) {moment:?} after round {round}, seen {seen:?}, left {left:?}");
            return left;
        }
    }
    panic!("{victim} never wrote a .compact file in 10 rounds");
}

/// Restarts `victim` and waits until its compaction ran again and no `.compact` file is there: the ones
/// left at the kill were deleted by recovery (the same inode is never seen again). Answers how many
/// segments recovery found replaced by a renamed-in compacted one (killed between the rename and their
/// deletion).
async fn restart_and_compact(tree: &mut Tree, victim: &str, left: &[(PathBuf, u64)]) -> usize {
    let before = tree.log_of(victim).len();
    tree.start(victim).await;
    let topic_root = topic_root(tree, victim);
    let remaining = compact_files(&topic_root);
    assert!(
        !remaining.iter().any(|file| left.contains(file)),
        "{victim}: recovery kept a leftover .compact file: {remaining:?}"
    );
    wait_until(&format!("{victim} compacted after its restart"), || async { passes(tree, victim).await > 0 })
        .await;
    wait_until(&format!("{victim} has no .compact file"), || async { compact_files(&topic_root).is_empty() })
        .await;
    let log = tree.log_of(victim);
    let covered = log[before..].matches("segment replaced by a compacted one").count();
    println!(
        "{victim} restarted: {covered} segments replaced by a renamed-in compacted one deleted by recovery"
    );
    covered
}

/// Reads a node's whole copy through `GET records` (JSON pages) and checks it against the model: offsets
/// strictly rising (so nothing doubled), and the replay holds exactly the model's live keys and values.
/// Answers the records read.
async fn check_copy(tree: &Tree, id: &str, model: &State) -> u64 {
    let info = topic_info(tree, id).await;
    let (log_start, end) = (info["log_start"].as_u64().unwrap(), info["end_offset"].as_u64().unwrap());
    let mut state = State::new();
    let (mut from, mut n_records, mut last) = (log_start, 0u64, None);
    // Each page holds at least one record, so the pages are fewer than the offsets.
    for _ in 0..=end - log_start {
        if from >= end {
            break;
        }
        let path = format!("/api/v1/topics/{TOPIC}/records?from={from}&limit=1000");
        let page = tree.get(id, &path).await.unwrap_or_else(|| panic!("{id}: no page at {from}"));
        let next = page["next"].as_u64().unwrap();
        assert!(next > from, "{id}: no progress at {from}: {page}");
        for record in page["records"].as_array().unwrap() {
            let offset = record["offset"].as_u64().unwrap();
            assert!(offset >= from && offset < next, "{id}: offset {offset} outside {from}..{next}");
            assert!(last.is_none_or(|last| offset > last), "{id}: offset {offset} after {last:?}");
            last = Some(offset);
            n_records += 1;
            let key =
                record["key"].as_str().unwrap_or_else(|| panic!("{id}: a record without a key at {offset}"));
            let value = if record["tombstone"] == true {
                None
            } else {
                Some(record["value_text"].as_str().unwrap_or_else(|| panic!("{id}: {record}")).to_string())
            };
            state.insert(key.to_string(), value);
        }
        from = next;
    }
    assert_eq!(from, end, "{id}: the pages did not reach the end");
    assert!(state.keys().all(|key| model.contains_key(key)), "{id}: a key nobody published");
    assert_eq!(live(&state), live(model), "{id}: the copy's live keys differ from the model's");
    println!("{id:>5}: {n_records} records in {log_start}..{end}, {} live keys", live(&state).len());
    n_records
}

/// Waits until `id` holds ROOT's copy up to ROOT's end.
async fn wait_caught_up(tree: &Tree, id: &str) {
    let root = topic_info(tree, "root").await;
    let uid = root["uid"].as_str().unwrap().to_string();
    tree.wait_copy(id, TOPIC, &uid, root["end_offset"].as_u64().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_compaction_on_root_and_on_a_child_leaves_correct_copies() {
    let mut tree = Tree::new();
    tree.add("root", "root", &COMPACTING);
    tree.start("root").await;
    let root_url = format!("http://{}", tree.http_of("root"));
    let mut child_args = vec!["--parent-url", &root_url];
    child_args.extend(COMPACTING);
    tree.add("l2", "l2", &child_args);
    tree.start("l2").await;
    let url = format!("http://{}/api/v1/topics/{TOPIC}", tree.http_of("root"));
    let body = json!({"cleanup": "compact", "tombstone_retention": "1s"});
    let response = tree.http.put(url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);

    let mut model = State::new();
    let mut round = 0;
    for _ in 0..3 {
        round += 1;
        publish_round(&tree, &mut model, round).await;
    }

    // ROOT at each of the moments; the child keeps running and follows.
    let mut covered = 0;
    for moment in [Moment::MidWay, Moment::AfterRename, Moment::LaterGroup, Moment::AfterRename] {
        let left = kill_during_compaction(&mut tree, "root", &mut model, &mut round, moment).await;
        covered += restart_and_compact(&mut tree, "root", &left).await;
        let n_root = check_copy(&tree, "root", &model).await;
        wait_caught_up(&tree, "l2").await;
        check_copy(&tree, "l2", &model).await;
        let published = round * (ROUND + 1);
        assert!(n_root < published, "ROOT never compacted: {n_root} records of {published}");
    }

    // The child at the same moments, while ROOT keeps running.
    for moment in [Moment::MidWay, Moment::AfterRename, Moment::LaterGroup, Moment::AfterRename] {
        let left = kill_during_compaction(&mut tree, "l2", &mut model, &mut round, moment).await;
        covered += restart_and_compact(&mut tree, "l2", &left).await;
        wait_caught_up(&tree, "l2").await;
        check_copy(&tree, "l2", &model).await;
        check_copy(&tree, "root", &model).await;
    }

    // Not asserted: whether a kill fell between a rename and the deletions it is followed by is luck.
    println!("in all, recovery deleted {covered} segments replaced by a renamed-in compacted one");
    for id in ["root", "l2"] {
        let topic_root = topic_root(&tree, id);
        wait_until(&format!("{id} has no .compact file"), || async { compact_files(&topic_root).is_empty() })
            .await;
        assert!(passes(&tree, id).await > 0);
    }
    tree.assert_all_running();
}
