//! The one module that talks to `app.sqlite`: the key index (`(topic, generation, key) -> latest offset`),
//! each topic's position (uid, live key generation, how far it is indexed and handled) and pending refresh
//! requests; in `db/keys.rs`, the queries of the key index; and, in `db/history.rs`, the refresh history and
//! the dead letters.
//!
//! It knows nothing of segment files: the local copy (`copy.rs`) decides what to write and when, and every
//! call here is blocking (callers on the runtime use `spawn_blocking`). The index is derived from the segment
//! log, so losing the last transaction costs a re-index at start, never a record.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use protocol::TopicUid;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::error::Error;

mod history;
mod keys;

pub use history::{DeadLetter, RefreshRow};

/// The file name of the app's SQLite database inside the data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("app.sqlite")
}

/// The schema. Key rows carry the generation of the copy they index: a refresh writes a new generation
/// beside the live one and the swap is one update of `topics.generation`.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS topics (
    topic TEXT PRIMARY KEY,
    uid TEXT NOT NULL,
    generation INTEGER NOT NULL,
    indexed_to INTEGER NOT NULL,
    handled_to INTEGER NOT NULL,
    last_refresh_ms INTEGER
);
CREATE TABLE IF NOT EXISTS keys (
    topic TEXT NOT NULL,
    generation INTEGER NOT NULL,
    key BLOB NOT NULL,
    offset INTEGER NOT NULL,
    PRIMARY KEY (topic, generation, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refreshes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    uid TEXT NOT NULL,
    generation INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    n_records INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS app_state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_refreshes (
    topic TEXT PRIMARY KEY,
    requested_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    offset INTEGER NOT NULL,
    key BLOB NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    time_ms INTEGER NOT NULL
);
";

/// Refresh outcomes as stored in `refreshes.outcome`.
const OUTCOME_RUNNING: &str = "running";
/// Set just before the storage swap: a crash now may leave either copy in the segment log.
const OUTCOME_SWAPPING: &str = "swapping";
const OUTCOME_COMPLETED: &str = "completed";
const OUTCOME_ABANDONED: &str = "abandoned";

/// A topic's row: where its live copy stands in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRow {
    /// Topic name.
    pub topic: String,
    /// Uid of the copy the index describes.
    pub uid: TopicUid,
    /// The live key generation.
    pub generation: u64,
    /// Every record below this offset has its key in the live generation.
    pub indexed_to: u64,
    /// Every record below this offset has been through the handlers.
    pub handled_to: u64,
    /// When the last full refresh of this topic completed (ms since the epoch), if ever.
    pub last_refresh_ms: Option<u64>,
}

/// A refresh that was started: the history row and the key generation it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshStart {
    /// Id of the `refreshes` row.
    pub refresh_id: i64,
    /// The shadow generation the new copy's keys go into.
    pub generation: u64,
}

/// The app's SQLite database: one connection for writes, one for queries, so a long index transaction
/// does not hold up REST reads (WAL lets them run side by side).
#[derive(Debug)]
pub struct Db {
    /// Connection used by the sync loop for every write.
    writer: Mutex<Connection>,
    /// Connection used by REST queries.
    reader: Mutex<Connection>,
}

impl Db {
    /// Opens (or creates) the database at `path` and applies the schema.
    pub fn open(path: &Path) -> Result<Db, Error> {
        let open = |path: &Path| -> Result<Connection, rusqlite::Error> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            // The index can be rebuilt from the durable log, so NORMAL is enough: WAL keeps it consistent.
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            Ok(conn)
        };
        let sqlite = |source| Error::Sqlite { context: "opening app.sqlite", source };
        let writer = open(path).map_err(sqlite)?;
        // A refresh writes a whole key index at once: a page cache that holds a large part of it, and
        // checkpoints every ~40 MB of WAL rather than every 4 MB, keep that from being I/O bound.
        writer.pragma_update(None, "cache_size", -64 * 1024).map_err(sqlite)?;
        writer.pragma_update(None, "wal_autocheckpoint", 10_000).map_err(sqlite)?;
        writer.execute_batch(SCHEMA).map_err(sqlite)?;
        let reader = open(path).map_err(sqlite)?;
        Ok(Db { writer: Mutex::new(writer), reader: Mutex::new(reader) })
    }

    /// Every topic row, by name.
    pub fn topics(&self) -> Result<Vec<TopicRow>, Error> {
        let conn = lock(&self.reader);
        let mut stmt = conn
            .prepare_cached(
                "SELECT topic, uid, generation, indexed_to, handled_to, last_refresh_ms FROM topics ORDER BY topic",
            )
            .map_err(sqlite("listing topics"))?;
        let rows = stmt.query_map([], topic_row).map_err(sqlite("listing topics"))?;
        rows.collect::<Result<_, _>>().map_err(sqlite("listing topics"))
    }

    /// One topic's row.
    pub fn topic(&self, topic: &str) -> Result<Option<TopicRow>, Error> {
        let conn = lock(&self.reader);
        conn.query_row(
            "SELECT topic, uid, generation, indexed_to, handled_to, last_refresh_ms FROM topics WHERE topic = ?1",
            [topic],
            topic_row,
        )
        .optional()
        .map_err(sqlite("reading a topic"))
    }

    /// Records a new, empty live copy of `topic`, replacing whatever row the name had.
    pub fn create_topic(&self, topic: &str, uid: TopicUid, first_offset: u64) -> Result<TopicRow, Error> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(sqlite("creating a topic"))?;
        let generation = next_generation(&tx, topic)?;
        tx.execute("DELETE FROM keys WHERE topic = ?1", [topic]).map_err(sqlite("creating a topic"))?;
        tx.execute(
            "INSERT OR REPLACE INTO topics (topic, uid, generation, indexed_to, handled_to, last_refresh_ms)
             VALUES (?1, ?2, ?3, ?4, ?4, NULL)",
            params![topic, uid.to_string(), generation as i64, first_offset as i64],
        )
        .map_err(sqlite("creating a topic"))?;
        tx.commit().map_err(sqlite("creating a topic"))?;
        Ok(TopicRow {
            topic: topic.to_string(),
            uid,
            generation,
            indexed_to: first_offset,
            handled_to: first_offset,
            last_refresh_ms: None,
        })
    }

    /// Writes the keys of newly stored records into `generation` and, for the live copy, moves the topic's
    /// `indexed_to` position, all in one transaction. `entries` are `(key, offset)` in offset order; empty
    /// keys are not indexed, and a later entry for the same key wins.
    pub fn index_records<'k>(
        &self,
        topic: &str,
        generation: u64,
        entries: impl IntoIterator<Item = (&'k [u8], u64)>,
        indexed_to: Option<u64>,
    ) -> Result<(), Error> {
        let conn = lock(&self.writer);
        // Once per batch received: every statement, BEGIN and COMMIT included, is prepared once and cached.
        in_transaction(&conn, "indexing keys", |conn| {
            let mut upsert = conn
                .prepare_cached(
                    "INSERT INTO keys (topic, generation, key, offset) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (topic, generation, key) DO UPDATE SET offset = excluded.offset",
                )
                .map_err(sqlite("indexing keys"))?;
            for (key, offset) in entries {
                if key.is_empty() {
                    continue;
                }
                upsert
                    .execute(params![topic, generation as i64, key, offset as i64])
                    .map_err(sqlite("indexing keys"))?;
            }
            if let Some(indexed_to) = indexed_to {
                conn.prepare_cached("UPDATE topics SET indexed_to = ?2 WHERE topic = ?1 AND generation = ?3")
                    .and_then(|mut update| {
                        update.execute(params![topic, indexed_to as i64, generation as i64])
                    })
                    .map_err(sqlite("moving the index position"))?;
            }
            Ok(())
        })
    }

    /// Notes that every record of `topic` below `handled_to` has been through the handlers.
    pub fn set_handled(&self, topic: &str, handled_to: u64) -> Result<(), Error> {
        let conn = lock(&self.writer);
        // Handler batches finish in order, but a refresh may have moved the position meanwhile; never go back.
        conn.prepare_cached("UPDATE topics SET handled_to = MAX(handled_to, ?2) WHERE topic = ?1")
            .and_then(|mut update| update.execute(params![topic, handled_to as i64]))
            .map_err(sqlite("moving the handled position"))?;
        Ok(())
    }

    /// Starts a refresh of `topic`: drops key rows of any generation but the live one (an old generation
    /// left by the previous swap, or a shadow left by an abandoned refresh), remembers that a refresh is
    /// pending, so a crash asks for it again, and opens a history row.
    pub fn begin_refresh(&self, topic: &str, uid: TopicUid, now_ms: u64) -> Result<RefreshStart, Error> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(sqlite("starting a refresh"))?;
        let generation = next_generation(&tx, topic)?;
        tx.execute(
            "DELETE FROM keys WHERE topic = ?1
             AND generation IS NOT (SELECT generation FROM topics WHERE topic = ?1)",
            [topic],
        )
        .map_err(sqlite("starting a refresh"))?;
        tx.execute(
            "INSERT OR IGNORE INTO pending_refreshes (topic, requested_ms) VALUES (?1, ?2)",
            params![topic, now_ms as i64],
        )
        .map_err(sqlite("starting a refresh"))?;
        tx.execute(
            "INSERT INTO refreshes (topic, uid, generation, started_ms, outcome) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![topic, uid.to_string(), generation as i64, now_ms as i64, OUTCOME_RUNNING],
        )
        .map_err(sqlite("starting a refresh"))?;
        let refresh_id = tx.last_insert_rowid();
        tx.commit().map_err(sqlite("starting a refresh"))?;
        Ok(RefreshStart { refresh_id, generation })
    }

    /// Starts a re-index of `topic` into a fresh generation, without a history row or a pending request.
    pub fn begin_reindex(&self, topic: &str) -> Result<u64, Error> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(sqlite("starting a re-index"))?;
        let generation = next_generation(&tx, topic)?;
        tx.execute(
            "DELETE FROM keys WHERE topic = ?1 AND generation = ?2",
            params![topic, generation as i64],
        )
        .map_err(sqlite("starting a re-index"))?;
        tx.commit().map_err(sqlite("starting a re-index"))?;
        Ok(generation)
    }

    /// Makes `generation` the live one for `topic`, in one transaction: the new uid and positions, and for a
    /// refresh (`(refresh_id, n_records)`) its history row and the end of its pending request. Rows of the
    /// previous generation stay until the next refresh or start, because a query that began before the
    /// swap may still read them.
    #[allow(clippy::too_many_arguments)]
    pub fn switch_generation(
        &self,
        topic: &str,
        uid: TopicUid,
        generation: u64,
        next_offset: u64,
        handled_to: u64,
        refresh: Option<(i64, u64)>,
        now_ms: u64,
    ) -> Result<(), Error> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(sqlite("switching generations"))?;
        let last_refresh: Option<i64> = match refresh {
            Some(_) => Some(now_ms as i64),
            None => tx
                .query_row("SELECT last_refresh_ms FROM topics WHERE topic = ?1", [topic], |row| row.get(0))
                .optional()
                .map_err(sqlite("switching generations"))?
                .flatten(),
        };
        tx.execute(
            "INSERT OR REPLACE INTO topics (topic, uid, generation, indexed_to, handled_to, last_refresh_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                topic,
                uid.to_string(),
                generation as i64,
                next_offset as i64,
                handled_to as i64,
                last_refresh
            ],
        )
        .map_err(sqlite("switching generations"))?;
        if let Some((refresh_id, n_records)) = refresh {
            tx.execute("DELETE FROM pending_refreshes WHERE topic = ?1", [topic])
                .map_err(sqlite("switching generations"))?;
            finish_refresh(&tx, refresh_id, OUTCOME_COMPLETED, n_records, now_ms)?;
        }
        tx.commit().map_err(sqlite("switching generations"))
    }

    /// Gives up a refresh whose connection was lost: its shadow keys go, its request stays pending.
    pub fn abandon_refresh(
        &self,
        topic: &str,
        start: RefreshStart,
        n_records: u64,
        now_ms: u64,
    ) -> Result<(), Error> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(sqlite("abandoning a refresh"))?;
        tx.execute(
            "DELETE FROM keys WHERE topic = ?1 AND generation = ?2",
            params![topic, start.generation as i64],
        )
        .map_err(sqlite("abandoning a refresh"))?;
        finish_refresh(&tx, start.refresh_id, OUTCOME_ABANDONED, n_records, now_ms)?;
        tx.commit().map_err(sqlite("abandoning a refresh"))
    }

    /// Remembers that `topics` should be fully refreshed; asked again on every connection until done.
    pub fn request_refresh(&self, topics: &[String], now_ms: u64) -> Result<(), Error> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(sqlite("requesting a refresh"))?;
        for topic in topics {
            tx.execute(
                "INSERT OR IGNORE INTO pending_refreshes (topic, requested_ms) VALUES (?1, ?2)",
                params![topic, now_ms as i64],
            )
            .map_err(sqlite("requesting a refresh"))?;
        }
        tx.commit().map_err(sqlite("requesting a refresh"))
    }

    /// Topics with a refresh requested or interrupted.
    pub fn pending_refreshes(&self) -> Result<Vec<String>, Error> {
        let conn = lock(&self.reader);
        let mut stmt = conn
            .prepare_cached("SELECT topic FROM pending_refreshes ORDER BY topic")
            .map_err(sqlite("listing pending refreshes"))?;
        let rows = stmt.query_map([], |row| row.get(0)).map_err(sqlite("listing pending refreshes"))?;
        rows.collect::<Result<_, _>>().map_err(sqlite("listing pending refreshes"))
    }

    /// Notes that the storage swap of a refresh is about to happen. Until the generation switch commits,
    /// a crash may leave the new log with the old index, and [`Db::recover`] says so.
    pub fn mark_swapping(&self, refresh_id: i64) -> Result<(), Error> {
        let conn = lock(&self.writer);
        conn.execute(
            "UPDATE refreshes SET outcome = ?2 WHERE id = ?1",
            params![refresh_id, OUTCOME_SWAPPING],
        )
        .map_err(sqlite("marking a refresh swap"))?;
        Ok(())
    }

    /// Cleans up after an unclean stop, before anything else runs: key rows of any generation that is not
    /// live go, and refreshes still running become abandoned. Returns the topics whose refresh stopped in
    /// the middle of its swap: their segment log may already be the new copy, so the caller re-indexes
    /// them. A refresh stopped while still receiving left the old log in place and needs nothing.
    pub fn recover(&self, now_ms: u64) -> Result<Vec<String>, Error> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(sqlite("recovering app.sqlite"))?;
        tx.execute(
            "DELETE FROM keys WHERE generation IS NOT (SELECT generation FROM topics WHERE topics.topic = keys.topic)",
            [],
        )
        .map_err(sqlite("recovering app.sqlite"))?;
        let interrupted: Vec<String> = {
            let mut stmt = tx
                .prepare("SELECT DISTINCT topic FROM refreshes WHERE outcome = ?1 ORDER BY topic")
                .map_err(sqlite("recovering app.sqlite"))?;
            let rows = stmt
                .query_map([OUTCOME_SWAPPING], |row| row.get(0))
                .map_err(sqlite("recovering app.sqlite"))?;
            rows.collect::<Result<_, _>>().map_err(sqlite("recovering app.sqlite"))?
        };
        tx.execute(
            "UPDATE refreshes SET outcome = ?1, finished_ms = ?2 WHERE outcome IN (?3, ?4)",
            params![OUTCOME_ABANDONED, now_ms as i64, OUTCOME_RUNNING, OUTCOME_SWAPPING],
        )
        .map_err(sqlite("recovering app.sqlite"))?;
        tx.commit().map_err(sqlite("recovering app.sqlite"))?;
        Ok(interrupted)
    }

    /// Remembers that the copy has been ready (caught up with a broker, or completed a refresh) once.
    pub fn set_ready_once(&self) -> Result<(), Error> {
        let conn = lock(&self.writer);
        conn.execute("INSERT OR REPLACE INTO app_state (name, value) VALUES ('ready_once', '1')", [])
            .map_err(sqlite("remembering readiness"))?;
        Ok(())
    }

    /// Whether the copy has ever been ready: then it serves at start, before the broker answers.
    pub fn ready_once(&self) -> Result<bool, Error> {
        let conn = lock(&self.reader);
        conn.query_row("SELECT COUNT(*) FROM app_state WHERE name = 'ready_once'", [], |row| {
            row.get::<_, i64>(0)
        })
        .map(|n| n > 0)
        .map_err(sqlite("reading readiness"))
    }

    /// Drops the row and keys of a topic that no longer has a local log.
    pub fn forget_topic(&self, topic: &str) -> Result<(), Error> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction().map_err(sqlite("forgetting a topic"))?;
        tx.execute("DELETE FROM keys WHERE topic = ?1", [topic]).map_err(sqlite("forgetting a topic"))?;
        tx.execute("DELETE FROM topics WHERE topic = ?1", [topic]).map_err(sqlite("forgetting a topic"))?;
        tx.commit().map_err(sqlite("forgetting a topic"))
    }
}

/// Locks a connection. A panic while holding it cannot leave SQLite inconsistent (an open transaction
/// rolls back when dropped), so a poisoned lock is still safe to use.
fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Wraps a rusqlite error with what was being done.
fn sqlite(context: &'static str) -> impl Fn(rusqlite::Error) -> Error {
    move |source| Error::Sqlite { context, source }
}

/// Runs `work` in one transaction whose BEGIN and COMMIT are cached statements (`Connection::transaction`
/// parses both anew each time, which on the per-batch path costs as much as the work). Rolled back if
/// `work` or the commit fails.
fn in_transaction<T>(
    conn: &Connection,
    context: &'static str,
    work: impl FnOnce(&Connection) -> Result<T, Error>,
) -> Result<T, Error> {
    let run = |sql: &str| conn.prepare_cached(sql).and_then(|mut statement| statement.execute([]));
    run("BEGIN").map_err(sqlite(context))?;
    let done = work(conn).and_then(|value| run("COMMIT").map(|_| value).map_err(sqlite(context)));
    if done.is_err()
        && let Err(error) = run("ROLLBACK")
    {
        tracing::warn!(%error, context, "rolling back a failed transaction failed");
    }
    done
}

/// A generation number above every one `topic` has used, live or left behind.
fn next_generation(tx: &Transaction<'_>, topic: &str) -> Result<u64, Error> {
    let highest: i64 = tx
        .query_row(
            "SELECT MAX(COALESCE((SELECT generation FROM topics WHERE topic = ?1), 0),
                        COALESCE((SELECT MAX(generation) FROM keys WHERE topic = ?1), 0),
                        COALESCE((SELECT MAX(generation) FROM refreshes WHERE topic = ?1), 0))",
            [topic],
            |row| row.get(0),
        )
        .map_err(sqlite("choosing a generation"))?;
    Ok(highest as u64 + 1)
}

fn finish_refresh(
    tx: &Transaction<'_>,
    refresh_id: i64,
    outcome: &str,
    n_records: u64,
    now_ms: u64,
) -> Result<(), Error> {
    tx.execute(
        "UPDATE refreshes SET outcome = ?2, n_records = ?3, finished_ms = ?4 WHERE id = ?1",
        params![refresh_id, outcome, n_records as i64, now_ms as i64],
    )
    .map_err(sqlite("finishing a refresh"))?;
    Ok(())
}

fn topic_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TopicRow> {
    let uid: String = row.get(1)?;
    let uid = uid.parse::<TopicUid>().map_err(|reason| {
        rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, reason.into())
    })?;
    Ok(TopicRow {
        topic: row.get(0)?,
        uid,
        generation: row.get::<_, i64>(2)? as u64,
        indexed_to: row.get::<_, i64>(3)? as u64,
        handled_to: row.get::<_, i64>(4)? as u64,
        last_refresh_ms: row.get::<_, Option<i64>>(5)?.map(|ms| ms as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&db_path(dir.path())).unwrap();
        (dir, db)
    }

    #[test]
    fn index_and_look_up_keys() {
        let (_dir, db) = open();
        let row = db.create_topic("prices", TopicUid(7), 0).unwrap();
        db.index_records("prices", row.generation, [(&b"AAPL"[..], 0), (b"", 1), (b"AAPL", 2)], Some(3))
            .unwrap();
        assert_eq!(db.key_offset("prices", row.generation, b"AAPL").unwrap(), Some(2));
        assert_eq!(db.key_offset("prices", row.generation, b"MSFT").unwrap(), None);
        assert_eq!(db.key_count("prices", row.generation).unwrap(), 1);
        let stored = db.topic("prices").unwrap().unwrap();
        assert_eq!((stored.uid, stored.indexed_to, stored.handled_to), (TopicUid(7), 3, 0));
        db.set_handled("prices", 3).unwrap();
        assert_eq!(db.topics().unwrap()[0].handled_to, 3);
    }

    #[test]
    fn refresh_swaps_generations_in_one_step() {
        let (_dir, db) = open();
        let live = db.create_topic("prices", TopicUid(1), 0).unwrap();
        db.index_records("prices", live.generation, [(&b"OLD"[..], 0)], Some(1)).unwrap();
        let start = db.begin_refresh("prices", TopicUid(2), 100).unwrap();
        assert!(start.generation > live.generation);
        assert_eq!(db.pending_refreshes().unwrap(), vec!["prices".to_string()]);
        db.index_records("prices", start.generation, [(&b"NEW"[..], 5)], None).unwrap();
        // The live generation is untouched until the switch.
        assert_eq!(db.topic("prices").unwrap().unwrap().generation, live.generation);
        assert_eq!(db.key_offset("prices", live.generation, b"OLD").unwrap(), Some(0));
        db.switch_generation("prices", TopicUid(2), start.generation, 6, 6, Some((start.refresh_id, 1)), 200)
            .unwrap();
        let row = db.topic("prices").unwrap().unwrap();
        assert_eq!(
            (row.uid, row.generation, row.indexed_to, row.last_refresh_ms),
            (TopicUid(2), start.generation, 6, Some(200))
        );
        assert_eq!(db.key_offset("prices", row.generation, b"NEW").unwrap(), Some(5));
        assert!(db.pending_refreshes().unwrap().is_empty());
        let history = db.refreshes(10).unwrap();
        assert_eq!((history[0].outcome.as_str(), history[0].n_records), ("completed", 1));
    }

    #[test]
    fn recovery_drops_shadow_keys_and_reports_interrupted_swaps() {
        let dir = tempfile::tempdir().unwrap();
        let live_generation;
        {
            let db = Db::open(&db_path(dir.path())).unwrap();
            let live = db.create_topic("prices", TopicUid(1), 0).unwrap();
            live_generation = live.generation;
            db.index_records("prices", live.generation, [(&b"OLD"[..], 0)], Some(1)).unwrap();
            let start = db.begin_refresh("prices", TopicUid(1), 100).unwrap();
            db.index_records("prices", start.generation, [(&b"NEW"[..], 0)], None).unwrap();
        }
        let db = Db::open(&db_path(dir.path())).unwrap();
        // Stopped while receiving: the old log is certainly live, nothing to re-index.
        assert!(db.recover(300).unwrap().is_empty());
        assert_eq!(db.pending_refreshes().unwrap(), vec!["prices".to_string()]);
        assert_eq!(db.refreshes(1).unwrap()[0].outcome, "abandoned");
        assert_eq!(db.key_offset("prices", live_generation, b"OLD").unwrap(), Some(0));
        assert_eq!(db.key_offset("prices", live_generation + 1, b"NEW").unwrap(), None);
        assert!(db.recover(400).unwrap().is_empty());
        // Stopped in the middle of a swap: the log may be either copy.
        let start = db.begin_refresh("prices", TopicUid(1), 500).unwrap();
        db.mark_swapping(start.refresh_id).unwrap();
        assert_eq!(db.recover(600).unwrap(), vec!["prices".to_string()]);
        assert!(db.recover(700).unwrap().is_empty());
    }

    #[test]
    fn abandon_keeps_the_request_and_generations_never_repeat() {
        let (_dir, db) = open();
        let live = db.create_topic("prices", TopicUid(1), 0).unwrap();
        let first = db.begin_refresh("prices", TopicUid(1), 1).unwrap();
        db.index_records("prices", first.generation, [(&b"K"[..], 0)], None).unwrap();
        db.abandon_refresh("prices", first, 1, 2).unwrap();
        assert_eq!(db.key_count("prices", first.generation).unwrap(), 0);
        assert_eq!(db.pending_refreshes().unwrap(), vec!["prices".to_string()]);
        let second = db.begin_refresh("prices", TopicUid(1), 3).unwrap();
        assert!(second.generation > first.generation && first.generation > live.generation);
    }
}
