//! Retention by bytes and by age: whole sealed segments go, the log start moves, reads below it fail, and
//! bytes already read stay valid.

mod common;

use std::time::Duration;

use common::{append_n, check_records, interval, open, read_all, read_all_from, small_config, uid};
use protocol::NewRecord;
use storage::{Error, LogConfig};

#[test]
fn retention_by_bytes_removes_the_oldest_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { retention_bytes: Some(3 * 64 * 1024), ..small_config(interval()) };
    let store = open(dir.path(), config.clone());
    let log = store.create_topic("t", uid(1), 0).unwrap();
    let other = store.create_topic("small", uid(2), 0).unwrap();
    append_n(&log, 20_000, 100);
    append_n(&other, 10, 10);
    let before = log.segments();
    assert!(before.len() >= 8, "{} segments", before.len());
    let early = log.read(0, 100, 1 << 20).unwrap();

    let report = store.enforce_retention().unwrap();
    assert_eq!(report.topics.len(), 1, "only the big topic is over the limit");
    let after = log.segments();
    assert_eq!(report.segments_removed, before.len() - after.len());
    assert_eq!(
        report.bytes_removed,
        before[..report.segments_removed].iter().map(|s| s.size_bytes).sum::<u64>()
    );
    let total: u64 = after.iter().map(|segment| segment.size_bytes).sum();
    assert!(total <= 3 * 64 * 1024, "{total} bytes left");
    assert!(
        total + before[report.segments_removed - 1].size_bytes > 3 * 64 * 1024,
        "removed no more than needed"
    );
    let start = after[0].base_offset;
    assert_eq!((log.log_start(), report.topics[0].log_start), (start, start));
    let below = log.read(0, 1, 1);
    assert!(
        matches!(below, Err(Error::OffsetBelowLogStart { requested: 0, log_start }) if log_start == start)
    );
    assert!(before[..report.segments_removed].iter().all(|segment| !segment.path.exists()));
    check_records(&early.records, 0, 100);
    check_records(&read_all_from(&log, start, 1 << 20), start, 20_000 - start);

    assert_eq!(store.enforce_retention().unwrap().segments_removed, 0, "nothing more to do");
    drop((log, other));
    drop(store);
    let store = open(dir.path(), config);
    let log = store.topic("t").unwrap();
    assert_eq!(log.log_start(), start);
    assert_eq!(log.segments().len(), after.len());
}

#[test]
fn retention_by_age_removes_segments_whose_newest_record_is_old() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { retention_age: Some(Duration::from_secs(3600)), ..small_config(interval()) };
    let store = open(dir.path(), config);
    let log = store.create_topic("t", uid(1), 0).unwrap();
    // Records relayed with a timestamp from long ago fill the first segments.
    let mut old = Vec::new();
    for offset in 0..2_000u64 {
        NewRecord::new(b"old", &[1u8; 100]).encode_to_vec(offset, 1_000 + offset, &mut old);
    }
    log.append_records(&old).unwrap();
    let n_old_sealed = log.segments().len() - 1;
    assert!(n_old_sealed >= 2);
    append_n(&log, 3_000, 100);
    let before = log.segments();
    assert!(before.len() > n_old_sealed + 2);

    let report = store.enforce_retention().unwrap();
    assert_eq!(report.segments_removed, n_old_sealed);
    let after = log.segments();
    assert_eq!(after[0].base_offset, before[n_old_sealed].base_offset);
    assert_eq!(log.log_start(), after[0].base_offset);
    assert!(matches!(log.read(0, 1, 1), Err(Error::OffsetBelowLogStart { .. })));
    check_records(&read_all_from(&log, 2_000, 1 << 20), 2_000, 3_000);
}

#[test]
fn without_limits_nothing_is_removed_and_the_active_segment_always_stays() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    let log = store.create_topic("t", uid(1), 0).unwrap();
    append_n(&log, 3_000, 100);
    assert_eq!(store.enforce_retention().unwrap().segments_removed, 0);
    drop(log);
    drop(store);

    let config = LogConfig { retention_bytes: Some(0), ..small_config(interval()) };
    let store = open(dir.path(), config);
    let log = store.topic("t").unwrap();
    store.enforce_retention().unwrap();
    assert_eq!(log.segments().len(), 1);
    let active = &log.segments()[0];
    assert!(!active.sealed);
    let active_records = read_all(&log);
    check_records(&active_records, active.base_offset, 3_000 - active.base_offset);
}
