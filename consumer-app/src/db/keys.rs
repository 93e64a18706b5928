//! The queries of the key index in `app.sqlite`: one key's latest offset, a generation's keys in key order
//! from a cursor, and the number of keys. Writes to the index stay in `db.rs`, beside the position they move
//! in the same transaction; nothing here reads the segment log or knows what a tombstone is.

use rusqlite::{OptionalExtension, params};

use super::{Db, lock, sqlite};
use crate::error::Error;

/// One row of the key index: a key and the offset of its latest record.
pub type KeyRow = (Vec<u8>, u64);

impl Db {
    /// The offset of the latest record with `key` in `generation` of `topic`, if any.
    pub fn key_offset(&self, topic: &str, generation: u64, key: &[u8]) -> Result<Option<u64>, Error> {
        let conn = lock(&self.reader);
        let mut stmt = conn
            .prepare_cached("SELECT offset FROM keys WHERE topic = ?1 AND generation = ?2 AND key = ?3")
            .map_err(sqlite("looking up a key"))?;
        stmt.query_row(params![topic, generation as i64, key], |row| row.get::<_, i64>(0))
            .optional()
            .map(|offset| offset.map(|offset| offset as u64))
            .map_err(sqlite("looking up a key"))
    }

    /// Up to `limit` keys of `generation` of `topic` above `after` (every key when `after` is `None`), in
    /// byte order of the key, with the offset of each key's latest record (a tombstone's, too). Keys are
    /// BLOBs, which SQLite compares with `memcmp`, and the primary key `(topic, generation, key)` hands
    /// them over in that order without a sort.
    pub fn keys_after(
        &self,
        topic: &str,
        generation: u64,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyRow>, Error> {
        let conn = lock(&self.reader);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let read = |row: &rusqlite::Row<'_>| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, i64>(1)? as u64));
        let rows = match after {
            Some(after) => {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT key, offset FROM keys WHERE topic = ?1 AND generation = ?2 AND key > ?3 \
                         ORDER BY key LIMIT ?4",
                    )
                    .map_err(sqlite("listing keys"))?;
                stmt.query_map(params![topic, generation as i64, after, limit], read)
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            }
            None => {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT key, offset FROM keys WHERE topic = ?1 AND generation = ?2 ORDER BY key LIMIT ?3",
                    )
                    .map_err(sqlite("listing keys"))?;
                stmt.query_map(params![topic, generation as i64, limit], read)
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            }
        };
        rows.map_err(sqlite("listing keys"))
    }

    /// Number of keys in `generation` of `topic`.
    pub fn key_count(&self, topic: &str, generation: u64) -> Result<u64, Error> {
        let conn = lock(&self.reader);
        conn.query_row(
            "SELECT COUNT(*) FROM keys WHERE topic = ?1 AND generation = ?2",
            params![topic, generation as i64],
            |row| row.get::<_, i64>(0),
        )
        .map(|n| n as u64)
        .map_err(sqlite("counting keys"))
    }
}
