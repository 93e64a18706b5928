//! A topic's explicit settings through the store: durable across reopen (and a lost `meta.sqlite`),
//! obeyed by retention in place of the store's limits (`compact` never loses a segment), and carried into
//! a full refresh's new copy.

mod common;

use std::time::Duration;

use common::{append_n, interval, open, small_config, uid};
use protocol::{Cleanup, TopicSettings};
use storage::LogConfig;

fn compact() -> TopicSettings {
    TopicSettings { cleanup: Cleanup::Compact, ..TopicSettings::default() }
}

fn deleting(retention_bytes: Option<u64>, retention_age_ms: Option<u64>) -> TopicSettings {
    TopicSettings {
        cleanup: Cleanup::Delete,
        retention_bytes,
        retention_age_ms,
        tombstone_retention_ms: None,
    }
}

#[test]
fn settings_persist_across_reopen_and_a_lost_meta_database() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(interval());
    let store = open(dir.path(), config.clone());
    let explicit =
        TopicSettings { tombstone_retention_ms: Some(86_400_000), ..deleting(Some(1 << 20), None) };
    let created = store.create_root_topic("made", uid(1), Some(explicit)).unwrap();
    assert_eq!(created.settings(), Some(explicit));
    let plain = store.get_or_create_topic("plain", uid(2)).unwrap();
    assert_eq!(plain.settings(), None, "a topic created by a first publish has no explicit settings");
    let version = plain.settings_version();
    assert!(store.set_settings(&plain, Some(compact())).unwrap());
    assert!(plain.settings_version() > version, "a change is visible to readers");
    assert!(!store.set_settings(&plain, Some(compact())).unwrap(), "the same settings change nothing");
    assert!(matches!(store.create_root_topic("made", uid(3), None), Err(storage::Error::TopicExists { .. })));
    drop((created, plain));
    drop(store);

    let store = open(dir.path(), config.clone());
    assert_eq!(store.topic("made").unwrap().settings(), Some(explicit));
    assert_eq!(store.topic("plain").unwrap().settings(), Some(compact()));
    let plain = store.topic("plain").unwrap();
    store.set_settings(&plain, None).unwrap();
    drop(plain);
    drop(store);

    // Without meta.sqlite, the identity files bring the settings back.
    std::fs::remove_file(dir.path().join("meta.sqlite")).unwrap();
    let store = open(dir.path(), config);
    assert_eq!(store.topic("made").unwrap().settings(), Some(explicit));
    assert_eq!(store.topic("plain").unwrap().settings(), None);
}

#[test]
fn compact_topics_never_lose_segments_to_retention() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(0),
        retention_age: Some(Duration::from_millis(1)),
        ..small_config(interval())
    };
    let store = open(dir.path(), config);
    let kept = store.create_root_topic("kept", uid(1), Some(compact())).unwrap();
    let trimmed = store.create_topic("trimmed", uid(2), 0).unwrap();
    append_n(&kept, 5_000, 100);
    append_n(&trimmed, 5_000, 100);
    let n_kept = kept.segments().len();
    assert!(n_kept >= 3, "{n_kept} segments");
    std::thread::sleep(Duration::from_millis(5));

    let report = store.enforce_retention().unwrap();
    assert_eq!(report.topics.len(), 1);
    assert_eq!(report.topics[0].name, "trimmed", "the store's limits apply to a topic without settings");
    assert_eq!((kept.segments().len(), kept.log_start()), (n_kept, 0));

    // compact,delete applies the topic's own limits.
    store
        .set_settings(
            &kept,
            Some(TopicSettings { cleanup: Cleanup::CompactDelete, ..deleting(Some(0), None) }),
        )
        .unwrap();
    assert_eq!(store.enforce_retention().unwrap().topics[0].name, "kept");
    assert_eq!(kept.segments().len(), 1);
}

#[test]
fn a_topics_own_limits_replace_the_stores() {
    let dir = tempfile::tempdir().unwrap();
    // The store keeps everything; the topic keeps about 2 segments' worth of bytes.
    let store = open(dir.path(), small_config(interval()));
    let own_bytes =
        store.create_root_topic("bytes", uid(1), Some(deleting(Some(2 * 64 * 1024), None))).unwrap();
    let unlimited = store.create_topic("unlimited", uid(2), 0).unwrap();
    append_n(&own_bytes, 5_000, 100);
    append_n(&unlimited, 5_000, 100);
    let report = store.enforce_retention().unwrap();
    assert_eq!(report.topics.iter().map(|topic| topic.name.as_str()).collect::<Vec<_>>(), ["bytes"]);
    let left: u64 = own_bytes.segments().iter().map(|segment| segment.size_bytes).sum();
    assert!(left <= 2 * 64 * 1024, "{left} bytes left");
    assert_eq!(unlimited.log_start(), 0);
    drop((own_bytes, unlimited));
    drop(store);

    // The store removes everything it can by age; a topic with settings but no age limit keeps all, and
    // one with its own (long) age limit keeps all too.
    let config = LogConfig { retention_bytes: Some(0), ..small_config(interval()) };
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), config);
    let no_limits = store.create_root_topic("no-limits", uid(3), Some(deleting(None, None))).unwrap();
    let long_age =
        store.create_root_topic("long-age", uid(4), Some(deleting(None, Some(3_600_000)))).unwrap();
    append_n(&no_limits, 5_000, 100);
    append_n(&long_age, 5_000, 100);
    assert_eq!(store.enforce_retention().unwrap().segments_removed, 0);
    assert_eq!((no_limits.log_start(), long_age.log_start()), (0, 0));
}

#[test]
fn a_full_refresh_carries_settings_into_the_new_copy() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(interval());
    let store = open(dir.path(), config.clone());
    let old = store.create_root_topic("t", uid(1), Some(compact())).unwrap();
    append_n(&old, 100, 10);

    // A replacement starts with the current settings...
    let carried = store.begin_replace("t", uid(1), 0).unwrap();
    assert_eq!(carried.log().settings(), Some(compact()));
    let log = store.commit_replace(carried).unwrap();
    assert_eq!(log.settings(), Some(compact()));

    // ... and takes its upstream's when told.
    let replacement = store.begin_replace("t", uid(2), 0).unwrap();
    let upstream = deleting(Some(1 << 30), Some(60_000));
    replacement.set_settings(Some(upstream));
    let log = store.commit_replace(replacement).unwrap();
    assert_eq!((log.uid(), log.settings()), (uid(2), Some(upstream)));
    drop(log);
    drop(old);
    drop(store);
    assert_eq!(open(dir.path(), config).topic("t").unwrap().settings(), Some(upstream));
}
