//! Recovery of one committed topic: the segment files of its committed generation reconciled with its
//! segment rows, and its log opened. The rules are listed in `recovery.rs`'s module doc; this file applies
//! the ones about segments, indexes and tails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use protocol::now_ms;

use crate::config::LogConfig;
use crate::error::Error;
use crate::log::{Log, LogParts};
use crate::meta::{Meta, SegmentRow, TopicRow};
use crate::paths::{
    TopicFile, index_path, parse_topic_file, remove_file_logged, segment_path, sync_dir, topic_dir,
};
use crate::quarantine::Quarantine;
use crate::segment::{Segment, open_sealed};
use crate::writer::SegmentWriter;

use super::list_dir;

/// What recovering one topic needs besides the topic itself.
pub(super) struct TopicContext<'a> {
    /// The data directory.
    pub(super) root: &'a Path,
    /// The store's settings.
    pub(super) config: &'a Arc<LogConfig>,
    /// The metadata database.
    pub(super) meta: &'a Arc<Meta>,
    /// Where segments that cannot be part of the log go.
    pub(super) quarantine: &'a Quarantine,
}

/// Rows to write back once a topic is recovered.
#[derive(Debug, Default)]
struct MetaChanges {
    /// Rows to insert or rewrite.
    upserts: Vec<SegmentRow>,
    /// Base offsets whose rows (if any) go.
    removed: Vec<u64>,
}

/// One topic being recovered.
struct TopicRun<'a> {
    /// The shared context.
    context: &'a TopicContext<'a>,
    /// The topic's row.
    topic: &'a TopicRow,
    /// Its committed generation directory.
    dir: std::path::PathBuf,
    /// Whether the topic is being rebuilt from its files (SQLite had no row for it), so that adopting every
    /// segment is expected and not worth a warning each.
    rebuilding: bool,
    /// When recovery started.
    now: u64,
    /// The rows to write back.
    changes: MetaChanges,
}

/// Reconciles one committed topic and opens its log.
pub(super) fn recover_topic(
    context: &TopicContext<'_>,
    topic: &TopicRow,
    rebuilding: bool,
) -> Result<Log, Error> {
    let dir = topic_dir(context.root, &topic.name, topic.generation);
    if !dir.exists() {
        tracing::warn!(
            topic = %topic.name, dir = %dir.display(),
            "committed generation directory is missing; recreating it"
        );
    }
    std::fs::create_dir_all(&dir).map_err(|source| Error::io("create topic directory", &dir, source))?;
    let mut run =
        TopicRun { context, topic, dir, rebuilding, now: now_ms(), changes: MetaChanges::default() };
    run.recover()
}

impl TopicRun<'_> {
    /// Applies the rules and assembles the log.
    fn recover(&mut self) -> Result<Log, Error> {
        let (config, meta, topic) = (self.context.config, self.context.meta, self.topic);
        let rows: BTreeMap<u64, SegmentRow> = meta
            .segments(&topic.name, topic.generation)?
            .into_iter()
            .map(|row| (row.base_offset, row))
            .collect();
        let (segment_files, index_files) = list_topic_files(&self.dir)?;

        for base in rows.keys().filter(|base| !segment_files.contains(base)) {
            tracing::warn!(
                topic = %topic.name, base_offset = base,
                "segment row without a file; removing the row"
            );
            self.changes.removed.push(*base);
        }
        let mut bases = Vec::new();
        for base in segment_files {
            if !rows.contains_key(&base) && base < topic.log_start {
                tracing::warn!(
                    topic = %topic.name, base_offset = base,
                    "unknown segment below the log start (left over by retention); deleting it"
                );
                delete_segment_files(&self.dir, base);
            } else {
                bases.push(base);
            }
        }

        let mut sealed = Vec::new();
        let active = match bases.split_last() {
            Some((&last, older)) => {
                for &base in older {
                    if let Some(segment) = self.open_older(base, rows.get(&base))? {
                        sealed.push(segment);
                    }
                }
                self.resume_last(last, rows.get(&last))?
            }
            None => {
                let start = known_end(&rows, topic.log_start);
                tracing::warn!(
                    topic = %topic.name, start,
                    "no segment file; starting an empty log where the metadata ends"
                );
                let writer = SegmentWriter::create(&self.dir, start, self.now, config)?;
                sync_dir(&self.dir)?;
                self.changes.upserts.push(SegmentRow::active(start, self.now));
                writer
            }
        };

        let sealed = self.drop_covered(sealed);
        let mut sealed = sealed;
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
            drop(segment);
            self.quarantine_segment(base, "a gap follows it, so the log cannot include it")?;
            self.changes.upserts.retain(|row| row.base_offset != base);
        }
        let kept: BTreeSet<u64> = sealed.iter().map(|segment| segment.base_offset()).collect();
        for base in index_files.into_iter().filter(|base| !kept.contains(base)) {
            remove_file_logged(&index_path(&self.dir, base), "index without a sealed segment");
        }

        let log_start =
            sealed.first().map_or(active.segment().base_offset(), |segment| segment.base_offset());
        if !self.changes.upserts.is_empty() {
            meta.upsert_segments(&topic.name, topic.generation, &self.changes.upserts)?;
        }
        if !self.changes.removed.is_empty() || log_start != topic.log_start {
            meta.remove_segments(&topic.name, topic.generation, &self.changes.removed, log_start)?;
        }
        Ok(Log::assemble(LogParts {
            name: topic.name.clone(),
            uid: topic.uid,
            generation: topic.generation,
            dir: self.dir.clone(),
            created_ms: topic.created_ms,
            config: Arc::clone(config),
            meta: Arc::clone(meta),
            sealed,
            active,
            epochs: topic.epochs.clone(),
            settings: topic.settings,
            delete_horizon: topic.delete_horizon,
        }))
    }

    /// Deletes the segments that start inside the segment before them and end within it: compaction renamed
    /// that one in (it ends where the last segment it replaced ended) and crashed before deleting them, so
    /// every record of theirs it did not keep was replaced by a later one.
    fn drop_covered(&mut self, sealed: Vec<Arc<Segment>>) -> Vec<Arc<Segment>> {
        let mut kept: Vec<Arc<Segment>> = Vec::with_capacity(sealed.len());
        for segment in sealed {
            let (base, end) = (segment.base_offset(), segment.state().end_offset);
            if let Some(before) = kept.last()
                && base < before.state().end_offset
                && end <= before.state().end_offset
            {
                tracing::warn!(
                    topic = %self.topic.name, base_offset = base, covered_by = before.base_offset(),
                    "segment replaced by a compacted one (compaction stopped before deleting it); deleting it"
                );
                drop(segment);
                delete_segment_files(&self.dir, base);
                self.changes.removed.push(base);
                self.changes.upserts.retain(|row| row.base_offset != base);
                continue;
            }
            kept.push(segment);
        }
        kept
    }

    /// Opens a segment that is not the last one, as sealed. Returns `None` if it holds no valid record:
    /// an empty file is deleted, one with bytes is quarantined.
    fn open_older(&mut self, base: u64, row: Option<&SegmentRow>) -> Result<Option<Arc<Segment>>, Error> {
        let path = segment_path(&self.dir, base);
        let file_len =
            std::fs::metadata(&path).map_err(|source| Error::io("stat segment file", &path, source))?.len();
        let expected_last =
            row.filter(|row| row.sealed && row.size_bytes == file_len).and_then(|row| row.last_offset);
        let created_ms = row.map_or(self.now, |row| row.created_ms);
        let sealed_ms = row.and_then(|row| row.sealed_ms).unwrap_or(self.now);
        let opened = open_sealed(
            &path,
            base,
            expected_last,
            created_ms,
            sealed_ms,
            self.context.config.index_interval_bytes,
        )?;
        // A rebuilt topic has no rows, so every segment is rescanned; only damage found is worth a warning.
        if let Some(why) = &opened.rescanned
            && (opened.truncated_bytes > 0 || !(self.rebuilding && row.is_none()))
        {
            tracing::warn!(
                path = %path.display(), why, truncated_bytes = opened.truncated_bytes,
                "sealed segment rescanned"
            );
        }
        let Some(segment) = opened.segment else {
            if file_len == 0 {
                tracing::warn!(path = %path.display(), "empty segment file; deleting it");
                delete_segment_files(&self.dir, base);
                self.changes.removed.push(base);
            } else {
                self.quarantine_segment(base, "it holds no valid record")?;
            }
            return Ok(None);
        };
        if row.is_none() && !self.rebuilding {
            tracing::warn!(
                path = %path.display(),
                "segment file unknown to the metadata; adopting it if it continues the log"
            );
        }
        if row.is_none() || opened.rescanned.is_some() {
            let state = segment.state();
            self.changes.upserts.push(SegmentRow {
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
    fn resume_last(&mut self, base: u64, row: Option<&SegmentRow>) -> Result<SegmentWriter, Error> {
        let path = segment_path(&self.dir, base);
        let created_ms = row.map_or(self.now, |row| row.created_ms);
        let (writer, outcome) = SegmentWriter::resume(&path, base, created_ms, self.context.config)?;
        if let Some(problem) = &outcome.problem {
            tracing::warn!(
                topic = %self.topic.name,
                path = %path.display(),
                problem,
                valid_bytes = outcome.valid_len,
                next_offset = outcome.next_offset,
                "cut a torn or corrupt tail off the active segment"
            );
        }
        if row.is_none() && !self.rebuilding {
            tracing::warn!(path = %path.display(), "active segment file unknown to the metadata; adopting it");
        }
        if row.is_none_or(|row| row.sealed) {
            self.changes.upserts.push(SegmentRow::active(base, created_ms));
        }
        remove_file_logged(&index_path(&self.dir, base), "the active segment keeps its index in memory");
        Ok(writer)
    }

    /// Moves a segment that cannot be part of the log into the quarantine and forgets its row.
    fn quarantine_segment(&mut self, base: u64, why: &str) -> Result<(), Error> {
        let topic = &self.topic.name;
        self.context.quarantine.move_segment(&self.dir, topic, self.topic.generation, base, why)?;
        self.changes.removed.push(base);
        Ok(())
    }
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
            Some(TopicFile::Unfinished) => remove_file_logged(&path, "a rewrite that was never switched in"),
            None => tracing::warn!(path = %path.display(), "unexpected file in a topic directory; ignored"),
        }
    }
    Ok((segments, indexes))
}
