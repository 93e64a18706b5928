//! Relay appends: verbatim bytes from one log into another, duplicates, gaps and corrupt batches.

mod common;

use common::{append_n, check_records, interval, open, read_all, small_config, uid};
use protocol::WireError;
use storage::{Error, Log};

/// The raw bytes of records `from..to` of `log`.
fn bytes_of(log: &Log, from: u64, to: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut next = from;
    while next < to {
        let chunk = log.read(next, (to - next) as usize, usize::MAX).unwrap();
        bytes.extend_from_slice(&chunk.records);
        next = chunk.next_offset;
    }
    bytes
}

#[test]
fn verbatim_copy_gives_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    let parent = store.create_topic("parent", uid(1), 0).unwrap();
    append_n(&parent, 3_000, 100);
    let child = store.create_topic("child", uid(1), 0).unwrap();
    let mut next = 0;
    while next < parent.next_offset() {
        let chunk = parent.read(next, 1_000, 8 * 1024).unwrap();
        let outcome = child.append_records(&chunk.records).unwrap();
        assert_eq!(
            (outcome.first_offset, outcome.n_appended, outcome.n_duplicates),
            (next, chunk.n_records, 0)
        );
        assert_eq!(outcome.timestamp_ms, chunk.last_timestamp_ms);
        next = chunk.next_offset;
    }
    assert_eq!(read_all(&child), read_all(&parent));
    assert!(child.segments().len() >= 3);
}

#[test]
fn a_copy_may_start_at_any_offset() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    let parent = store.create_topic("parent", uid(1), 1_000).unwrap();
    append_n(&parent, 500, 50);
    let child = store.create_topic("child", uid(1), 1_200).unwrap();
    child.append_records(&bytes_of(&parent, 1_200, 1_500)).unwrap();
    assert_eq!((child.log_start(), child.next_offset()), (1_200, 1_500));
    check_records(&read_all(&child), 1_200, 300);
}

#[test]
fn duplicates_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    let parent = store.create_topic("parent", uid(1), 0).unwrap();
    append_n(&parent, 100, 100);
    let child = store.create_topic("child", uid(1), 0).unwrap();
    child.append_records(&bytes_of(&parent, 0, 50)).unwrap();

    let outcome = child.append_records(&bytes_of(&parent, 30, 80)).unwrap();
    assert_eq!((outcome.first_offset, outcome.n_appended, outcome.n_duplicates), (50, 30, 20));
    let outcome = child.append_records(&bytes_of(&parent, 0, 80)).unwrap();
    assert_eq!((outcome.n_appended, outcome.n_duplicates, outcome.next_offset), (0, 80, 80));
    assert_eq!(read_all(&child), bytes_of(&parent, 0, 80));
}

#[test]
fn gaps_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    let parent = store.create_topic("parent", uid(1), 0).unwrap();
    append_n(&parent, 100, 100);
    let child = store.create_topic("child", uid(1), 0).unwrap();
    child.append_records(&bytes_of(&parent, 0, 50)).unwrap();

    let result = child.append_records(&bytes_of(&parent, 60, 70));
    assert!(matches!(result, Err(Error::OffsetGap { expected: 50, found: 60, .. })), "{result:?}");
    let mut backwards = bytes_of(&parent, 50, 55);
    backwards.extend(bytes_of(&parent, 53, 60));
    let result = child.append_records(&backwards);
    assert!(
        matches!(
            result,
            Err(Error::BadBatch { source: WireError::OffsetBackwards { expected: 55, found: 53 }, .. })
        ),
        "{result:?}"
    );
    assert_eq!(child.next_offset(), 50);
    assert_eq!(read_all(&child), bytes_of(&parent, 0, 50));

    // Records that skip offsets inside one run are a compacted range their sender vouches for.
    let mut compacted = bytes_of(&parent, 50, 55);
    compacted.extend(bytes_of(&parent, 57, 60));
    child.append_records(&compacted).unwrap();
    assert_eq!(child.next_offset(), 60);
    let mut expected = bytes_of(&parent, 0, 55);
    expected.extend(bytes_of(&parent, 57, 60));
    assert_eq!(read_all(&child), expected);
    let chunk = child.read(55, 100, 1 << 20).unwrap();
    assert_eq!((chunk.first_offset, chunk.next_offset, chunk.n_records), (55, 60, 3));
}

#[test]
fn corrupt_batches_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    let parent = store.create_topic("parent", uid(1), 0).unwrap();
    append_n(&parent, 100, 100);
    let child = store.create_topic("child", uid(1), 0).unwrap();
    child.append_records(&bytes_of(&parent, 0, 50)).unwrap();
    let before = read_all(&child);

    let mut corrupt = bytes_of(&parent, 50, 80);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x01;
    let result = child.append_records(&corrupt);
    assert!(matches!(result, Err(Error::BadBatch { source: WireError::RecordCrc { .. }, .. })), "{result:?}");
    let clean = bytes_of(&parent, 50, 80);
    let result = child.append_records(&clean[..clean.len() - 5]);
    assert!(
        matches!(result, Err(Error::BadBatch { source: WireError::TruncatedBatch { .. }, .. })),
        "{result:?}"
    );
    assert_eq!(child.next_offset(), 50);
    assert_eq!(read_all(&child), before);

    child.append_records(&clean).unwrap();
    assert_eq!(read_all(&child), bytes_of(&parent, 0, 80));
    drop((parent, child));
    drop(store);
    let store = open(dir.path(), small_config(interval()));
    check_records(&read_all(&store.topic("child").unwrap()), 0, 80);
}

#[test]
fn a_relay_copy_is_readable_before_its_flush_and_acknowledged_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(storage::FlushPolicy::Always));
    let parent = store.create_topic("parent", uid(1), 0).unwrap();
    append_n(&parent, 200, 100);
    let batch = protocol::CheckedBatch::check(protocol::Batch {
        topic: "parent".into(),
        first_offset: 0,
        last_offset: 199,
        end_offset: 200,
        records: bytes_of(&parent, 0, 200).into(),
    })
    .unwrap();

    // ROOT's way (the default): readers see only what is durable, so an unflushed append shows nothing.
    let root_like = store.create_topic("root-like", uid(1), 0).unwrap();
    let outcome = root_like.append_checked_unflushed(std::slice::from_ref(&batch)).unwrap();
    assert_eq!((outcome.next_offset, outcome.durable_offset, root_like.readable_offset()), (200, 0, 0));
    root_like.flush().unwrap();
    assert_eq!((root_like.durable_offset(), root_like.readable_offset()), (200, 200));
    drop((root_like, parent, store));

    // A relay's way: readable at once, durable (and so acknowledged) only after the flush.
    let relay_dir = tempfile::tempdir().unwrap();
    let config =
        storage::LogConfig { readable_before_durable: true, ..small_config(storage::FlushPolicy::Always) };
    let store = open(relay_dir.path(), config);
    let relay = store.create_topic("relay", uid(1), 0).unwrap();
    let outcome = relay.append_checked_unflushed(std::slice::from_ref(&batch)).unwrap();
    assert_eq!((outcome.next_offset, outcome.durable_offset, relay.readable_offset()), (200, 0, 200));
    assert_eq!(relay.durable_offset(), 0);
    relay.flush().unwrap();
    assert_eq!(relay.durable_offset(), 200);
    // The flushing append returns durable, as before.
    let more = store.create_topic("more", uid(1), 0).unwrap();
    assert_eq!(more.append_checked(std::slice::from_ref(&batch)).unwrap().durable_offset, 200);
}
