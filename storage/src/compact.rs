//! Compaction of a topic whose cleanup policy compacts (`compact`, `compact,delete`): its sealed segments
//! are rewritten keeping, for each key, only its latest record, **at its original offset**, so a compacted
//! range has gaps. A tombstone deletes its key: it is kept for the topic's `tombstone_retention`, then
//! dropped, and the log's delete horizon moves past it (a reader resuming below the horizon may have missed
//! the delete and must be given a full refresh instead). Records without a key are never removed. The
//! active segment is never compacted.
//!
//! One pass over a topic: (1) read every sealed segment once, checking each record's CRC, and map each key
//! to the offset of its latest record; (2) decide which records stay; (3) cut the sealed segments into
//! groups of consecutive segments whose kept records fit in a segment, each group ending on a record it
//! keeps, so that the rewritten segment ends exactly where the group did and segments still meet without
//! a gap between them; (4) write each group's kept records to `{base}.log.compact` beside it, sync it, and
//! switch it in: rename over the group's first segment, delete the others, record it in SQLite, and swap
//! the segment list for readers in one step. Readers that hold bytes of the old mappings keep them.
//!
//! Crash safety: a `.compact` file is garbage until it is renamed, and recovery deletes it. Once renamed,
//! the rewritten segment ends where the group's last segment did, so the segments it replaced are the
//! ones that start inside it, and recovery deletes them (`recovery/topic.rs`). The last record of the
//! sealed range is always kept (it is the latest of its key there; a tombstone in that place waits for
//! the next pass), so the log never ends in a gap.
//!
//! The caller paces a pass: `throttle` is told every few MiB read or written and may sleep.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use protocol::record::peek_record_len;
use protocol::{RecordView, TopicSettings};

use crate::error::Error;
use crate::index::{IndexBuilder, IndexEntry, write_index_file};
use crate::log::Log;
use crate::meta::SegmentRow;
use crate::paths::{compact_path, remove_file_logged, sync_dir};
use crate::segment::{Segment, open_sealed};

/// A pass is due once the sealed bytes written since the last one are at least this share of all sealed
/// bytes (or a tombstone's retention ran out), so rewriting the clean part costs at most as much again.
const MIN_DIRTY_SHARE: f64 = 0.5;

/// Bytes between two calls of the throttle.
const THROTTLE_STEP: u64 = 4 << 20;

/// What one pass over one topic did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicCompaction {
    /// The topic.
    pub name: String,
    /// Sealed segments read.
    pub segments_read: u64,
    /// Segments written (one per group that changed).
    pub segments_written: u64,
    /// Bytes of sealed segments read.
    pub bytes_read: u64,
    /// Bytes written to rewritten segments.
    pub bytes_written: u64,
    /// Bytes the rewritten groups held before.
    pub bytes_replaced: u64,
    /// Records read.
    pub records_read: u64,
    /// Records removed: older records of a key, and tombstones past their retention.
    pub records_removed: u64,
    /// Tombstones removed because their retention ran out.
    pub tombstones_removed: u64,
    /// The delete horizon after the pass.
    pub delete_horizon: u64,
    /// How long the pass took, throttling included, in microseconds.
    pub duration_us: u64,
}

/// What [`crate::Store::compact`] did over every topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// One entry per topic compacted.
    pub topics: Vec<TopicCompaction>,
}

/// Compaction's memory of a topic, under the log's maintenance lock.
#[derive(Debug, Default)]
pub(crate) struct CompactionState {
    /// Sealed segments based below this were compacted by the last pass (zero: none yet since opening).
    pub(crate) clean_until: u64,
    /// When the oldest tombstone the last pass kept runs out of retention, if one did.
    pub(crate) tombstone_due_ms: Option<u64>,
}

/// What happens to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// It stays.
    Keep,
    /// A newer record of its key replaces it.
    Superseded,
    /// A tombstone whose retention ran out.
    Expired,
}

/// The plan for one sealed segment.
#[derive(Debug)]
struct SegmentPlan {
    /// The segment.
    segment: Arc<Segment>,
    /// Whether each record stays, in order.
    keep: Vec<bool>,
    /// Bytes of the records that stay.
    kept_bytes: u64,
    /// Whether its last record stays (a group may end here).
    last_kept: bool,
}

impl Log {
    /// Whether the topic compacts at all: its settings say `compact` or `compact,delete`.
    pub fn compacts(&self) -> bool {
        self.settings().is_some_and(|settings| settings.cleanup.compacts())
    }

    /// The offset below which this copy may have dropped tombstones: a reader resuming below it could miss
    /// a delete. Zero until compaction drops one.
    pub fn delete_horizon(&self) -> u64 {
        self.delete_horizon.load(Ordering::Acquire)
    }

    /// Whether a compaction pass is due: the topic compacts, and the sealed bytes written since the last
    /// pass are at least half of all sealed bytes, or a tombstone the last pass kept has run out.
    pub fn compaction_due(&self, now_ms: u64) -> bool {
        if !self.compacts() {
            return false;
        }
        let state = self.lock_maintenance();
        if state.tombstone_due_ms.is_some_and(|due| due <= now_ms) {
            return true;
        }
        let segments = self.segment_list();
        let sealed = &segments[..segments.len().saturating_sub(1)];
        let total: u64 = sealed.iter().map(|segment| segment.state().written as u64).sum();
        let dirty: u64 = sealed
            .iter()
            .filter(|segment| segment.base_offset() >= state.clean_until)
            .map(|segment| segment.state().written as u64)
            .sum();
        let n_dirty = sealed.iter().filter(|segment| segment.base_offset() >= state.clean_until).count();
        // One dirty segment alone after a pass is not worth a rewrite of everything before it.
        dirty > 0 && (state.clean_until == 0 || n_dirty > 1) && dirty as f64 >= total as f64 * MIN_DIRTY_SHARE
    }

    /// Runs one compaction pass over the sealed segments (see the module doc). `None` if the topic does not
    /// compact, has no sealed segment, or holds a damaged one (the repair comes first). Blocking.
    pub fn compact(
        &self,
        now_ms: u64,
        throttle: &mut dyn FnMut(u64),
    ) -> Result<Option<TopicCompaction>, Error> {
        let Some(settings) = self.settings().filter(|settings| settings.cleanup.compacts()) else {
            return Ok(None);
        };
        let started = Instant::now();
        let segments = self.segment_list();
        let sealed: Vec<Arc<Segment>> = segments[..segments.len().saturating_sub(1)].to_vec();
        drop(segments);
        if sealed.is_empty() || sealed.iter().any(|segment| segment.damaged_at().is_some()) {
            return Ok(None);
        }
        let mut report = TopicCompaction { name: self.name.clone(), ..TopicCompaction::default() };
        let Some(latest) = self.latest_by_key(&sealed, &mut report, throttle) else {
            return Ok(None);
        };
        let (plans, dropped_tombstone, tombstone_due_ms) = plan(&sealed, &latest, &settings, now_ms);
        drop(latest);
        report.records_removed =
            plans.iter().map(|plan| plan.keep.iter().filter(|keep| !**keep).count() as u64).sum::<u64>();
        // The horizon is recorded before any segment without the tombstones is switched in, so that no
        // reader is ever served the compacted range as if it held every delete.
        if let Some(dropped) = dropped_tombstone {
            report.tombstones_removed = dropped.count;
            self.raise_delete_horizon(dropped.last_offset + 1)?;
        }
        let mut first = 0;
        while first < plans.len() {
            let last = group_end(&plans, first, self.config.segment_bytes);
            let group = &plans[first..=last];
            let changed = group.len() > 1 || group.iter().any(|plan| plan.keep.iter().any(|keep| !keep));
            if changed {
                self.rewrite_group(group, &mut report, throttle)?;
            }
            first = last + 1;
        }
        {
            let mut state = self.lock_maintenance();
            state.clean_until = sealed.last().map_or(0, |segment| segment.state().end_offset);
            state.tombstone_due_ms = tombstone_due_ms;
        }
        report.delete_horizon = self.delete_horizon();
        report.duration_us = started.elapsed().as_micros() as u64;
        tracing::info!(
            topic = %self.name, bytes_read = report.bytes_read, bytes_written = report.bytes_written,
            records_removed = report.records_removed, tombstones_removed = report.tombstones_removed,
            delete_horizon = report.delete_horizon, duration_us = report.duration_us, "compacted"
        );
        Ok(Some(report))
    }

    /// Moves the delete horizon up to `horizon`: recorded in SQLite first (the store's caller then rewrites
    /// the identity file), then in memory.
    fn raise_delete_horizon(&self, horizon: u64) -> Result<(), Error> {
        if horizon <= self.delete_horizon() {
            return Ok(());
        }
        self.meta.set_delete_horizon(&self.name, horizon)?;
        self.delete_horizon.fetch_max(horizon, Ordering::AcqRel);
        Ok(())
    }

    /// Pass 1: every sealed record's CRC checked, and each key's latest offset. `None` if a record fails
    /// (the segment is marked damaged and the pass waits for its repair).
    fn latest_by_key<'a>(
        &self,
        sealed: &'a [Arc<Segment>],
        report: &mut TopicCompaction,
        throttle: &mut dyn FnMut(u64),
    ) -> Option<HashMap<&'a [u8], u64>> {
        let mut latest: HashMap<&'a [u8], u64> = HashMap::new();
        let mut since_throttle = 0u64;
        for segment in sealed {
            let bytes = segment.published();
            let mut position = 0;
            while position < bytes.len() {
                match RecordView::decode(&bytes[position..]) {
                    Ok(Some((view, len))) => {
                        if !view.key().is_empty() {
                            latest.insert(view.key(), view.offset());
                        }
                        report.records_read += 1;
                        position += len;
                    }
                    _ => {
                        let base = segment.base_offset();
                        if let Some(offset) = self.verify(base, segment.state().end_offset) {
                            tracing::warn!(topic = %self.name, offset,
                                "compaction waits: a sealed record fails its check");
                        }
                        return None;
                    }
                }
            }
            report.segments_read += 1;
            report.bytes_read += bytes.len() as u64;
            since_throttle += bytes.len() as u64;
            if since_throttle >= THROTTLE_STEP {
                throttle(since_throttle);
                since_throttle = 0;
            }
        }
        throttle(since_throttle);
        Some(latest)
    }

    /// Writes the records `group` keeps into a new file beside its first segment and switches it in for
    /// that whole group.
    fn rewrite_group(
        &self,
        group: &[SegmentPlan],
        report: &mut TopicCompaction,
        throttle: &mut dyn FnMut(u64),
    ) -> Result<(), Error> {
        let first = &group[0].segment;
        let last = &group[group.len() - 1].segment;
        let base_offset = first.base_offset();
        let path = first.path().to_path_buf();
        let temporary = compact_path(&path);
        let written = write_kept(group, &temporary, base_offset, self.config.index_interval_bytes, throttle);
        let (bytes_written, last_offset, entries) = match written {
            Ok(written) => written,
            Err(source) => {
                remove_file_logged(&temporary, "compaction failed");
                return Err(Error::io("write a compacted segment", &temporary, source));
            }
        };
        let _maintenance = self.lock_maintenance();
        if self.is_closed() {
            // A full refresh replaced this copy meanwhile; its directory goes with it.
            remove_file_logged(&temporary, "the topic was replaced during compaction");
            return Ok(());
        }
        let current = self.segment_list();
        let Some(at) = current.iter().position(|segment| Arc::ptr_eq(segment, first)) else {
            remove_file_logged(&temporary, "the segments changed during compaction");
            return Ok(());
        };
        let still_there = current.len() > at + group.len()
            && group.iter().zip(&current[at..]).all(|(plan, segment)| Arc::ptr_eq(&plan.segment, segment));
        if !still_there {
            remove_file_logged(&temporary, "the segments changed during compaction");
            return Ok(());
        }
        // The old index must not describe the new file, even for a moment after a crash.
        remove_file_logged(first.index_path(), "compaction");
        std::fs::rename(&temporary, &path)
            .map_err(|source| Error::io("rename a compacted segment", &path, source))?;
        sync_dir(&self.dir)?;
        if let Err(error) = write_index_file(first.index_path(), &entries, true) {
            tracing::warn!(%error, "cannot write a compacted segment's index; it is rebuilt on the next open");
        }
        let sealed_ms = last.state().sealed_ms.unwrap_or_else(protocol::now_ms);
        let opened = open_sealed(
            &path,
            base_offset,
            Some(last_offset),
            first.created_ms(),
            sealed_ms,
            self.config.index_interval_bytes,
        )?;
        let Some(compacted) = opened.segment else {
            return Err(Error::io(
                "open a compacted segment",
                &path,
                std::io::Error::other("the compacted file holds no record"),
            ));
        };
        for plan in &group[1..] {
            remove_file_logged(plan.segment.path(), "replaced by compaction");
            remove_file_logged(plan.segment.index_path(), "replaced by compaction");
        }
        sync_dir(&self.dir)?;
        let state = compacted.state();
        let row = SegmentRow {
            base_offset,
            last_offset: Some(state.end_offset - 1),
            size_bytes: state.written as u64,
            sealed: true,
            created_ms: compacted.created_ms(),
            sealed_ms: state.sealed_ms,
            last_timestamp_ms: Some(state.last_timestamp_ms),
        };
        let removed: Vec<u64> = group[1..].iter().map(|plan| plan.segment.base_offset()).collect();
        // SQLite follows the files; if it fails, recovery reconciles it with them on the next open.
        let recorded = self.meta.upsert_segments(&self.name, self.generation, &[row]).and_then(|()| {
            self.meta.remove_segments(&self.name, self.generation, &removed, self.log_start())
        });
        if let Err(error) = recorded {
            tracing::error!(topic = %self.name, %error, "cannot record a compaction; reconciled on the next open");
        }
        {
            let mut segments = self.segments.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(at) = segments.iter().position(|segment| Arc::ptr_eq(segment, first)) {
                segments.splice(at..at + group.len(), [compacted]);
            }
        }
        report.segments_written += 1;
        report.bytes_written += bytes_written;
        report.bytes_replaced += group.iter().map(|plan| plan.segment.state().written as u64).sum::<u64>();
        Ok(())
    }
}

/// The tombstones a pass drops.
#[derive(Debug, Clone, Copy)]
struct Dropped {
    /// How many.
    count: u64,
    /// The offset of the last one.
    last_offset: u64,
}

/// Pass 2: what happens to every sealed record. Answers the plans, the tombstones dropped and when the
/// oldest tombstone kept runs out.
fn plan(
    sealed: &[Arc<Segment>],
    latest: &HashMap<&[u8], u64>,
    settings: &TopicSettings,
    now_ms: u64,
) -> (Vec<SegmentPlan>, Option<Dropped>, Option<u64>) {
    let mut plans = Vec::with_capacity(sealed.len());
    let mut dropped: Option<Dropped> = None;
    let mut tombstone_due_ms: Option<u64> = None;
    let n_sealed = sealed.len();
    for (index, segment) in sealed.iter().enumerate() {
        let bytes = segment.published();
        let mut keep = Vec::new();
        let mut kept_bytes = 0u64;
        let mut position = 0;
        while let Ok(Some(len)) = peek_record_len(&bytes[position..]) {
            if position + len > bytes.len() {
                break;
            }
            // Pass 1 checked every record of these segments.
            let view = RecordView::trusted(&bytes[position..position + len]);
            position += len;
            let last_of_range = index + 1 == n_sealed && position == bytes.len();
            let fate = fate(&view, latest, settings, now_ms, last_of_range);
            match fate {
                Fate::Keep => {
                    kept_bytes += len as u64;
                    if view.is_tombstone()
                        && let Some(retention) = settings.tombstone_retention_ms
                    {
                        let due = view.timestamp_ms().saturating_add(retention);
                        tombstone_due_ms = Some(tombstone_due_ms.map_or(due, |known| known.min(due)));
                    }
                }
                Fate::Expired => {
                    let count = dropped.map_or(0, |dropped| dropped.count) + 1;
                    dropped = Some(Dropped { count, last_offset: view.offset() });
                }
                Fate::Superseded => {}
            }
            keep.push(fate == Fate::Keep);
        }
        let last_kept = keep.last().copied().unwrap_or(false);
        plans.push(SegmentPlan { segment: Arc::clone(segment), keep, kept_bytes, last_kept });
    }
    (plans, dropped, tombstone_due_ms)
}

/// What happens to one record.
fn fate(
    view: &RecordView<'_>,
    latest: &HashMap<&[u8], u64>,
    settings: &TopicSettings,
    now_ms: u64,
    last_of_range: bool,
) -> Fate {
    let key = view.key();
    if key.is_empty() || last_of_range {
        return Fate::Keep;
    }
    if latest.get(key).is_some_and(|latest| *latest != view.offset()) {
        return Fate::Superseded;
    }
    let expired = view.is_tombstone()
        && settings
            .tombstone_retention_ms
            .is_some_and(|retention| view.timestamp_ms().saturating_add(retention) <= now_ms);
    if expired { Fate::Expired } else { Fate::Keep }
}

/// The last segment of the group starting at `first`: segments are added while their kept records fit in
/// `segment_bytes`, and always until the group ends on a record it keeps.
fn group_end(plans: &[SegmentPlan], first: usize, segment_bytes: u64) -> usize {
    let mut last = first;
    let mut bytes = plans[first].kept_bytes;
    while last + 1 < plans.len() {
        let next = &plans[last + 1];
        if plans[last].last_kept && bytes + next.kept_bytes > segment_bytes {
            break;
        }
        bytes += next.kept_bytes;
        last += 1;
    }
    last
}

/// Writes the kept records of `group` to `path`, synced, and the index entries for them. Answers the bytes
/// written, the last record's offset and the entries.
fn write_kept(
    group: &[SegmentPlan],
    path: &std::path::Path,
    base_offset: u64,
    index_interval_bytes: u32,
    throttle: &mut dyn FnMut(u64),
) -> std::io::Result<(u64, u64, Vec<IndexEntry>)> {
    let file = File::create(path)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut builder = IndexBuilder::new(index_interval_bytes);
    let mut entries = Vec::new();
    let mut written = 0u64;
    let mut last_offset = base_offset;
    let mut since_throttle = 0u64;
    for plan in group {
        let bytes = plan.segment.published();
        let mut position = 0;
        // Runs of kept records are written whole.
        let mut run_start = None;
        for keep in &plan.keep {
            let len = peek_record_len(&bytes[position..]).ok().flatten().unwrap_or(0);
            if *keep {
                let offset = protocol::record::peek_record_offset(&bytes[position..]).unwrap_or(last_offset);
                if let Some(entry) = builder.observe(offset - base_offset, written as usize) {
                    entries.push(entry);
                }
                written += len as u64;
                last_offset = offset;
                run_start.get_or_insert(position);
            } else if let Some(start) = run_start.take() {
                out.write_all(&bytes[start..position])?;
            }
            position += len;
        }
        if let Some(start) = run_start {
            out.write_all(&bytes[start..position])?;
        }
        since_throttle += bytes.len() as u64;
        if since_throttle >= THROTTLE_STEP {
            throttle(since_throttle);
            since_throttle = 0;
        }
    }
    let file = out.into_inner().map_err(|error| error.into_error())?;
    file.sync_all()?;
    throttle(since_throttle);
    Ok((written, last_offset, entries))
}

impl crate::Store {
    /// [`crate::Store::compact`] paced to at most `bytes_per_second` of segment data read and written (the
    /// background pass; 0 is no limit). Blocking: it sleeps on the calling thread.
    pub fn compact_paced(&self, bytes_per_second: u64) -> Result<CompactionReport, Error> {
        let started = Instant::now();
        let mut done = 0u64;
        self.compact(&mut |bytes| {
            done += bytes;
            if bytes_per_second == 0 {
                return;
            }
            let due = std::time::Duration::from_secs_f64(done as f64 / bytes_per_second as f64);
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(ahead);
            }
        })
    }

    /// Runs a compaction pass on every topic that is due ([`Log::compaction_due`]), one after the other,
    /// each paced by `throttle`; a topic whose pass fails is logged and the others go on. The first error
    /// is returned after all were tried. Blocking.
    pub fn compact(&self, throttle: &mut dyn FnMut(u64)) -> Result<CompactionReport, Error> {
        let mut report = CompactionReport::default();
        let mut first_error = None;
        for log in self.topics() {
            let now_ms = protocol::now_ms();
            if !log.compaction_due(now_ms) {
                continue;
            }
            let horizon = log.delete_horizon();
            match log.compact(now_ms, throttle) {
                Ok(Some(topic)) => {
                    if topic.delete_horizon != horizon
                        && let Err(error) = self.update_identity(&log)
                    {
                        tracing::warn!(topic = %log.name(), %error,
                            "cannot write the identity file; it is rewritten from SQLite on the next open");
                    }
                    report.topics.push(topic);
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(topic = %log.name(), %error, "compaction failed");
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }
}
