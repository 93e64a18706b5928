//! The data directory's layout. Every file and directory name is built and parsed here and nowhere else,
//! together with the directory fsync that makes a new name durable. This module does no other I/O.
//!
//! ```text
//! {root}/meta.sqlite                                         (and SQLite's -wal and -shm beside it)
//! {root}/meta.{why}-{time_ms}.sqlite                         an unusable database, moved aside
//! {root}/LOCK
//! {root}/topics/{name}/topic.json                            the topic's identity (identity.rs)
//! {root}/topics/{name}/topic.json.tmp                        an identity being written
//! {root}/topics/{name}/{generation}/{base_offset:020}.log
//! {root}/topics/{name}/{generation}/{base_offset:020}.index
//! {root}/quarantine/{time_ms}-{name}[-{generation}]/         what recovery could not account for
//! ```
//!
//! A topic's files live in a generation directory so that a full refresh can build a new copy beside the
//! old one and switch by changing one SQLite row.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// The SQLite metadata file.
const META_FILE: &str = "meta.sqlite";
/// The stem and extension of a metadata file moved aside: `meta.{why}-{time_ms}.sqlite`.
const META_ASIDE_STEM: &str = "meta";
/// The extension of the metadata file.
const META_EXTENSION: &str = "sqlite";
/// The suffixes SQLite adds to the database's name for its companion files: the database itself, its
/// write-ahead log and its shared-memory index. They belong together and move together.
const META_COMPANION_SUFFIXES: [&str; 3] = ["", "-wal", "-shm"];
/// The identity file in each topic's directory.
const IDENTITY_FILE: &str = "topic.json";
/// The suffix of an identity file being written, before it is renamed over the old one.
const TEMP_SUFFIX: &str = ".tmp";
/// The directory holding what recovery moved aside instead of deleting.
const QUARANTINE_DIR: &str = "quarantine";
/// The file locked while a store has the directory open.
const LOCK_FILE: &str = "LOCK";
/// The directory holding one directory per topic.
const TOPICS_DIR: &str = "topics";
/// Suffix of segment files.
const SEGMENT_SUFFIX: &str = ".log";
/// Suffix of sparse index files.
const INDEX_SUFFIX: &str = ".index";

/// Suffix of a compacted segment being written (`{base}.log.compact`); garbage until renamed.
const COMPACT_SUFFIX: &str = ".compact";

/// Suffix of a repaired segment being written (`{base}.log.repair`); garbage until renamed.
const REPAIR_SUFFIX: &str = ".repair";
/// Number of decimal digits of a base offset in a file name (enough for any `u64`).
const BASE_DIGITS: usize = 20;

/// The SQLite metadata file of the store at `root`.
pub(crate) fn meta_path(root: &Path) -> PathBuf {
    root.join(META_FILE)
}

/// Where a repaired copy of the segment file at `segment` is written before it is renamed over it.
pub(crate) fn repair_path(segment: &Path) -> PathBuf {
    let mut name = segment.as_os_str().to_owned();
    name.push(REPAIR_SUFFIX);
    PathBuf::from(name)
}

/// Where compaction writes the new copy of the segment file at `segment` before renaming it over it.
pub(crate) fn compact_path(segment: &Path) -> PathBuf {
    let mut name = segment.as_os_str().to_owned();
    name.push(COMPACT_SUFFIX);
    PathBuf::from(name)
}

/// The file a space probe allocates and removes in the store at `root`.
pub(crate) fn space_probe_path(root: &Path) -> PathBuf {
    root.join(".space-probe")
}

/// The metadata database and its companion files (write-ahead log, shared-memory index), in that order.
pub(crate) fn meta_files(root: &Path) -> [PathBuf; 3] {
    META_COMPANION_SUFFIXES.map(|suffix| root.join(format!("{META_FILE}{suffix}")))
}

/// Where the metadata database and its companion files go when they are moved aside, in the order of
/// [`meta_files`]: `meta.{why}-{time_ms}.sqlite` and the same name with `-wal` and `-shm`, so that SQLite
/// opens a moved database together with its own log.
pub(crate) fn meta_aside_files(root: &Path, why: &str, time_ms: u64) -> [PathBuf; 3] {
    META_COMPANION_SUFFIXES
        .map(|suffix| root.join(format!("{META_ASIDE_STEM}.{why}-{time_ms}.{META_EXTENSION}{suffix}")))
}

/// The lock file of the store at `root`.
pub(crate) fn lock_path(root: &Path) -> PathBuf {
    root.join(LOCK_FILE)
}

/// The directory holding every topic's directory.
pub(crate) fn topics_root(root: &Path) -> PathBuf {
    root.join(TOPICS_DIR)
}

/// The directory holding every generation of one topic.
pub(crate) fn topic_root(root: &Path, name: &str) -> PathBuf {
    topics_root(root).join(name)
}

/// The identity file of a topic, in the directory that holds its generations ([`topic_root`]).
pub(crate) fn identity_path(topic_root: &Path) -> PathBuf {
    topic_root.join(IDENTITY_FILE)
}

/// The temporary file an identity is written to before it is renamed to [`identity_path`].
pub(crate) fn identity_temp_path(topic_root: &Path) -> PathBuf {
    topic_root.join(format!("{IDENTITY_FILE}{TEMP_SUFFIX}"))
}

/// The directory recovery moves unaccountable files into.
pub(crate) fn quarantine_root(root: &Path) -> PathBuf {
    root.join(QUARANTINE_DIR)
}

/// One entry of the quarantine: `{time_ms}-{name}` for a whole topic directory, `{time_ms}-{name}-{generation}`
/// for a generation or files of one; `attempt` > 0 adds `.{attempt}` when the name is taken.
pub(crate) fn quarantine_dir(
    root: &Path,
    time_ms: u64,
    topic: &str,
    generation: Option<u64>,
    attempt: u32,
) -> PathBuf {
    let mut name = format!("{time_ms}-{topic}");
    if let Some(generation) = generation {
        name.push_str(&format!("-{generation}"));
    }
    if attempt > 0 {
        name.push_str(&format!(".{attempt}"));
    }
    quarantine_root(root).join(name)
}

/// The directory holding one generation (one complete copy) of a topic's segments.
pub fn topic_dir(root: &Path, name: &str, generation: u64) -> PathBuf {
    topic_root(root, name).join(generation.to_string())
}

/// The segment file whose first record has offset `base_offset`.
pub fn segment_path(topic_dir: &Path, base_offset: u64) -> PathBuf {
    topic_dir.join(format!("{base_offset:0BASE_DIGITS$}{SEGMENT_SUFFIX}"))
}

/// The sparse index file of the segment starting at `base_offset`.
pub fn index_path(topic_dir: &Path, base_offset: u64) -> PathBuf {
    topic_dir.join(format!("{base_offset:0BASE_DIGITS$}{INDEX_SUFFIX}"))
}

/// What a file name inside a generation directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TopicFile {
    /// A segment file with this base offset.
    Segment(u64),
    /// An index file with this base offset.
    Index(u64),
    /// A segment file being rewritten (compaction) or repaired that was never renamed in: garbage.
    Unfinished,
}

/// Parses a file name written by [`segment_path`] or [`index_path`].
pub(crate) fn parse_topic_file(file_name: &str) -> Option<TopicFile> {
    let parse_base = |digits: &str| {
        (digits.len() == BASE_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse::<u64>().ok())
            .flatten()
    };
    if let Some(digits) = file_name.strip_suffix(SEGMENT_SUFFIX) {
        return parse_base(digits).map(TopicFile::Segment);
    }
    if let Some(digits) = file_name.strip_suffix(INDEX_SUFFIX) {
        return parse_base(digits).map(TopicFile::Index);
    }
    for suffix in [COMPACT_SUFFIX, REPAIR_SUFFIX] {
        if let Some(segment) = file_name.strip_suffix(suffix)
            && let Some(TopicFile::Segment(_)) = parse_topic_file(segment)
        {
            return Some(TopicFile::Unfinished);
        }
    }
    None
}

/// What an entry of a topic's directory ([`topic_root`]) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TopicRootEntry {
    /// A generation directory with this number.
    Generation(u64),
    /// The identity file.
    Identity,
    /// An identity file whose writing never finished.
    IdentityTemp,
}

/// Parses a name found in a topic's directory.
pub(crate) fn parse_topic_root_entry(name: &str) -> Option<TopicRootEntry> {
    if name == IDENTITY_FILE {
        return Some(TopicRootEntry::Identity);
    }
    if name.strip_suffix(TEMP_SUFFIX) == Some(IDENTITY_FILE) {
        return Some(TopicRootEntry::IdentityTemp);
    }
    parse_generation(name).map(TopicRootEntry::Generation)
}

/// Parses a generation directory name written by [`topic_dir`].
pub(crate) fn parse_generation(dir_name: &str) -> Option<u64> {
    if dir_name.is_empty() || !dir_name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    dir_name.parse().ok()
}

/// Makes the entries of directory `dir` (files created, renamed or removed in it) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    let handle = File::open(dir).map_err(|source| Error::io("open directory", dir, source))?;
    handle.sync_all().map_err(|source| Error::io("sync directory", dir, source))
}

/// Removes a directory tree, logging rather than failing: used where the removal is a clean-up that the
/// next open would redo anyway.
pub(crate) fn remove_dir_logged(dir: &Path, why: &str) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(dir = %dir.display(), %error, "cannot remove directory ({why})"),
    }
}

/// Removes a file, logging rather than failing, for the same reason as [`remove_dir_logged`].
pub(crate) fn remove_file_logged(path: &Path, why: &str) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(path = %path.display(), %error, "cannot remove file ({why})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let dir = topic_dir(Path::new("/data"), "prices", 3);
        assert_eq!(dir, Path::new("/data/topics/prices/3"));
        let segment = segment_path(&dir, 42);
        assert_eq!(segment, Path::new("/data/topics/prices/3/00000000000000000042.log"));
        let index = index_path(&dir, u64::MAX);
        let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(parse_topic_file(&name(&segment)), Some(TopicFile::Segment(42)));
        assert_eq!(parse_topic_file(&name(&index)), Some(TopicFile::Index(u64::MAX)));
        assert_eq!(parse_generation("3"), Some(3));
        let topic = topic_root(Path::new("/data"), "prices");
        assert_eq!(identity_path(&topic), Path::new("/data/topics/prices/topic.json"));
        assert_eq!(parse_topic_root_entry(&name(&identity_path(&topic))), Some(TopicRootEntry::Identity));
        assert_eq!(
            parse_topic_root_entry(&name(&identity_temp_path(&topic))),
            Some(TopicRootEntry::IdentityTemp)
        );
        assert_eq!(parse_topic_root_entry("3"), Some(TopicRootEntry::Generation(3)));
        assert_eq!(parse_topic_root_entry("topic.json.old"), None);
    }

    #[test]
    fn aside_and_quarantine_names() {
        let root = Path::new("/data");
        let [db, wal, shm] = meta_files(root);
        assert_eq!(
            (db.as_path(), wal.as_path(), shm.as_path()),
            (
                Path::new("/data/meta.sqlite"),
                Path::new("/data/meta.sqlite-wal"),
                Path::new("/data/meta.sqlite-shm")
            )
        );
        let [db, wal, _] = meta_aside_files(root, "corrupt", 17);
        assert_eq!(db, Path::new("/data/meta.corrupt-17.sqlite"));
        assert_eq!(wal, Path::new("/data/meta.corrupt-17.sqlite-wal"));
        assert_eq!(quarantine_dir(root, 5, "t", Some(3), 0), Path::new("/data/quarantine/5-t-3"));
        assert_eq!(quarantine_dir(root, 5, "t", None, 2), Path::new("/data/quarantine/5-t.2"));
    }

    #[test]
    fn foreign_names_are_not_parsed() {
        for name in ["42.log", "x0000000000000000042.log", "00000000000000000042.log.tmp", "meta.sqlite", ""]
        {
            assert_eq!(parse_topic_file(name), None, "{name}");
        }
        for name in ["", "3a", "-1", "tmp"] {
            assert_eq!(parse_generation(name), None, "{name}");
        }
    }
}
