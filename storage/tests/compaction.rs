//! Compaction of a topic with `cleanup=compact`: the latest record of each key stays at its offset, older
//! ones go, tombstones go once their retention ran out and move the delete horizon, a copy fed from the
//! compacted log holds the same records, and a compaction stopped half-way leaves a correct log.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use protocol::record::{ATTR_TOMBSTONE, RecordView};
use protocol::{CheckedBatch, Cleanup, NewRecord, TopicSettings};
use storage::{Log, Store};

use common::{copy_dir, open, read_all, tiny_config, uid};

/// What the log should hold for each key: its last record's offset and value, or the tombstone's offset.
type Model = BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)>;

fn compact_settings(tombstone_retention_ms: Option<u64>) -> TopicSettings {
    TopicSettings { cleanup: Cleanup::Compact, tombstone_retention_ms, ..TopicSettings::default() }
}

/// Publishes `n` updates over `keys` keys; every `delete_every`th update of a key deletes it.
fn publish(log: &Log, model: &mut Model, n: u64, keys: u64, delete_every: u64) {
    for i in 0..n {
        let key = format!("item-{}", i % keys).into_bytes();
        let value = format!("price {i} {}", "x".repeat((i % 50) as usize)).into_bytes();
        let delete = delete_every > 0 && (i / keys) % delete_every == delete_every - 1 && i % 10 == 0;
        let record = if delete {
            NewRecord { key: &key, headers: &[], value: &[], attributes: ATTR_TOMBSTONE }
        } else {
            NewRecord::new(&key, &value)
        };
        let outcome = log.append(&[record]).unwrap();
        model.insert(key, (outcome.first_offset, (!delete).then_some(value)));
    }
}

/// Every record of the log as (offset, key, value, tombstone), checking offsets rise.
fn records(log: &Log) -> Vec<(u64, Vec<u8>, Vec<u8>, bool)> {
    let bytes = read_all(log);
    let mut out: Vec<(u64, Vec<u8>, Vec<u8>, bool)> = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let (view, len) = RecordView::decode(rest).unwrap().unwrap();
        if let Some(previous) = out.last() {
            assert!(view.offset() > previous.0, "offsets rise: {} after {}", view.offset(), previous.0);
        }
        out.push((view.offset(), view.key().to_vec(), view.value().to_vec(), view.is_tombstone()));
        rest = &rest[len..];
    }
    out
}

/// The latest state of every key the log holds, by reading it front to back.
fn state_of(log: &Log) -> Model {
    let mut state = Model::new();
    for (offset, key, value, tombstone) in records(log) {
        state.insert(key, (offset, (!tombstone).then_some(value)));
    }
    state
}

fn compact_now(store: &Store) -> storage::CompactionReport {
    store.compact(&mut |_| {}).unwrap()
}

#[test]
fn compaction_keeps_the_latest_record_of_each_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), tiny_config());
    let log = store.create_root_topic("prices", uid(1), Some(compact_settings(None))).unwrap();
    let mut model = Model::new();
    publish(&log, &mut model, 3_000, 40, 3);
    let before = log.stats();
    let report = compact_now(&store);
    assert_eq!(report.topics.len(), 1, "{report:?}");
    let topic = &report.topics[0];
    assert!(topic.records_removed > 2_000, "{topic:?}");
    assert!(topic.bytes_written < topic.bytes_replaced / 5, "{topic:?}");
    let after = log.stats();
    assert_eq!((after.log_start, after.next_offset), (before.log_start, before.next_offset));
    assert!(after.size_bytes < before.size_bytes / 5, "{before:?} {after:?}");
    // Every key's latest record (or its tombstone, kept: no retention) is there at its offset.
    assert_eq!(state_of(&log), model);
    // Nothing but the latest record of each key stays in the compacted range (the active segment is not
    // compacted, so a key updated there keeps its latest sealed record too).
    let active_base = log.segments().last().unwrap().base_offset;
    let stale: Vec<u64> = records(&log)
        .iter()
        .filter(|(offset, key, _, _)| {
            *offset < active_base && model[key].0 != *offset && model[key].0 < active_base
        })
        .map(|record| record.0)
        .collect();
    assert!(stale.is_empty(), "older records left: {stale:?}");

    // A read from inside a gap starts at the next record and covers the gap.
    let gap = (1..after.next_offset).find(|offset| !records(&log).iter().any(|record| record.0 == *offset));
    let gap = gap.expect("compaction left a gap");
    let chunk = log.read(gap, 10, 1 << 20).unwrap();
    assert_eq!(chunk.first_offset, gap);
    assert!(chunk.n_records > 0 && chunk.next_offset > gap + 1);

    // A copy fed from the compacted log, batch by batch, holds the same bytes.
    let copy = store.create_topic("copy", uid(1), 0).unwrap();
    let mut at = 0;
    while at < log.next_offset() {
        let chunk = log.read(at, 100, 64 * 1024).unwrap();
        let batch = protocol::frame::Batch {
            topic: "copy".into(),
            first_offset: chunk.first_offset,
            last_offset: chunk.next_offset - 1,
            end_offset: log.next_offset(),
            records: chunk.records.clone(),
        };
        copy.append_checked(&[CheckedBatch::check(batch).unwrap()]).unwrap();
        at = chunk.next_offset;
    }
    assert_eq!(read_all(&copy), read_all(&log));

    // More updates, compacted again; reopening keeps the compacted log as it was.
    publish(&log, &mut model, 1_000, 40, 0);
    let report = compact_now(&store);
    assert_eq!(report.topics.len(), 1);
    assert_eq!(state_of(&log), model);
    let bytes = read_all(&log);
    drop((log, copy));
    store.close().unwrap();
    let store = open(dir.path(), tiny_config());
    let log = store.topic("prices").unwrap();
    assert_eq!(read_all(&log), bytes);
    assert_eq!(state_of(&log), model);
    assert_eq!(log.delete_horizon(), 0, "no tombstone dropped without a retention");
}

#[test]
fn tombstones_go_after_their_retention_and_move_the_delete_horizon() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), tiny_config());
    let log = store.create_root_topic("prices", uid(1), Some(compact_settings(Some(1)))).unwrap();
    let mut model = Model::new();
    publish(&log, &mut model, 2_000, 30, 2);
    let deleted: Vec<(Vec<u8>, u64)> = model
        .iter()
        .filter(|(_, (_, value))| value.is_none())
        .map(|(key, (offset, _))| (key.clone(), *offset))
        .collect();
    assert!(!deleted.is_empty());
    std::thread::sleep(std::time::Duration::from_millis(5));
    let report = compact_now(&store);
    let topic = &report.topics[0];
    assert!(topic.tombstones_removed > 0, "{topic:?}");
    let horizon = log.delete_horizon();
    assert!(horizon > 0 && horizon == topic.delete_horizon);
    let active_base = log.segments().last().unwrap().base_offset;
    let state = state_of(&log);
    for (key, offset) in &deleted {
        if *offset < active_base - 1 {
            assert!(!state.contains_key(key), "deleted key {:?} is gone", String::from_utf8_lossy(key));
            assert!(*offset < horizon);
        }
    }
    for (key, (offset, value)) in &model {
        if value.is_some() {
            assert_eq!(state.get(key), Some(&(*offset, value.clone())));
        }
    }
    // The horizon survives a restart, and a lost meta.sqlite (the identity file keeps it).
    drop(log);
    store.close().unwrap();
    let store = open(dir.path(), tiny_config());
    assert_eq!(store.topic("prices").unwrap().delete_horizon(), horizon);
    store.close().unwrap();
    std::fs::remove_file(dir.path().join("meta.sqlite")).unwrap();
    let store = open(dir.path(), tiny_config());
    assert_eq!(store.topic("prices").unwrap().delete_horizon(), horizon);
}

#[test]
fn a_compaction_stopped_half_way_leaves_a_correct_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), tiny_config());
    let log = store.create_root_topic("prices", uid(1), Some(compact_settings(None))).unwrap();
    let mut model = Model::new();
    publish(&log, &mut model, 2_000, 25, 4);
    let generation_dir = log.dir().to_path_buf();
    let originals = tempfile::tempdir().unwrap();
    copy_dir(&generation_dir, originals.path());
    compact_now(&store);
    let compacted = read_all(&log);
    drop(log);
    store.close().unwrap();

    // The crash came after the rename and before the segments it replaced were deleted: put them back,
    // with a `.compact` file that was never renamed in.
    let survivors: Vec<String> = list(&generation_dir);
    let mut restored = 0;
    for name in list(originals.path()) {
        if name.ends_with(".log") && !survivors.contains(&name) {
            std::fs::copy(originals.path().join(&name), generation_dir.join(&name)).unwrap();
            restored += 1;
        }
    }
    assert!(restored > 1, "compaction replaced several segments by one");
    let leftover =
        generation_dir.join(format!("{}.compact", survivors.iter().find(|n| n.ends_with(".log")).unwrap()));
    std::fs::write(&leftover, b"half a compacted segment").unwrap();
    let store = open(dir.path(), tiny_config());
    let log = store.topic("prices").unwrap();
    assert_eq!(read_all(&log), compacted);
    assert_eq!(state_of(&log), model);
    assert!(!leftover.exists());
    assert_eq!(list(&generation_dir).iter().filter(|n| n.ends_with(".log")).count(), log.segments().len());
    drop(log);
    store.close().unwrap();

    // The crash came before the rename: the original segments and a `.compact` file.
    for name in list(&generation_dir) {
        std::fs::remove_file(generation_dir.join(name)).unwrap();
    }
    copy_dir(originals.path(), &generation_dir);
    std::fs::write(&leftover, b"half a compacted segment").unwrap();
    let store = open(dir.path(), tiny_config());
    let log = store.topic("prices").unwrap();
    assert_eq!(state_of(&log), model);
    assert!(!leftover.exists());
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
