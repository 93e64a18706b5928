//! Committed group offsets and pending operator refreshes, kept in memory and written to `groups.sqlite` in
//! the data directory in grouped commits.
//!
//! An ACK only changes the in-memory map; a timer (every ~100 ms) and shutdown write every changed entry in
//! one SQLite transaction. A crash can therefore lose the last fraction of a second of commits, which means
//! redelivery of records the consumer already holds (it drops them by offset), never loss. This module
//! owns the file and its schema; it knows nothing of connections or of who may commit (see `members.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use protocol::TopicUid;
use rusqlite::{Connection, params};

use crate::error::Error;

/// The file name of the group database inside the data directory. Only [`groups_path`] spells it.
const GROUPS_FILE_NAME: &str = "groups.sqlite";

/// The path of the group database in a data directory.
pub fn groups_path(data_dir: &Path) -> PathBuf {
    data_dir.join(GROUPS_FILE_NAME)
}

/// A group's position in one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The topic uid the position belongs to; a position for another uid is meaningless.
    pub uid: TopicUid,
    /// Every record below this offset is durable at the group's consumer.
    pub next_offset: u64,
}

/// One row of [`GroupOffsets::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedRow {
    /// The group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The committed position.
    pub committed: Committed,
}

/// The key of every map here: (group, topic).
type Key = (String, String);

/// What the memory holds.
#[derive(Debug, Default)]
struct State {
    /// Every committed position.
    committed: BTreeMap<Key, Committed>,
    /// Positions changed since the last flush.
    dirty: BTreeSet<Key>,
    /// Operator refreshes not yet completed.
    pending_refresh: BTreeSet<Key>,
    /// Pending-refresh entries added or removed since the last flush.
    dirty_refresh: BTreeSet<Key>,
}

/// The group offset store. Shared by every session through the node state.
#[derive(Debug)]
pub struct GroupOffsets {
    /// In-memory state; locked only for map operations, never across I/O.
    state: Mutex<State>,
    /// The database; locked only by [`GroupOffsets::flush`], which runs on a blocking thread.
    db: Mutex<Connection>,
    /// Where the database lives, for error messages.
    path: PathBuf,
}

impl GroupOffsets {
    /// Opens (or creates) `groups.sqlite` in `data_dir` and loads it into memory.
    pub fn open(data_dir: &Path) -> Result<GroupOffsets, Error> {
        let path = groups_path(data_dir);
        let db_error = |source| Error::GroupsDb { path: path.clone(), source };
        let db = Connection::open(&path).map_err(db_error)?;
        // WAL with NORMAL sync survives a process crash; a power cut may lose the latest commits, which
        // only causes redelivery.
        db.pragma_update(None, "journal_mode", "WAL").map_err(db_error)?;
        db.pragma_update(None, "synchronous", "NORMAL").map_err(db_error)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS group_offsets (
                 group_name  TEXT NOT NULL,
                 topic       TEXT NOT NULL,
                 uid         TEXT NOT NULL,
                 next_offset INTEGER NOT NULL,
                 updated_ms  INTEGER NOT NULL,
                 PRIMARY KEY (group_name, topic)
             );
             CREATE TABLE IF NOT EXISTS pending_refresh (
                 group_name   TEXT NOT NULL,
                 topic        TEXT NOT NULL,
                 requested_ms INTEGER NOT NULL,
                 PRIMARY KEY (group_name, topic)
             );",
        )
        .map_err(db_error)?;
        let mut state = State::default();
        {
            let mut statement = db
                .prepare("SELECT group_name, topic, uid, next_offset FROM group_offsets")
                .map_err(db_error)?;
            let rows = statement
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                })
                .map_err(db_error)?;
            for row in rows {
                let (group, topic, uid, next_offset) = row.map_err(db_error)?;
                // A row this code did not write (a hand edit) is skipped rather than trusted.
                let (Ok(uid), Ok(next_offset)) = (uid.parse::<TopicUid>(), u64::try_from(next_offset)) else {
                    tracing::warn!(%group, %topic, "ignoring an unreadable committed offset");
                    continue;
                };
                state.committed.insert((group, topic), Committed { uid, next_offset });
            }
            let mut statement =
                db.prepare("SELECT group_name, topic FROM pending_refresh").map_err(db_error)?;
            let rows = statement
                .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))
                .map_err(db_error)?;
            for row in rows {
                state.pending_refresh.insert(row.map_err(db_error)?);
            }
        }
        Ok(GroupOffsets { state: Mutex::new(state), db: Mutex::new(db), path })
    }

    /// The group's committed position in the topic, if any.
    pub fn committed(&self, group: &str, topic: &str) -> Option<Committed> {
        self.state().committed.get(&(group.to_string(), topic.to_string())).copied()
    }

    /// Records a commit in memory; the next [`GroupOffsets::flush`] writes it.
    pub fn commit(&self, group: &str, topic: &str, committed: Committed) {
        let key = (group.to_string(), topic.to_string());
        let mut state = self.state();
        if state.committed.get(&key) != Some(&committed) {
            state.committed.insert(key.clone(), committed);
            state.dirty.insert(key);
        }
    }

    /// Asks for a full refresh of the topic for the group at its next chance.
    pub fn request_refresh(&self, group: &str, topic: &str) {
        let key = (group.to_string(), topic.to_string());
        let mut state = self.state();
        if state.pending_refresh.insert(key.clone()) {
            state.dirty_refresh.insert(key);
        }
    }

    /// Whether an operator refresh is waiting for the group and topic.
    pub fn refresh_pending(&self, group: &str, topic: &str) -> bool {
        self.state().pending_refresh.contains(&(group.to_string(), topic.to_string()))
    }

    /// Marks a refresh as completed (READY sent and acknowledged).
    pub fn clear_refresh(&self, group: &str, topic: &str) {
        let key = (group.to_string(), topic.to_string());
        let mut state = self.state();
        if state.pending_refresh.remove(&key) {
            state.dirty_refresh.insert(key);
        }
    }

    /// The topics the group has a committed position in.
    pub fn topics_of(&self, group: &str) -> Vec<String> {
        let state = self.state();
        state.committed.keys().filter(|(g, _)| g == group).map(|(_, topic)| topic.clone()).collect()
    }

    /// Every committed position, ordered by group then topic.
    pub fn snapshot(&self) -> Vec<CommittedRow> {
        let state = self.state();
        state
            .committed
            .iter()
            .map(|((group, topic), committed)| CommittedRow {
                group: group.clone(),
                topic: topic.clone(),
                committed: *committed,
            })
            .collect()
    }

    /// The pending refreshes, as (group, topic) pairs.
    pub fn pending_refreshes(&self) -> Vec<(String, String)> {
        self.state().pending_refresh.iter().cloned().collect()
    }

    /// Writes every change since the last flush in one transaction and returns how many rows it wrote.
    /// Blocking: call it from a blocking thread. On failure the changes stay marked and are retried.
    pub fn flush(&self) -> Result<usize, Error> {
        let db_error = |source| Error::GroupsDb { path: self.path.clone(), source };
        let (offsets, refreshes) = {
            let mut state = self.state();
            if state.dirty.is_empty() && state.dirty_refresh.is_empty() {
                return Ok(0);
            }
            let dirty = std::mem::take(&mut state.dirty);
            let offsets: Vec<(Key, Committed)> = dirty
                .into_iter()
                .filter_map(|key| state.committed.get(&key).map(|committed| (key, *committed)))
                .collect();
            let dirty_refresh = std::mem::take(&mut state.dirty_refresh);
            let refreshes: Vec<(Key, bool)> = dirty_refresh
                .into_iter()
                .map(|key| {
                    let pending = state.pending_refresh.contains(&key);
                    (key, pending)
                })
                .collect();
            (offsets, refreshes)
        };
        let written = offsets.len() + refreshes.len();
        let result = self.write(&offsets, &refreshes).map_err(db_error);
        if result.is_err() {
            // Put the keys back so the next flush retries them; newer values already in memory win.
            let mut state = self.state();
            state.dirty.extend(offsets.into_iter().map(|(key, _)| key));
            state.dirty_refresh.extend(refreshes.into_iter().map(|(key, _)| key));
        }
        result.map(|()| written)
    }

    /// Writes rows in one transaction.
    fn write(&self, offsets: &[(Key, Committed)], refreshes: &[(Key, bool)]) -> rusqlite::Result<()> {
        let now_ms = i64::try_from(protocol::now_ms()).unwrap_or(i64::MAX);
        let mut db = self.db.lock().unwrap_or_else(PoisonError::into_inner);
        let transaction = db.transaction()?;
        {
            let mut upsert = transaction.prepare_cached(
                "INSERT INTO group_offsets (group_name, topic, uid, next_offset, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (group_name, topic) DO UPDATE
                 SET uid = excluded.uid, next_offset = excluded.next_offset, updated_ms = excluded.updated_ms",
            )?;
            for ((group, topic), committed) in offsets {
                let next_offset = i64::try_from(committed.next_offset).unwrap_or(i64::MAX);
                upsert.execute(params![group, topic, committed.uid.to_string(), next_offset, now_ms])?;
            }
            let mut insert = transaction.prepare_cached(
                "INSERT OR IGNORE INTO pending_refresh (group_name, topic, requested_ms) VALUES (?1, ?2, ?3)",
            )?;
            let mut delete = transaction
                .prepare_cached("DELETE FROM pending_refresh WHERE group_name = ?1 AND topic = ?2")?;
            for ((group, topic), pending) in refreshes {
                if *pending {
                    insert.execute(params![group, topic, now_ms])?;
                } else {
                    delete.execute(params![group, topic])?;
                }
            }
        }
        transaction.commit()
    }

    /// Locks the in-memory state. A panic while holding the lock cannot leave the maps half-updated in a
    /// way that matters (each operation is one insert or remove), so a poisoned lock is used as is.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_survive_reopen_only_after_flush() {
        let dir = tempfile::tempdir().unwrap();
        let uid = TopicUid(42);
        {
            let groups = GroupOffsets::open(dir.path()).unwrap();
            groups.commit("g", "prices", Committed { uid, next_offset: 5 });
            groups.commit("g", "prices", Committed { uid, next_offset: 9 });
            assert_eq!(groups.flush().unwrap(), 1);
            assert_eq!(groups.flush().unwrap(), 0);
            groups.commit("g", "stock", Committed { uid, next_offset: 1 });
            groups.request_refresh("g", "prices");
            groups.flush().unwrap();
            groups.commit("g", "stock", Committed { uid, next_offset: 2 });
        }
        let groups = GroupOffsets::open(dir.path()).unwrap();
        assert_eq!(groups.committed("g", "prices"), Some(Committed { uid, next_offset: 9 }));
        // The last commit was never flushed.
        assert_eq!(groups.committed("g", "stock"), Some(Committed { uid, next_offset: 1 }));
        assert!(groups.refresh_pending("g", "prices"));
        assert_eq!(groups.topics_of("g"), vec!["prices".to_string(), "stock".to_string()]);
        groups.clear_refresh("g", "prices");
        groups.flush().unwrap();
        drop(groups);
        let groups = GroupOffsets::open(dir.path()).unwrap();
        assert!(!groups.refresh_pending("g", "prices"));
        assert_eq!(groups.snapshot().len(), 2);
    }
}
