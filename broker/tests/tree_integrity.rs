//! A flipped byte in a sealed segment, found by the background scrub or by a receiver that refuses it: a
//! relay repairs the range from its parent and everything below it ends identical to ROOT; ROOT (which holds
//! the only copy) never serves the damaged range, says so in one line and in a metric, and nobody below it
//! loops on the bad bytes.

mod tree;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tree::{Tree, wait_until};

/// The segment files of `topic` in a broker's data directory, oldest first.
fn segment_files(data_dir: &Path, topic: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for generation in std::fs::read_dir(data_dir.join("topics").join(topic)).unwrap() {
        let generation = generation.unwrap().path();
        if !generation.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&generation).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|extension| extension == "log") {
                files.push(file);
            }
        }
    }
    files.sort();
    files
}

/// Flips one byte of a file in place.
fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at).unwrap();
    byte[0] ^= 0x5a;
    file.write_all_at(&byte, at).unwrap();
    file.sync_all().unwrap();
}

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
