//! The store: one data directory, its lock, its metadata database and every topic's log. It owns topic
//! creation, deletion and the switch of a full refresh, and keeps each topic's identity file in step with
//! them (under the admin lock, so identity writes never interleave); each log owns its own appends and
//! reads.
//!
//! `Store` is a cheap `Clone` handle (an `Arc` inside); the directory stays locked, and a best-effort
//! flush runs, when the last handle is dropped. Logs handed out stay usable while a task holds them.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use protocol::{EpochHistory, TopicSettings, TopicUid, validate_topic_name};
use tokio::sync::watch;

use crate::config::{FlushPolicy, LogConfig};
use crate::error::Error;
use crate::identity::{TopicIdentity, remove_identity, write_identity};
use crate::integrity::ScrubCursor;
use crate::log::{Log, LogParts};
use crate::meta::{Meta, SegmentRow, TopicRow};
use crate::paths::{lock_path, remove_dir_logged, sync_dir, topic_dir, topic_root, topics_root};
use crate::recovery::{open_meta, recover};
use crate::replace::Replacement;
use crate::retention::RetentionReport;
use crate::writer::SegmentWriter;
use protocol::now_ms;

/// The most a space probe allocates: enough for an append to go on, little enough to pass on a nearly
/// full disk that still has room for it.
const PROBE_BYTES: u64 = 1 << 20;

/// A data directory holding many topics. Cloning gives another handle to the same store.
#[derive(Debug, Clone)]
pub struct Store {
    /// The shared state.
    inner: Arc<StoreInner>,
}

/// What every handle shares.
#[derive(Debug)]
struct StoreInner {
    /// The data directory.
    root: PathBuf,
    /// The settings of every log.
    config: Arc<LogConfig>,
    /// The metadata database.
    meta: Arc<Meta>,
    /// Every committed topic.
    topics: RwLock<BTreeMap<String, Arc<Log>>>,
    /// Bumped whenever a topic is created, replaced or deleted.
    topics_tx: watch::Sender<u64>,
    /// The next generation directory number; unique across the store so directories never collide.
    next_generation: AtomicU64,
    /// Serialises changes to the set of topics (create, delete, start and commit a replacement), so that
    /// a check and the change it guards cannot interleave with another change.
    admin: Mutex<()>,
    /// Where the background scrub goes on from.
    scrub: Mutex<ScrubCursor>,
    /// The locked `LOCK` file; the lock lasts as long as the file is open.
    _lock: File,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`: locks the directory, opens the metadata (rebuilding
    /// it from the topics' identity and segment files if it is missing or unusable) and recovers every
    /// topic (see `recovery.rs` for what recovery repairs).
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Store, Error> {
        config.validate()?;
        let root = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(topics_root(&root))
            .map_err(|source| Error::io("create data directory", &root, source))?;
        let lock = lock_directory(&root)?;
        if config.flush == FlushPolicy::Never {
            tracing::warn!(
                dir = %root.display(),
                "storage opened with FlushPolicy::Never: acknowledged records can be lost in a crash \
                 (benchmarks only)"
            );
        }
        let config = Arc::new(config);
        let (meta, condition) = open_meta(&root)?;
        let meta = Arc::new(meta);
        let recovered = recover(&root, &config, &meta, &condition)?;
        let topics = recovered.logs.into_iter().map(|log| (log.name().to_string(), Arc::new(log))).collect();
        let (topics_tx, _) = watch::channel(0);
        Ok(Store {
            inner: Arc::new(StoreInner {
                root,
                config,
                meta,
                topics: RwLock::new(topics),
                topics_tx,
                next_generation: AtomicU64::new(recovered.max_generation + 1),
                admin: Mutex::new(()),
                scrub: Mutex::new(ScrubCursor::default()),
                _lock: lock,
            }),
        })
    }

    /// The settings every log uses.
    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.root
    }

    /// The log of a topic, if the store has it.
    pub fn topic(&self, name: &str) -> Option<Arc<Log>> {
        self.topic_map().get(name).cloned()
    }

    /// Every topic's log, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Log>> {
        self.topic_map().values().cloned().collect()
    }

    /// Creates a topic whose log starts at `first_offset` (a relay's copy starts where its parent's log
    /// starts). Fails with [`Error::TopicExists`] if the name is taken. The identity file is written
    /// before the SQLite row: a crash between the two leaves a topic recovery rebuilds, never files
    /// nobody can account for.
    /// Its epoch history is unknown until [`Store::adopt_epochs`] records its parent's.
    pub fn create_topic(&self, name: &str, uid: TopicUid, first_offset: u64) -> Result<Arc<Log>, Error> {
        self.create(name, uid, first_offset, EpochHistory::default(), None)
    }

    /// Creates a topic at ROOT, at offset 0 with epoch 0, with `settings` (`None`: the store's defaults)
    /// recorded with it in the same writes, so it never exists without them. Fails with
    /// [`Error::TopicExists`] if the name is taken.
    pub fn create_root_topic(
        &self,
        name: &str,
        uid: TopicUid,
        settings: Option<TopicSettings>,
    ) -> Result<Arc<Log>, Error> {
        self.create(name, uid, 0, EpochHistory::first(0), settings)
    }

    /// Creates a topic with `epochs` as its history and `settings` as its settings.
    fn create(
        &self,
        name: &str,
        uid: TopicUid,
        first_offset: u64,
        epochs: EpochHistory,
        settings: Option<TopicSettings>,
    ) -> Result<Arc<Log>, Error> {
        check_name(name)?;
        let _admin = self.admin();
        if self.topic_map().contains_key(name) {
            return Err(Error::TopicExists { name: name.to_string() });
        }
        let log = self.new_log(name, uid, first_offset, epochs, settings)?;
        let row = identity_row(&log);
        let topic_root = topic_root(&self.inner.root, name);
        let created = write_identity(&topic_root, &TopicIdentity::of_row(&row)).and_then(|()| {
            self.inner.meta.create_topic(&row, &SegmentRow::active(first_offset, log.created_ms))
        });
        if let Err(error) = created {
            if let Err(error) = remove_identity(&topic_root) {
                tracing::warn!(topic = name, %error, "cannot remove the identity file of a failed creation");
            }
            remove_dir_logged(&log.dir, "topic creation failed");
            return Err(error);
        }
        let log = Arc::new(log);
        self.topic_map_mut().insert(name.to_string(), Arc::clone(&log));
        self.bump_topics();
        Ok(log)
    }

    /// The topic's log, created at offset 0 with `uid_if_new` and epoch 0 if it does not exist (ROOT's
    /// first publish).
    pub fn get_or_create_topic(&self, name: &str, uid_if_new: TopicUid) -> Result<Arc<Log>, Error> {
        if let Some(log) = self.topic(name) {
            return Ok(log);
        }
        match self.create(name, uid_if_new, 0, EpochHistory::first(0), None) {
            Err(Error::TopicExists { .. }) => {
                self.topic(name).ok_or_else(|| Error::UnknownTopic { name: name.to_string() })
            }
            other => other,
        }
    }

    /// Deletes a topic and its files. Its log is closed: appends fail and waiting readers wake with an
    /// error; bytes already read stay valid. The identity file goes first, so that a crash part-way never
    /// brings the topic back from its files.
    pub fn delete_topic(&self, name: &str) -> Result<(), Error> {
        let _admin = self.admin();
        let Some(log) = self.topic(name) else {
            return Err(Error::UnknownTopic { name: name.to_string() });
        };
        let topic_root = topic_root(&self.inner.root, name);
        remove_identity(&topic_root)?;
        if let Err(error) = self.inner.meta.delete_topic(name) {
            self.restore_identity(&log);
            return Err(error);
        }
        self.topic_map_mut().remove(name);
        log.close();
        remove_dir_logged(&log.dir, "topic deleted");
        // Succeeds only if no other generation (a replacement being built) is left.
        let _ = std::fs::remove_dir(&topic_root);
        self.bump_topics();
        Ok(())
    }

    /// Starts building a new copy of a topic (a full refresh) in a new generation directory, starting at
    /// `first_offset`. The copy is invisible to [`Store::topic`] until [`Store::commit_replace`]; append
    /// to it through [`Replacement::log`]. The topic need not exist yet. The new copy starts with the
    /// current copy's settings ([`Replacement::set_settings`] changes them).
    pub fn begin_replace(&self, name: &str, uid: TopicUid, first_offset: u64) -> Result<Replacement, Error> {
        check_name(name)?;
        let _admin = self.admin();
        let settings = self.topic(name).and_then(|current| current.settings());
        let log = self.new_log(name, uid, first_offset, EpochHistory::default(), settings)?;
        let row = SegmentRow::active(first_offset, log.created_ms);
        if let Err(error) = self.inner.meta.upsert_segments(name, log.generation, &[row]) {
            remove_dir_logged(&log.dir, "replacement creation failed");
            return Err(error);
        }
        Ok(Replacement::new(Arc::new(log), Arc::clone(&self.inner.meta)))
    }

    /// Switches the topic to the replacement's copy: flushes it, writes the topic's identity file for the
    /// new copy, commits the switch in one SQLite transaction, swaps the log readers find, closes the old
    /// log (waking its waiters with an error) and deletes the old files. A crash before the transaction
    /// leaves the old copy (or, if `meta.sqlite` is lost as well, the new one, which is complete); after it,
    /// the new one. If this fails the replacement is discarded and the old copy stays.
    pub fn commit_replace(&self, replacement: Replacement) -> Result<Arc<Log>, Error> {
        let log = Arc::clone(replacement.log());
        log.flush()?;
        if log.compacts() {
            // The upstream's compaction may have dropped deletes anywhere in the copy it sent: a reader of
            // this copy resuming below its end might have missed one.
            log.delete_horizon.store(log.next_offset(), std::sync::atomic::Ordering::Release);
        }
        let _admin = self.admin();
        let old = self.topic(log.name());
        let row = identity_row(&log);
        let topic_root = topic_root(&self.inner.root, log.name());
        write_identity(&topic_root, &TopicIdentity::of_row(&row))?;
        if let Err(error) = self.inner.meta.commit_replace(&row, old.as_ref().map(|old| old.generation)) {
            match &old {
                Some(old) => self.restore_identity(old),
                None => {
                    if let Err(error) = remove_identity(&topic_root) {
                        tracing::warn!(topic = %row.name, %error, "cannot remove the identity file");
                    }
                }
            }
            return Err(error);
        }
        replacement.disarm();
        self.topic_map_mut().insert(log.name().to_string(), Arc::clone(&log));
        if let Some(old) = old {
            old.close();
            remove_dir_logged(&old.dir, "replaced by a full refresh");
        }
        self.bump_topics();
        Ok(log)
    }

    /// A receiver bumped whenever a topic is created, replaced or deleted (for wildcard subscribers).
    pub fn subscribe_topics(&self) -> watch::Receiver<u64> {
        self.inner.topics_tx.subscribe()
    }

    /// Where the background scrub goes on from.
    pub(crate) fn scrub_cursor(&self) -> ScrubCursor {
        self.inner.scrub.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Records where the next scrub step starts.
    pub(crate) fn set_scrub_cursor(&self, cursor: ScrubCursor) {
        *self.inner.scrub.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = cursor;
    }

    /// Whether an append could allocate disk space again (a preallocation chunk, at most 1 MiB) after one failed:
    /// allocates it in a probe file and removes it. [`Error::NoSpace`] while the disk is still full. Touches
    /// no segment, so a follower can poll it at a growing interval while paused.
    pub fn probe_space(&self) -> Result<(), Error> {
        crate::space::probe(&self.inner.root, self.inner.config.preallocate_chunk_bytes.min(PROBE_BYTES))
    }

    /// Flushes every topic; the owner calls it on a timer with [`FlushPolicy::Interval`]. Every topic is
    /// tried; the first error is returned.
    pub fn flush_all(&self) -> Result<(), Error> {
        flush_logs(&self.topics())
    }

    /// Removes whole sealed segments beyond the retention limits of the configuration, in every topic,
    /// and reports what it removed. The owner calls it on a timer.
    pub fn enforce_retention(&self) -> Result<RetentionReport, Error> {
        let now = now_ms();
        let mut report = RetentionReport::default();
        let mut first_error = None;
        for log in self.topics() {
            match log.enforce_retention(now).and_then(|removed| {
                // The identity's log start follows; until it does it is behind, which recovery allows.
                if removed.is_some() { self.update_identity(&log).map(|()| removed) } else { Ok(removed) }
            }) {
                Ok(Some(topic)) => report.add(topic),
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(topic = %log.name(), %error, "retention failed");
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }

    /// Flushes everything. The directory is unlocked once every handle is dropped.
    pub fn close(self) -> Result<(), Error> {
        self.flush_all()
    }

    /// Rewrites a topic's identity file from its log, if the log is still the topic's committed copy (a
    /// replacement may have committed meanwhile, and its identity must not be overwritten with the old one).
    pub(crate) fn update_identity(&self, log: &Arc<Log>) -> Result<(), Error> {
        let _admin = self.admin();
        let current = self.topic(log.name());
        if !current.is_some_and(|current| Arc::ptr_eq(&current, log)) {
            return Ok(());
        }
        let topic_root = topic_root(&self.inner.root, log.name());
        write_identity(&topic_root, &TopicIdentity::of_row(&identity_row(log)))
    }

    /// Rewrites a committed topic's identity file with a new epoch history (the caller holds the admin lock).
    pub(crate) fn write_identity_with_epochs(&self, log: &Log, epochs: &EpochHistory) -> Result<(), Error> {
        let identity = TopicIdentity { epochs: epochs.clone(), ..TopicIdentity::of_row(&identity_row(log)) };
        write_identity(&topic_root(&self.inner.root, log.name()), &identity)
    }

    /// Rewrites a committed topic's identity file with new settings (the caller holds the admin lock).
    pub(crate) fn write_identity_with_settings(
        &self,
        log: &Log,
        settings: Option<TopicSettings>,
    ) -> Result<(), Error> {
        let identity = TopicIdentity { settings, ..TopicIdentity::of_row(&identity_row(log)) };
        write_identity(&topic_root(&self.inner.root, log.name()), &identity)
    }

    /// The metadata database.
    pub(crate) fn meta(&self) -> &Meta {
        &self.inner.meta
    }

    /// Puts back the identity file of a committed copy after a change to it failed; a failure here is only
    /// logged, because recovery rewrites the file from SQLite anyway.
    fn restore_identity(&self, log: &Log) {
        let topic_root = topic_root(&self.inner.root, log.name());
        if let Err(error) = write_identity(&topic_root, &TopicIdentity::of_row(&identity_row(log))) {
            tracing::warn!(topic = %log.name(), %error, "cannot restore the identity file");
        }
    }

    /// Creates the directory and first segment of a new copy of a topic, in a new generation.
    fn new_log(
        &self,
        name: &str,
        uid: TopicUid,
        first_offset: u64,
        epochs: EpochHistory,
        settings: Option<TopicSettings>,
    ) -> Result<Log, Error> {
        let root = &self.inner.root;
        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
        let dir = topic_dir(root, name, generation);
        std::fs::create_dir_all(&dir).map_err(|source| Error::io("create topic directory", &dir, source))?;
        let created_ms = now_ms();
        let active = SegmentWriter::create(&dir, first_offset, created_ms, &self.inner.config)
            .and_then(|active| {
                sync_dir(&dir)?;
                sync_dir(&topic_root(root, name))?;
                sync_dir(&topics_root(root))?;
                Ok(active)
            })
            .inspect_err(|_| remove_dir_logged(&dir, "topic creation failed"))?;
        Ok(Log::assemble(LogParts {
            name: name.to_string(),
            uid,
            generation,
            dir,
            created_ms,
            config: Arc::clone(&self.inner.config),
            meta: Arc::clone(&self.inner.meta),
            sealed: Vec::new(),
            active,
            epochs,
            settings,
            delete_horizon: 0,
        }))
    }

    /// The topic map for reading, even if a thread panicked while holding it.
    fn topic_map(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Log>>> {
        self.inner.topics.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The topic map for changing, even if a thread panicked while holding it.
    fn topic_map_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Log>>> {
        self.inner.topics.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The lock that serialises changes to the set of topics.
    pub(crate) fn admin(&self) -> MutexGuard<'_, ()> {
        self.inner.admin.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tells topic-list subscribers that the set of topics changed.
    fn bump_topics(&self) {
        self.inner.topics_tx.send_modify(|version| *version += 1);
    }
}

impl Drop for StoreInner {
    fn drop(&mut self) {
        let logs: Vec<_> =
            self.topics.read().unwrap_or_else(|poisoned| poisoned.into_inner()).values().cloned().collect();
        if let Err(error) = flush_logs(&logs) {
            tracing::error!(dir = %self.root.display(), %error, "flush on close failed");
        }
    }
}

/// Flushes every log, returning the first error after trying them all.
fn flush_logs(logs: &[Arc<Log>]) -> Result<(), Error> {
    let mut first_error = None;
    for log in logs {
        if let Err(error) = log.flush() {
            tracing::error!(topic = %log.name(), %error, "flush failed");
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The topic row (and so the identity) of a log as it stands.
fn identity_row(log: &Log) -> TopicRow {
    TopicRow {
        name: log.name().to_string(),
        uid: log.uid(),
        generation: log.generation,
        log_start: log.log_start(),
        created_ms: log.created_ms,
        epochs: log.epochs(),
        settings: log.settings(),
        delete_horizon: log.delete_horizon(),
    }
}

/// Refuses a name that is not a valid topic name.
fn check_name(name: &str) -> Result<(), Error> {
    validate_topic_name(name).map_err(|reason| Error::BadTopicName { name: name.to_string(), reason })
}

/// Takes the exclusive lock on the directory's `LOCK` file, so two stores never share a directory.
fn lock_directory(root: &Path) -> Result<File, Error> {
    let path = lock_path(root);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| Error::io("open lock file", &path, source))?;
    // SAFETY: plain system call on a file descriptor owned by `file`.
    let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if result != 0 {
        return Err(Error::Locked { path, source: std::io::Error::last_os_error() });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Store>();
        check::<Log>();
        check::<Replacement>();
    }
}
