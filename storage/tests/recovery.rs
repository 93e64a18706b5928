//! Recovery on open: torn and corrupt tails of the active segment, and each way the files and the
//! SQLite metadata can disagree.

mod common;

use std::path::{Path, PathBuf};

use common::{append_n, check_records, copy_dir, open, read_all, tiny_config, uid};
use rand::{Rng, SeedableRng};
use storage::{Error, SegmentInfo, index_path};

/// A closed store holding records 0..n of topic "t"; returns its segments.
fn build(dir: &Path, n: u64) -> Vec<SegmentInfo> {
    let store = open(dir, tiny_config());
    let log = store.create_topic("t", uid(1), 0).unwrap();
    append_n(&log, n, 20);
    let segments = log.segments();
    drop(log);
    store.close().unwrap();
    segments
}

/// Runs a SQL statement against the store's metadata database.
fn sql(dir: &Path, statement: &str) -> usize {
    let connection = rusqlite::Connection::open(dir.join("meta.sqlite")).unwrap();
    connection.execute(statement, []).unwrap()
}

/// Counts rows of the store's metadata database.
fn count(dir: &Path, query: &str) -> i64 {
    let connection = rusqlite::Connection::open(dir.join("meta.sqlite")).unwrap();
    connection.query_row(query, [], |row| row.get(0)).unwrap()
}

/// The byte position where each record of the last segment ends.
fn record_ends(original: &Path, segments: &[SegmentInfo]) -> (u64, Vec<u64>) {
    let last = segments.last().unwrap();
    let bytes = std::fs::read(&last.path).unwrap();
    let mut ends = Vec::new();
    let mut at = 0;
    for record in protocol::RecordIter::new(&bytes[..last.size_bytes as usize]) {
        at += record.unwrap().as_bytes().len() as u64;
        ends.push(at);
    }
    assert!(original.exists());
    (last.base_offset, ends)
}

/// Opens a damaged copy and checks that exactly `n_valid` records remain and that appends continue.
fn check_recovered(dir: &Path, n_valid: u64) {
    let store = open(dir, tiny_config());
    let log = store.topic("t").unwrap();
    assert_eq!(log.next_offset(), n_valid);
    check_records(&read_all(&log), 0, n_valid);
    append_n(&log, 5, 5);
    check_records(&read_all(&log), 0, n_valid + 5);
    drop(log);
    drop(store);
    // Nothing of the damaged tail survives behind the new records.
    let store = open(dir, tiny_config());
    check_records(&read_all(&store.topic("t").unwrap()), 0, n_valid + 5);
}

#[test]
fn torn_tails_keep_exactly_the_valid_prefix() {
    let original = tempfile::tempdir().unwrap();
    let segments = build(original.path(), 300);
    assert!(segments.len() >= 3);
    let (base, ends) = record_ends(original.path(), &segments);
    let relative = segments.last().unwrap().path.strip_prefix(original.path()).unwrap().to_path_buf();
    let size = *ends.last().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for round in 0..200u32 {
        let cut = match round {
            0 => 0,
            1 => size,
            _ => rng.random_range(0..size),
        };
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let segment = copy.path().join(&relative);
        std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(cut).unwrap();
        let whole = ends.iter().take_while(|end| **end <= cut).count() as u64;
        check_recovered(copy.path(), base + whole);
    }
}

#[test]
fn corrupt_bytes_keep_exactly_the_records_before_them() {
    let original = tempfile::tempdir().unwrap();
    let segments = build(original.path(), 300);
    let (base, ends) = record_ends(original.path(), &segments);
    let relative = segments.last().unwrap().path.strip_prefix(original.path()).unwrap().to_path_buf();
    let size = *ends.last().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    for _ in 0..200 {
        let at = rng.random_range(0..size);
        let flip: u8 = rng.random_range(1..=255);
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let segment = copy.path().join(&relative);
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes[at as usize] ^= flip;
        std::fs::write(&segment, &bytes).unwrap();
        let damaged = ends.iter().take_while(|end| **end <= at).count();
        let valid_len = if damaged == 0 { 0 } else { ends[damaged - 1] };
        check_recovered(copy.path(), base + damaged as u64);
        // The damaged record and everything after it were cut from the file before the new appends.
        let reread = std::fs::read(&segment).unwrap();
        assert_eq!(reread[..valid_len as usize], bytes[..valid_len as usize]);
    }
}

#[test]
fn a_segment_file_unknown_to_the_metadata_is_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let segments = build(dir.path(), 400);
    let before = {
        let store = open(dir.path(), tiny_config());
        read_all(&store.topic("t").unwrap())
    };
    let middle = segments[segments.len() / 2].base_offset;
    assert_eq!(sql(dir.path(), &format!("DELETE FROM segments WHERE base_offset = {middle}")), 1);
    assert_eq!(
        sql(dir.path(), &format!("DELETE FROM segments WHERE base_offset = {}", segments[0].base_offset)),
        1
    );
    let store = open(dir.path(), tiny_config());
    let log = store.topic("t").unwrap();
    assert_eq!(read_all(&log), before);
    assert_eq!(count(dir.path(), "SELECT COUNT(*) FROM segments") as usize, segments.len());
}

#[test]
fn a_missing_first_segment_moves_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let segments = build(dir.path(), 400);
    std::fs::remove_file(&segments[0].path).unwrap();
    let store = open(dir.path(), tiny_config());
    let log = store.topic("t").unwrap();
    let start = segments[1].base_offset;
    assert_eq!(log.log_start(), start);
    assert!(matches!(log.read(0, 1, 1), Err(Error::OffsetBelowLogStart { .. })));
    let bytes = common::read_all_from(&log, start, 1 << 20);
    check_records(&bytes, start, 400 - start);
    assert_eq!(count(dir.path(), "SELECT COUNT(*) FROM segments") as usize, segments.len() - 1);
    assert_eq!(count(dir.path(), "SELECT log_start FROM topics") as u64, start);
}

/// The one entry of the store's quarantine.
fn only_quarantine_entry(dir: &Path) -> PathBuf {
    let entries: Vec<_> =
        std::fs::read_dir(dir.join("quarantine")).unwrap().map(|entry| entry.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0].clone()
}

#[test]
fn a_gap_in_the_middle_quarantines_what_comes_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let segments = build(dir.path(), 400);
    assert!(segments.len() >= 4);
    let first_bytes = std::fs::read(&segments[0].path).unwrap();
    std::fs::remove_file(&segments[1].path).unwrap();
    let store = open(dir.path(), tiny_config());
    let log = store.topic("t").unwrap();
    let start = segments[2].base_offset;
    assert_eq!((log.log_start(), log.next_offset()), (start, 400));
    assert!(!segments[0].path.exists(), "the segment before the gap is no longer in the log");
    check_records(&common::read_all_from(&log, start, 1 << 20), start, 400 - start);
    let generation = segments[0].path.parent().unwrap().file_name().unwrap().to_str().unwrap().to_string();
    let entry = only_quarantine_entry(dir.path());
    assert!(entry.to_str().unwrap().ends_with(&format!("-t-{generation}")), "{}", entry.display());
    let moved = entry.join(segments[0].path.file_name().unwrap());
    assert_eq!(std::fs::read(moved).unwrap(), first_bytes, "quarantined whole, not deleted");
    assert!(entry.join(index_path(Path::new(""), segments[0].base_offset)).exists(), "with its index");
}

#[test]
fn a_sealed_segment_without_a_valid_record_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let segments = build(dir.path(), 400);
    let last = segments.len() - 1;
    let mut bytes = std::fs::read(&segments[last - 1].path).unwrap();
    bytes[5] ^= 0xff;
    std::fs::write(&segments[last - 1].path, &bytes).unwrap();
    // Without its index the segment is scanned from its first record, which is now bad.
    let topic_dir = segments[0].path.parent().unwrap();
    std::fs::remove_file(index_path(topic_dir, segments[last - 1].base_offset)).unwrap();
    let store = open(dir.path(), tiny_config());
    let log = store.topic("t").unwrap();
    // The gap it leaves quarantines everything before it too: new offsets continue from the last segment.
    assert_eq!(log.log_start(), segments[last].base_offset);
    let entry = only_quarantine_entry(dir.path());
    assert_eq!(std::fs::read(entry.join(segments[last - 1].path.file_name().unwrap())).unwrap(), bytes);
    for segment in &segments[..last] {
        assert!(entry.join(segment.path.file_name().unwrap()).exists(), "{}", segment.path.display());
    }
}

#[test]
fn a_leftover_file_below_the_log_start_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let segments = build(dir.path(), 400);
    let first = segments[0].base_offset;
    let second = segments[1].base_offset;
    sql(dir.path(), &format!("DELETE FROM segments WHERE base_offset = {first}"));
    sql(dir.path(), &format!("UPDATE topics SET log_start = {second}"));
    let store = open(dir.path(), tiny_config());
    let log = store.topic("t").unwrap();
    assert_eq!(log.log_start(), second);
    assert!(!segments[0].path.exists());
}

#[test]
fn missing_and_bad_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let segments = build(dir.path(), 400);
    let topic_dir = segments[0].path.parent().unwrap().to_path_buf();
    let index_of = |i: usize| index_path(&topic_dir, segments[i].base_offset);
    let good = std::fs::read(index_of(1)).unwrap();
    assert!(!good.is_empty() && good.len() % 8 == 0);
    std::fs::remove_file(index_of(0)).unwrap();
    std::fs::write(index_of(1), b"not an index!").unwrap();
    let mut swapped = good.clone();
    swapped[..8].copy_from_slice(&good[good.len() - 8..]);
    std::fs::write(index_of(2), &swapped).unwrap();
    std::fs::write(index_path(&topic_dir, 123_456), b"orphan").unwrap();

    let store = open(dir.path(), tiny_config());
    let log = store.topic("t").unwrap();
    assert_eq!(std::fs::read(index_of(1)).unwrap(), good);
    assert!(index_of(0).exists() && index_of(2).exists());
    assert!(!index_path(&topic_dir, 123_456).exists());
    for offset in 0..400 {
        check_records(&log.read(offset, 1, 1).unwrap().records, offset, 1);
    }
}

#[test]
fn a_sealed_segment_that_grew_is_rescanned_and_cut_back() {
    let dir = tempfile::tempdir().unwrap();
    let segments = build(dir.path(), 400);
    let before = {
        let store = open(dir.path(), tiny_config());
        read_all(&store.topic("t").unwrap())
    };
    let victim: &PathBuf = &segments[1].path;
    let mut bytes = std::fs::read(victim).unwrap();
    bytes.extend_from_slice(&[0x55; 100]);
    std::fs::write(victim, &bytes).unwrap();
    let store = open(dir.path(), tiny_config());
    assert_eq!(read_all(&store.topic("t").unwrap()), before);
    assert_eq!(std::fs::metadata(victim).unwrap().len(), segments[1].size_bytes);
}

#[test]
fn stray_directories_are_quarantined_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 50);
    let stray_generation = dir.path().join("topics/t/999");
    let stray_topic = dir.path().join("topics/ghost/1");
    std::fs::create_dir_all(&stray_generation).unwrap();
    std::fs::write(stray_generation.join("00000000000000000000.log"), b"y").unwrap();
    std::fs::create_dir_all(&stray_topic).unwrap();
    std::fs::write(stray_topic.join("00000000000000000000.log"), b"x").unwrap();
    std::fs::write(dir.path().join("topics/notes.txt"), b"not a topic").unwrap();
    std::fs::write(dir.path().join("topics/t/README"), b"not a generation").unwrap();
    let store = open(dir.path(), tiny_config());
    assert!(!stray_generation.exists());
    assert!(!dir.path().join("topics/ghost").exists());
    assert_eq!(store.topics().len(), 1);
    let mut entries: Vec<String> = std::fs::read_dir(dir.path().join("quarantine"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    entries.sort_by_key(|name| name.ends_with("-ghost"));
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries[0].ends_with("-t-999") && entries[1].ends_with("-ghost"), "{entries:?}");
    let quarantine = dir.path().join("quarantine");
    assert_eq!(std::fs::read(quarantine.join(&entries[0]).join("00000000000000000000.log")).unwrap(), b"y");
    assert_eq!(std::fs::read(quarantine.join(&entries[1]).join("1/00000000000000000000.log")).unwrap(), b"x");
    assert!(dir.path().join("topics/notes.txt").exists(), "foreign files are left alone");
    check_records(&read_all(&store.topic("t").unwrap()), 0, 50);
    // A new generation never reuses a number seen on disk.
    let created = store.create_topic("other", uid(2), 0).unwrap();
    assert!(created.dir().ends_with("1000"), "{}", created.dir().display());
}

#[test]
fn a_topic_name_that_could_escape_the_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 10);
    sql(dir.path(), "UPDATE topics SET name = '../escape'");
    let result = storage::Store::open(dir.path(), tiny_config());
    assert!(matches!(result, Err(Error::CorruptMeta { .. })), "{result:?}");
}
