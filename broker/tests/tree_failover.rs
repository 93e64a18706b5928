//! Failover: two L3s under one L2. While 100,000 records stream, the POS's parent L3 is killed (-9); the
//! POS moves to the other L3 (asking the registry for a parent excluding the dead one) and ends with every
//! offset exactly once, as does the LOCAL below it. A parent that freezes instead (SIGSTOP: no reset, the
//! socket stays open) is noticed by the pipe's heartbeats. Both print how long the move took.

mod tree;

use std::time::Instant;

use serde_json::json;
use tree::{Tree, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pos_moves_to_the_other_l3_and_loses_nothing() {
    let mut tree = Tree::new();
    let (first_parent, other) = tree.start_two_l3s().await;
    let other = other.as_str();
    tree.add_started("local", "local", &[]).await;
    tree.wait_streaming("local", Some("pos")).await;

    // Stream 100,000 records in chunks from another task while the parent dies.
    let inject_url = format!("http://{}/test/inject-messages", tree.http_of("root"));
    let http = tree.http.clone();
    let injecting = tokio::spawn(async move {
        for _ in 0..10 {
            let body = json!({"topic": "stock", "count": 10_000, "size": 100});
            let response = http.post(&inject_url).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 200);
        }
    });
    wait_until("the POS holds 30,000 records", || async {
        let Some(info) = tree.get("pos", "/api/v1/topics/stock").await else { return false };
        info["end_offset"].as_u64().is_some_and(|end| end >= 30_000)
    })
    .await;
    let held_at_kill = tree.get("pos", "/api/v1/topics/stock").await.unwrap()["end_offset"].clone();
    tree.kill(&first_parent);
    let killed = Instant::now();
    tree.wait_streaming("pos", Some(other)).await;
    let moved = killed.elapsed();
    println!(
        "killed {first_parent} (-9) with the POS at offset {held_at_kill}; the POS streamed from {other} \
         {moved:?} later"
    );
    injecting.await.unwrap();
    let log = tree.log_of("pos");
    assert!(log.contains("the registry named another parent"), "the POS did not ask the registry:\n{log}");

    let reference = tree.range("root", "stock").await;
    assert_eq!(reference.end_offset, 100_000);
    println!("    root: {reference}");
    for id in [other, "pos", "local"] {
        tree.wait_copy(id, "stock", &reference.uid, 100_000).await;
        tree.assert_same_copy(id, "stock", &reference).await;
    }
    // The POS's heartbeats tell the registry where it is now.
    let node_url = format!("{}/api/v1/nodes/pos", tree.registry_url());
    wait_until("the registry records the POS under the other L3", || async {
        tree.get_url(&node_url)
            .await
            .is_some_and(|node| node["parent"] == other && node["stats"]["parent"] == other)
    })
    .await;
    tree.assert_all_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_parent_is_noticed_by_the_heartbeats() {
    let mut tree = Tree::new();
    let (first_parent, other) = tree.start_two_l3s().await;
    let other = other.as_str();
    tree.inject("root", "stock", 10_000, 100).await;
    let reference = tree.range("root", "stock").await;
    tree.wait_copy("pos", "stock", &reference.uid, 10_000).await;

    tree.freeze(&first_parent);
    let frozen = Instant::now();
    tree.wait_streaming("pos", Some(other)).await;
    println!(
        "froze {first_parent} (SIGSTOP, pipe heartbeat 300ms); the POS streamed from {other} {:?} later",
        frozen.elapsed()
    );
    let log = tree.log_of("pos");
    assert!(log.contains("the parent was silent"), "{log}");
    tree.inject("root", "stock", 10_000, 100).await;
    let reference = tree.range("root", "stock").await;
    tree.wait_copy("pos", "stock", &reference.uid, 20_000).await;
    tree.assert_same_copy("pos", "stock", &reference).await;
}
