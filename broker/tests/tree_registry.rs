//! The registry down: stopped mid-stream, the tree keeps relaying; a POS whose parent dies meanwhile moves
//! to the alternate it cached in `topology.json`; the registry, started again with its state lost, sees
//! every live node register again (`GET /api/v1/topology`).

mod tree;

use std::time::Instant;

use serde_json::{Value, json};
use tree::{Tree, wait_until};

/// Waits until a node holds at least `end` records of `topic`.
async fn wait_at_least(tree: &Tree, id: &str, topic: &str, end: u64) {
    wait_until(&format!("{id} holds {end} records of {topic}"), || async {
        let Some(info) = tree.get(id, &format!("/api/v1/topics/{topic}")).await else { return false };
        info["end_offset"].as_u64().is_some_and(|held| held >= end)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tree_keeps_relaying_without_the_registry_and_registers_again() {
    let mut tree = Tree::new();
    let (first_parent, other) = tree.start_two_l3s().await;
    let other = other.as_str();
    // The POS has cached its parent and the alternate.
    let cache = tree.nodes["pos"].data_dir.join("topology.json");
    wait_until("the POS caches both L3s", || async {
        let Ok(text) = std::fs::read_to_string(&cache) else { return false };
        let Ok(cached) = serde_json::from_str::<Value>(&text) else { return false };
        cached["parent"]["id"] == first_parent.as_str() && cached["alternates"][0]["id"] == other
    })
    .await;

    let inject_url = format!("http://{}/test/inject-messages", tree.http_of("root"));
    let http = tree.http.clone();
    let injecting = tokio::spawn(async move {
        for _ in 0..6 {
            let body = json!({"topic": "catalog", "count": 10_000, "size": 100});
            let response = http.post(&inject_url).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 200);
        }
    });
    wait_at_least(&tree, "pos", "catalog", 10_000).await;
    let status = tree.registry.take().unwrap().terminate();
    assert!(status.success(), "{status}");
    wait_until("the POS notices the registry is gone", || async {
        tree.get("pos", "/api/v1/node").await.is_some_and(|node| node["registry"]["reachable"] == false)
    })
    .await;
    wait_at_least(&tree, "pos", "catalog", 30_000).await;
    tree.kill(&first_parent);
    let killed = Instant::now();
    tree.wait_streaming("pos", Some(other)).await;
    println!(
        "registry down: the POS moved from {first_parent} to its cached alternate {other} in {:?}",
        killed.elapsed()
    );
    injecting.await.unwrap();
    let log = tree.log_of("pos");
    assert!(log.contains("using the known candidates"), "the POS did not fall back on its cache:\n{log}");

    let reference = tree.range("root", "catalog").await;
    assert_eq!(reference.end_offset, 60_000);
    println!("    root: {reference}");
    for id in ["l2", other, "pos"] {
        tree.wait_copy(id, "catalog", &reference.uid, 60_000).await;
        tree.assert_same_copy(id, "catalog", &reference).await;
    }

    // The registry comes back having lost its state: every live node registers again.
    tree.start_registry("registry-after-loss.sqlite").await;
    let topology_url = format!("{}/api/v1/topology", tree.registry_url());
    wait_until("every live node is registered again, under its parent", || async {
        let Some(topology) = tree.get_url(&topology_url).await else { return false };
        let parents: Vec<(String, Value)> = topology["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|node| (node["id"].as_str().unwrap().to_string(), node["parent"].clone()))
            .collect();
        let expected = [
            ("l2".to_string(), json!("root")),
            (other.to_string(), json!("l2")),
            ("pos".to_string(), json!(other)),
            ("root".to_string(), Value::Null),
        ];
        parents.len() == 4 && expected.iter().all(|entry| parents.contains(entry))
    })
    .await;
    let history = tree.get_url(&format!("{}/api/v1/topology/history", tree.registry_url())).await.unwrap();
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|event| event["kind"] == "registered" && event["node"] == "pos")
    );
    tree.assert_all_running();
}
