//! The local copy: the segment logs (the `storage` engine, the same as the brokers') plus the key index in
//! `app.sqlite`, kept consistent with each other, and the per-topic view that queries read.
//!
//! A [`TopicView`] pairs a log with the key generation that indexes it; queries take one view and read
//! only through it, so they see one complete copy even while a refresh swaps in the next one. This module
//! owns appends, repair at start and queries; the queries by key are in `copy/keys.rs`. Full refresh lives in
//! `refresh.rs`; the network lives in `sync.rs`. Every method here blocks (call it from `spawn_blocking`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use protocol::{CheckedBatch, EpochHistory, RecordIter, RecordView, TopicSettings, TopicUid};
use storage::{LogConfig, Store};

use crate::db::{Db, db_path};
use crate::error::Error;
use crate::now_ms;

mod keys;

pub use keys::{KeyLookup, KeyPage};

/// The most records one read of the log returns while re-indexing or replaying.
pub const READ_CHUNK_RECORDS: usize = 10_000;

/// The most bytes one read of the log returns while re-indexing or replaying.
pub const READ_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// How often a query retries when the log it read was swapped out under it by a refresh.
const SWAP_RETRIES: usize = 4;

/// The directory of the segment logs inside the data directory.
pub fn store_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("log")
}

/// One topic's complete copy as queries see it: the log and the key generation that indexes it.
#[derive(Debug, Clone)]
pub struct TopicView {
    /// Topic name.
    pub name: Arc<str>,
    /// The segment log.
    pub log: Arc<storage::Log>,
    /// The key index generation that describes `log`.
    pub generation: u64,
}

/// What one append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppendSummary {
    /// Records newly stored.
    pub n_appended: u64,
    /// Records dropped because the copy already held their offsets.
    pub n_duplicates: u64,
    /// Bytes newly stored.
    pub bytes_appended: u64,
    /// Every record at or above this offset was newly stored, every one below it was held already (the
    /// log's end before the append; in a compacted range the first new record may lie above it).
    pub first_new_offset: u64,
    /// The copy's log end after the append.
    pub next_offset: u64,
}

/// Records stored in a log whose keys are not indexed yet: what [`LocalCopy::append_log`] hands to
/// [`LocalCopy::index_appended`].
#[derive(Debug, Clone)]
pub struct Appended {
    /// Topic name.
    pub topic: Arc<str>,
    /// The key generation the records belong to.
    pub generation: u64,
    /// Whether this is the live copy (whose index position moves), not a refresh's new copy.
    pub live: bool,
    /// Records newly stored.
    pub n_appended: u64,
    /// Records dropped because the log already held their offsets.
    pub n_duplicates: u64,
    /// Every record at or above this offset was newly stored (the log's end before the append).
    pub first_new_offset: u64,
    /// The log end after the append.
    pub next_offset: u64,
    /// When the records became durable (ms since the epoch).
    pub durable_ms: u64,
}

/// A page of records read from one view.
#[derive(Debug, Clone)]
pub struct Page {
    /// The view the records were read from.
    pub view: TopicView,
    /// The records, laid end to end.
    pub records: Bytes,
    /// Number of records.
    pub n_records: usize,
    /// The offset after the last record returned.
    pub next_offset: u64,
}

/// The local copy of every topic.
#[derive(Debug)]
pub struct LocalCopy {
    /// The segment logs.
    pub(crate) store: Store,
    /// `app.sqlite`.
    pub(crate) db: Arc<Db>,
    /// The live view of each topic, swapped whole by a refresh.
    pub(crate) views: RwLock<BTreeMap<String, TopicView>>,
}

impl LocalCopy {
    /// Runs a compaction pass on every topic that is due, at most `rate` bytes a second (0: no limit). The
    /// key index stays true: compaction keeps every key's latest record at its offset, and a tombstone it
    /// drops leaves an index row that reads as an unknown key. Blocking.
    pub fn compact(&self, rate: u64) -> Result<storage::CompactionReport, storage::Error> {
        self.store.compact_paced(rate)
    }

    /// Opens the copy in `data_dir` and repairs what an unclean stop left: the storage engine drops any
    /// partial replacement and torn tail, `app.sqlite` drops shadow keys, and the key index is brought up to
    /// each log's end (or rebuilt when the log is not the copy the index describes).
    pub fn open(data_dir: &Path, log_config: LogConfig) -> Result<LocalCopy, Error> {
        std::fs::create_dir_all(data_dir).map_err(|source| Error::Io {
            context: format!("cannot create the data directory {}", data_dir.display()),
            source,
        })?;
        let store = Store::open(store_dir(data_dir), log_config).map_err(|source| Error::Storage {
            context: "opening the store",
            topic: String::new(),
            source: Box::new(source),
        })?;
        let db = Arc::new(Db::open(&db_path(data_dir))?);
        let interrupted: HashSet<String> = db.recover(now_ms())?.into_iter().collect();
        let rows: HashMap<String, crate::db::TopicRow> =
            db.topics()?.into_iter().map(|row| (row.topic.clone(), row)).collect();
        let mut views = BTreeMap::new();
        for log in store.topics() {
            let name = log.name().to_string();
            let row = rows.get(&name);
            let generation = repair_index(&db, &log, row, interrupted.contains(&name))?;
            views.insert(name.clone(), TopicView { name: Arc::from(name.as_str()), log, generation });
        }
        for name in rows.keys().filter(|name| !views.contains_key(*name)) {
            tracing::info!(topic = %name, "forgetting the index of a topic with no local log");
            db.forget_topic(name)?;
        }
        Ok(LocalCopy { store, db, views: RwLock::new(views) })
    }

    /// Indexes records that are in a live log but not yet in the key index: what a failed index
    /// transaction leaves behind. The sync loop runs it before every connection; at start, `open` does.
    pub fn catch_up_index(&self) -> Result<(), Error> {
        for view in self.views() {
            let Some(row) = self.db.topic(&view.name)? else { continue };
            let end = view.log.next_offset();
            if row.generation == view.generation && row.indexed_to < end {
                tracing::info!(topic = %view.name, from = row.indexed_to, to = end, "indexing records the index missed");
                index_range(
                    &self.db,
                    &view.log,
                    view.generation,
                    row.indexed_to.max(view.log.log_start()),
                    end,
                    true,
                )?;
            }
        }
        Ok(())
    }

    /// The database, for the parts that keep their own rows (dead letters, refresh requests).
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// The live view of `topic`.
    pub fn view(&self, topic: &str) -> Option<TopicView> {
        self.views.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(topic).cloned()
    }

    /// Whether the segment logs could allocate disk space again after an append failed.
    pub fn probe_space(&self) -> Result<(), Error> {
        self.store.probe_space().map_err(|source| Error::Storage {
            context: "probing for disk space",
            topic: String::new(),
            source: Box::new(source),
        })
    }

    /// Records the broker's epoch history of the live copy of `topic` (of `uid`); answers `true`, recording
    /// nothing, if the copy holds records the history says ROOT lost, so that it is refreshed instead.
    pub fn adopt_epochs(&self, topic: &str, uid: TopicUid, history: EpochHistory) -> Result<bool, Error> {
        let Some(view) = self.view(topic).filter(|view| view.log.uid() == uid) else {
            return Ok(false);
        };
        let adopted = self.store.adopt_epochs(&view.log, history).map_err(|source| Error::Storage {
            context: "recording the epoch history",
            topic: topic.to_string(),
            source: Box::new(source),
        })?;
        Ok(matches!(adopted, storage::Adopted::Diverged { .. }))
    }

    /// Records the broker's settings of the live copy of `topic` (of `uid`; a copy of another uid is left
    /// alone, since it is refreshed whole), so that its retention follows them.
    pub fn set_settings(
        &self,
        topic: &str,
        uid: TopicUid,
        settings: Option<TopicSettings>,
    ) -> Result<(), Error> {
        let Some(view) = self.view(topic).filter(|view| view.log.uid() == uid) else {
            return Ok(());
        };
        match self.store.set_settings(&view.log, settings) {
            Ok(_) | Err(storage::Error::Closed { .. }) => Ok(()),
            Err(source) => Err(Error::Storage {
                context: "recording the topic settings",
                topic: topic.to_string(),
                source: Box::new(source),
            }),
        }
    }

    /// Every live view, by topic name.
    pub fn views(&self) -> Vec<TopicView> {
        self.views.read().unwrap_or_else(|poisoned| poisoned.into_inner()).values().cloned().collect()
    }

    /// Appends a batch from the broker to the live copy of `topic` (created on first use with `uid`),
    /// then indexes the new records' keys and moves the position in one SQLite transaction: both halves
    /// of [`LocalCopy::append_log`] and [`LocalCopy::index_appended`]. `on_record` sees every newly stored
    /// record, after it is durable.
    ///
    /// `records` are records laid end to end that did not arrive as a BATCH (a tool, a test); they are
    /// proven here first.
    pub fn append(
        &self,
        topic: &str,
        uid: TopicUid,
        records: &[u8],
        on_record: impl FnMut(&RecordView<'_>),
    ) -> Result<AppendSummary, Error> {
        let batches = [prove(topic, records)?];
        let appended = self.append_log(topic, uid, &batches)?;
        self.index_appended(&appended, &batches, on_record)
    }

    /// The first half of an append: stores the batches' records verbatim (proven, durable) in the live log
    /// of `topic`, created on first use with `uid`. Records the copy already holds are dropped by offset.
    /// Until [`LocalCopy::index_appended`] runs, the records are in the log but not in the key index, which
    /// lets the caller overlap indexing with the next append; a crash in between is repaired at start.
    pub fn append_log(
        &self,
        topic: &str,
        uid: TopicUid,
        batches: &[CheckedBatch],
    ) -> Result<Appended, Error> {
        let Some(first) = batches.first() else {
            return Err(Error::Records { topic: topic.to_string(), source: protocol::WireError::EmptyBatch });
        };
        let view = match self.view(topic) {
            Some(view) => view,
            None => self.create_topic(topic, uid, first.first_offset())?,
        };
        if view.log.uid() != uid {
            return Err(Error::Unexpected {
                topic: topic.to_string(),
                what: format!("records of uid {uid} while the local copy has uid {}", view.log.uid()),
            });
        }
        append_to_log(&view.log, &view.name, view.generation, true, batches)
    }

    /// The second half of an append: writes the keys of the newly stored records of `batches` into the
    /// generation they were appended for and, for the live copy, moves the index position, in one SQLite
    /// transaction. `on_record` sees every newly stored record.
    pub fn index_appended(
        &self,
        appended: &Appended,
        batches: &[CheckedBatch],
        mut on_record: impl FnMut(&RecordView<'_>),
    ) -> Result<AppendSummary, Error> {
        let summary = AppendSummary {
            n_appended: appended.n_appended,
            n_duplicates: appended.n_duplicates,
            bytes_appended: 0,
            first_new_offset: appended.first_new_offset,
            next_offset: appended.next_offset,
        };
        if appended.n_appended == 0 {
            return Ok(summary);
        }
        let topic = &*appended.topic;
        // The batches were proven on arrival: their records are walked by size, not checked again.
        let records = batches.iter().flat_map(CheckedBatch::iter).map(Ok);
        let (keys, bytes_appended) = collect_keys(topic, records, appended.first_new_offset, &mut on_record)?;
        let position = appended.live.then_some(appended.next_offset);
        self.db.index_records(topic, appended.generation, keys, position)?;
        Ok(AppendSummary { bytes_appended, ..summary })
    }

    /// Reads up to `max_records` records of `topic` from `from`, from one consistent view. An offset below
    /// the copy's start reads from the start.
    pub fn read_page(
        &self,
        topic: &str,
        from: Option<u64>,
        max_records: usize,
    ) -> Result<Option<Page>, Error> {
        self.with_current_view(topic, |view| {
            let from = from.unwrap_or(0).max(view.log.log_start());
            let end = view.log.readable_offset();
            if from >= end {
                return Ok(Page {
                    view: view.clone(),
                    records: Bytes::new(),
                    n_records: 0,
                    next_offset: from,
                });
            }
            let chunk = view.log.read(from, max_records, READ_CHUNK_BYTES)?;
            Ok(Page {
                view: view.clone(),
                records: chunk.records,
                n_records: chunk.n_records as usize,
                next_offset: chunk.next_offset,
            })
        })
    }

    /// The record of `topic` at `offset`, if the copy holds it.
    pub fn record_at(&self, topic: &str, offset: u64) -> Result<Option<Option<Bytes>>, Error> {
        self.with_current_view(topic, |view| read_one(&view.log, offset))
    }

    /// Runs a read against the live view of `topic`. If the read fails and a refresh swapped the view out
    /// meanwhile (the old log is closed and its files deleted), the read is run again on the new view, so a
    /// swap is never seen as an error. `Ok(None)` means the topic is unknown.
    fn with_current_view<T>(
        &self,
        topic: &str,
        read: impl Fn(&TopicView) -> Result<T, ViewError>,
    ) -> Result<Option<T>, Error> {
        let mut attempt = 0;
        loop {
            let Some(view) = self.view(topic) else {
                return Ok(None);
            };
            let error = match read(&view) {
                Ok(value) => return Ok(Some(value)),
                Err(error) => error,
            };
            let swapped = self.view(topic).is_some_and(|current| !Arc::ptr_eq(&current.log, &view.log));
            if swapped && attempt < SWAP_RETRIES {
                attempt += 1;
                continue;
            }
            return Err(match error {
                ViewError::Storage(source) => {
                    Error::Storage { context: "reading the local copy", topic: topic.to_string(), source }
                }
                ViewError::Other(error) => error,
                ViewError::Swapped => Error::Swapped { topic: topic.to_string() },
            });
        }
    }

    /// Creates an empty live copy of `topic` whose first record will have `first_offset`.
    fn create_topic(&self, topic: &str, uid: TopicUid, first_offset: u64) -> Result<TopicView, Error> {
        let log = self.store.create_topic(topic, uid, first_offset).map_err(|source| Error::Storage {
            context: "creating a topic",
            topic: topic.to_string(),
            source: Box::new(source),
        })?;
        let row = self.db.create_topic(topic, uid, first_offset)?;
        let view = TopicView { name: Arc::from(topic), log, generation: row.generation };
        self.views
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(topic.to_string(), view.clone());
        tracing::info!(topic, %uid, first_offset, "created the local copy of a topic");
        Ok(view)
    }
}

/// An error inside a view read: storage errors are kept apart so a swapped-out log can be retried.
#[derive(Debug)]
enum ViewError {
    /// The log refused the read.
    Storage(Box<storage::Error>),
    /// A read of several steps saw its view swapped out before it finished, so its steps may describe two
    /// copies; it is run again on the new view.
    Swapped,
    /// Anything else.
    Other(Error),
}

impl From<storage::Error> for ViewError {
    fn from(error: storage::Error) -> Self {
        ViewError::Storage(Box::new(error))
    }
}

/// Reads the single record at `offset`, or `None` if the log does not hold it.
fn read_one(log: &storage::Log, offset: u64) -> Result<Option<Bytes>, ViewError> {
    if offset < log.log_start() || offset >= log.readable_offset() {
        return Ok(None);
    }
    let chunk = log.read(offset, 1, protocol::record::MAX_RECORD_LEN)?;
    // In a compacted range the read starts at the next record held: the one asked for is gone.
    let found = protocol::record::peek_record_offset(&chunk.records);
    Ok((chunk.n_records > 0 && found == Some(offset)).then_some(chunk.records))
}

/// Proves records that did not arrive as a BATCH frame.
pub(crate) fn prove(topic: &str, records: &[u8]) -> Result<CheckedBatch, Error> {
    CheckedBatch::from_records(topic, Bytes::copy_from_slice(records))
        .map_err(|source| Error::Records { topic: topic.to_string(), source })
}

/// Appends proven batches to `log` (durable once this returns) for key generation `generation`.
pub(crate) fn append_to_log(
    log: &storage::Log,
    topic: &Arc<str>,
    generation: u64,
    live: bool,
    batches: &[CheckedBatch],
) -> Result<Appended, Error> {
    let outcome = log.append_checked(batches).map_err(|source| Error::Storage {
        context: "appending records",
        topic: topic.to_string(),
        source: Box::new(source),
    })?;
    Ok(Appended {
        topic: topic.clone(),
        generation,
        live,
        n_appended: outcome.n_appended,
        n_duplicates: outcome.n_duplicates,
        // Not `next_offset - n_appended`: a compacted range skips offsets.
        first_new_offset: outcome.first_offset,
        next_offset: outcome.next_offset,
        durable_ms: now_ms(),
    })
}

/// Keys with the offset of their latest record, in key order.
type KeyOffsets<'r> = Vec<(&'r [u8], u64)>;

/// The latest offset of each key among the records at or above `from_offset`, in key order, and their byte
/// count. Keeping only the latest per key spares SQLite one write per record when keys repeat in a batch,
/// and writing them in key order walks the index B-tree once instead of jumping about it (a refresh of a
/// million keys spent 44% of the app's CPU in these writes in hash order).
fn collect_keys<'r>(
    topic: &str,
    records: impl Iterator<Item = Result<RecordView<'r>, protocol::WireError>>,
    from_offset: u64,
    on_record: &mut impl FnMut(&RecordView<'_>),
) -> Result<(KeyOffsets<'r>, u64), Error> {
    let mut keys = HashMap::new();
    let mut bytes = 0;
    for view in records {
        let view = view.map_err(|source| Error::Records { topic: topic.to_string(), source })?;
        if view.offset() < from_offset {
            continue;
        }
        bytes += view.as_bytes().len() as u64;
        on_record(&view);
        keys.insert(view.key(), view.offset());
    }
    let mut keys: Vec<_> = keys.into_iter().collect();
    keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
    Ok((keys, bytes))
}

/// Brings the key index of one log up to date at start and returns the live generation.
///
/// The log is the truth: if the index describes another copy (another uid, an interrupted refresh that may
/// have swapped the log, positions past the log end), a new generation is built from the whole log and
/// switched in; otherwise only the records after `indexed_to` are indexed.
fn repair_index(
    db: &Db,
    log: &Arc<storage::Log>,
    row: Option<&crate::db::TopicRow>,
    refresh_interrupted: bool,
) -> Result<u64, Error> {
    let name = log.name();
    let (start, end) = (log.log_start(), log.next_offset());
    let same_copy = row.filter(|row| row.uid == log.uid() && !refresh_interrupted && row.indexed_to <= end);
    if let Some(row) = same_copy {
        if row.indexed_to < end {
            tracing::info!(
                topic = name,
                from = row.indexed_to,
                to = end,
                "indexing records stored before a stop"
            );
            index_range(db, log, row.generation, row.indexed_to.max(start), end, true)?;
        }
        return Ok(row.generation);
    }
    tracing::info!(topic = name, uid = %log.uid(), from = start, to = end, "rebuilding the key index");
    let generation = db.begin_reindex(name)?;
    index_range(db, log, generation, start, end, false)?;
    // Handlers resume where they were for the same history; a different history starts them at its start.
    let handled_to = match row {
        Some(row) if row.uid == log.uid() => row.handled_to.clamp(start, end),
        _ => start,
    };
    db.switch_generation(name, log.uid(), generation, end, handled_to, None, now_ms())?;
    Ok(generation)
}

/// Indexes the keys of `log`'s records in `[from, to)` into `generation`, in chunks.
fn index_range(
    db: &Db,
    log: &storage::Log,
    generation: u64,
    from: u64,
    to: u64,
    live: bool,
) -> Result<(), Error> {
    let name = log.name();
    let mut next = from;
    while next < to {
        let chunk = log.read(next, READ_CHUNK_RECORDS, READ_CHUNK_BYTES).map_err(|source| {
            Error::Storage { context: "re-indexing", topic: name.to_string(), source: Box::new(source) }
        })?;
        if chunk.n_records == 0 {
            break;
        }
        let (keys, _) = collect_keys(name, RecordIter::new(&chunk.records), next, &mut |_| {})?;
        db.index_records(name, generation, keys, live.then_some(chunk.next_offset))?;
        next = chunk.next_offset;
    }
    Ok(())
}
