//! What `meta.sqlite` looks like to this build: the schema, its version, and the check that an existing
//! file is this database with this schema before anything is written to it.

use std::path::Path;

use rusqlite::{Connection, ErrorCode, params};

use crate::error::Error;

/// The schema version this build writes and reads (SQLite's `user_version`).
pub(super) const SCHEMA_VERSION: i64 = 4;

/// The columns every query of this module uses, one statement per table: preparing them proves that an
/// existing database has this schema.
const SCHEMA_PROBES: [(&str, &str); 5] = [
    ("topics", "SELECT name, uid, generation, log_start, created_ms FROM topics LIMIT 0"),
    ("epochs", "SELECT topic, epoch, start_offset FROM epochs LIMIT 0"),
    (
        "settings",
        "SELECT topic, cleanup, retention_bytes, retention_age_ms, tombstone_retention_ms FROM settings LIMIT 0",
    ),
    ("horizons", "SELECT topic, delete_horizon FROM horizons LIMIT 0"),
    (
        "segments",
        "SELECT topic, generation, base_offset, last_offset, size_bytes, sealed, created_ms, sealed_ms,
         last_timestamp_ms FROM segments LIMIT 0",
    ),
];

/// The schema; `user_version` tells future versions what they are looking at. Version 2 added `epochs`
/// (a version 1 database gains the empty table when opened: its topics then have no known history).
/// Version 3 added `settings`, a topic's explicit settings (an older database gains the empty table when
/// opened: its topics then have no explicit settings, which is what they had). `cleanup` holds the API
/// word (`delete`, `compact`, `compact,delete`); a NULL limit is no limit. Version 4 added `horizons`, a
/// compacted copy's delete horizon (an older database gains the empty table: no tombstone was dropped).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS topics (
    name        TEXT PRIMARY KEY,
    uid         TEXT NOT NULL,
    generation  INTEGER NOT NULL,
    log_start   INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS segments (
    topic              TEXT NOT NULL,
    generation         INTEGER NOT NULL,
    base_offset        INTEGER NOT NULL,
    last_offset        INTEGER,
    size_bytes         INTEGER NOT NULL,
    sealed             INTEGER NOT NULL,
    created_ms         INTEGER NOT NULL,
    sealed_ms          INTEGER,
    last_timestamp_ms  INTEGER,
    PRIMARY KEY (topic, generation, base_offset)
);
CREATE TABLE IF NOT EXISTS epochs (
    topic         TEXT NOT NULL,
    epoch         INTEGER NOT NULL,
    start_offset  INTEGER NOT NULL,
    PRIMARY KEY (topic, epoch)
);
CREATE TABLE IF NOT EXISTS settings (
    topic                   TEXT PRIMARY KEY,
    cleanup                 TEXT NOT NULL,
    retention_bytes         INTEGER,
    retention_age_ms        INTEGER,
    tombstone_retention_ms  INTEGER
);
CREATE TABLE IF NOT EXISTS horizons (
    topic           TEXT PRIMARY KEY,
    delete_horizon  INTEGER NOT NULL
);
PRAGMA user_version = 4;
";

/// Wraps an SQLite error from opening `path`: damage SQLite recognises (not a database, corrupt) makes
/// the file unusable; anything else is an ordinary failure.
pub(super) fn classify<'a>(op: &'static str, path: &'a Path) -> impl Fn(rusqlite::Error) -> Error + 'a {
    move |source| match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => Error::UnusableMeta {
            path: path.to_path_buf(),
            detail: format!("cannot {op}: {source}"),
            source: Some(source),
        },
        _ => Error::Meta { op, path: path.to_path_buf(), source },
    }
}

/// Checks, without writing, that an existing database can be used: SQLite reads it, its schema version is
/// not newer than this build's, its quick integrity check passes, and the tables it already has hold the
/// columns this module uses. A new, empty file passes.
pub(super) fn check_existing(connection: &Connection, path: &Path) -> Result<(), Error> {
    let unusable = |detail: String, source: Option<rusqlite::Error>| Error::UnusableMeta {
        path: path.to_path_buf(),
        detail,
        source,
    };
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(classify("read the schema version", path))?;
    if version > SCHEMA_VERSION {
        return Err(unusable(format!("schema version {version}; this build knows {SCHEMA_VERSION}"), None));
    }
    let mut statement =
        connection.prepare("PRAGMA quick_check").map_err(classify("check the database", path))?;
    let problems: Vec<String> = statement
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(classify("check the database", path))?;
    if problems != ["ok"] {
        let shown: Vec<_> = problems.iter().take(3).map(String::as_str).collect();
        return Err(unusable(format!("integrity check failed: {}", shown.join("; ")), None));
    }
    for (table, probe) in SCHEMA_PROBES {
        let exists: bool = connection
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
                params![table],
                |row| row.get(0),
            )
            .map_err(classify("read the schema", path))?;
        if exists && let Err(source) = connection.prepare(probe) {
            return Err(unusable(
                format!("table {table} does not have this build's columns: {source}"),
                Some(source),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::topic;
    use super::super::{Meta, SegmentRow};
    use super::*;
    use protocol::TopicUid;

    #[test]
    fn files_that_are_not_this_database_are_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.sqlite");
        std::fs::write(&garbage, vec![0x5a; 10_000]).unwrap();
        let error = Meta::open(&garbage).unwrap_err();
        assert!(matches!(error, Error::UnusableMeta { source: Some(_), .. }), "{error}");

        let foreign = dir.path().join("foreign.sqlite");
        Connection::open(&foreign).unwrap().execute_batch("CREATE TABLE topics (id INTEGER);").unwrap();
        let error = Meta::open(&foreign).unwrap_err();
        assert!(matches!(error, Error::UnusableMeta { .. }), "{error}");

        let newer = dir.path().join("newer.sqlite");
        Connection::open(&newer).unwrap().execute_batch("PRAGMA user_version = 5;").unwrap();
        assert!(matches!(Meta::open(&newer), Err(Error::UnusableMeta { source: None, .. })));

        // A version 1 database (before epochs) opens, and its topics have no known history.
        let older = dir.path().join("older.sqlite");
        let version_1 = SCHEMA.split("CREATE TABLE IF NOT EXISTS epochs").next().unwrap();
        Connection::open(&older)
            .unwrap()
            .execute_batch(&format!(
                "{version_1}; PRAGMA user_version = 1;
                 INSERT INTO topics VALUES ('t', '{}', 1, 0, 9);",
                TopicUid(7)
            ))
            .unwrap();
        let topics = Meta::open(&older).unwrap().topics().unwrap();
        assert_eq!(topics.len(), 1);
        assert!(topics[0].epochs.is_empty());
        assert_eq!(topics[0].settings, None);

        // A version 2 database (epochs, no settings) opens and migrates forward: its topics have no
        // explicit settings, and settings can be recorded in it.
        let version_2_file = dir.path().join("version-2.sqlite");
        let version_2 = SCHEMA.split("CREATE TABLE IF NOT EXISTS settings").next().unwrap();
        Connection::open(&version_2_file)
            .unwrap()
            .execute_batch(&format!(
                "{version_2} PRAGMA user_version = 2;
                 INSERT INTO topics VALUES ('t', '{}', 1, 0, 9);
                 INSERT INTO epochs VALUES ('t', 0, 0);",
                TopicUid(7)
            ))
            .unwrap();
        let meta = Meta::open(&version_2_file).unwrap();
        let topics = meta.topics().unwrap();
        assert_eq!((topics.len(), topics[0].epochs.entries().len(), topics[0].settings), (1, 1, None));
        let settings = protocol::TopicSettings { cleanup: protocol::Cleanup::Compact, ..Default::default() };
        meta.set_settings("t", Some(&settings)).unwrap();
        drop(meta);
        let reopened = Meta::open(&version_2_file).unwrap();
        assert_eq!(reopened.topics().unwrap()[0].settings, Some(settings));
        let version: i64 = Connection::open(&version_2_file)
            .unwrap()
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);

        let empty = dir.path().join("empty.sqlite");
        std::fs::write(&empty, b"").unwrap();
        assert!(Meta::open(&empty).unwrap().topics().unwrap().is_empty());
        let good = dir.path().join("good.sqlite");
        Meta::open(&good).unwrap().create_topic(&topic("t", 1), &SegmentRow::active(0, 1)).unwrap();
        assert_eq!(Meta::open(&good).unwrap().topics().unwrap().len(), 1, "a good file opens again");
    }
}
