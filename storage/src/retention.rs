//! Retention: removing a log's oldest sealed segments once the log is larger than `retention_bytes` or a
//! segment's newest record is older than `retention_age`. The limits are the topic's own when it has
//! explicit settings (`Log::settings`; a limit left out is no limit, and `compact` alone never removes a
//! segment), the store's configuration otherwise. Whole sealed segments only; the active segment is
//! never removed. The log start moves first (readers below it get [`crate::Error::OffsetBelowLogStart`]),
//! then SQLite is updated, then the files are deleted, so a crash at any point leaves either the segment
//! or a file that recovery recognises as left over and deletes.

use std::sync::atomic::Ordering;

use crate::error::Error;
use crate::log::Log;
use crate::paths::remove_file_logged;

/// What one call to [`crate::Store::enforce_retention`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// One entry per topic that lost segments.
    pub topics: Vec<TopicRetention>,
    /// Segments removed over all topics.
    pub segments_removed: usize,
    /// Bytes removed over all topics.
    pub bytes_removed: u64,
}

impl RetentionReport {
    /// Adds one topic's result.
    pub(crate) fn add(&mut self, topic: TopicRetention) {
        self.segments_removed += topic.segments_removed;
        self.bytes_removed += topic.bytes_removed;
        self.topics.push(topic);
    }
}

/// What retention removed from one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRetention {
    /// The topic.
    pub name: String,
    /// Segments removed.
    pub segments_removed: usize,
    /// Bytes of records removed.
    pub bytes_removed: u64,
    /// The log start after removal.
    pub log_start: u64,
}

/// One segment as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentSummary {
    /// Bytes of records.
    pub(crate) size_bytes: u64,
    /// Timestamp of its newest record.
    pub(crate) last_timestamp_ms: u64,
    /// Whether it is sealed.
    pub(crate) sealed: bool,
}

/// How many of the oldest segments to remove: the longest prefix of sealed segments (never the last
/// segment) each of which is too old, or whose removal is needed to bring the total under the byte limit.
pub(crate) fn plan(
    segments: &[SegmentSummary],
    retention_bytes: Option<u64>,
    retention_age_ms: Option<u64>,
    now_ms: u64,
) -> usize {
    let mut total: u64 = segments.iter().map(|segment| segment.size_bytes).sum();
    let mut n = 0;
    for segment in segments.iter().take(segments.len().saturating_sub(1)) {
        if !segment.sealed {
            break;
        }
        let too_big = retention_bytes.is_some_and(|limit| total > limit);
        let too_old =
            retention_age_ms.is_some_and(|age| now_ms.saturating_sub(segment.last_timestamp_ms) > age);
        if !(too_big || too_old) {
            break;
        }
        total -= segment.size_bytes;
        n += 1;
    }
    n
}

impl Log {
    /// The retention limits that apply to this log: bytes and age in milliseconds, each `None` for no
    /// limit. A topic with explicit settings has its own (none under `compact` alone); others the store's.
    pub fn retention_limits(&self) -> (Option<u64>, Option<u64>) {
        match self.settings() {
            Some(settings) if !settings.cleanup.deletes() => (None, None),
            Some(settings) => (settings.retention_bytes, settings.retention_age_ms),
            None => (
                self.config.retention_bytes,
                self.config.retention_age.map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
            ),
        }
    }

    /// Applies this log's retention limits ([`Log::retention_limits`]) at time `now_ms`; returns what was
    /// removed, if anything.
    pub(crate) fn enforce_retention(&self, now_ms: u64) -> Result<Option<TopicRetention>, Error> {
        let (retention_bytes, retention_age_ms) = self.retention_limits();
        if retention_bytes.is_none() && retention_age_ms.is_none() {
            return Ok(None);
        }
        let _maintenance = self.lock_maintenance();
        let (removed, log_start) = {
            let mut segments = self.segments.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            let summaries: Vec<_> = segments
                .iter()
                .map(|segment| {
                    let state = segment.state();
                    SegmentSummary {
                        size_bytes: state.written as u64,
                        last_timestamp_ms: state.last_timestamp_ms,
                        sealed: state.sealed_ms.is_some(),
                    }
                })
                .collect();
            let n = plan(&summaries, retention_bytes, retention_age_ms, now_ms);
            if n == 0 {
                return Ok(None);
            }
            let removed: Vec<_> = segments.drain(..n).collect();
            let log_start = segments[0].base_offset();
            self.log_start.store(log_start, Ordering::Release);
            (removed, log_start)
        };
        let base_offsets: Vec<u64> = removed.iter().map(|segment| segment.base_offset()).collect();
        self.meta.remove_segments(&self.name, self.generation, &base_offsets, log_start)?;
        let mut bytes_removed = 0;
        for segment in &removed {
            bytes_removed += segment.state().written as u64;
            remove_file_logged(segment.path(), "retention");
            remove_file_logged(segment.index_path(), "retention");
        }
        tracing::info!(topic = %self.name, segments = removed.len(), bytes_removed, log_start, "retention");
        Ok(Some(TopicRetention {
            name: self.name.clone(),
            segments_removed: removed.len(),
            bytes_removed,
            log_start,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(size_bytes: u64, last_timestamp_ms: u64) -> SegmentSummary {
        SegmentSummary { size_bytes, last_timestamp_ms, sealed: true }
    }

    #[test]
    fn by_bytes_removes_oldest_until_under_the_limit() {
        let active = SegmentSummary { size_bytes: 10, last_timestamp_ms: 0, sealed: false };
        let segments = [sealed(100, 0), sealed(100, 0), sealed(100, 0), active];
        assert_eq!(plan(&segments, Some(310), None, 0), 0);
        assert_eq!(plan(&segments, Some(300), None, 0), 1);
        assert_eq!(plan(&segments, Some(150), None, 0), 2);
        assert_eq!(plan(&segments, Some(0), None, 0), 3, "the active segment stays");
        assert_eq!(plan(&[active], Some(0), None, 0), 0);
    }

    #[test]
    fn by_age_removes_a_prefix_of_old_segments() {
        let segments = [sealed(1, 100), sealed(1, 500), sealed(1, 200), sealed(1, 900)];
        assert_eq!(plan(&segments, None, Some(1000), 1000), 0);
        assert_eq!(plan(&segments, None, Some(600), 1000), 1, "stops at the first young segment");
        assert_eq!(plan(&segments, None, Some(50), 1000), 3, "the last segment stays");
        assert_eq!(plan(&segments, None, None, 1000), 0);
    }
}
