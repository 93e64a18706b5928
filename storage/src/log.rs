//! One topic's log: its segments, its positions (start, next, durable, readable), flushing with group
//! commit, and the wake-ups of readers. Appending is in `append.rs`, reading in `read.rs`,
//! retention in `retention.rs`; this module owns the state they share. It does not know about other
//! topics, the store's directory layout beyond its own generation directory, or the network.
//!
//! Concurrency: one writer lock serialises appends and rolls; the segment list is behind a read-write lock
//! held only to clone an `Arc`; the positions are atomics. Readers never wait for a write or a flush.
//! Lock order: maintenance (compaction's switch, retention, repair), then flush mark, then writer, then
//! segment list.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};

use protocol::{EpochHistory, TopicSettings, TopicUid};
use tokio::sync::Notify;

use crate::compact::CompactionState;
use crate::config::LogConfig;
use crate::error::Error;
use crate::meta::Meta;
use crate::segment::Segment;
use crate::writer::SegmentWriter;

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The log's next offset before the append: every record appended is at or above it, every record the
    /// batch held below it was a duplicate. For ROOT appends the first record's offset; in a compacted
    /// range the first record appended may lie above it.
    pub first_offset: u64,
    /// The log's next offset after the append.
    pub next_offset: u64,
    /// Every record below this is as durable as the flush policy promises (on disk with `Always` and
    /// `Interval`, written with `Never`): the offset an append may acknowledge.
    pub durable_offset: u64,
    /// Records appended.
    pub n_appended: u64,
    /// Records dropped because the log already held their offsets (relay appends only).
    pub n_duplicates: u64,
    /// Timestamp given to the records (ROOT appends), or of the last record appended (relay appends).
    pub timestamp_ms: u64,
}

/// A snapshot of a log's positions and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStats {
    /// The topic's name.
    pub name: String,
    /// The topic's uid.
    pub uid: TopicUid,
    /// The first offset stored.
    pub log_start: u64,
    /// The offset the next record will get.
    pub next_offset: u64,
    /// Every record below this is visible to readers.
    pub readable_offset: u64,
    /// Every record below this is on disk.
    pub durable_offset: u64,
    /// Bytes of records stored, over all segments.
    pub size_bytes: u64,
    /// Number of segments, the active one included.
    pub n_segments: usize,
    /// Timestamp of the last record written (zero if none).
    pub last_timestamp_ms: u64,
}

/// One segment as [`Log::segments`] describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Offset of its first record.
    pub base_offset: u64,
    /// Offset of its last record, if it holds any.
    pub last_offset: Option<u64>,
    /// Bytes of records in it.
    pub size_bytes: u64,
    /// Whether it is sealed (only the last segment is not).
    pub sealed: bool,
    /// When it was created, in ms since the epoch.
    pub created_ms: u64,
    /// When it was sealed, in ms since the epoch.
    pub sealed_ms: Option<u64>,
    /// Its file.
    pub path: PathBuf,
}

/// State changed only under the writer lock.
#[derive(Debug)]
pub(crate) struct Writer {
    /// The active segment's writer.
    pub(crate) active: SegmentWriter,
    /// The offset the next record will get.
    pub(crate) next_offset: u64,
    /// The last timestamp written; ROOT timestamps never go below it.
    pub(crate) last_timestamp_ms: u64,
    /// Set when the log is replaced or deleted; appends then fail with [`Error::Closed`].
    pub(crate) closed: bool,
    /// Where ROOT appends encode a batch before its one write; reused so an append allocates nothing.
    pub(crate) encode_buffer: Vec<u8>,
}

/// How far the active segment is known to be durable.
#[derive(Debug)]
struct FlushMark {
    /// The segment the mark is in.
    segment: Arc<Segment>,
    /// Bytes of it known durable.
    position: usize,
}

/// What a log is made of when it is created or recovered.
#[derive(Debug)]
pub(crate) struct LogParts {
    /// The topic's name.
    pub(crate) name: String,
    /// The topic's uid.
    pub(crate) uid: TopicUid,
    /// The generation directory number.
    pub(crate) generation: u64,
    /// The generation directory.
    pub(crate) dir: PathBuf,
    /// When this copy was created.
    pub(crate) created_ms: u64,
    /// The store's settings.
    pub(crate) config: Arc<LogConfig>,
    /// The metadata database.
    pub(crate) meta: Arc<Meta>,
    /// Sealed segments, oldest first, contiguous.
    pub(crate) sealed: Vec<Arc<Segment>>,
    /// The active segment, continuing the sealed ones.
    pub(crate) active: SegmentWriter,
    /// The epoch history (empty if unknown).
    pub(crate) epochs: EpochHistory,
    /// The explicit settings; `None` for the store's defaults.
    pub(crate) settings: Option<TopicSettings>,
    /// The delete horizon (zero if no tombstone was ever dropped).
    pub(crate) delete_horizon: u64,
}

/// One topic's log. `Send + Sync`; shared as `Arc<Log>` by the store and every task using the topic.
#[derive(Debug)]
pub struct Log {
    /// The topic's name.
    pub(crate) name: String,
    /// The topic's uid.
    pub(crate) uid: TopicUid,
    /// The generation directory number.
    pub(crate) generation: u64,
    /// The generation directory.
    pub(crate) dir: PathBuf,
    /// When this copy was created.
    pub(crate) created_ms: u64,
    /// The store's settings.
    pub(crate) config: Arc<LogConfig>,
    /// The metadata database.
    pub(crate) meta: Arc<Meta>,
    /// Every segment, oldest first; the last is the active one.
    pub(crate) segments: RwLock<Vec<Arc<Segment>>>,
    /// The single writer's state.
    writer: Mutex<Writer>,
    /// Group commit: the flusher holds this while it syncs.
    flush_mark: Mutex<FlushMark>,
    /// The first offset stored.
    pub(crate) log_start: AtomicU64,
    /// The offset the next record will get.
    pub(crate) next_offset: AtomicU64,
    /// Records below this are visible to readers.
    pub(crate) readable_offset: AtomicU64,
    /// Records below this are durable.
    durable_offset: AtomicU64,
    /// Set once the log was replaced or deleted.
    closed: AtomicBool,
    /// Readers woken when `readable_offset` grows, the epoch history or the settings change, or the log is
    /// closed (a delivery session waiting on many logs at once); forgotten once their owner drops them.
    wakers: Mutex<Vec<Weak<Notify>>>,
    /// The epoch history, changed only through the store (which keeps SQLite and the identity file in step).
    epochs: RwLock<EpochHistory>,
    /// Counts changes of `epochs`, so a reader can tell cheaply whether it has sent the latest.
    epochs_version: AtomicU64,
    /// The explicit settings (`None`: the store's defaults), changed only through the store.
    settings: RwLock<Option<TopicSettings>>,
    /// Counts changes of `settings`, so a reader can tell cheaply whether it has sent the latest.
    settings_version: AtomicU64,
    /// Held by whatever rewrites or removes sealed segments (compaction's switch, retention, repair), so
    /// that they never work on the same segments at once; holds compaction's memory of the topic.
    maintenance: Mutex<CompactionState>,
    /// The offset below which this copy may have dropped tombstones (`Log::delete_horizon`).
    pub(crate) delete_horizon: AtomicU64,
}

impl Log {
    /// Builds a log from its parts. Everything in the parts is durable (created empty or recovered and
    /// synced), so every position starts at the end.
    pub(crate) fn assemble(parts: LogParts) -> Log {
        let LogParts {
            name,
            uid,
            generation,
            dir,
            created_ms,
            config,
            meta,
            sealed,
            active,
            epochs,
            settings,
            delete_horizon,
        } = parts;
        let active_segment = Arc::clone(active.segment());
        let state = active_segment.state();
        let next_offset = state.end_offset;
        let last_timestamp_ms = if state.end_offset > active_segment.base_offset() {
            state.last_timestamp_ms
        } else {
            sealed.last().map_or(0, |segment| segment.state().last_timestamp_ms)
        };
        let log_start = sealed.first().unwrap_or(&active_segment).base_offset();
        let mut segments = sealed;
        segments.push(Arc::clone(&active_segment));
        Log {
            name,
            uid,
            generation,
            dir,
            created_ms,
            config,
            meta,
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer {
                active,
                next_offset,
                last_timestamp_ms,
                closed: false,
                encode_buffer: Vec::new(),
            }),
            flush_mark: Mutex::new(FlushMark { segment: active_segment, position: state.written }),
            log_start: AtomicU64::new(log_start),
            next_offset: AtomicU64::new(next_offset),
            readable_offset: AtomicU64::new(next_offset),
            durable_offset: AtomicU64::new(next_offset),
            closed: AtomicBool::new(false),
            wakers: Mutex::new(Vec::new()),
            epochs: RwLock::new(epochs),
            epochs_version: AtomicU64::new(0),
            settings: RwLock::new(settings),
            settings_version: AtomicU64::new(0),
            maintenance: Mutex::new(CompactionState::default()),
            delete_horizon: AtomicU64::new(delete_horizon),
        }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic's uid.
    pub fn uid(&self) -> TopicUid {
        self.uid
    }

    /// The generation directory holding this copy.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The first offset stored.
    pub fn log_start(&self) -> u64 {
        self.log_start.load(Ordering::Acquire)
    }

    /// The offset the next record will get: the log end.
    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// The first offset not yet visible to readers: with [`crate::FlushPolicy::Always`] only durable
    /// records are visible, otherwise every written record is.
    pub fn readable_offset(&self) -> u64 {
        self.readable_offset.load(Ordering::Acquire)
    }

    /// The first offset not yet known to be on disk.
    pub fn durable_offset(&self) -> u64 {
        self.durable_offset.load(Ordering::Acquire)
    }

    /// The epoch history (`protocol::epoch`): which records ROOT wrote in which of its lives. Empty if
    /// unknown (a relay's copy before its parent said, or a topic written before epochs existed).
    pub fn epochs(&self) -> EpochHistory {
        self.epochs.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// A number that changes whenever the epoch history does.
    pub fn epochs_version(&self) -> u64 {
        self.epochs_version.load(Ordering::Acquire)
    }

    /// What this copy names in a HELLO: the epoch of its last record (`protocol::NO_EPOCH` if it holds
    /// none or knows no history).
    pub fn epoch_claim(&self) -> u32 {
        self.epochs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .claim(self.log_start(), self.next_offset())
    }

    /// Replaces the epoch history in memory and wakes the log's readers, so that they pass it on. The
    /// store persists it first.
    pub(crate) fn replace_epochs(&self, epochs: EpochHistory) {
        *self.epochs.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = epochs;
        self.epochs_version.fetch_add(1, Ordering::AcqRel);
        self.wake_readers();
    }

    /// The topic's explicit settings, or `None` if it has none (it follows the store's configuration:
    /// `delete`, the configured retention).
    pub fn settings(&self) -> Option<TopicSettings> {
        *self.settings.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A number that changes whenever the settings do.
    pub fn settings_version(&self) -> u64 {
        self.settings_version.load(Ordering::Acquire)
    }

    /// Replaces the settings in memory and wakes the log's readers, so that they pass them on. The store
    /// persists them first.
    pub(crate) fn replace_settings(&self, settings: Option<TopicSettings>) {
        *self.settings.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = settings;
        self.settings_version.fetch_add(1, Ordering::AcqRel);
        self.wake_readers();
    }

    /// Wakes `wake` (`notify_one`) whenever records become readable, the epoch history or the settings
    /// change, and when the log is closed: for a task that waits on many logs and looks at each when woken. Registering the
    /// same `Notify` again changes nothing; it is forgotten once every other reference to it is gone.
    pub fn wake_on_change(&self, wake: &Arc<Notify>) {
        let mut wakers = self.wakers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        wakers.retain(|waker| waker.strong_count() > 0);
        if !wakers.iter().any(|waker| std::ptr::eq(waker.as_ptr(), Arc::as_ptr(wake))) {
            wakers.push(Arc::downgrade(wake));
        }
    }

    /// Wakes every task registered with [`Log::wake_on_change`].
    fn wake_registered(&self) {
        let wakers = self.wakers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for waker in wakers.iter().filter_map(Weak::upgrade) {
            waker.notify_one();
        }
    }

    /// Whether the log was replaced or deleted.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Makes every written record durable (and, with [`crate::FlushPolicy::Always`], readable). The owner
    /// calls it on a timer with [`crate::FlushPolicy::Interval`].
    pub fn flush(&self) -> Result<(), Error> {
        self.flush_to(self.next_offset())
    }

    /// A snapshot of positions and size.
    pub fn stats(&self) -> LogStats {
        let segments = self.segment_list();
        let size_bytes = segments.iter().map(|segment| segment.state().written as u64).sum();
        let last_timestamp_ms = segments
            .iter()
            .rev()
            .map(|segment| segment.state())
            .find(|state| state.written > 0)
            .map_or(0, |state| state.last_timestamp_ms);
        LogStats {
            name: self.name.clone(),
            uid: self.uid,
            log_start: self.log_start(),
            next_offset: self.next_offset(),
            readable_offset: self.readable_offset(),
            durable_offset: self.durable_offset(),
            size_bytes,
            n_segments: segments.len(),
            last_timestamp_ms,
        }
    }

    /// Every segment, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segment_list()
            .iter()
            .map(|segment| {
                let state = segment.state();
                SegmentInfo {
                    base_offset: segment.base_offset(),
                    last_offset: (state.end_offset > segment.base_offset()).then(|| state.end_offset - 1),
                    size_bytes: state.written as u64,
                    sealed: state.sealed_ms.is_some(),
                    created_ms: segment.created_ms(),
                    sealed_ms: state.sealed_ms,
                    path: segment.path().to_path_buf(),
                }
            })
            .collect()
    }

    /// A copy of the segment list.
    pub(crate) fn segment_list(&self) -> Vec<Arc<Segment>> {
        self.segments.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The writer lock, even after a panic elsewhere: the writer's state is only changed after the bytes it
    /// describes are in place, so it is consistent at every point a panic could happen.
    pub(crate) fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The maintenance lock (see the field), even after a panic elsewhere.
    pub(crate) fn lock_maintenance(&self) -> MutexGuard<'_, CompactionState> {
        self.maintenance.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes records below `target` durable, sharing the work with concurrent callers: whoever holds the
    /// flush mark syncs everything written so far, and the others then find their records already durable.
    pub(crate) fn flush_to(&self, target: u64) -> Result<(), Error> {
        if self.durable_offset() >= target {
            return Ok(());
        }
        let mut mark = self.flush_mark.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.durable_offset() >= target {
            return Ok(());
        }
        let (active, end_position, end_offset) = {
            let writer = self.lock_writer();
            (Arc::clone(writer.active.segment()), writer.active.position(), writer.next_offset)
        };
        // Segments sealed since the mark are synced too; sealing already did so unless the policy is
        // `Never`, in which case this is where it happens. One fdatasync per file covers every batch
        // written to it before the call, which is what lets concurrent appenders share one flush.
        let mark_base = mark.segment.base_offset();
        for segment in self.segment_list() {
            let base = segment.base_offset();
            if base < mark_base || base >= active.base_offset() {
                continue;
            }
            let start = if Arc::ptr_eq(&segment, &mark.segment) { mark.position } else { 0 };
            if segment.state().written > start {
                segment.sync_data()?;
            }
            segment.release_sync_file();
        }
        let start = if Arc::ptr_eq(&mark.segment, &active) { mark.position } else { 0 };
        if end_position > start {
            active.sync_data()?;
        }
        *mark = FlushMark { segment: active, position: end_position };
        self.mark_durable(end_offset);
        Ok(())
    }

    /// Records that everything below `offset` is durable.
    pub(crate) fn mark_durable(&self, offset: u64) {
        self.durable_offset.fetch_max(offset, Ordering::AcqRel);
        if self.config.readers_see_only_durable() {
            self.publish_readable(offset);
        }
    }

    /// Makes records below `offset` visible and wakes waiting readers.
    pub(crate) fn publish_readable(&self, offset: u64) {
        let previous = self.readable_offset.fetch_max(offset, Ordering::AcqRel);
        if offset <= previous {
            return;
        }
        self.wake_registered();
    }

    /// Wakes every reader waiting on this log without moving its positions (a repaired segment serves
    /// again).
    pub(crate) fn wake_readers(&self) {
        self.wake_registered();
    }

    /// Closes the log after it was replaced or deleted: appends fail from now on, and waiting readers are
    /// woken to find it closed ([`Log::is_closed`]). Reads still work on the mapped segments.
    pub(crate) fn close(&self) {
        self.lock_writer().closed = true;
        self.closed.store(true, Ordering::Release);
        self.wake_registered();
    }
}
