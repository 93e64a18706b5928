//! Full refresh: a replacement is invisible until commit, then takes over atomically; abort, drop and a
//! crash before commit all leave the old copy and no trace of the new one.

mod common;

use std::sync::Arc;

use common::{append_n, check_records, interval, open, read_all, small_config, uid, watch_log, woken};
use protocol::NewRecord;
use storage::{Error, Store};

/// Encoded records for offsets `from..to`, as a parent would send them.
fn batch(from: u64, to: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    for offset in from..to {
        NewRecord::new(&common::key_for(offset), &common::value_for(offset))
            .encode_to_vec(offset, 7, &mut bytes);
    }
    bytes
}

/// Number of generation directories of topic `name` (the identity file beside them is not one).
fn generations(store: &Store, name: &str) -> usize {
    std::fs::read_dir(store.dir().join("topics").join(name))
        .map_or(0, |dir| dir.filter(|entry| entry.as_ref().unwrap().path().is_dir()).count())
}

#[test]
fn readers_see_the_old_copy_until_commit_then_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    let old = store.create_topic("t", uid(1), 0).unwrap();
    append_n(&old, 1_000, 100);
    let old_bytes = read_all(&old);
    let old_reader = watch_log(&old);
    let mut topics_rx = store.subscribe_topics();
    topics_rx.mark_unchanged();

    let replacement = store.begin_replace("t", uid(2), 5_000).unwrap();
    for from in (5_000..8_000).step_by(500) {
        replacement.log().append_records(&batch(from, from + 500)).unwrap();
        let current = store.topic("t").unwrap();
        assert!(Arc::ptr_eq(&current, &old), "the old copy stays visible while the new one is built");
        assert_eq!(read_all(&current), old_bytes);
    }
    assert!(!topics_rx.has_changed().unwrap());
    assert_eq!(generations(&store, "t"), 2);

    let new = store.commit_replace(replacement).unwrap();
    assert!(Arc::ptr_eq(&store.topic("t").unwrap(), &new));
    assert_eq!((new.uid(), new.log_start(), new.next_offset()), (uid(2), 5_000, 8_000));
    check_records(&read_all(&new), 5_000, 3_000);
    assert!(topics_rx.has_changed().unwrap());
    assert!(woken(&old_reader) && old.is_closed(), "waiters on the old copy wake and find it closed");
    assert!(matches!(old.append(&[NewRecord::new(b"k", b"v")]), Err(Error::Closed { .. })));
    assert!(!old.dir().exists(), "the old files are deleted");
    assert_eq!(generations(&store, "t"), 1);
    new.append(&[NewRecord::new(b"k", b"v")]).unwrap();
    drop((old, new));
    drop(store);

    let store = open(dir.path(), small_config(interval()));
    let log = store.topic("t").unwrap();
    assert_eq!((log.uid(), log.log_start(), log.next_offset()), (uid(2), 5_000, 8_001));
}

#[test]
fn abort_and_drop_delete_the_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    let old = store.create_topic("t", uid(1), 0).unwrap();
    append_n(&old, 100, 100);

    let replacement = store.begin_replace("t", uid(2), 0).unwrap();
    replacement.log().append_records(&batch(0, 50)).unwrap();
    let new_dir = replacement.log().dir().to_path_buf();
    replacement.abort().unwrap();
    assert!(!new_dir.exists());

    let replacement = store.begin_replace("t", uid(2), 0).unwrap();
    let new_dir = replacement.log().dir().to_path_buf();
    drop(replacement);
    assert!(!new_dir.exists());
    assert!(Arc::ptr_eq(&store.topic("t").unwrap(), &old));
    check_records(&read_all(&old), 0, 100);
}

#[test]
fn a_crash_before_commit_keeps_the_old_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    let old = store.create_topic("t", uid(1), 0).unwrap();
    append_n(&old, 500, 100);
    let replacement = store.begin_replace("t", uid(2), 0).unwrap();
    replacement.log().append_records(&batch(0, 3_000)).unwrap();
    replacement.log().flush().unwrap();
    let new_dir = replacement.log().dir().to_path_buf();
    assert!(replacement.log().segments().len() >= 2);
    // A crash: the replacement is never committed, aborted or dropped.
    std::mem::forget(replacement);
    drop(old);
    drop(store);

    let store = open(dir.path(), small_config(interval()));
    let log = store.topic("t").unwrap();
    assert_eq!((log.uid(), log.next_offset()), (uid(1), 500));
    check_records(&read_all(&log), 0, 500);
    assert!(!new_dir.exists(), "the half-built generation is deleted on open");
    let connection = rusqlite::Connection::open(dir.path().join("meta.sqlite")).unwrap();
    let generations: i64 = connection
        .query_row("SELECT COUNT(DISTINCT generation) FROM segments", [], |row| row.get(0))
        .unwrap();
    assert_eq!(generations, 1);
}

#[test]
fn replacing_a_topic_that_does_not_exist_creates_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    let replacement = store.begin_replace("fresh", uid(3), 10).unwrap();
    assert!(store.topic("fresh").is_none());
    replacement.log().append_records(&batch(10, 20)).unwrap();
    let log = store.commit_replace(replacement).unwrap();
    assert_eq!(store.topics().len(), 1);
    check_records(&read_all(&log), 10, 10);
}
