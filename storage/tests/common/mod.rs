//! Helpers shared by the storage integration tests: small configurations, deterministic records, reading a
//! whole log back, and copying a data directory (the state a crash would leave at that moment).

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use protocol::record::RecordView;
use protocol::{NewRecord, TopicUid};
use storage::{FlushPolicy, Log, LogConfig, Store};

/// Small segments and a short index interval, so that tests cross segment boundaries quickly.
pub fn small_config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        preallocate_chunk_bytes: 16 * 1024,
        index_interval_bytes: 1024,
        flush,
        ..LogConfig::default()
    }
}

/// Tiny segments, so that a few hundred records span several of them; every append is flushed, so a copy
/// of the directory taken while a store runs is what a crash would leave.
pub fn tiny_config() -> LogConfig {
    LogConfig { segment_bytes: 8 * 1024, index_interval_bytes: 256, ..small_config(FlushPolicy::Always) }
}

/// The interval policy tests use when they do not care about durability.
pub fn interval() -> FlushPolicy {
    FlushPolicy::Interval(Duration::from_secs(1))
}

/// A uid that differs per `n`.
pub fn uid(n: u128) -> TopicUid {
    TopicUid(0xfeed_0000_0000_0000_0000_0000_0000_0000 + n)
}

/// The key of the record meant for `offset`.
pub fn key_for(offset: u64) -> Vec<u8> {
    format!("k{offset}").into_bytes()
}

/// The value of the record meant for `offset`: its length varies so that records are not all alike.
pub fn value_for(offset: u64) -> Vec<u8> {
    let len = 20 + (offset % 37) as usize;
    (0..len).map(|i| (offset as usize).wrapping_mul(31).wrapping_add(i) as u8).collect()
}

/// Appends records for offsets `log.next_offset()..+n` in batches of `batch`.
pub fn append_n(log: &Log, n: u64, batch: u64) {
    let mut done = 0;
    while done < n {
        let first = log.next_offset();
        let count = batch.min(n - done);
        let keys: Vec<_> = (first..first + count).map(key_for).collect();
        let values: Vec<_> = (first..first + count).map(value_for).collect();
        let records: Vec<_> =
            keys.iter().zip(&values).map(|(key, value)| NewRecord::new(key, value)).collect();
        let outcome = log.append(&records).unwrap();
        assert_eq!((outcome.first_offset, outcome.n_appended), (first, count));
        done += count;
    }
}

/// Every readable record's raw bytes from `from` on, read in chunks of at most `max_bytes`.
pub fn read_all_from(log: &Log, from: u64, max_bytes: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut next = from;
    for _ in 0..10_000_000 {
        let chunk = log.read(next, 100_000, max_bytes).unwrap();
        if chunk.is_empty() {
            break;
        }
        assert_eq!(chunk.first_offset, next);
        bytes.extend_from_slice(&chunk.records);
        next = chunk.next_offset;
    }
    assert_eq!(next, log.readable_offset(), "read everything readable");
    bytes
}

/// Every readable record's raw bytes.
pub fn read_all(log: &Log) -> Vec<u8> {
    read_all_from(log, log.log_start(), 1 << 20)
}

/// Checks that `bytes` holds the records [`append_n`] writes, for offsets `first..first + n`.
pub fn check_records(bytes: &[u8], first: u64, n: u64) {
    let mut at = 0;
    for offset in first..first + n {
        let (view, len) = RecordView::decode(&bytes[at..]).unwrap().unwrap();
        assert_eq!(view.offset(), offset);
        assert_eq!(view.key(), key_for(offset).as_slice());
        assert_eq!(view.value(), value_for(offset).as_slice());
        at += len;
    }
    assert_eq!(at, bytes.len(), "no bytes after the last expected record");
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Opens a store, panicking on error.
pub fn open(dir: &Path, config: LogConfig) -> Store {
    Store::open(dir, config).unwrap()
}

/// A reader's wake-up registered with `log` (`Log::wake_on_change`), as a delivery session registers it.
pub fn watch_log(log: &Log) -> std::sync::Arc<tokio::sync::Notify> {
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    log.wake_on_change(&wake);
    wake
}

/// Whether `wake` was notified since it was last waited on (taking that notification).
pub fn woken(wake: &tokio::sync::Notify) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    runtime.block_on(async { tokio::time::timeout(std::time::Duration::ZERO, wake.notified()).await.is_ok() })
}
