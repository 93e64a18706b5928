//! Recovery when a store opens: the segment files are the truth about records, SQLite is the truth about
//! which topics exist and which generation is committed, and this module reconciles the two after a clean
//! close or a crash at any point. It runs before any log is shared, so it needs no locking.
//!
//! Every mismatch has one outcome, logged with `tracing::warn!`:
//!
//! - A topic directory with no topic row (a creation or deletion cut short) is deleted.
//! - A generation directory other than the committed one (a replacement that never committed, or the old
//!   copy of one that did) is deleted, and so are segment rows of uncommitted generations.
//! - A committed generation directory that is missing is recreated, empty, at the end SQLite knows of.
//! - A segment row without a file is removed.
//! - A segment file SQLite does not know is adopted if it continues the log; one below the log start (left
//!   over by retention) is deleted.
//! - A sealed segment whose size or last offset differs from its row, or which has no sealed row, is
//!   rescanned record by record (CRC and offsets); anything after its valid records is cut off, and its
//!   row is rewritten. One without any valid record is deleted.
//! - A missing or bad index file is rebuilt from its segment; an index file without a segment is deleted.
//! - The last segment is always the active one: every record's CRC and offset continuity is checked, a
//!   torn or corrupt tail is cut (the file is truncated to the valid prefix, so what follows reads as
//!   zeros), and the file is synced.
//! - Segments must be contiguous. Where a gap remains, the segments before it are deleted: the newest run
//!   is kept because new offsets continue from it, and keeping older data instead would hand out offsets
//!   again. The log start moves to the first segment kept.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use crate::config::LogConfig;
use crate::error::Error;
use crate::log::{Log, LogParts};
use crate::meta::{Meta, SegmentRow, TopicRow};
use crate::paths::{
    TopicFile, index_path, meta_path, parse_generation, parse_topic_file, remove_dir_logged,
    remove_file_logged, segment_path, sync_dir, topic_dir, topics_root,
};
use crate::segment::{Segment, open_sealed};
use crate::writer::SegmentWriter;
use protocol::now_ms;

/// The result of recovering a store.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// One log per committed topic, sorted by name.
    pub(crate) logs: Vec<Log>,
    /// The highest generation number seen, committed or not.
    pub(crate) max_generation: u64,
}

/// Reconciles the store at `root` with its metadata and opens every topic's log.
pub(crate) fn recover(root: &Path, config: &Arc<LogConfig>, meta: &Arc<Meta>) -> Result<Recovered, Error> {
    let topics = meta.topics()?;
    for topic in &topics {
        // A name becomes a directory name, so one that was not written by this crate must not be used.
        if let Err(reason) = protocol::validate_topic_name(&topic.name) {
            return Err(Error::CorruptMeta { path: meta_path(root), detail: reason });
        }
    }
    let removed_rows = meta.delete_uncommitted_segments()?;
    if removed_rows > 0 {
        tracing::warn!(
            rows = removed_rows,
            "removed segment rows of uncommitted generations or deleted topics"
        );
    }
    let by_name: HashMap<&str, &TopicRow> = topics.iter().map(|topic| (topic.name.as_str(), topic)).collect();
    let committed_max = topics.iter().map(|topic| topic.generation).max().unwrap_or(0);
    let max_generation = clean_directories(root, &by_name)?.max(committed_max);
    let mut logs = Vec::with_capacity(topics.len());
    for topic in &topics {
        logs.push(recover_topic(root, config, meta, topic)?);
    }
    Ok(Recovered { logs, max_generation })
}

/// Deletes topic directories without a topic row and generation directories that are not committed.
/// Returns the highest generation number found.
fn clean_directories(root: &Path, topics: &HashMap<&str, &TopicRow>) -> Result<u64, Error> {
    let mut max_generation = 0;
    let topics_dir = topics_root(root);
    for (name, path) in list_dir(&topics_dir)? {
        if !path.is_dir() {
            tracing::warn!(path = %path.display(), "unexpected file among the topic directories; ignored");
            continue;
        }
        let Some(topic) = topics.get(name.as_str()) else {
            tracing::warn!(
                dir = %path.display(),
                "topic directory without metadata (creation or deletion cut short); deleting it"
            );
            remove_dir_logged(&path, "no topic row");
            continue;
        };
        for (generation_name, generation_path) in list_dir(&path)? {
            match parse_generation(&generation_name).filter(|_| generation_path.is_dir()) {
                Some(generation) if generation == topic.generation => {}
                Some(generation) => {
                    max_generation = max_generation.max(generation);
                    tracing::warn!(
                        dir = %generation_path.display(),
                        "uncommitted or superseded generation; deleting it"
                    );
                    remove_dir_logged(&generation_path, "generation not committed");
                }
                None => {
                    tracing::warn!(
                        path = %generation_path.display(),
                        "unexpected entry in a topic directory; ignored"
                    )
                }
            }
        }
    }
    Ok(max_generation)
}

/// Rows to write back once a topic is recovered.
#[derive(Debug, Default)]
struct MetaChanges {
    /// Rows to insert or rewrite.
    upserts: Vec<SegmentRow>,
    /// Base offsets whose rows (if any) go.
    removed: Vec<u64>,
}

/// Reconciles one committed topic and opens its log.
fn recover_topic(
    root: &Path,
    config: &Arc<LogConfig>,
    meta: &Arc<Meta>,
    topic: &TopicRow,
) -> Result<Log, Error> {
    let dir = topic_dir(root, &topic.name, topic.generation);
    if !dir.exists() {
        tracing::warn!(
            topic = %topic.name, dir = %dir.display(),
            "committed generation directory is missing; recreating it"
        );
    }
    std::fs::create_dir_all(&dir).map_err(|source| Error::io("create topic directory", &dir, source))?;
    let rows: BTreeMap<u64, SegmentRow> =
        meta.segments(&topic.name, topic.generation)?.into_iter().map(|row| (row.base_offset, row)).collect();
    let (segment_files, index_files) = list_topic_files(&dir)?;
    let mut changes = MetaChanges::default();

    for base in rows.keys().filter(|base| !segment_files.contains(base)) {
        tracing::warn!(
            topic = %topic.name, base_offset = base,
            "segment row without a file; removing the row"
        );
        changes.removed.push(*base);
    }
    let mut bases = Vec::new();
    for base in segment_files {
        if !rows.contains_key(&base) && base < topic.log_start {
            tracing::warn!(
                topic = %topic.name, base_offset = base,
                "unknown segment below the log start (left over by retention); deleting it"
            );
            delete_segment_files(&dir, base);
        } else {
            bases.push(base);
        }
    }

    let now = now_ms();
    let mut sealed = Vec::new();
    let active = match bases.split_last() {
        Some((&last, older)) => {
            for &base in older {
                if let Some(segment) = open_older(&dir, base, rows.get(&base), config, now, &mut changes)? {
                    sealed.push(segment);
                }
            }
            resume_last(&dir, &topic.name, last, rows.get(&last), config, now, &mut changes)?
        }
        None => {
            let start = known_end(&rows, topic.log_start);
            tracing::warn!(
                topic = %topic.name, start,
                "no segment file; starting an empty log where the metadata ends"
            );
            let writer = SegmentWriter::create(&dir, start, now, config)?;
            sync_dir(&dir)?;
            changes.upserts.push(SegmentRow::active(start, now));
            writer
        }
    };

    let mut expected = active.segment().base_offset();
    let mut keep_from = sealed.len();
    for (i, segment) in sealed.iter().enumerate().rev() {
        if segment.state().end_offset != expected {
            break;
        }
        expected = segment.base_offset();
        keep_from = i;
    }
    for segment in sealed.drain(..keep_from) {
        let base = segment.base_offset();
        tracing::warn!(
            topic = %topic.name, path = %segment.path().display(),
            "a gap follows this segment; deleting it"
        );
        delete_segment_files(&dir, base);
        changes.removed.push(base);
        changes.upserts.retain(|row| row.base_offset != base);
    }
    let kept: BTreeSet<u64> = sealed.iter().map(|segment| segment.base_offset()).collect();
    for base in index_files.into_iter().filter(|base| !kept.contains(base)) {
        remove_file_logged(&index_path(&dir, base), "index without a sealed segment");
    }

    let log_start = sealed.first().map_or(active.segment().base_offset(), |segment| segment.base_offset());
    if !changes.upserts.is_empty() {
        meta.upsert_segments(&topic.name, topic.generation, &changes.upserts)?;
    }
    if !changes.removed.is_empty() || log_start != topic.log_start {
        meta.remove_segments(&topic.name, topic.generation, &changes.removed, log_start)?;
    }
    Ok(Log::assemble(LogParts {
        name: topic.name.clone(),
        uid: topic.uid,
        generation: topic.generation,
        dir,
        created_ms: topic.created_ms,
        config: Arc::clone(config),
        meta: Arc::clone(meta),
        sealed,
        active,
    }))
}

/// Opens a segment that is not the last one, as sealed. Returns `None` (and deletes the files) if it
/// holds no valid record.
fn open_older(
    dir: &Path,
    base: u64,
    row: Option<&SegmentRow>,
    config: &LogConfig,
    now: u64,
    changes: &mut MetaChanges,
) -> Result<Option<Arc<Segment>>, Error> {
    let path = segment_path(dir, base);
    let file_len =
        std::fs::metadata(&path).map_err(|source| Error::io("stat segment file", &path, source))?.len();
    let expected_last =
        row.filter(|row| row.sealed && row.size_bytes == file_len).and_then(|row| row.last_offset);
    let created_ms = row.map_or(now, |row| row.created_ms);
    let sealed_ms = row.and_then(|row| row.sealed_ms).unwrap_or(now);
    let opened = open_sealed(&path, base, expected_last, created_ms, sealed_ms, config.index_interval_bytes)?;
    if let Some(why) = &opened.rescanned {
        tracing::warn!(
            path = %path.display(), why, truncated_bytes = opened.truncated_bytes,
            "sealed segment rescanned"
        );
    }
    let Some(segment) = opened.segment else {
        tracing::warn!(path = %path.display(), "segment holds no valid record; deleting it");
        delete_segment_files(dir, base);
        changes.removed.push(base);
        return Ok(None);
    };
    if row.is_none() {
        tracing::warn!(
            path = %path.display(),
            "segment file unknown to the metadata; adopting it if it continues the log"
        );
    }
    if row.is_none() || opened.rescanned.is_some() {
        let state = segment.state();
        changes.upserts.push(SegmentRow {
            base_offset: base,
            last_offset: Some(state.end_offset - 1),
            size_bytes: state.written as u64,
            sealed: true,
            created_ms,
            sealed_ms: state.sealed_ms,
            last_timestamp_ms: Some(state.last_timestamp_ms),
        });
    }
    Ok(Some(segment))
}

/// Reopens the last segment as the active one, cutting a torn or corrupt tail.
fn resume_last(
    dir: &Path,
    topic: &str,
    base: u64,
    row: Option<&SegmentRow>,
    config: &LogConfig,
    now: u64,
    changes: &mut MetaChanges,
) -> Result<SegmentWriter, Error> {
    let path = segment_path(dir, base);
    let created_ms = row.map_or(now, |row| row.created_ms);
    let (writer, outcome) = SegmentWriter::resume(&path, base, created_ms, config)?;
    if let Some(problem) = &outcome.problem {
        tracing::warn!(
            topic,
            path = %path.display(),
            problem,
            valid_bytes = outcome.valid_len,
            next_offset = outcome.next_offset,
            "cut a torn or corrupt tail off the active segment"
        );
    }
    if row.is_none() {
        tracing::warn!(path = %path.display(), "active segment file unknown to the metadata; adopting it");
    }
    if row.is_none_or(|row| row.sealed) {
        changes.upserts.push(SegmentRow::active(base, created_ms));
    }
    remove_file_logged(&index_path(dir, base), "the active segment keeps its index in memory");
    Ok(writer)
}

/// The offset after everything the metadata knows of, so an empty restart never hands out an offset again.
fn known_end(rows: &BTreeMap<u64, SegmentRow>, log_start: u64) -> u64 {
    rows.values()
        .map(|row| row.last_offset.map_or(row.base_offset, |last| last + 1))
        .fold(log_start, u64::max)
}

/// Deletes a segment file and its index file.
fn delete_segment_files(dir: &Path, base: u64) {
    remove_file_logged(&segment_path(dir, base), "recovery");
    remove_file_logged(&index_path(dir, base), "recovery");
}

/// The segment and index files of a generation directory, by base offset. Other files are logged and left.
fn list_topic_files(dir: &Path) -> Result<(BTreeSet<u64>, BTreeSet<u64>), Error> {
    let mut segments = BTreeSet::new();
    let mut indexes = BTreeSet::new();
    for (name, path) in list_dir(dir)? {
        match parse_topic_file(&name) {
            Some(TopicFile::Segment(base)) => {
                segments.insert(base);
            }
            Some(TopicFile::Index(base)) => {
                indexes.insert(base);
            }
            None => tracing::warn!(path = %path.display(), "unexpected file in a topic directory; ignored"),
        }
    }
    Ok((segments, indexes))
}

/// The entries of a directory as (UTF-8 name, path); names that are not UTF-8 are logged and skipped.
fn list_dir(dir: &Path) -> Result<Vec<(String, std::path::PathBuf)>, Error> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::io("list directory", dir, source))?;
    let mut listed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::io("list directory", dir, source))?;
        match entry.file_name().into_string() {
            Ok(name) => listed.push((name, entry.path())),
            Err(name) => tracing::warn!(dir = %dir.display(), ?name, "entry name is not UTF-8; ignored"),
        }
    }
    listed.sort();
    Ok(listed)
}
