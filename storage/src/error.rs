//! The storage error type. Every variant says what failed, on which file or topic, and keeps the source
//! error, so the broker can map it to a protocol ERROR frame or an HTTP status without guessing.

use std::io;
use std::path::{Path, PathBuf};

use protocol::WireError;

/// What went wrong in the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// The operation, such as "create segment file" or "flush segment".
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The disk (or the process's file size limit) has no room for the data: the append or roll was
    /// refused and nothing was written.
    #[error("no space to {op} {path}: {source}")]
    NoSpace {
        /// The operation that needed space, such as "allocate segment space".
        op: &'static str,
        /// The file that could not grow.
        path: PathBuf,
        /// The operating system's error (ENOSPC, EFBIG or EDQUOT).
        #[source]
        source: io::Error,
    },
    /// The SQLite metadata database failed.
    #[error("segment metadata: cannot {op} in {path}: {source}")]
    Meta {
        /// The operation, such as "record a roll".
        op: &'static str,
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A segment's bytes do not hold what the log's positions say they must (a bug or outside damage).
    #[error("segment {path} is corrupt: {detail}")]
    CorruptSegment {
        /// The segment file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The metadata database holds a value that cannot be right.
    #[error("segment metadata in {path} is corrupt: {detail}")]
    CorruptMeta {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The metadata database file cannot be used at all: SQLite does not recognise it as a database, finds
    /// it damaged, or its schema is not one this build knows. Opening a store moves such a file aside and
    /// rebuilds the database from the topics' identity files and segment files.
    #[error("segment metadata {path} is unusable: {detail}")]
    UnusableMeta {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
        /// SQLite's error, when SQLite reported the problem.
        #[source]
        source: Option<rusqlite::Error>,
    },
    /// Another store (in this or another process) has the data directory open.
    #[error("the data directory lock {path} is held by another store: {source}")]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The error from `flock`.
        #[source]
        source: io::Error,
    },
    /// The configuration cannot work.
    #[error("invalid storage configuration: {reason}")]
    BadConfig {
        /// What is wrong with it.
        reason: String,
    },
    /// A topic name that is not allowed (it becomes a directory name).
    #[error("bad topic name {name:?}: {reason}")]
    BadTopicName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// `create_topic` for a name that already exists.
    #[error("topic {name:?} already exists")]
    TopicExists {
        /// The topic.
        name: String,
    },
    /// An operation on a topic the store does not have.
    #[error("unknown topic {name:?}")]
    UnknownTopic {
        /// The topic.
        name: String,
    },
    /// The log was replaced by a full refresh or deleted; look the topic up again.
    #[error("topic {topic:?}: this copy of the log was replaced or deleted")]
    Closed {
        /// The topic.
        topic: String,
    },
    /// A record given to [`crate::Log::append`] cannot be encoded; nothing of the batch was written.
    #[error("topic {topic:?}: record {index} of the batch is invalid: {source}")]
    BadRecord {
        /// The topic.
        topic: String,
        /// The position of the record in the batch.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: WireError,
    },
    /// A record larger than a whole segment; nothing of the batch was written.
    #[error("topic {topic:?}: a record of {len} bytes cannot fit in a segment of {segment_bytes} bytes")]
    RecordTooLarge {
        /// The topic.
        topic: String,
        /// The record's size.
        len: usize,
        /// The configured segment size.
        segment_bytes: u64,
    },
    /// A batch given to [`crate::Log::append_records`] fails its checks (CRC, length, fields or offset
    /// continuity inside the batch); nothing of it was written.
    #[error("topic {topic:?}: bad record batch: {source}")]
    BadBatch {
        /// The topic.
        topic: String,
        /// The first problem found.
        #[source]
        source: WireError,
    },
    /// A batch given to [`crate::Log::append_records`] starts above the log's next offset, which would
    /// leave a gap; nothing was written.
    #[error("topic {topic:?}: batch starts at offset {found} but the log continues at {expected}")]
    OffsetGap {
        /// The topic.
        topic: String,
        /// The log's next offset.
        expected: u64,
        /// The batch's first offset.
        found: u64,
    },
    /// A read below the first offset still stored.
    #[error("offset {requested} is below the log start {log_start}")]
    OffsetBelowLogStart {
        /// The offset asked for.
        requested: u64,
        /// The first offset stored.
        log_start: u64,
    },
    /// A read above the log end.
    #[error("offset {requested} is beyond the log end {next_offset}")]
    OffsetBeyondEnd {
        /// The offset asked for.
        requested: u64,
        /// The offset the next record will get.
        next_offset: u64,
    },
    /// A read reached a record whose bytes fail their CRC; nothing from there on in its segment is served
    /// until the segment is repaired.
    #[error("the record at offset {offset} of {topic:?} is damaged (it fails its CRC) and is not served")]
    Damaged {
        /// The topic.
        topic: String,
        /// The first damaged offset.
        offset: u64,
    },
    /// Records offered to repair a segment are not that segment's records.
    #[error("cannot repair the segment of {topic:?} at {base_offset}: {reason}")]
    BadRepair {
        /// The topic.
        topic: String,
        /// The segment's first offset.
        base_offset: u64,
        /// What does not match.
        reason: String,
    },
}

impl Error {
    /// Wraps an I/O error, classifying "no space" conditions (ENOSPC, EDQUOT, and EFBIG from a file size
    /// limit) as [`Error::NoSpace`].
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Error {
        let path = path.to_path_buf();
        match source.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => Error::NoSpace { op, path, source },
            _ => Error::Io { op, path, source },
        }
    }

    /// Whether the error says the disk or file size limit is full.
    pub fn is_no_space(&self) -> bool {
        matches!(self, Error::NoSpace { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_space_is_classified() {
        let path = Path::new("/x");
        for errno in [libc::ENOSPC, libc::EDQUOT, libc::EFBIG] {
            let error = Error::io("grow", path, io::Error::from_raw_os_error(errno));
            assert!(error.is_no_space(), "{error}");
        }
        let other = Error::io("grow", path, io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(other, Error::Io { op: "grow", .. }));
        assert!(std::error::Error::source(&other).is_some());
    }
}
