//! Appending, reading, reopening, watching and concurrent appends, through the public API.

mod common;

use std::sync::Arc;

use common::{append_n, check_records, interval, open, read_all, small_config, uid, watch_log, woken};
use protocol::NewRecord;
use protocol::record::RecordView;
use rand::{Rng, SeedableRng};
use storage::{Error, FlushPolicy, LogConfig, Store};

#[test]
fn a_million_records_round_trip_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 16 << 20, flush: FlushPolicy::Never, ..small_config(interval()) };
    let store = open(dir.path(), config);
    let log = store.create_topic("prices", uid(1), 0).unwrap();
    append_n(&log, 1_000_000, 100);
    assert_eq!(log.next_offset(), 1_000_000);
    let segments = log.segments();
    assert!(segments.len() >= 3, "{} segments", segments.len());
    assert!(segments[..segments.len() - 1].iter().all(|segment| segment.sealed));

    let bytes = read_all(&log);
    check_records(&bytes, 0, 1_000_000);

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let sealed_end = segments[segments.len() - 2].last_offset.unwrap();
    for _ in 0..2_000 {
        let offset = rng.random_range(0..=sealed_end);
        let chunk = log.read(offset, 1, 1).unwrap();
        assert_eq!((chunk.first_offset, chunk.n_records, chunk.next_offset), (offset, 1, offset + 1));
        check_records(&chunk.records, offset, 1);
    }
}

#[test]
fn reopen_after_close_keeps_content_and_continues_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(FlushPolicy::Always));
    let log = store.create_topic("catalog", uid(2), 1_000).unwrap();
    append_n(&log, 3_000, 50);
    let before = read_all(&log);
    let n_segments = log.segments().len();
    assert!(n_segments >= 3);
    drop(log);
    store.close().unwrap();

    let store = open(dir.path(), small_config(FlushPolicy::Always));
    let log = store.topic("catalog").unwrap();
    assert_eq!((log.uid(), log.log_start(), log.next_offset()), (uid(2), 1_000, 4_000));
    assert_eq!(log.segments().len(), n_segments);
    assert_eq!(read_all(&log), before);
    append_n(&log, 500, 50);
    check_records(&read_all(&log), 1_000, 3_500);
}

#[test]
fn read_limits_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    let log = store.create_topic("t", uid(3), 10).unwrap();
    append_n(&log, 100, 10);
    let one_len = log.read(10, 1, usize::MAX).unwrap().records.len();

    let chunk = log.read(10, 5, usize::MAX).unwrap();
    assert_eq!((chunk.n_records, chunk.next_offset), (5, 15));
    let chunk = log.read(20, 1_000, 1).unwrap();
    assert_eq!(chunk.n_records, 1, "one record even when it alone exceeds max_bytes");
    let chunk = log.read(10, 1_000, one_len * 3).unwrap();
    assert!(chunk.n_records >= 2 && chunk.records.len() <= one_len * 3);
    let last_chunk = log.read(109, 1, 1).unwrap();
    let last = RecordView::decode(&last_chunk.records).unwrap().unwrap().0;
    assert_eq!(log.read(100, 10, usize::MAX).unwrap().last_timestamp_ms, last.timestamp_ms());

    assert!(log.read(110, 10, 1000).unwrap().is_empty(), "reading at the end is empty");
    assert!(matches!(log.read(9, 1, 1), Err(Error::OffsetBelowLogStart { requested: 9, log_start: 10 })));
    assert!(matches!(log.read(111, 1, 1), Err(Error::OffsetBeyondEnd { requested: 111, next_offset: 110 })));
    assert!(log.read(50, 0, 1000).unwrap().is_empty());
}

#[test]
fn bad_topic_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    for name in ["", ".", "..", "a/b", "../x", "a b", "*", &"x".repeat(201)] {
        assert!(matches!(store.create_topic(name, uid(1), 0), Err(Error::BadTopicName { .. })), "{name:?}");
        assert!(matches!(store.begin_replace(name, uid(1), 0), Err(Error::BadTopicName { .. })), "{name:?}");
    }
    assert!(store.topics().is_empty());
}

#[test]
fn topics_are_created_once_listed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    let mut topics_rx = store.subscribe_topics();
    let b = store.create_topic("b", uid(1), 0).unwrap();
    assert!(matches!(store.create_topic("b", uid(9), 0), Err(Error::TopicExists { .. })));
    let a = store.get_or_create_topic("a", uid(2)).unwrap();
    assert!(Arc::ptr_eq(&a, &store.get_or_create_topic("a", uid(3)).unwrap()));
    assert_eq!(a.uid(), uid(2));
    let names: Vec<_> = store.topics().iter().map(|log| log.name().to_string()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(topics_rx.has_changed().unwrap());
    topics_rx.mark_unchanged();

    append_n(&b, 10, 10);
    let reader = watch_log(&b);
    store.delete_topic("b").unwrap();
    assert!(topics_rx.has_changed().unwrap());
    assert!(store.topic("b").is_none());
    assert!(woken(&reader) && b.is_closed(), "waiters on a deleted log wake and find it closed");
    assert!(matches!(b.append(&[NewRecord::new(b"k", b"v")]), Err(Error::Closed { .. })));
    assert_eq!(b.read(0, 10, 1 << 20).unwrap().n_records, 10, "reads still work on what was mapped");
    assert!(matches!(store.delete_topic("b"), Err(Error::UnknownTopic { .. })));
    drop(store);

    let store = open(dir.path(), small_config(interval()));
    let names: Vec<_> = store.topics().iter().map(|log| log.name().to_string()).collect();
    assert_eq!(names, ["a"]);
    assert!(!dir.path().join("topics/b").exists());
}

#[test]
fn a_second_store_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    assert!(matches!(Store::open(dir.path(), small_config(interval())), Err(Error::Locked { .. })));
    drop(store);
    open(dir.path(), small_config(interval()));
}

#[test]
fn bad_records_and_oversized_records_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    let log = store.create_topic("t", uid(1), 0).unwrap();
    let big = vec![0u8; 64 * 1024];
    let records = [NewRecord::new(b"k", b"v"), NewRecord::new(b"k", &big)];
    assert!(matches!(log.append(&records), Err(Error::RecordTooLarge { .. })));
    let reserved = NewRecord { attributes: 0x80, ..NewRecord::new(b"k", b"v") };
    assert!(matches!(log.append(&[records[0], reserved]), Err(Error::BadRecord { index: 1, .. })));
    assert_eq!(log.next_offset(), 0);
    assert!(log.append(&[]).unwrap().n_appended == 0);
}

#[test]
fn a_batch_larger_than_a_segment_is_split_between_segments() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    let log = store.create_topic("t", uid(1), 0).unwrap();
    append_n(&log, 5_000, 5_000);
    assert!(log.segments().len() >= 3);
    check_records(&read_all(&log), 0, 5_000);
}

#[test]
fn timestamps_never_go_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    let log = store.create_topic("t", uid(1), 0).unwrap();
    let mut previous = 0;
    for _ in 0..50 {
        let outcome = log.append(&[NewRecord::new(b"k", b"v")]).unwrap();
        assert!(outcome.timestamp_ms >= previous);
        previous = outcome.timestamp_ms;
    }
    assert_eq!(log.stats().last_timestamp_ms, previous);
}

#[test]
fn readers_are_woken_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(FlushPolicy::Always));
    let log = store.create_topic("t", uid(1), 0).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let reader = watch_log(&log);
        assert_eq!(log.readable_offset(), 0);
        let writer = Arc::clone(&log);
        let append = tokio::task::spawn_blocking(move || append_n(&writer, 5, 5));
        reader.notified().await;
        assert_eq!(log.readable_offset(), 5);
        append.await.unwrap();
        assert_eq!(log.durable_offset(), 5);
        assert_eq!(log.readable_offset(), 5);
    });
}

#[test]
fn a_registered_notify_wakes_on_append_and_on_close_and_is_forgotten_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(FlushPolicy::Always));
    let log = store.create_topic("t", uid(1), 0).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let wake = Arc::new(tokio::sync::Notify::new());
        log.wake_on_change(&wake);
        log.wake_on_change(&wake);
        append_n(&log, 3, 3);
        let woken = tokio::time::timeout(std::time::Duration::from_secs(5), wake.notified()).await;
        assert!(woken.is_ok(), "an append wakes a registered Notify");
        assert_eq!(log.readable_offset(), 3);
        store.delete_topic("t").unwrap();
        let woken = tokio::time::timeout(std::time::Duration::from_secs(5), wake.notified()).await;
        assert!(woken.is_ok() && log.is_closed(), "closing the log wakes it too");
        let weak = Arc::downgrade(&wake);
        drop(wake);
        assert!(weak.upgrade().is_none(), "the log holds no strong reference to a registered Notify");
    });
}

#[test]
fn an_append_is_in_place_until_it_would_seal_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(FlushPolicy::Always));
    let log = store.create_topic("t", uid(1), 0).unwrap();
    assert!(log.appends_in_place(1024));
    assert!(!log.appends_in_place(64 * 1024 + 1), "more than a segment holds needs a new one");
    let mut appended = 0;
    while log.appends_in_place(8 * 1024) {
        append_n(&log, 10, 10);
        appended += 10;
        assert!(appended < 10_000, "a 64 KiB segment fills");
    }
    assert_eq!(log.segments().len(), 1, "the answer turns before the segment is sealed");
    store.delete_topic("t").unwrap();
    assert!(!log.appends_in_place(1), "a closed log takes no appends");
}

#[test]
fn concurrent_appenders_get_distinct_contiguous_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(FlushPolicy::Always));
    let log = store.create_topic("t", uid(1), 0).unwrap();
    let n_threads = 4u64;
    let n_batches = 40u64;
    let batch = 10u64;
    let handles: Vec<_> = (0..n_threads)
        .map(|thread| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut ranges = Vec::new();
                for i in 0..n_batches {
                    let values: Vec<Vec<u8>> =
                        (0..batch).map(|j| format!("{thread}-{i}-{j}").into_bytes()).collect();
                    let records: Vec<_> = values.iter().map(|value| NewRecord::new(b"", value)).collect();
                    let outcome = log.append(&records).unwrap();
                    assert_eq!(outcome.n_appended, batch);
                    assert!(log.durable_offset() >= outcome.next_offset, "returned before durable");
                    assert!(log.readable_offset() >= outcome.next_offset);
                    ranges.push((outcome.first_offset, thread, i));
                }
                ranges
            })
        })
        .collect();
    let mut ranges: Vec<_> = handles.into_iter().flat_map(|handle| handle.join().unwrap()).collect();
    ranges.sort();
    let total = n_threads * n_batches * batch;
    assert_eq!(log.next_offset(), total);
    let bytes = read_all(&log);
    let records: Vec<_> =
        protocol::RecordIter::new(&bytes).map(|record| record.unwrap().value().to_vec()).collect();
    assert_eq!(records.len() as u64, total);
    for (k, (first, thread, i)) in ranges.iter().enumerate() {
        assert_eq!(*first, k as u64 * batch, "batches are contiguous and distinct");
        for j in 0..batch {
            assert_eq!(records[(first + j) as usize], format!("{thread}-{i}-{j}").into_bytes());
        }
    }
}

/// Records are written into the segment file and read through its mapping: a reader following a log
/// while another thread appends (ROOT records, then the same bytes relayed into a second log) must see
/// every record whole and in order, across segment rolls.
#[test]
fn a_reader_sees_whole_records_while_another_thread_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    let root = store.create_topic("root", uid(1), 0).unwrap();
    let relay = store.create_topic("relay", uid(2), 0).unwrap();
    let total = 6_000u64;
    let appender = {
        let (root, relay) = (Arc::clone(&root), Arc::clone(&relay));
        std::thread::spawn(move || {
            for _ in 0..total / 50 {
                let first = root.next_offset();
                append_n(&root, 50, 50);
                let chunk = root.read(first, 50, 1 << 20).unwrap();
                let outcome = relay.append_records(&chunk.records).unwrap();
                assert_eq!((outcome.first_offset, outcome.n_appended), (first, 50));
            }
        })
    };
    let mut next = 0u64;
    let mut seen = Vec::new();
    for _ in 0..100_000_000u64 {
        if next == total {
            break;
        }
        let chunk = relay.read(next, 1_000, 8 * 1024).unwrap();
        if chunk.is_empty() {
            std::thread::yield_now();
            continue;
        }
        assert_eq!(chunk.first_offset, next);
        seen.extend_from_slice(&chunk.records);
        next = chunk.next_offset;
    }
    appender.join().unwrap();
    assert_eq!(next, total, "the reader caught up");
    assert!(relay.segments().len() >= 3, "the appends crossed segment rolls");
    check_records(&seen, 0, total);
    assert_eq!(read_all(&root), seen, "the relayed bytes are the root's");
}

#[test]
fn an_explicit_flush_covers_segments_sealed_without_syncing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(FlushPolicy::Never));
    let log = store.create_topic("t", uid(1), 0).unwrap();
    append_n(&log, 3_000, 100);
    assert!(log.segments().len() >= 3);
    assert_eq!(log.durable_offset(), 0, "nothing is synced under FlushPolicy::Never");
    assert_eq!(log.readable_offset(), 3_000, "written records are readable");
    log.flush().unwrap();
    assert_eq!(log.durable_offset(), 3_000);
    store.flush_all().unwrap();
}

#[test]
fn interval_policy_appends_return_durable_and_the_timer_flush_finds_nothing_left() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    let log = store.create_topic("t", uid(1), 0).unwrap();
    let reader = watch_log(&log);
    let outcome = log.append(&[NewRecord::new(b"k", b"v"); 10]).unwrap();
    assert!(woken(&reader));
    assert_eq!((outcome.durable_offset, log.readable_offset(), log.durable_offset()), (10, 10, 10));
    store.flush_all().unwrap();
    assert_eq!(log.durable_offset(), 10);
    let stats = log.stats();
    assert_eq!((stats.next_offset, stats.durable_offset, stats.n_segments), (10, 10, 1));
}

#[test]
fn an_old_active_segment_is_rolled_at_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        LogConfig { segment_max_age: std::time::Duration::from_millis(1), ..small_config(interval()) };
    let store = open(dir.path(), config);
    let log = store.create_topic("t", uid(1), 0).unwrap();
    append_n(&log, 10, 10);
    assert_eq!(log.segments().len(), 1);
    std::thread::sleep(std::time::Duration::from_millis(20));
    append_n(&log, 10, 10);
    let segments = log.segments();
    assert_eq!(segments.len(), 2, "the segment older than segment_max_age was sealed");
    assert!(segments[0].sealed && segments[0].last_offset == Some(9));
    assert_eq!(segments[1].base_offset, 10);
    check_records(&read_all(&log), 0, 20);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Whatever the batch sizes, reads return exactly the stored records from the offset asked for, within
    /// the limits given.
    #[test]
    fn reads_respect_offsets_and_limits(
        batches in proptest::collection::vec((1usize..200, 0usize..3000), 1..12),
        reads in proptest::collection::vec((0.0f64..1.0, 0usize..50, 0usize..20_000), 1..30),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), LogConfig { segment_bytes: 32 * 1024, ..small_config(interval()) });
        let log = store.create_topic("t", uid(1), 0).unwrap();
        let mut expected: Vec<Vec<u8>> = Vec::new();
        for (n, value_len) in batches {
            let values: Vec<Vec<u8>> = (0..n).map(|i| vec![(expected.len() + i) as u8; value_len % 2000]).collect();
            let records: Vec<_> = values.iter().map(|value| NewRecord::new(b"key", value)).collect();
            log.append(&records).unwrap();
            expected.extend(values);
        }
        let total = expected.len() as u64;
        proptest::prop_assert_eq!(log.next_offset(), total);
        for (position, max_records, max_bytes) in reads {
            let from = ((total as f64) * position) as u64;
            let chunk = log.read(from, max_records, max_bytes).unwrap();
            proptest::prop_assert_eq!(chunk.first_offset, from);
            proptest::prop_assert!(chunk.n_records as usize <= max_records);
            proptest::prop_assert!(chunk.n_records <= 1 || chunk.records.len() <= max_bytes);
            proptest::prop_assert_eq!(chunk.n_records == 0, max_records == 0);
            proptest::prop_assert_eq!(chunk.next_offset, from + chunk.n_records);
            for (i, record) in chunk.iter().enumerate() {
                let record = record.unwrap();
                proptest::prop_assert_eq!(record.offset(), from + i as u64);
                proptest::prop_assert_eq!(record.value(), expected[(from + i as u64) as usize].as_slice());
            }
        }
    }
}
