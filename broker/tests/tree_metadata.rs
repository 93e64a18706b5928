//! ROOT loses `meta.sqlite`: killed (-9), its metadata database deleted, started again on the same data
//! directory. It rebuilds the database from the topic's identity file and segment files, so it keeps the
//! topic's uid and every record, and says so in one log line; L2 and L3 below it resume where they were,
//! with no full refresh, and records published afterwards reach every node. No segment file is deleted.

mod tree;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tree::Tree;

/// Every segment file (`.log`) under a data directory, relative to it.
fn segment_files(dir: &Path) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "log") {
                found.insert(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_rebuilds_lost_metadata_and_nothing_below_refreshes() {
    let mut tree = Tree::new();
    tree.start_registry("registry.sqlite").await;
    // Small segments, so that ROOT's log spans several files to rebuild.
    let small_segments = ["--segment-bytes", "64K"];
    tree.add_started("root", "root", &small_segments).await;
    let chain = [("l2", "l2", "root"), ("l3", "l3", "l2")];
    for (id, level, parent) in chain {
        tree.add_started(id, level, &small_segments).await;
        tree.wait_streaming(id, Some(parent)).await;
    }
    tree.inject("root", "prices", 3000, 100).await;
    let before = tree.range("root", "prices").await;
    assert_eq!((before.log_start, before.end_offset), (0, 3000));
    for (id, _, _) in chain {
        tree.wait_copy(id, "prices", &before.uid, 3000).await;
    }

    tree.kill("root");
    let data_dir = tree.nodes["root"].data_dir.clone();
    let segments_before = segment_files(&data_dir);
    assert!(segments_before.len() >= 3, "{segments_before:?}");
    std::fs::remove_file(data_dir.join("meta.sqlite")).unwrap();
    tree.start("root").await;

    let rebuilt = tree.range("root", "prices").await;
    println!("    root: {rebuilt} (before: {before})");
    assert_eq!(rebuilt.uid, before.uid, "ROOT kept the topic's uid");
    assert_eq!((rebuilt.log_start, rebuilt.end_offset, rebuilt.hash), (0, 3000, before.hash));
    let log = tree.log_of("root");
    let lines: Vec<&str> = log.lines().filter(|line| line.contains("rebuilt topic prices")).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    println!("    root logged: {}", lines[0]);
    assert!(lines[0].contains(&before.uid) && lines[0].contains("meta.sqlite was missing"), "{}", lines[0]);
    let segments_after = segment_files(&data_dir);
    let deleted: Vec<_> = segments_before.difference(&segments_after).collect();
    assert!(deleted.is_empty(), "segment files deleted: {deleted:?}");
    assert!(!data_dir.join("quarantine").exists(), "nothing was left unaccounted for");

    tree.wait_streaming("l2", Some("root")).await;
    tree.inject("root", "prices", 1000, 100).await;
    let reference = tree.range("root", "prices").await;
    assert_eq!((reference.uid.as_str(), reference.end_offset), (before.uid.as_str(), 4000));
    for (id, _, _) in chain {
        tree.wait_copy(id, "prices", &reference.uid, 4000).await;
        tree.assert_same_copy(id, "prices", &reference).await;
        assert!(!tree.log_of(id).contains("full refresh"), "{id} took a full refresh");
    }
    tree.assert_all_running();
}
