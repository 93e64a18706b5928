//! Losing or damaging `meta.sqlite`, and the identity files that make it harmless: recovery rebuilds every
//! topic with its uid, log start and records from `topics/{name}/topic.json` and the segment files; an
//! unusable database is moved aside, never deleted; what recovery cannot account for goes to the
//! quarantine, never away.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{append_n, check_records, copy_dir, open, read_all, tiny_config, uid};
use protocol::{Epoch, EpochHistory, NewRecord, TopicUid};
use storage::{Adopted, LogConfig, Store};

/// What one topic of a store holds, to compare before and after recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TopicState {
    /// The topic's name.
    name: String,
    /// Its uid.
    uid: TopicUid,
    /// Its log start.
    log_start: u64,
    /// Its log end.
    next_offset: u64,
    /// The base offsets of its segments.
    bases: Vec<u64>,
    /// Every record's bytes.
    records: Vec<u8>,
    /// Its epoch history.
    epochs: EpochHistory,
}

/// Every topic of a store.
fn state(store: &Store) -> Vec<TopicState> {
    store
        .topics()
        .iter()
        .map(|log| TopicState {
            name: log.name().to_string(),
            uid: log.uid(),
            log_start: log.log_start(),
            next_offset: log.next_offset(),
            bases: log.segments().iter().map(|segment| segment.base_offset).collect(),
            records: read_all(log),
            epochs: log.epochs(),
        })
        .collect()
}

/// The tiny segments of the recovery tests, with a byte limit that retention reaches.
fn config() -> LogConfig {
    LogConfig { retention_bytes: Some(24 * 1024), ..tiny_config() }
}

/// Fills an open store with three kinds of topic: "t" spans many segments and retention moved its log
/// start; "relay" is a copy that starts at offset 5000; "empty" has no record and starts at 77.
fn fill(store: &Store) {
    let log = store.create_topic("t", uid(1), 0).unwrap();
    append_n(&log, 600, 20);
    assert!(store.enforce_retention().unwrap().segments_removed > 0);
    assert!(log.log_start() > 0);
    store.begin_epoch(&log).unwrap();
    let relay = store.create_topic("relay", uid(2), 5000).unwrap();
    let relay_epochs = EpochHistory::new(vec![Epoch { epoch: 4, start_offset: 0 }]).unwrap();
    assert_eq!(store.adopt_epochs(&relay, relay_epochs).unwrap(), Adopted::Stored);
    append_n(&relay, 50, 7);
    store.create_topic("empty", uid(3), 77).unwrap();
}

/// The segment files (`.log`) under `dir`, relative to it, with their sizes.
fn segment_files(dir: &Path) -> BTreeSet<(PathBuf, u64)> {
    let mut found = BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "log") {
                let size = std::fs::metadata(&path).unwrap().len();
                found.insert((path.strip_prefix(dir).unwrap().to_path_buf(), size));
            }
        }
    }
    found
}

/// The names of the entries of `dir` that start with `prefix`.
fn names_starting(dir: &Path, prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// The entries of the quarantine.
fn quarantined(dir: &Path) -> Vec<String> {
    names_starting(&dir.join("quarantine"), "")
}

/// The identity file of a topic, parsed.
fn identity(dir: &Path, topic: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("topics").join(topic).join("topic.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Opens `dir` and checks that it holds exactly `expected`, that nothing was quarantined, that appending
/// continues every log where it ended, and that a second open (from the rebuilt database) agrees.
fn check_rebuilt(dir: &Path, expected: &[TopicState]) {
    let store = open(dir, config());
    assert_eq!(state(&store), expected);
    assert!(quarantined(dir).is_empty(), "{:?}", quarantined(dir));
    let log = store.topic("t").unwrap();
    let end = log.next_offset();
    append_n(&log, 5, 5);
    let start = log.log_start();
    check_records(&read_all(&log), start, end + 5 - start);
    drop(log);
    let after_append = state(&store);
    drop(store);
    let store = open(dir, config());
    assert_eq!(state(&store), after_append);
}

#[test]
fn losing_meta_sqlite_keeps_every_topic_with_its_uid_and_records() {
    let original = tempfile::tempdir().unwrap();
    let store = open(original.path(), config());
    fill(&store);
    let expected = state(&store);

    // A crash: the directory as it is while the store runs, with SQLite's write-ahead log beside it.
    let crashed = tempfile::tempdir().unwrap();
    copy_dir(original.path(), crashed.path());
    drop(store);
    // A clean close.
    let closed = tempfile::tempdir().unwrap();
    copy_dir(original.path(), closed.path());

    for dir in [crashed.path(), closed.path()] {
        let segments = segment_files(dir);
        std::fs::remove_file(dir.join("meta.sqlite")).unwrap();
        check_rebuilt(dir, &expected);
        let kept = segment_files(dir);
        assert!(segments.iter().all(|(path, _)| kept.iter().any(|(kept, _)| kept == path)), "none deleted");
        assert_eq!(identity(dir, "t")["uid"], uid(1).to_string());
    }
    let orphaned = names_starting(crashed.path(), "meta.orphaned-");
    assert!(orphaned.iter().any(|name| name.ends_with(".sqlite-wal")), "the stale log is kept: {orphaned:?}");
}

#[test]
fn an_unusable_meta_sqlite_is_moved_aside_and_rebuilt() {
    let original = tempfile::tempdir().unwrap();
    let expected = {
        let store = open(original.path(), config());
        fill(&store);
        state(&store)
    };
    let garbage: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + 3) as u8).collect();
    let foreign = |path: &Path| {
        let connection = rusqlite::Connection::open(path).unwrap();
        connection.execute_batch("CREATE TABLE topics (id INTEGER PRIMARY KEY, what TEXT);").unwrap();
    };
    for case in ["garbage", "empty", "foreign schema"] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(original.path(), dir.path());
        let meta = dir.path().join("meta.sqlite");
        std::fs::remove_file(&meta).unwrap();
        match case {
            "garbage" => std::fs::write(&meta, &garbage).unwrap(),
            "empty" => std::fs::write(&meta, b"").unwrap(),
            _ => foreign(&meta),
        }
        let damaged = std::fs::read(&meta).unwrap();
        check_rebuilt(dir.path(), &expected);
        let aside = names_starting(dir.path(), "meta.corrupt-");
        if case == "empty" {
            assert!(aside.is_empty(), "{case}: an empty file is simply used: {aside:?}");
        } else {
            let moved = aside.iter().find(|name| name.ends_with(".sqlite")).expect(case);
            assert_eq!(std::fs::read(dir.path().join(moved)).unwrap(), damaged, "{case}: kept as it was");
        }
    }
}

#[test]
fn a_corrupt_or_wrong_identity_file_is_rewritten_from_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let store = open(dir.path(), config());
        fill(&store);
        state(&store)
    };
    let good_t = identity(dir.path(), "t");
    let topics = dir.path().join("topics");
    std::fs::write(topics.join("t/topic.json"), b"{\"version\": 1, \"name\": \"t\", \"uid\": ").unwrap();
    let mut wrong = identity(dir.path(), "relay");
    wrong["uid"] = serde_json::json!(uid(99).to_string());
    std::fs::write(topics.join("relay/topic.json"), wrong.to_string()).unwrap();
    std::fs::remove_file(topics.join("empty/topic.json")).unwrap();

    let store = open(dir.path(), config());
    assert_eq!(state(&store), expected);
    assert_eq!(identity(dir.path(), "t"), good_t);
    assert_eq!(identity(dir.path(), "relay")["uid"], uid(2).to_string(), "SQLite wins");
    assert_eq!(identity(dir.path(), "empty")["log_start"], 77);
    assert!(quarantined(dir.path()).is_empty());
}

#[test]
fn an_unfinished_identity_write_is_ignored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let store = open(dir.path(), config());
        fill(&store);
        state(&store)
    };
    let topic = dir.path().join("topics/t");
    // A crash after the temporary file was written but before it was renamed: a half-written new identity
    // (here with another uid) that must not be used.
    std::fs::write(topic.join("topic.json.tmp"), format!("{{\"version\": 1, \"uid\": \"{}", uid(42)))
        .unwrap();
    let with_sqlite = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), with_sqlite.path());
    std::fs::remove_file(dir.path().join("meta.sqlite")).unwrap();
    for dir in [with_sqlite.path(), dir.path()] {
        let store = open(dir, config());
        assert_eq!(state(&store), expected);
        assert!(!dir.join("topics/t/topic.json.tmp").exists());
        assert_eq!(identity(dir, "t")["uid"], uid(1).to_string());
    }
}

#[test]
fn the_identity_file_follows_creation_refresh_retention_and_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), config());
    let log = store.create_topic("t", uid(1), 10).unwrap();
    let generation =
        |log: &storage::Log| log.dir().file_name().unwrap().to_str().unwrap().parse::<u64>().unwrap();
    let found = identity(dir.path(), "t");
    assert_eq!(found["version"], 1);
    assert_eq!(found["name"], "t");
    assert_eq!(
        (found["uid"].as_str(), found["generation"].as_u64()),
        (Some(&*uid(1).to_string()), Some(generation(&log)))
    );
    assert_eq!(found["log_start"], 10);

    append_n(&log, 600, 20);
    store.enforce_retention().unwrap();
    assert_eq!(identity(dir.path(), "t")["log_start"], log.log_start());

    let replacement = store.begin_replace("t", uid(2), 1000).unwrap();
    assert_eq!(identity(dir.path(), "t")["uid"], uid(1).to_string(), "a replacement being built is not it");
    replacement.log().append(&[NewRecord::new(b"k", b"v")]).unwrap();
    let new = store.commit_replace(replacement).unwrap();
    let found = identity(dir.path(), "t");
    assert_eq!(
        (found["uid"].as_str(), found["generation"].as_u64()),
        (Some(&*uid(2).to_string()), Some(generation(&new)))
    );
    assert_eq!(found["log_start"], 1000);

    store.delete_topic("t").unwrap();
    assert!(!dir.path().join("topics/t").exists());
}

#[test]
fn a_crash_during_a_refresh_after_losing_meta_sqlite_keeps_the_committed_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), config());
    let old = store.create_topic("t", uid(1), 0).unwrap();
    append_n(&old, 300, 20);
    let old_bytes = read_all(&old);
    let replacement = store.begin_replace("t", uid(2), 0).unwrap();
    replacement.log().append(&[NewRecord::new(b"k", b"v")]).unwrap();
    replacement.log().flush().unwrap();
    let building = replacement.log().dir().to_path_buf();
    let crashed = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), crashed.path());
    drop(replacement);
    drop(old);
    drop(store);

    std::fs::remove_file(crashed.path().join("meta.sqlite")).unwrap();
    let store = open(crashed.path(), config());
    let log = store.topic("t").unwrap();
    assert_eq!((log.uid(), read_all(&log)), (uid(1), old_bytes));
    // Without SQLite nothing says the new generation was a replacement being built, so it is kept aside.
    let generation = building.file_name().unwrap().to_str().unwrap();
    assert_eq!(quarantined(crashed.path()).len(), 1);
    assert!(quarantined(crashed.path())[0].ends_with(&format!("-t-{generation}")));
}

#[test]
fn the_old_copy_of_a_committed_refresh_is_deleted_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), config());
    let old = store.create_topic("t", uid(1), 0).unwrap();
    append_n(&old, 100, 20);
    let old_dir = old.dir().to_path_buf();
    let saved = tempfile::tempdir().unwrap();
    copy_dir(&old_dir, saved.path());
    let replacement = store.begin_replace("t", uid(2), 0).unwrap();
    replacement.log().append(&[NewRecord::new(b"k", b"v")]).unwrap();
    store.commit_replace(replacement).unwrap();
    drop(old);
    drop(store);
    // A crash after the commit but before the old files were deleted.
    copy_dir(saved.path(), &old_dir);

    let store = open(dir.path(), config());
    assert_eq!(store.topic("t").unwrap().uid(), uid(2));
    assert!(!old_dir.exists());
    assert!(quarantined(dir.path()).is_empty());
}

#[test]
fn an_undescribed_topic_with_a_bad_identity_is_quarantined_whole() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), config());
        fill(&store);
    }
    let topic = dir.path().join("topics/t");
    std::fs::write(topic.join("topic.json"), b"not json").unwrap();
    let files = segment_files(&topic);
    std::fs::remove_file(dir.path().join("meta.sqlite")).unwrap();

    let store = open(dir.path(), config());
    assert!(store.topic("t").is_none());
    assert_eq!(store.topics().len(), 2, "the other topics are rebuilt");
    assert!(!topic.exists());
    let entries = quarantined(dir.path());
    assert_eq!(entries.len(), 1);
    assert!(entries[0].ends_with("-t"), "{entries:?}");
    let moved = dir.path().join("quarantine").join(&entries[0]);
    assert_eq!(segment_files(&moved), files, "every segment file is there, whole");
    assert_eq!(std::fs::read(moved.join("topic.json")).unwrap(), b"not json");
}

#[test]
fn a_meta_sqlite_older_than_the_last_refresh_follows_the_identity_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), config());
        append_n(&store.create_topic("t", uid(1), 0).unwrap(), 100, 20);
    }
    let backup = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("meta.sqlite"), backup.path().join("meta.sqlite")).unwrap();
    let expected = {
        let store = open(dir.path(), config());
        let replacement = store.begin_replace("t", uid(2), 500).unwrap();
        append_n(replacement.log(), 40, 10);
        store.commit_replace(replacement).unwrap();
        state(&store)
    };
    // The backup is restored: it names the first generation, which the refresh deleted.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("meta.sqlite{suffix}")));
    }
    std::fs::copy(backup.path().join("meta.sqlite"), dir.path().join("meta.sqlite")).unwrap();

    let store = open(dir.path(), config());
    assert_eq!(state(&store), expected);
    assert_eq!(store.topic("t").unwrap().uid(), uid(2));
    assert!(quarantined(dir.path()).is_empty());
}
