//! The SQLite metadata database (`meta.sqlite`): which topics exist, which generation directory holds each
//! one's committed copy, and what the segments of each generation are. This is the only module that
//! talks to SQLite, with `meta/schema.rs` (the schema and the check that an existing file has it).
//!
//! It is written when a topic or segment is created, rolled, sealed, removed by retention, reconciled by
//! recovery or replaced, never per record or per append: the segment files themselves are the truth about
//! records, and recovery reconciles this database with them. Offsets are stored as SQLite integers holding
//! the bits of the `u64`.
//!
//! Opening checks that the file is a database of this schema ([`Meta::open`]); one that is not is
//! [`Error::UnusableMeta`], which recovery answers by moving the file aside and rebuilding it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use protocol::{Cleanup, Epoch, EpochHistory, TopicSettings, TopicUid};
use rusqlite::{Connection, params};

use crate::error::Error;

mod schema;

use schema::{SCHEMA, check_existing, classify};

/// A topic as the database records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicRow {
    /// The topic's name.
    pub(crate) name: String,
    /// The topic's uid.
    pub(crate) uid: TopicUid,
    /// The generation directory holding the committed copy.
    pub(crate) generation: u64,
    /// The first offset stored.
    pub(crate) log_start: u64,
    /// When the topic (this copy) was created.
    pub(crate) created_ms: u64,
    /// The topic's epoch history (empty if unknown).
    pub(crate) epochs: EpochHistory,
    /// The topic's explicit settings; `None` for the store's defaults.
    pub(crate) settings: Option<TopicSettings>,
    /// The copy's delete horizon (zero if compaction never dropped a tombstone).
    pub(crate) delete_horizon: u64,
}

/// A segment as the database records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentRow {
    /// Offset of its first record.
    pub(crate) base_offset: u64,
    /// Offset of its last record; recorded when sealed.
    pub(crate) last_offset: Option<u64>,
    /// Size of the file in bytes; recorded when sealed (zero while active).
    pub(crate) size_bytes: u64,
    /// Whether it is sealed.
    pub(crate) sealed: bool,
    /// When it was created.
    pub(crate) created_ms: u64,
    /// When it was sealed.
    pub(crate) sealed_ms: Option<u64>,
    /// Timestamp of its last record; recorded when sealed.
    pub(crate) last_timestamp_ms: Option<u64>,
}

impl SegmentRow {
    /// The row of a new, empty, active segment.
    pub(crate) fn active(base_offset: u64, created_ms: u64) -> SegmentRow {
        SegmentRow {
            base_offset,
            last_offset: None,
            size_bytes: 0,
            sealed: false,
            created_ms,
            sealed_ms: None,
            last_timestamp_ms: None,
        }
    }
}

/// The open metadata database.
#[derive(Debug)]
pub(crate) struct Meta {
    /// The database file, for error messages.
    path: PathBuf,
    /// The connection; metadata writes are rare, so one connection behind a mutex is enough.
    connection: Mutex<Connection>,
}

/// Stores a `u64` in an SQLite integer, bit for bit.
fn to_sql(value: u64) -> i64 {
    value as i64
}

/// Reads back a `u64` stored by [`to_sql`].
fn from_sql(value: i64) -> u64 {
    value as u64
}

impl Meta {
    /// Opens (creating if needed) the database at `path`, in WAL mode with full synchronous commits so
    /// that a committed change survives a power loss. An existing file is checked before anything is
    /// written to it: SQLite must recognise it, its quick integrity check must pass, and its tables must
    /// have this build's schema; otherwise the answer is [`Error::UnusableMeta`]. Other failures (I/O,
    /// permissions, a lock) are [`Error::Meta`]: the file may be fine, so it must not be moved aside.
    pub(crate) fn open(path: &Path) -> Result<Meta, Error> {
        let error = |op| classify(op, path);
        let connection = Connection::open(path).map_err(error("open the database"))?;
        connection.busy_timeout(Duration::from_secs(5)).map_err(error("set the busy timeout"))?;
        check_existing(&connection, path)?;
        let _mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(error("switch to WAL mode"))?;
        connection.execute_batch("PRAGMA synchronous = FULL;").map_err(error("set synchronous mode"))?;
        connection.execute_batch(SCHEMA).map_err(error("create the schema"))?;
        Ok(Meta { path: path.to_path_buf(), connection: Mutex::new(connection) })
    }

    /// The connection, even if a thread panicked while holding it (SQLite transactions roll back on
    /// their own, so the connection is still consistent).
    fn connection(&self) -> MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wraps an SQLite error.
    fn error(&self, op: &'static str) -> impl Fn(rusqlite::Error) -> Error + '_ {
        move |source| Error::Meta { op, path: self.path.clone(), source }
    }

    /// Every topic, sorted by name.
    pub(crate) fn topics(&self) -> Result<Vec<TopicRow>, Error> {
        let connection = self.connection();
        let mut statement = connection
            .prepare("SELECT name, uid, generation, log_start, created_ms FROM topics ORDER BY name")
            .map_err(self.error("list topics"))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })
            .map_err(self.error("list topics"))?;
        let mut topics = Vec::new();
        for row in rows {
            let (name, uid, generation, log_start, created_ms) = row.map_err(self.error("list topics"))?;
            let uid = uid.parse::<TopicUid>().map_err(|detail| Error::CorruptMeta {
                path: self.path.clone(),
                detail: format!("topic {name:?}: {detail}"),
            })?;
            topics.push(TopicRow {
                name,
                uid,
                generation: from_sql(generation),
                log_start: from_sql(log_start),
                created_ms: from_sql(created_ms),
                epochs: EpochHistory::default(),
                settings: None,
                delete_horizon: 0,
            });
        }
        let mut statement = connection
            .prepare("SELECT topic, epoch, start_offset FROM epochs ORDER BY topic, epoch")
            .map_err(self.error("list epochs"))?;
        let rows = statement
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get(2)?)))
            .map_err(self.error("list epochs"))?;
        let mut entries: BTreeMap<String, Vec<Epoch>> = BTreeMap::new();
        for row in rows {
            let (topic, epoch, start_offset) = row.map_err(self.error("list epochs"))?;
            let epoch = u32::try_from(epoch).map_err(|_| Error::CorruptMeta {
                path: self.path.clone(),
                detail: format!("topic {topic:?}: epoch {epoch} out of range"),
            })?;
            entries.entry(topic).or_default().push(Epoch { epoch, start_offset: from_sql(start_offset) });
        }
        for topic in &mut topics {
            if let Some(entries) = entries.remove(&topic.name) {
                topic.epochs = EpochHistory::new(entries).map_err(|detail| Error::CorruptMeta {
                    path: self.path.clone(),
                    detail: format!("topic {:?}: epoch history: {detail}", topic.name),
                })?;
            }
        }
        let mut settings = self.settings(&connection)?;
        let mut horizons = self.horizons(&connection)?;
        for topic in &mut topics {
            topic.settings = settings.remove(&topic.name);
            topic.delete_horizon = horizons.remove(&topic.name).unwrap_or(0);
        }
        Ok(topics)
    }

    /// Every topic's explicit settings, by topic name.
    fn settings(&self, connection: &Connection) -> Result<BTreeMap<String, TopicSettings>, Error> {
        let mut statement = connection
            .prepare(
                "SELECT topic, cleanup, retention_bytes, retention_age_ms, tombstone_retention_ms FROM settings",
            )
            .map_err(self.error("list settings"))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<i64>>(2)?,
                    row.get::<_, Option<i64>>(3)?,
                    row.get::<_, Option<i64>>(4)?,
                ))
            })
            .map_err(self.error("list settings"))?;
        let mut settings = BTreeMap::new();
        for row in rows {
            let (topic, cleanup, retention_bytes, retention_age_ms, tombstone_retention_ms) =
                row.map_err(self.error("list settings"))?;
            let cleanup = cleanup.parse::<Cleanup>().map_err(|detail| Error::CorruptMeta {
                path: self.path.clone(),
                detail: format!("topic {topic:?}: {detail}"),
            })?;
            let explicit = TopicSettings {
                cleanup,
                retention_bytes: retention_bytes.map(from_sql),
                retention_age_ms: retention_age_ms.map(from_sql),
                tombstone_retention_ms: tombstone_retention_ms.map(from_sql),
            };
            settings.insert(topic, explicit);
        }
        Ok(settings)
    }

    /// Every topic's delete horizon that is not zero, by topic name.
    fn horizons(&self, connection: &Connection) -> Result<BTreeMap<String, u64>, Error> {
        let mut statement = connection
            .prepare("SELECT topic, delete_horizon FROM horizons")
            .map_err(self.error("list delete horizons"))?;
        let rows = statement
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))
            .map_err(self.error("list delete horizons"))?;
        let mut horizons = BTreeMap::new();
        for row in rows {
            let (topic, horizon) = row.map_err(self.error("list delete horizons"))?;
            horizons.insert(topic, from_sql(horizon));
        }
        Ok(horizons)
    }

    /// Records a topic's delete horizon.
    pub(crate) fn set_delete_horizon(&self, topic: &str, horizon: u64) -> Result<(), Error> {
        let connection = self.connection();
        replace_horizon(&connection, topic, horizon).map_err(self.error("record the delete horizon"))
    }

    /// Replaces a topic's explicit settings (`None`: back to the store's defaults).
    pub(crate) fn set_settings(&self, topic: &str, settings: Option<&TopicSettings>) -> Result<(), Error> {
        let mut connection = self.connection();
        let transaction = connection.transaction().map_err(self.error("record settings"))?;
        replace_settings(&transaction, topic, settings).map_err(self.error("record settings"))?;
        transaction.commit().map_err(self.error("record settings"))
    }

    /// Replaces a topic's epoch history.
    pub(crate) fn set_epochs(&self, topic: &str, epochs: &EpochHistory) -> Result<(), Error> {
        let mut connection = self.connection();
        let transaction = connection.transaction().map_err(self.error("record epochs"))?;
        replace_epochs(&transaction, topic, epochs).map_err(self.error("record epochs"))?;
        transaction.commit().map_err(self.error("record epochs"))
    }

    /// The segments of one generation of a topic, sorted by base offset.
    pub(crate) fn segments(&self, topic: &str, generation: u64) -> Result<Vec<SegmentRow>, Error> {
        let connection = self.connection();
        let mut statement = connection
            .prepare(
                "SELECT base_offset, last_offset, size_bytes, sealed, created_ms, sealed_ms, last_timestamp_ms
                 FROM segments WHERE topic = ?1 AND generation = ?2",
            )
            .map_err(self.error("list segments"))?;
        let rows = statement
            .query_map(params![topic, to_sql(generation)], |row| {
                Ok(SegmentRow {
                    base_offset: from_sql(row.get(0)?),
                    last_offset: row.get::<_, Option<i64>>(1)?.map(from_sql),
                    size_bytes: from_sql(row.get(2)?),
                    sealed: row.get::<_, i64>(3)? != 0,
                    created_ms: from_sql(row.get(4)?),
                    sealed_ms: row.get::<_, Option<i64>>(5)?.map(from_sql),
                    last_timestamp_ms: row.get::<_, Option<i64>>(6)?.map(from_sql),
                })
            })
            .map_err(self.error("list segments"))?;
        let mut segments = rows.collect::<Result<Vec<_>, _>>().map_err(self.error("list segments"))?;
        segments.sort_by_key(|segment| segment.base_offset);
        Ok(segments)
    }

    /// Every (topic, generation) that has segment rows, committed or not. A generation with rows that is
    /// not a topic's committed one is a replacement being built (or one that never finished).
    pub(crate) fn generations_with_segments(&self) -> Result<BTreeSet<(String, u64)>, Error> {
        let connection = self.connection();
        let mut statement = connection
            .prepare("SELECT DISTINCT topic, generation FROM segments")
            .map_err(self.error("list generations"))?;
        let rows = statement
            .query_map([], |row| Ok((row.get::<_, String>(0)?, from_sql(row.get(1)?))))
            .map_err(self.error("list generations"))?;
        rows.collect::<Result<_, _>>().map_err(self.error("list generations"))
    }

    /// Records a topic rebuilt from its identity file, without segment rows (recovery adds them as it
    /// adopts the segment files).
    pub(crate) fn insert_topic(&self, topic: &TopicRow) -> Result<(), Error> {
        let mut connection = self.connection();
        let transaction = connection.transaction().map_err(self.error("rebuild a topic"))?;
        put_topic_row(&transaction, topic, false).map_err(self.error("rebuild a topic"))?;
        transaction.commit().map_err(self.error("rebuild a topic"))
    }

    /// The committed generation of a topic, if the topic exists.
    #[cfg(test)]
    pub(crate) fn committed_generation(&self, topic: &str) -> Result<Option<u64>, Error> {
        use rusqlite::OptionalExtension;
        self.connection()
            .query_row("SELECT generation FROM topics WHERE name = ?1", params![topic], |row| row.get(0))
            .optional()
            .map(|generation| generation.map(from_sql))
            .map_err(self.error("read a topic"))
    }

    /// Removes segment rows that belong to no committed generation (replacements that never committed,
    /// topics that were deleted); returns how many.
    pub(crate) fn delete_uncommitted_segments(&self) -> Result<usize, Error> {
        self.connection()
            .execute(
                "DELETE FROM segments WHERE NOT EXISTS (SELECT 1 FROM topics
                 WHERE topics.name = segments.topic AND topics.generation = segments.generation)",
                [],
            )
            .map_err(self.error("remove uncommitted segments"))
    }

    /// Records a new topic and its first segment in one transaction.
    pub(crate) fn create_topic(&self, topic: &TopicRow, first: &SegmentRow) -> Result<(), Error> {
        let mut connection = self.connection();
        let transaction = connection.transaction().map_err(self.error("create a topic"))?;
        put_topic_row(&transaction, topic, false).map_err(self.error("create a topic"))?;
        upsert_segment(&transaction, &topic.name, topic.generation, first)
            .map_err(self.error("create a topic"))?;
        transaction.commit().map_err(self.error("create a topic"))
    }

    /// Records segment rows (new or changed) of one generation in one transaction.
    pub(crate) fn upsert_segments(
        &self,
        topic: &str,
        generation: u64,
        rows: &[SegmentRow],
    ) -> Result<(), Error> {
        let mut connection = self.connection();
        let transaction = connection.transaction().map_err(self.error("record segments"))?;
        for row in rows {
            upsert_segment(&transaction, topic, generation, row).map_err(self.error("record segments"))?;
        }
        transaction.commit().map_err(self.error("record segments"))
    }

    /// Removes segment rows of one generation and, if that generation is the committed one, moves the
    /// topic's log start, in one transaction.
    pub(crate) fn remove_segments(
        &self,
        topic: &str,
        generation: u64,
        base_offsets: &[u64],
        log_start: u64,
    ) -> Result<(), Error> {
        let mut connection = self.connection();
        let transaction = connection.transaction().map_err(self.error("remove segments"))?;
        for base_offset in base_offsets {
            transaction
                .execute(
                    "DELETE FROM segments WHERE topic = ?1 AND generation = ?2 AND base_offset = ?3",
                    params![topic, to_sql(generation), to_sql(*base_offset)],
                )
                .map_err(self.error("remove segments"))?;
        }
        transaction
            .execute(
                "UPDATE topics SET log_start = ?3 WHERE name = ?1 AND generation = ?2",
                params![topic, to_sql(generation), to_sql(log_start)],
            )
            .map_err(self.error("remove segments"))?;
        transaction.commit().map_err(self.error("remove segments"))
    }

    /// Removes a topic and all its segment rows, in one transaction.
    pub(crate) fn delete_topic(&self, topic: &str) -> Result<(), Error> {
        let mut connection = self.connection();
        let transaction = connection.transaction().map_err(self.error("delete a topic"))?;
        transaction
            .execute("DELETE FROM topics WHERE name = ?1", params![topic])
            .map_err(self.error("delete a topic"))?;
        transaction
            .execute("DELETE FROM segments WHERE topic = ?1", params![topic])
            .map_err(self.error("delete a topic"))?;
        replace_epochs(&transaction, topic, &EpochHistory::default())
            .map_err(self.error("delete a topic"))?;
        replace_settings(&transaction, topic, None).map_err(self.error("delete a topic"))?;
        replace_horizon(&transaction, topic, 0).map_err(self.error("delete a topic"))?;
        transaction.commit().map_err(self.error("delete a topic"))
    }

    /// Makes `topic.generation` the committed copy of the topic (creating the topic if needed) and forgets
    /// the segments of every other committed generation, in one transaction. Segment rows of the new
    /// generation were written while it was built.
    pub(crate) fn commit_replace(
        &self,
        topic: &TopicRow,
        previous_generation: Option<u64>,
    ) -> Result<(), Error> {
        let mut connection = self.connection();
        let transaction = connection.transaction().map_err(self.error("commit a replacement"))?;
        put_topic_row(&transaction, topic, true).map_err(self.error("commit a replacement"))?;
        if let Some(previous) = previous_generation {
            transaction
                .execute(
                    "DELETE FROM segments WHERE topic = ?1 AND generation = ?2",
                    params![topic.name, to_sql(previous)],
                )
                .map_err(self.error("commit a replacement"))?;
        }
        transaction.commit().map_err(self.error("commit a replacement"))
    }

    /// Forgets the segments of a generation that was never committed (an aborted replacement).
    pub(crate) fn delete_generation(&self, topic: &str, generation: u64) -> Result<(), Error> {
        self.connection()
            .execute(
                "DELETE FROM segments WHERE topic = ?1 AND generation = ?2 AND NOT EXISTS
                 (SELECT 1 FROM topics WHERE name = ?1 AND generation = ?2)",
                params![topic, to_sql(generation)],
            )
            .map(|_| ())
            .map_err(self.error("abort a replacement"))
    }
}

/// Inserts a topic row and its epoch history; with `replace`, a row of the same name is replaced (else it
/// is an error).
fn put_topic_row(connection: &Connection, topic: &TopicRow, replace: bool) -> Result<(), rusqlite::Error> {
    let sql = if replace {
        "INSERT INTO topics (name, uid, generation, log_start, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (name) DO UPDATE SET uid = ?2, generation = ?3, log_start = ?4, created_ms = ?5"
    } else {
        "INSERT INTO topics (name, uid, generation, log_start, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)"
    };
    connection.execute(
        sql,
        params![
            topic.name,
            topic.uid.to_string(),
            to_sql(topic.generation),
            to_sql(topic.log_start),
            to_sql(topic.created_ms)
        ],
    )?;
    replace_epochs(connection, &topic.name, &topic.epochs)?;
    replace_settings(connection, &topic.name, topic.settings.as_ref())?;
    replace_horizon(connection, &topic.name, topic.delete_horizon)
}

/// Replaces the settings row of a topic; `None` removes it.
fn replace_settings(
    connection: &Connection,
    topic: &str,
    settings: Option<&TopicSettings>,
) -> Result<(), rusqlite::Error> {
    connection.execute("DELETE FROM settings WHERE topic = ?1", params![topic])?;
    if let Some(settings) = settings {
        connection.execute(
            "INSERT INTO settings (topic, cleanup, retention_bytes, retention_age_ms, tombstone_retention_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                topic,
                settings.cleanup.as_str(),
                settings.retention_bytes.map(to_sql),
                settings.retention_age_ms.map(to_sql),
                settings.tombstone_retention_ms.map(to_sql),
            ],
        )?;
    }
    Ok(())
}

/// Replaces a topic's delete horizon (zero: no row).
fn replace_horizon(connection: &Connection, topic: &str, horizon: u64) -> Result<(), rusqlite::Error> {
    connection.execute("DELETE FROM horizons WHERE topic = ?1", params![topic])?;
    if horizon > 0 {
        connection.execute(
            "INSERT INTO horizons (topic, delete_horizon) VALUES (?1, ?2)",
            params![topic, to_sql(horizon)],
        )?;
    }
    Ok(())
}

/// Replaces the epoch rows of a topic.
fn replace_epochs(
    connection: &Connection,
    topic: &str,
    epochs: &EpochHistory,
) -> Result<(), rusqlite::Error> {
    connection.execute("DELETE FROM epochs WHERE topic = ?1", params![topic])?;
    for entry in epochs.entries() {
        connection.execute(
            "INSERT INTO epochs (topic, epoch, start_offset) VALUES (?1, ?2, ?3)",
            params![topic, i64::from(entry.epoch), to_sql(entry.start_offset)],
        )?;
    }
    Ok(())
}

/// Inserts or replaces one segment row.
fn upsert_segment(
    connection: &Connection,
    topic: &str,
    generation: u64,
    row: &SegmentRow,
) -> Result<usize, rusqlite::Error> {
    connection.execute(
        "INSERT OR REPLACE INTO segments
         (topic, generation, base_offset, last_offset, size_bytes, sealed, created_ms, sealed_ms,
          last_timestamp_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            topic,
            to_sql(generation),
            to_sql(row.base_offset),
            row.last_offset.map(to_sql),
            to_sql(row.size_bytes),
            i64::from(row.sealed),
            to_sql(row.created_ms),
            row.sealed_ms.map(to_sql),
            row.last_timestamp_ms.map(to_sql),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A topic row for tests.
    pub(super) fn topic(name: &str, generation: u64) -> TopicRow {
        TopicRow {
            name: name.to_string(),
            uid: TopicUid(u128::MAX - 1),
            generation,
            log_start: 5,
            created_ms: 9,
            epochs: EpochHistory::first(0).begin(7),
            settings: None,
            delete_horizon: 0,
        }
    }

    #[test]
    fn topics_and_segments_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("meta.sqlite")).unwrap();
        meta.create_topic(&topic("b", 1), &SegmentRow::active(5, 9)).unwrap();
        meta.create_topic(&topic("a", 2), &SegmentRow::active(u64::MAX, 9)).unwrap();
        assert!(meta.create_topic(&topic("a", 3), &SegmentRow::active(0, 9)).is_err());
        let names: Vec<_> = meta.topics().unwrap().into_iter().map(|t| (t.name, t.generation)).collect();
        assert_eq!(names, vec![("a".to_string(), 2), ("b".to_string(), 1)]);
        assert_eq!(meta.topics().unwrap()[0].uid, TopicUid(u128::MAX - 1));
        assert_eq!(meta.topics().unwrap()[1].epochs, EpochHistory::first(0).begin(7));
        let later = EpochHistory::first(0).begin(7).begin(20);
        meta.set_epochs("b", &later).unwrap();
        assert_eq!(meta.topics().unwrap()[1].epochs, later);
        assert_eq!(meta.segments("a", 2).unwrap()[0].base_offset, u64::MAX);

        let sealed = SegmentRow {
            last_offset: Some(99),
            size_bytes: 1000,
            sealed: true,
            sealed_ms: Some(10),
            last_timestamp_ms: Some(8),
            ..SegmentRow::active(5, 9)
        };
        meta.upsert_segments("b", 1, &[sealed.clone(), SegmentRow::active(100, 10)]).unwrap();
        assert_eq!(meta.segments("b", 1).unwrap(), vec![sealed, SegmentRow::active(100, 10)]);
        meta.remove_segments("b", 1, &[5], 100).unwrap();
        assert_eq!(meta.segments("b", 1).unwrap().len(), 1);
        assert_eq!(meta.topics().unwrap()[1].log_start, 100);
    }

    #[test]
    fn rebuilt_topics_and_generations_with_segments() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("meta.sqlite")).unwrap();
        meta.insert_topic(&topic("t", 4)).unwrap();
        assert!(meta.insert_topic(&topic("t", 5)).is_err());
        assert_eq!(meta.topics().unwrap(), vec![topic("t", 4)]);
        assert!(meta.segments("t", 4).unwrap().is_empty());
        meta.upsert_segments("t", 4, &[SegmentRow::active(5, 1)]).unwrap();
        meta.upsert_segments("t", 6, &[SegmentRow::active(0, 1), SegmentRow::active(9, 1)]).unwrap();
        let expected: BTreeSet<_> = [("t".to_string(), 4), ("t".to_string(), 6)].into();
        assert_eq!(meta.generations_with_segments().unwrap(), expected);
    }

    #[test]
    fn replace_and_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("meta.sqlite")).unwrap();
        meta.create_topic(&topic("t", 1), &SegmentRow::active(0, 1)).unwrap();
        meta.upsert_segments("t", 2, &[SegmentRow::active(50, 1)]).unwrap();
        meta.upsert_segments("t", 3, &[SegmentRow::active(70, 1)]).unwrap();
        meta.delete_generation("t", 3).unwrap();
        assert!(meta.segments("t", 3).unwrap().is_empty());
        meta.commit_replace(&topic("t", 2), Some(1)).unwrap();
        assert_eq!(meta.committed_generation("t").unwrap(), Some(2));
        assert!(meta.segments("t", 1).unwrap().is_empty());
        meta.delete_generation("t", 2).unwrap();
        assert_eq!(meta.segments("t", 2).unwrap().len(), 1, "a committed generation is kept");
        meta.upsert_segments("gone", 1, &[SegmentRow::active(0, 1)]).unwrap();
        assert_eq!(meta.delete_uncommitted_segments().unwrap(), 1);
        meta.delete_topic("t").unwrap();
        assert!(meta.topics().unwrap().is_empty());
        assert_eq!(meta.committed_generation("t").unwrap(), None);
    }
}
