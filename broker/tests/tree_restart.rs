//! Crash and restart mid-stream: L2 and then the POS are killed (-9) while 100,000 records stream, and
//! restarted on the same data directory. Each recovers its log and resumes from its own last durable
//! offset; every node below holds every offset exactly once, and the TCP consumer on LOCAL gets them all.

mod tree;

use serde_json::json;
use tree::{BackgroundConsumer, Tree, wait_until};

/// A node's end offset for `topic`, if it answers.
async fn end_of(tree: &Tree, id: &str, topic: &str) -> Option<u64> {
    tree.get(id, &format!("/api/v1/topics/{topic}")).await.and_then(|info| info["end_offset"].as_u64())
}

/// The offset of `orders` in the first "streaming" log line: where the pipe resumed.
fn resumed_offset(log: &str) -> Option<u64> {
    let line = log.lines().find(|line| line.contains("the pipe is streaming"))?;
    let start = line.find("orders@")? + "orders@".len();
    let digits: String = line[start..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Waits until a node holds at least `end` records of `topic`.
async fn wait_at_least(tree: &Tree, id: &str, topic: &str, end: u64) {
    wait_until(&format!("{id} holds {end} records of {topic}"), || async {
        end_of(tree, id, topic).await.is_some_and(|held| held >= end)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_nodes_recover_and_resume_without_loss_or_duplicates() {
    let mut tree = Tree::new();
    tree.start_registry("registry.sqlite").await;
    tree.add_started("root", "root", &[]).await;
    for (id, level, parent) in
        [("l2", "l2", "root"), ("l3", "l3", "l2"), ("pos", "pos", "l3"), ("local", "local", "pos")]
    {
        tree.add_started(id, level, &[]).await;
        tree.wait_streaming(id, Some(parent)).await;
    }
    let consumer = BackgroundConsumer::start(tree.nodes["local"].tcp, "till-app", "orders").await;
    let inject_url = format!("http://{}/test/inject-messages", tree.http_of("root"));
    let http = tree.http.clone();
    let injecting = tokio::spawn(async move {
        for _ in 0..10 {
            let body = json!({"topic": "orders", "count": 10_000, "size": 100});
            let response = http.post(&inject_url).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 200);
        }
    });

    for (victim, below, at) in [("l2", "pos", 20_000), ("pos", "local", 60_000)] {
        wait_at_least(&tree, below, "orders", at).await;
        let before = end_of(&tree, victim, "orders").await;
        tree.kill(victim);
        println!("{victim} killed (-9) holding about {before:?} records; restarting it on the same data");
        tree.start(victim).await;
        tree.wait_streaming(victim, None).await;
    }
    injecting.await.unwrap();

    let reference = tree.range("root", "orders").await;
    assert_eq!(reference.end_offset, 100_000);
    println!("    root: {reference}");
    for id in ["l2", "l3", "pos", "local"] {
        tree.wait_copy(id, "orders", &reference.uid, 100_000).await;
        tree.assert_same_copy(id, "orders", &reference).await;
    }
    let copy = consumer.wait_for(&reference.uid, 100_000).await;
    println!("consumer on LOCAL: {copy:?}");
    assert_eq!((copy.n_records, copy.gaps), (100_000, 0), "{copy:?}");
    // Each restarted node resumed from its own recovered end, with no full refresh.
    for victim in ["l2", "pos"] {
        let log = tree.log_of(victim);
        let after_restart = &log[log.rfind("broker started").expect("a start line")..];
        let resumed = resumed_offset(after_restart).unwrap_or_else(|| panic!("{victim}: no resume line"));
        println!("{victim} resumed from its own offset {resumed}");
        assert!(resumed > 0, "{victim} started over");
        assert!(!after_restart.contains("full refresh"), "{victim} was refreshed:\n{after_restart}");
    }
    tree.assert_all_running();
}
