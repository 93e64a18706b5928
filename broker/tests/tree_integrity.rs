//! A flipped byte in a sealed segment, found by the background scrub or by a receiver that refuses it: a
//! relay repairs the range from its parent and everything below it ends identical to ROOT; ROOT (which holds
//! the only copy) never serves the damaged range, says so in one line and in a metric, and nobody below it
//! loops on the bad bytes. ROOT that loses its tail begins a new epoch, and every copy holding the lost
//! records is refreshed to ROOT's history instead of keeping them.

mod tree;

use std::time::{Duration, Instant};

use tree::{Tree, flip_byte, segment_files, wait_until};

/// A counter's or gauge's value in a Prometheus text page.
fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

async fn metrics_of(tree: &Tree, id: &str) -> String {
    let url = format!("http://{}/metrics", tree.http_of(id));
    tree.http.get(url).send().await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_repairs_a_damaged_sealed_segment_its_scrub_found() {
    relay_repair("256M").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_repairs_a_damaged_sealed_segment_a_child_refused() {
    relay_repair("0").await;
}

/// ROOT -> L2 -> L3 with a byte of an L2 sealed segment flipped while L2 was stopped; L2 scrubs at
/// `scrub_rate` ("0": only the child's refusal finds the damage).
async fn relay_repair(scrub_rate: &str) {
    let mut tree = Tree::new();
    tree.add("root", "root", &[]);
    tree.start("root").await;
    let root_url = format!("http://{}", tree.http_of("root"));
    tree.add("l2", "l2", &["--parent-url", &root_url, "--scrub-rate", scrub_rate]);
    tree.start("l2").await;
    let injected = tree.inject("root", "catalog", 20_000, 1_000).await;
    let uid = injected["uid"].as_str().unwrap().to_string();
    tree.wait_copy("l2", "catalog", &uid, 20_000).await;

    tree.stop("l2");
    let files = segment_files(&tree.nodes["l2"].data_dir, "catalog");
    assert!(files.len() >= 2, "no sealed segment: {files:?}");
    flip_byte(&files[0], 4_000_000);
    let started = Instant::now();
    tree.start("l2").await;
    // A new child asks L2 for everything, bad range included.
    let l2_url = format!("http://{}", tree.http_of("l2"));
    tree.add("l3", "l3", &["--parent-url", &l2_url]);
    tree.start("l3").await;
    wait_until("L2 repairs the range", || async { tree.log_of("l2").contains("repaired a damaged range") })
        .await;
    println!(
        "L2 (scrub rate {scrub_rate}) repaired the damaged range {:?} after its restart",
        started.elapsed()
    );

    tree.wait_copy("l3", "catalog", &uid, 20_000).await;
    let reference = tree.range("root", "catalog").await;
    tree.assert_same_copy("l2", "catalog", &reference).await;
    tree.assert_same_copy("l3", "catalog", &reference).await;
    let l3 = metrics_of(&tree, "l3").await;
    assert!(metric(&l3, "relay_pipe_reconnects_total") <= 2.0, "L3 looped on the damaged range:\n{l3}");
    if scrub_rate == "0" {
        assert!(tree.log_of("l2").contains("a receiver refused records this node holds damaged"));
    }
    assert_eq!(metric(&metrics_of(&tree, "l2").await, "relay_damaged_segments"), 0.0);
    tree.assert_all_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_never_serves_a_damaged_range_and_nobody_loops_on_it() {
    let mut tree = Tree::new();
    tree.add("root", "root", &["--scrub-rate", "256M"]);
    tree.start("root").await;
    let injected = tree.inject("root", "catalog", 20_000, 1_000).await;
    let uid = injected["uid"].as_str().unwrap().to_string();
    tree.stop("root");
    let files = segment_files(&tree.nodes["root"].data_dir, "catalog");
    assert!(files.len() >= 2, "no sealed segment: {files:?}");
    flip_byte(&files[0], 4_000_000);
    tree.start("root").await;
    wait_until("ROOT reports the damage", || async {
        tree.log_of("root").contains("cannot be repaired here")
    })
    .await;
    let lines = tree.log_of("root").lines().filter(|line| line.contains("cannot be repaired here")).count();
    assert_eq!(lines, 1, "one line for one damaged range");
    assert_eq!(metric(&metrics_of(&tree, "root").await, "relay_damaged_segments"), 1.0);

    // Reading walks up to the damage and is refused there, never handed the bad bytes.
    let mut from = 0u64;
    let damaged_at = loop {
        let url =
            format!("http://{}/api/v1/topics/catalog/records?from={from}&limit=1000", tree.http_of("root"));
        let response = tree.http.get(url).send().await.unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        if status == 503 {
            assert_eq!(body["error"], "damaged_range", "{body}");
            break from;
        }
        assert_eq!(status, 200, "{body}");
        from = body["next"].as_u64().unwrap();
        assert!(from < 20_000, "the damaged range was served");
    };
    println!("ROOT serves offsets 0..{damaged_at} and refuses the damaged range");

    // A child takes everything before the damage and waits there, without reconnecting.
    let root_url = format!("http://{}", tree.http_of("root"));
    tree.add("l2", "l2", &["--parent-url", &root_url]);
    tree.start("l2").await;
    wait_until("L2 holds everything before the damage", || async {
        let Some(info) = tree.get("l2", "/api/v1/topics/catalog").await else { return false };
        info["uid"] == uid.as_str() && info["end_offset"] == damaged_at
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let info = tree.get("l2", "/api/v1/topics/catalog").await.unwrap();
    assert_eq!(info["end_offset"], damaged_at, "L2 went past the damage: {info}");
    let l2 = metrics_of(&tree, "l2").await;
    assert_eq!(metric(&l2, "relay_pipe_reconnects_total"), 0.0, "L2 loops on the damaged range:\n{l2}");
    tree.assert_all_running();
}

/// ROOT -> L2 -> L3 hold 2,000 records; ROOT is killed, a byte of its active segment flipped, and recovery
/// cuts its log at the damaged record. ROOT begins a new epoch there and gives the lost offsets to new
/// records; L2 and L3, which hold the old records at those offsets, are refreshed to ROOT's history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_of_a_tail_root_lost_are_refreshed_to_its_new_epoch() {
    let mut tree = Tree::new();
    tree.add("root", "root", &[]);
    tree.start("root").await;
    let root_url = format!("http://{}", tree.http_of("root"));
    tree.add("l2", "l2", &["--parent-url", &root_url]);
    tree.start("l2").await;
    let l2_url = format!("http://{}", tree.http_of("l2"));
    tree.add("l3", "l3", &["--parent-url", &l2_url]);
    tree.start("l3").await;
    let injected = tree.inject("root", "prices", 2_000, 1_000).await;
    let uid = injected["uid"].as_str().unwrap().to_string();
    tree.wait_copy("l3", "prices", &uid, 2_000).await;

    tree.kill("root");
    let files = segment_files(&tree.nodes["root"].data_dir, "prices");
    assert_eq!(files.len(), 1, "the records should all be in the active segment: {files:?}");
    flip_byte(&files[0], 1_000_000);
    tree.start("root").await;
    let info = tree.get("root", "/api/v1/topics/prices").await.unwrap();
    let cut = info["end_offset"].as_u64().unwrap();
    assert!(cut < 2_000, "recovery kept the damaged record: {info}");
    assert_eq!(info["epochs"], serde_json::json!([[0, 0], [1, cut]]), "{info}");
    println!("ROOT lost offsets {cut}..2000 and begins epoch 1 at {cut}");

    // New records take the lost offsets; the copies must not keep the old ones.
    tree.inject("root", "prices", 3_000, 1_000).await;
    let end = cut + 3_000;
    tree.wait_copy("l2", "prices", &uid, end).await;
    tree.wait_copy("l3", "prices", &uid, end).await;
    let reference = tree.range("root", "prices").await;
    assert_eq!((reference.log_start, reference.end_offset), (0, end));
    tree.assert_same_copy("l2", "prices", &reference).await;
    tree.assert_same_copy("l3", "prices", &reference).await;
    for id in ["l2", "l3"] {
        let info = tree.get(id, "/api/v1/topics/prices").await.unwrap();
        assert_eq!(info["epochs"], serde_json::json!([[0, 0], [1, cut]]), "{id}: {info}");
    }
    let root_log = tree.log_of("root");
    assert!(root_log.contains("the client holds records this history does not"), "ROOT did not say why");
    assert!(tree.log_of("l2").contains("full refresh complete"), "L2 was not refreshed");
    tree.assert_all_running();
}
