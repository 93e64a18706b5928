//! Never serving a byte that fails its CRC. Stored records are proven before they are appended and are not
//! hashed again on the way out, so damage that happens on disk afterwards (a flipped bit, a bad sector) is
//! found three ways: a background scrub of sealed segments at a bounded rate ([`Store::scrub`]), a check of
//! exactly the range a receiver refused ([`Log::verify`]), and the scans recovery already runs. A damaged
//! segment stops serving at its first bad record ([`crate::Error::Damaged`] from reads), so no reader loops
//! on the same bytes; a relaying node replaces the segment with its parent's bytes
//! ([`Log::repair_segment`]), which are byte for byte the same records. This module does no network I/O:
//! fetching the good bytes is the caller's.

use std::sync::Arc;

use bytes::Bytes;
use protocol::CheckedBatch;

use crate::error::Error;
use crate::log::Log;
use crate::paths::{repair_path, sync_dir};
use crate::segment::{Segment, open_sealed};
use crate::store::Store;

/// A segment that failed its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedSegment {
    /// The topic.
    pub topic: String,
    /// The segment's first offset.
    pub base_offset: u64,
    /// The offset after its last record.
    pub end_offset: u64,
    /// The first damaged offset.
    pub damaged_at: u64,
    /// Whether it is sealed (only sealed segments can be repaired).
    pub sealed: bool,
}

/// What one scrub step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubStep {
    /// Bytes checked.
    pub bytes_checked: u64,
    /// Segments found damaged in this step.
    pub damaged: Vec<DamagedSegment>,
}

/// Where the scrub goes on from: a topic and a segment base.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScrubCursor {
    /// The topic being scrubbed.
    topic: String,
    /// The next segment base to check in it.
    base_offset: u64,
}

impl Log {
    /// Checks the stored records in `[from, to)` (clamped to the log) and marks the segment of the first
    /// damaged one; returns its offset. Used when a receiver refused bytes this node sent.
    pub fn verify(&self, from: u64, to: u64) -> Option<u64> {
        let from = from.max(self.log_start());
        let to = to.min(self.next_offset());
        for segment in self.segment_list() {
            let end = segment.state().end_offset;
            if end <= from || segment.base_offset() >= to {
                continue;
            }
            let start = from.max(segment.base_offset());
            let Some(position) = position_of(&segment, start) else {
                segment.mark_damaged(start);
                self.report(&segment, start);
                return Some(start);
            };
            if let Some(offset) = segment.verify_from(position, start, to.min(end)) {
                self.report(&segment, offset);
                return Some(offset);
            }
        }
        None
    }

    /// Every segment of this log found damaged.
    pub fn damaged_segments(&self) -> Vec<DamagedSegment> {
        self.segment_list()
            .iter()
            .filter_map(|segment| {
                let damaged_at = segment.damaged_at()?;
                let state = segment.state();
                Some(DamagedSegment {
                    topic: self.name.clone(),
                    base_offset: segment.base_offset(),
                    end_offset: state.end_offset,
                    damaged_at,
                    sealed: state.sealed_ms.is_some(),
                })
            })
            .collect()
    }

    /// Replaces the sealed segment at `base_offset` with `records`, which must be exactly its records
    /// (same offsets and sizes, every CRC good): written to a temporary file, synced, renamed over the
    /// segment, and switched in for readers in one step. Readers holding bytes of the old mapping keep
    /// them. Blocking.
    pub fn repair_segment(&self, base_offset: u64, records: Bytes) -> Result<(), Error> {
        let bad = |reason: String| Error::BadRepair { topic: self.name.clone(), base_offset, reason };
        let _maintenance = self.lock_maintenance();
        let segment = self
            .segment_list()
            .into_iter()
            .find(|segment| segment.base_offset() == base_offset)
            .ok_or_else(|| bad("no such segment".to_string()))?;
        let state = segment.state();
        let Some(sealed_ms) = state.sealed_ms else {
            return Err(bad("the segment is still being written".to_string()));
        };
        let checked = CheckedBatch::from_records(self.name.clone(), records)
            .map_err(|error| bad(format!("the records fail their checks: {error}")))?;
        if checked.first_offset() != base_offset
            || checked.next_offset() != state.end_offset
            || checked.records().len() != state.written
        {
            return Err(bad(format!(
                "the records hold offsets {}..{} in {} bytes; the segment holds {base_offset}..{} in {} bytes",
                checked.first_offset(),
                checked.next_offset(),
                checked.records().len(),
                state.end_offset,
                state.written
            )));
        }
        let path = segment.path().to_path_buf();
        let temporary = repair_path(&path);
        let write = || -> std::io::Result<()> {
            let file = std::fs::File::create(&temporary)?;
            std::os::unix::fs::FileExt::write_all_at(&file, checked.records(), 0)?;
            file.sync_all()
        };
        write().map_err(|source| Error::io("write a repaired segment", &temporary, source))?;
        std::fs::rename(&temporary, &path)
            .map_err(|source| Error::io("rename a repaired segment", &path, source))?;
        sync_dir(&self.dir)?;
        let opened = open_sealed(
            &path,
            base_offset,
            Some(state.end_offset - 1),
            segment.created_ms(),
            sealed_ms,
            self.config.index_interval_bytes,
        )?;
        let repaired = opened.segment.ok_or_else(|| bad("the repaired file holds no record".to_string()))?;
        {
            let mut segments = self.segments.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(slot) = segments.iter_mut().find(|slot| slot.base_offset() == base_offset) {
                *slot = repaired;
            }
        }
        self.wake_readers();
        tracing::info!(topic = %self.name, base_offset, end_offset = state.end_offset,
            "repaired a damaged segment with its parent's bytes");
        Ok(())
    }

    /// Seals the active segment now if it holds records and is damaged, so that it can be repaired (only a
    /// sealed segment can be); new records go on into a new segment. `true` if it sealed one. Blocking.
    pub fn seal_damaged_active(&self) -> Result<bool, Error> {
        let mut writer = self.lock_writer();
        let active = Arc::clone(writer.active.segment());
        if active.damaged_at().is_none() || writer.active.position() == 0 || writer.closed {
            return Ok(false);
        }
        self.roll(&mut writer, protocol::now_ms())?;
        Ok(true)
    }

    /// Logs damage the first time it is found.
    fn report(&self, segment: &Segment, offset: u64) {
        tracing::error!(topic = %self.name, offset, segment = %segment.path().display(),
            "a stored record fails its CRC; the range from it to the segment's end is not served until repaired");
    }
}

impl Store {
    /// Checks up to `budget` bytes of sealed segments (at least one segment), going on from where the last
    /// step stopped and wrapping around: the background scrub, at a rate the caller paces. Blocking.
    pub fn scrub(&self, budget: u64) -> ScrubStep {
        let mut step = ScrubStep::default();
        let sealed: Vec<(Arc<Log>, Arc<Segment>)> = self
            .topics()
            .into_iter()
            .flat_map(|log| {
                let segments = log.segment_list();
                segments
                    .into_iter()
                    .filter(|segment| segment.state().sealed_ms.is_some())
                    .map(move |segment| (Arc::clone(&log), segment))
                    .collect::<Vec<_>>()
            })
            .collect();
        if sealed.is_empty() {
            return step;
        }
        let cursor = self.scrub_cursor();
        let first = sealed
            .iter()
            .position(|(log, segment)| {
                (log.name(), segment.base_offset()) >= (cursor.topic.as_str(), cursor.base_offset)
            })
            .unwrap_or(0);
        let mut next = ScrubCursor::default();
        for (log, segment) in sealed.iter().cycle().skip(first).take(sealed.len()) {
            let state = segment.state();
            if step.bytes_checked > 0 && step.bytes_checked + state.written as u64 > budget {
                next = ScrubCursor { topic: log.name().to_string(), base_offset: segment.base_offset() };
                break;
            }
            step.bytes_checked += state.written as u64;
            if segment.damaged_at().is_none()
                && let Some(offset) = segment.verify_from(0, segment.base_offset(), state.end_offset)
            {
                log.report(segment, offset);
                step.damaged.push(DamagedSegment {
                    topic: log.name().to_string(),
                    base_offset: segment.base_offset(),
                    end_offset: state.end_offset,
                    damaged_at: offset,
                    sealed: true,
                });
            }
        }
        self.set_scrub_cursor(next);
        step
    }

    /// Every damaged segment of every topic.
    pub fn damaged_segments(&self) -> Vec<DamagedSegment> {
        self.topics().iter().flat_map(|log| log.damaged_segments()).collect()
    }
}

/// Where the first record at or above `offset` starts in `segment` (a compacted segment has gaps), walking
/// record lengths from the nearest index entry.
fn position_of(segment: &Arc<Segment>, offset: u64) -> Option<usize> {
    let bytes = segment.published();
    let mut position = segment.scan_start(offset);
    loop {
        let rest = bytes.get(position..)?;
        let found = protocol::record::peek_record_offset(rest)?;
        if found >= offset {
            return Some(position);
        }
        let len = protocol::record::peek_record_len(rest).ok()??;
        if len > rest.len() {
            return None;
        }
        position += len;
    }
}
