//! The data directory's layout. Every file and directory name is built and parsed here and nowhere else,
//! together with the directory fsync that makes a new name durable. This module does no other I/O.
//!
//! ```text
//! {root}/meta.sqlite
//! {root}/LOCK
//! {root}/topics/{name}/{generation}/{base_offset:020}.log
//! {root}/topics/{name}/{generation}/{base_offset:020}.index
//! ```
//!
//! A topic's files live in a generation directory so that a full refresh can build a new copy beside the
//! old one and switch by changing one SQLite row.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// The SQLite metadata file.
const META_FILE: &str = "meta.sqlite";
/// The file locked while a store has the directory open.
const LOCK_FILE: &str = "LOCK";
/// The directory holding one directory per topic.
const TOPICS_DIR: &str = "topics";
/// Suffix of segment files.
const SEGMENT_SUFFIX: &str = ".log";
/// Suffix of sparse index files.
const INDEX_SUFFIX: &str = ".index";
/// Number of decimal digits of a base offset in a file name (enough for any `u64`).
const BASE_DIGITS: usize = 20;

/// The SQLite metadata file of the store at `root`.
pub(crate) fn meta_path(root: &Path) -> PathBuf {
    root.join(META_FILE)
}

/// Where a repaired copy of the segment file at `segment` is written before it is renamed over it.
pub(crate) fn repair_path(segment: &Path) -> PathBuf {
    let mut name = segment.as_os_str().to_owned();
    name.push(".repair");
    PathBuf::from(name)
}

/// The file a space probe allocates and removes in the store at `root`.
pub(crate) fn space_probe_path(root: &Path) -> PathBuf {
    root.join(".space-probe")
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
    None
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
