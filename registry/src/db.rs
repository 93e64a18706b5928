//! The registry's SQLite file: the schema, loading every node at startup, writing a batch of node changes and
//! history events in one transaction, trimming the history, and reading it back.
//!
//! This is the only module that talks to SQLite. It knows nothing of liveness, assignment or HTTP; it stores
//! what `topology` hands it.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Error;
use crate::model::{Event, EventKind, HeartbeatStats, Labels, Level, Node, NodeState};

/// The schema version written to `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

/// `nodes` holds one row per registered node, labels and stats as JSON text. `events` is the topology history,
/// `seq` growing with every event; it is trimmed to the newest `history_limit` rows.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS nodes (
    id                TEXT PRIMARY KEY,
    level             TEXT NOT NULL,
    labels            TEXT NOT NULL,
    http_addr         TEXT NOT NULL,
    tcp_addr          TEXT,
    preferred_parent  TEXT,
    parent            TEXT,
    state             TEXT NOT NULL,
    registered_ms     INTEGER NOT NULL,
    last_heartbeat_ms INTEGER NOT NULL,
    stats             TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    node    TEXT NOT NULL,
    detail  TEXT NOT NULL
);
";

/// A history event not yet written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// When it happened, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The node it happened to.
    pub node: String,
    /// A human-readable explanation.
    pub detail: String,
}

/// Everything one operation changed, written in one transaction so that a crash never leaves half of it.
#[derive(Debug, Default)]
pub struct ChangeSet {
    /// Nodes to insert or replace.
    pub upserts: Vec<Node>,
    /// Ids of nodes to delete.
    pub deletes: Vec<String>,
    /// Events to append.
    pub events: Vec<NewEvent>,
}

impl ChangeSet {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty() && self.events.is_empty()
    }
}

/// An open registry database.
#[derive(Debug)]
pub struct Db {
    /// The connection; only this module uses it.
    connection: Connection,
    /// The file, for messages.
    path: PathBuf,
    /// How many history events are kept.
    history_limit: u64,
}

impl Db {
    /// Opens (creating if needed) the database at `path`, and its directory, keeping the newest
    /// `history_limit` events.
    pub fn open(path: &Path, history_limit: u64) -> Result<Db, Error> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| Error::CreateDir { path: dir.to_owned(), source })?;
        }
        let open_error = |source| Error::OpenDb { path: path.to_owned(), source };
        let connection = Connection::open(path).map_err(open_error)?;
        // WAL lets the history and topology reads proceed while a write commits; NORMAL synchronous is durable
        // against a crash of this process, which is what a restart test and an operator rely on.
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
            )
            .map_err(open_error)?;
        let version: i64 =
            connection.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(open_error)?;
        if version > SCHEMA_VERSION {
            return Err(Error::Corrupt {
                what: "schema version",
                detail: format!("{version}; this registry understands up to {SCHEMA_VERSION}"),
            });
        }
        connection.execute_batch(SCHEMA).map_err(open_error)?;
        connection.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(open_error)?;
        Ok(Db { connection, path: path.to_owned(), history_limit: history_limit.max(1) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks that the database answers a query; `/ready` uses it.
    pub fn ping(&self) -> Result<(), Error> {
        self.connection
            .query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
            .map(drop)
            .map_err(|source| Error::Db { operation: "ping", source })
    }

    /// Reads every node.
    pub fn load_nodes(&self) -> Result<Vec<Node>, Error> {
        let db_error = |source| Error::Db { operation: "load nodes", source };
        let mut statement = self
            .connection
            .prepare(
                "SELECT id, level, labels, http_addr, tcp_addr, preferred_parent, parent, state, registered_ms,
                        last_heartbeat_ms, stats
                 FROM nodes ORDER BY id",
            )
            .map_err(db_error)?;
        let rows = statement
            .query_map([], |row| {
                Ok(StoredNode {
                    id: row.get(0)?,
                    level: row.get(1)?,
                    labels: row.get(2)?,
                    http_addr: row.get(3)?,
                    tcp_addr: row.get(4)?,
                    preferred_parent: row.get(5)?,
                    parent: row.get(6)?,
                    state: row.get(7)?,
                    registered_ms: row.get(8)?,
                    last_heartbeat_ms: row.get(9)?,
                    stats: row.get(10)?,
                })
            })
            .map_err(db_error)?;
        let mut nodes = Vec::new();
        for row in rows {
            nodes.push(row.map_err(db_error)?.into_node()?);
        }
        Ok(nodes)
    }

    /// Writes `changes` in one transaction, then trims the history to its limit.
    pub fn apply(&mut self, changes: &ChangeSet) -> Result<(), Error> {
        if changes.is_empty() {
            return Ok(());
        }
        let db_error = |source| Error::Db { operation: "write changes", source };
        let transaction = self.connection.transaction().map_err(db_error)?;
        {
            let mut upsert = transaction
                .prepare_cached(
                    "INSERT OR REPLACE INTO nodes (id, level, labels, http_addr, tcp_addr, preferred_parent, parent,
                         state, registered_ms, last_heartbeat_ms, stats)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(db_error)?;
            for node in &changes.upserts {
                let labels = serde_json::to_string(&node.labels)
                    .map_err(|source| Error::Encode { what: "labels", source })?;
                let stats = serde_json::to_string(&node.stats)
                    .map_err(|source| Error::Encode { what: "stats", source })?;
                upsert
                    .execute(params![
                        node.id,
                        node.level.as_str(),
                        labels,
                        node.http_addr,
                        node.tcp_addr,
                        node.preferred_parent,
                        node.parent,
                        node.state.as_str(),
                        clamp_to_i64(node.registered_ms),
                        clamp_to_i64(node.last_heartbeat_ms),
                        stats,
                    ])
                    .map_err(db_error)?;
            }
            let mut delete =
                transaction.prepare_cached("DELETE FROM nodes WHERE id = ?1").map_err(db_error)?;
            for id in &changes.deletes {
                delete.execute(params![id]).map_err(db_error)?;
            }
            let mut insert_event = transaction
                .prepare_cached("INSERT INTO events (time_ms, kind, node, detail) VALUES (?1, ?2, ?3, ?4)")
                .map_err(db_error)?;
            for event in &changes.events {
                insert_event
                    .execute(params![
                        clamp_to_i64(event.time_ms),
                        event.kind.as_str(),
                        event.node,
                        event.detail
                    ])
                    .map_err(db_error)?;
            }
            if !changes.events.is_empty() {
                transaction
                    .execute(
                        "DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ?1",
                        params![clamp_to_i64(self.history_limit)],
                    )
                    .map_err(db_error)?;
            }
        }
        transaction.commit().map_err(db_error)
    }

    /// The newest `limit` events, newest first.
    pub fn history(&self, limit: u64) -> Result<Vec<Event>, Error> {
        let db_error = |source| Error::Db { operation: "read history", source };
        let mut statement = self
            .connection
            .prepare_cached("SELECT seq, time_ms, kind, node, detail FROM events ORDER BY seq DESC LIMIT ?1")
            .map_err(db_error)?;
        let rows = statement
            .query_map(params![clamp_to_i64(limit)], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                ))
            })
            .map_err(db_error)?;
        let mut events = Vec::new();
        for row in rows {
            let (seq, time_ms, kind, node, detail) = row.map_err(db_error)?;
            let kind = EventKind::parse(&kind).ok_or(Error::Corrupt { what: "event kind", detail: kind })?;
            events.push(Event { seq, time_ms: u64::try_from(time_ms).unwrap_or(0), kind, node, detail });
        }
        Ok(events)
    }

    /// How many events the history holds.
    pub fn history_len(&self) -> Result<u64, Error> {
        self.connection
            .query_row("SELECT COUNT(*) FROM events", [], |row| row.get::<_, i64>(0))
            .map(|count| u64::try_from(count).unwrap_or(0))
            .map_err(|source| Error::Db { operation: "count history", source })
    }

    /// Whether a node row exists; used by tests and diagnostics.
    pub fn has_node(&self, id: &str) -> Result<bool, Error> {
        self.connection
            .query_row("SELECT 1 FROM nodes WHERE id = ?1", params![id], |_| Ok(()))
            .optional()
            .map(|found| found.is_some())
            .map_err(|source| Error::Db { operation: "find node", source })
    }
}

/// A `nodes` row as SQLite holds it, before its text columns are parsed.
struct StoredNode {
    id: String,
    level: String,
    labels: String,
    http_addr: String,
    tcp_addr: Option<String>,
    preferred_parent: Option<String>,
    parent: Option<String>,
    state: String,
    registered_ms: i64,
    last_heartbeat_ms: i64,
    stats: String,
}

impl StoredNode {
    fn into_node(self) -> Result<Node, Error> {
        let level: Level =
            self.level.parse().map_err(|_| Error::Corrupt { what: "level", detail: self.level.clone() })?;
        let state = match self.state.as_str() {
            "alive" => NodeState::Alive,
            "expired" => NodeState::Expired,
            _ => return Err(Error::Corrupt { what: "state", detail: self.state }),
        };
        let labels: Labels = serde_json::from_str(&self.labels)
            .map_err(|source| Error::Corrupt { what: "labels", detail: source.to_string() })?;
        // Stats are informational; an unreadable value is dropped rather than refusing to start.
        let stats: HeartbeatStats = serde_json::from_str(&self.stats).unwrap_or_default();
        Ok(Node {
            id: self.id,
            level,
            labels,
            http_addr: self.http_addr,
            tcp_addr: self.tcp_addr,
            preferred_parent: self.preferred_parent,
            parent: self.parent,
            state,
            registered_ms: u64::try_from(self.registered_ms).unwrap_or(0),
            last_heartbeat_ms: u64::try_from(self.last_heartbeat_ms).unwrap_or(0),
            stats,
        })
    }
}

/// SQLite integers are signed; times and limits beyond `i64::MAX` do not occur but must not wrap.
fn clamp_to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TopicStats;

    fn node(id: &str, level: Level, parent: Option<&str>) -> Node {
        let mut stats = HeartbeatStats::default();
        stats.topics.insert("prices".into(), TopicStats { end_offset: Some(42), lag: Some(1) });
        Node {
            id: id.to_owned(),
            level,
            labels: [("region".to_owned(), "eu".to_owned())].into(),
            http_addr: "127.0.0.1:8081".into(),
            tcp_addr: None,
            preferred_parent: None,
            parent: parent.map(str::to_owned),
            state: NodeState::Alive,
            registered_ms: 1,
            last_heartbeat_ms: 2,
            stats,
        }
    }

    fn event(node: &str, kind: EventKind) -> NewEvent {
        NewEvent { time_ms: 5, kind, node: node.to_owned(), detail: "d".to_owned() }
    }

    #[test]
    fn nodes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/registry.sqlite");
        let root = node("root", Level::Root, None);
        let l2 = node("l2-eu", Level::L2, Some("root"));
        {
            let mut db = Db::open(&path, 100).unwrap();
            db.apply(&ChangeSet { upserts: vec![root.clone(), l2.clone()], ..ChangeSet::default() }).unwrap();
        }
        let db = Db::open(&path, 100).unwrap();
        assert_eq!(db.load_nodes().unwrap(), vec![l2, root]);
        db.ping().unwrap();
    }

    #[test]
    fn deletes_and_replaces_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("r.sqlite"), 100).unwrap();
        db.apply(&ChangeSet { upserts: vec![node("a", Level::Root, None)], ..ChangeSet::default() }).unwrap();
        let mut moved = node("a", Level::Root, None);
        moved.state = NodeState::Expired;
        db.apply(&ChangeSet { upserts: vec![moved.clone()], ..ChangeSet::default() }).unwrap();
        assert_eq!(db.load_nodes().unwrap(), vec![moved]);
        db.apply(&ChangeSet { deletes: vec!["a".into()], ..ChangeSet::default() }).unwrap();
        assert!(!db.has_node("a").unwrap());
    }

    #[test]
    fn history_is_newest_first_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("r.sqlite"), 3).unwrap();
        for index in 0..5 {
            let changes = ChangeSet {
                events: vec![event(&format!("n{index}"), EventKind::Registered)],
                ..ChangeSet::default()
            };
            db.apply(&changes).unwrap();
        }
        assert_eq!(db.history_len().unwrap(), 3);
        let history = db.history(10).unwrap();
        let names: Vec<&str> = history.iter().map(|event| event.node.as_str()).collect();
        assert_eq!(names, vec!["n4", "n3", "n2"]);
        assert_eq!(db.history(1).unwrap().len(), 1);
    }

    #[test]
    fn a_bad_level_in_the_file_is_reported_not_panicked_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sqlite");
        let mut db = Db::open(&path, 10).unwrap();
        db.apply(&ChangeSet { upserts: vec![node("a", Level::Root, None)], ..ChangeSet::default() }).unwrap();
        db.connection.execute("UPDATE nodes SET level = 'L9'", []).unwrap();
        assert!(matches!(db.load_nodes(), Err(Error::Corrupt { what: "level", .. })));
    }
}
