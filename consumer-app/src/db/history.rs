//! The history part of `app.sqlite`: completed and abandoned refreshes, and the dead letters the
//! handler dispatcher writes. Read by stats and the dead-letter endpoint; nothing here affects the copy.

use rusqlite::params;
use serde::Serialize;

use super::{Db, lock, sqlite};
use crate::error::Error;

/// One row of the refresh history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefreshRow {
    /// Row id.
    pub id: i64,
    /// Topic refreshed.
    pub topic: String,
    /// Uid of the new copy.
    pub uid: String,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// When it completed or was abandoned.
    pub finished_ms: Option<u64>,
    /// Records received for the new copy.
    pub n_records: u64,
    /// `running`, `completed` or `abandoned`.
    pub outcome: String,
}

/// A record that a handler still failed on after every retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Row id (zero before it is stored).
    pub id: i64,
    /// Topic of the record.
    pub topic: String,
    /// Offset of the record; the record itself stays in the local copy.
    pub offset: u64,
    /// The record's key, as text (invalid UTF-8 replaced).
    pub key: String,
    /// The last error.
    pub error: String,
    /// How many times the handler was tried.
    pub attempts: u32,
    /// When it was given up on (ms since the epoch).
    pub time_ms: u64,
}

impl Db {
    /// The most recent refreshes, newest first.
    pub fn refreshes(&self, limit: u32) -> Result<Vec<RefreshRow>, Error> {
        let conn = lock(&self.reader);
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, topic, uid, started_ms, finished_ms, n_records, outcome FROM refreshes
                 ORDER BY id DESC LIMIT ?1",
            )
            .map_err(sqlite("listing refreshes"))?;
        let rows = stmt
            .query_map([limit], |row| {
                Ok(RefreshRow {
                    id: row.get(0)?,
                    topic: row.get(1)?,
                    uid: row.get(2)?,
                    started_ms: row.get::<_, i64>(3)? as u64,
                    finished_ms: row.get::<_, Option<i64>>(4)?.map(|ms| ms as u64),
                    n_records: row.get::<_, i64>(5)? as u64,
                    outcome: row.get(6)?,
                })
            })
            .map_err(sqlite("listing refreshes"))?;
        rows.collect::<Result<_, _>>().map_err(sqlite("listing refreshes"))
    }

    /// Stores a dead letter and returns its id.
    pub fn add_dead_letter(&self, letter: &DeadLetter) -> Result<i64, Error> {
        let conn = lock(&self.writer);
        conn.execute(
            "INSERT INTO dead_letters (topic, offset, key, error, attempts, time_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                letter.topic,
                letter.offset as i64,
                letter.key.as_bytes(),
                letter.error,
                letter.attempts,
                letter.time_ms as i64
            ],
        )
        .map_err(sqlite("storing a dead letter"))?;
        Ok(conn.last_insert_rowid())
    }

    /// Dead letters with an id above `after_id`, oldest first, at most `limit`.
    pub fn dead_letters(&self, after_id: i64, limit: u32) -> Result<Vec<DeadLetter>, Error> {
        let conn = lock(&self.reader);
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, topic, offset, key, error, attempts, time_ms FROM dead_letters
                 WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(sqlite("listing dead letters"))?;
        let rows = stmt
            .query_map(params![after_id, limit], |row| {
                Ok(DeadLetter {
                    id: row.get(0)?,
                    topic: row.get(1)?,
                    offset: row.get::<_, i64>(2)? as u64,
                    key: String::from_utf8_lossy(&row.get::<_, Vec<u8>>(3)?).into_owned(),
                    error: row.get(4)?,
                    attempts: row.get(5)?,
                    time_ms: row.get::<_, i64>(6)? as u64,
                })
            })
            .map_err(sqlite("listing dead letters"))?;
        rows.collect::<Result<_, _>>().map_err(sqlite("listing dead letters"))
    }

    /// Number of dead letters stored.
    pub fn dead_letter_count(&self) -> Result<u64, Error> {
        let conn = lock(&self.reader);
        conn.query_row("SELECT COUNT(*) FROM dead_letters", [], |row| row.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(sqlite("counting dead letters"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::db_path;

    fn open() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&db_path(dir.path())).unwrap();
        (dir, db)
    }

    #[test]
    fn dead_letters_page_by_id() {
        let (_dir, db) = open();
        for offset in 0..3 {
            let letter = DeadLetter {
                id: 0,
                topic: "prices".into(),
                offset,
                key: "AAPL".into(),
                error: "HTTP 500".into(),
                attempts: 3,
                time_ms: 9,
            };
            db.add_dead_letter(&letter).unwrap();
        }
        assert_eq!(db.dead_letter_count().unwrap(), 3);
        let first = db.dead_letters(0, 2).unwrap();
        assert_eq!(first.iter().map(|l| l.offset).collect::<Vec<_>>(), vec![0, 1]);
        let rest = db.dead_letters(first[1].id, 10).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].key, "AAPL");
    }
}
