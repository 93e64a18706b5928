//! Crash and restart mid-stream: every relaying level in turn (L2, L3, POS, LOCAL) is killed (-9) while
//! 100,000 records stream, loses what it had not flushed (as a power cut would), and is restarted on the
//! same data directory. A relay passes records on before its own flush, so its children and the TCP
//! consumer on LOCAL hold more than it recovers: they wait while it fetches its tail again from its parent,
//! and nobody is reset. Every node ends holding every offset exactly once, and the consumer gets them all.

mod tree;

use serde_json::json;
use tree::{BackgroundConsumer, Tree, lose_tail, wait_until};

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

    for (victim, below, at) in
        [("l2", "l3", 15_000), ("l3", "pos", 35_000), ("pos", "local", 55_000), ("local", "", 75_000)]
    {
        match below {
            "" => {
                wait_until("the consumer holds enough", || async { consumer.copy().next >= at }).await;
            }
            below => wait_at_least(&tree, below, "orders", at).await,
        }
        let info = tree.get(victim, "/api/v1/topics/orders").await.unwrap();
        let (end, durable) = (info["end_offset"].as_u64().unwrap(), info["durable_offset"].as_u64().unwrap());
        tree.kill(victim);
        lose_tail(&tree.nodes[victim].data_dir, "orders", durable);
        let ahead = match below {
            "" => consumer.copy().next,
            below => end_of(&tree, below, "orders").await.unwrap_or(0),
        };
        println!(
            "{victim} killed (-9) holding {end} records, {durable} flushed; its tail lost; below it {ahead} records"
        );
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
    assert_eq!((copy.n_records, copy.gaps, copy.refreshes), (100_000, 0, 0), "{copy:?}");
    assert!(copy.reconnects >= 1, "the consumer never lost LOCAL: {copy:?}");
    // Each restarted node resumed from its own recovered end, and nobody was refreshed.
    for victim in ["l2", "l3", "pos", "local"] {
        assert!(!tree.log_of(victim).contains("full refresh"), "{victim} was refreshed");
        let log = tree.log_of(victim);
        let after_restart = &log[log.rfind("broker started").expect("a start line")..];
        let resumed = resumed_offset(after_restart).unwrap_or_else(|| panic!("{victim}: no resume line"));
        println!("{victim} resumed from its own offset {resumed}");
        assert!(resumed > 0, "{victim} started over");
    }
    tree.assert_all_running();
}
