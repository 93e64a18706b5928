//! Damage on disk after records were stored: a check of a range or the background scrub finds a record that
//! fails its CRC, reads serve everything before it and refuse it and what follows in its segment, and a
//! repair with the same records (as a parent holds them) makes the segment serve again.

mod common;

use std::os::unix::fs::FileExt;

use common::{append_n, check_records, interval, open, read_all, small_config, uid};
use storage::Error;

/// Flips one byte of the file at `path`, in place (as a disk would).
fn flip(path: &std::path::Path, at: u64) {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at).unwrap();
    byte[0] ^= 0x40;
    file.write_all_at(&byte, at).unwrap();
}

#[test]
fn the_scrub_finds_damage_reads_stop_before_it_and_a_repair_serves_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    let log = store.create_topic("t", uid(1), 0).unwrap();
    append_n(&log, 3_000, 50);
    let segments = log.segments();
    assert!(segments.len() >= 3);
    let first = segments[0].clone();
    let end = first.last_offset.unwrap() + 1;
    // The good bytes, as a parent would send them, before the damage.
    let good = bytes::Bytes::copy_from_slice(&log.read(0, end as usize, usize::MAX).unwrap().records);
    flip(&first.path, first.size_bytes / 2);

    // Reads still hand out the bytes until a check finds them bad (the hot path does not re-hash)...
    let step = store.scrub(u64::MAX);
    assert_eq!(step.damaged.len(), 1, "{step:?}");
    let damaged = step.damaged[0].clone();
    assert!(damaged.damaged_at > 0 && damaged.damaged_at < end);
    assert!(step.bytes_checked >= first.size_bytes);
    assert_eq!(store.damaged_segments(), vec![damaged.clone()]);
    // ... then everything before the damage reads, and nothing from it on.
    let before = log.read(0, usize::MAX, usize::MAX).unwrap();
    assert_eq!(before.next_offset, damaged.damaged_at);
    assert!(before.iter().all(|record| record.is_ok()));
    assert!(
        matches!(log.read(damaged.damaged_at, 10, usize::MAX), Err(Error::Damaged { offset, .. }) if offset == damaged.damaged_at)
    );
    // Later segments are unaffected.
    assert_eq!(log.read(end, 10, usize::MAX).unwrap().first_offset, end);

    // A repair with records that are not the segment's is refused; with the segment's own, it serves again.
    let bad = log.read(end, 10, usize::MAX).unwrap().records;
    assert!(matches!(log.repair_segment(0, bad), Err(Error::BadRepair { .. })));
    log.repair_segment(0, good.clone()).unwrap();
    assert!(store.damaged_segments().is_empty());
    assert_eq!(log.read(0, end as usize, usize::MAX).unwrap().records, good);
    check_records(&read_all(&log), 0, 3_000);
    assert_eq!(store.scrub(u64::MAX).damaged, vec![]);

    // The repair is on disk: reopened, the store holds the same records.
    drop(log);
    drop(store);
    let store = open(dir.path(), small_config(interval()));
    check_records(&read_all(&store.topic("t").unwrap()), 0, 3_000);
}

#[test]
fn a_check_of_a_refused_range_marks_exactly_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    let log = store.create_topic("t", uid(2), 0).unwrap();
    append_n(&log, 2_000, 50);
    let first = log.segments()[0].clone();
    flip(&first.path, 10);
    assert_eq!(log.verify(500, 600), None, "a range without the damage checks clean");
    let found = log.verify(0, 100).expect("the damage is found");
    assert_eq!(found, 0, "the flipped byte is inside the first record");
    assert!(matches!(log.read(0, 10, usize::MAX), Err(Error::Damaged { offset: 0, .. })));
    // The scrub works in steps bounded by its budget, at least one segment each.
    let step = store.scrub(1);
    assert!(step.bytes_checked > 0 && step.damaged.is_empty(), "already known damage is not reported again");
}

#[test]
fn a_damaged_active_segment_is_sealed_so_it_can_be_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), small_config(interval()));
    let log = store.create_topic("t", uid(3), 0).unwrap();
    append_n(&log, 100, 50);
    let active = log.segments().last().unwrap().clone();
    assert!(!active.sealed);
    let good = bytes::Bytes::copy_from_slice(&log.read(0, 100, usize::MAX).unwrap().records);
    flip(&active.path, 10);
    assert_eq!(log.verify(0, 100), Some(0));
    assert!(
        matches!(log.repair_segment(0, good.clone()), Err(Error::BadRepair { .. })),
        "still being written"
    );
    assert!(log.seal_damaged_active().unwrap());
    append_n(&log, 10, 10);
    log.repair_segment(0, good).unwrap();
    check_records(&read_all(&log), 0, 110);
    assert!(!log.seal_damaged_active().unwrap(), "nothing left to seal");
}
