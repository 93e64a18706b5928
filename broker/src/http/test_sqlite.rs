//! `POST /test/load-from-sqlite` (test endpoints only): every row of a table in a SQLite file becomes a
//! JSON-object record keyed by one column. The file must lie inside `--test-data-dir` (checked on the
//! canonical path, so `..` and symbolic links cannot leave it); table and column names must be plain
//! identifiers, because they are spliced into SQL.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use protocol::NewRecord;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde::Deserialize;
use serde_json::{Map, Value};
use service::ApiJson;

use super::ingest::refuse_unless_root;
use super::test_api::{BatchAppender, RECORDS_PER_APPEND};
use super::{AppState, checked_topic};
use crate::error::ApiError;

/// The longest table or column name accepted.
const MAX_IDENTIFIER_LEN: usize = 128;

/// The body of `POST /test/load-from-sqlite`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadRequest {
    /// The SQLite file, absolute or relative to `--test-data-dir`.
    pub path: String,
    /// The table (or view) to read.
    pub table: String,
    /// The topic to publish to, created if needed.
    pub topic: String,
    /// The column whose value becomes each record's key.
    pub key_column: String,
}

/// `POST /test/load-from-sqlite`.
pub async fn load(
    State(node): State<AppState>,
    ApiJson(request): ApiJson<LoadRequest>,
) -> Result<Response, ApiError> {
    refuse_unless_root(&node)?;
    checked_topic(&request.topic)?;
    check_identifier("table", &request.table)?;
    check_identifier("key_column", &request.key_column)?;
    let Some(allowed) = node.config.test_data_dir.clone() else {
        return Err(ApiError::forbidden("forbidden_path", "loading from SQLite needs --test-data-dir"));
    };
    let started = Instant::now();
    let node = Arc::clone(&node);
    let mut loaded = tokio::task::spawn_blocking(move || {
        let path = allowed_path(&allowed, Path::new(&request.path))?;
        let db = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|error| {
            ApiError::bad_request("bad_database", format!("cannot open {}: {error}", request.path))
        })?;
        let mut appender = BatchAppender::new(node, request.topic.clone());
        read_rows(&db, &request, &mut appender)?;
        appender.finish()
    })
    .await??;
    loaded.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(axum::Json(loaded).into_response())
}

/// Reads every row and appends it as a record, in batches.
fn read_rows(db: &Connection, request: &LoadRequest, appender: &mut BatchAppender) -> Result<(), ApiError> {
    let bad_database = |error: rusqlite::Error| ApiError::bad_request("bad_database", error.to_string());
    let exists: bool = db
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?1)",
            [&request.table],
            |row| row.get(0),
        )
        .map_err(bad_database)?;
    if !exists {
        return Err(ApiError::not_found(
            "unknown_table",
            format!("no table {:?} in {}", request.table, request.path),
        ));
    }
    // Identifiers were checked to be plain names, so quoting them is enough.
    let mut statement = db.prepare(&format!("SELECT * FROM \"{}\"", request.table)).map_err(bad_database)?;
    let columns: Vec<String> = statement.column_names().into_iter().map(str::to_string).collect();
    let Some(key_index) = columns.iter().position(|column| *column == request.key_column) else {
        return Err(ApiError::bad_request(
            "unknown_column",
            format!("table {:?} has no column {:?}; it has {columns:?}", request.table, request.key_column),
        ));
    };
    let mut rows = statement.query([]).map_err(bad_database)?;
    let mut keys: Vec<Vec<u8>> = Vec::with_capacity(RECORDS_PER_APPEND);
    let mut values: Vec<Vec<u8>> = Vec::with_capacity(RECORDS_PER_APPEND);
    loop {
        let row = rows.next().map_err(bad_database)?;
        if let Some(row) = row {
            let mut object = Map::with_capacity(columns.len());
            for (index, column) in columns.iter().enumerate() {
                let value = row.get_ref(index).map_err(bad_database)?;
                if index == key_index {
                    keys.push(key_text(value).into_bytes());
                }
                object.insert(column.clone(), json_value(value));
            }
            values.push(Value::Object(object).to_string().into_bytes());
        }
        if keys.len() >= RECORDS_PER_APPEND || (row.is_none() && !keys.is_empty()) {
            let batch: Vec<NewRecord<'_>> =
                keys.iter().zip(&values).map(|(key, value)| NewRecord::new(key, value)).collect();
            appender.append(&batch)?;
            keys.clear();
            values.clear();
        }
        if row.is_none() {
            return Ok(());
        }
    }
}

/// A SQLite value as JSON: numbers and text as themselves, blobs as base64, NULL as null.
fn json_value(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(integer) => Value::from(integer),
        ValueRef::Real(real) => serde_json::Number::from_f64(real).map_or(Value::Null, Value::Number),
        ValueRef::Text(text) => Value::String(String::from_utf8_lossy(text).into_owned()),
        ValueRef::Blob(blob) => Value::String(BASE64.encode(blob)),
    }
}

/// A SQLite value as a record key.
fn key_text(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Null => String::new(),
        ValueRef::Integer(integer) => integer.to_string(),
        ValueRef::Real(real) => real.to_string(),
        ValueRef::Text(text) => String::from_utf8_lossy(text).into_owned(),
        ValueRef::Blob(blob) => BASE64.encode(blob),
    }
}

/// Refuses anything but a plain SQL identifier.
fn check_identifier(field: &str, name: &str) -> Result<(), ApiError> {
    let mut chars = name.chars();
    let plain = chars.next().is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_IDENTIFIER_LEN;
    if plain {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "bad_identifier",
            format!("{field} {name:?} must be letters, digits and underscores, not starting with a digit"),
        ))
    }
}

/// Resolves `requested` (relative paths against `allowed`) and checks that it lies inside `allowed`:
/// 403 if not, 404 if it does not exist.
fn allowed_path(allowed: &Path, requested: &Path) -> Result<PathBuf, ApiError> {
    let allowed = allowed.canonicalize().map_err(|error| {
        ApiError::forbidden("forbidden_path", format!("the test data directory is unusable: {error}"))
    })?;
    let joined = allowed.join(requested);
    let outside = || {
        ApiError::forbidden(
            "forbidden_path",
            format!("{} is outside the test data directory", requested.display()),
        )
    };
    match joined.canonicalize() {
        Ok(path) if path.starts_with(&allowed) => Ok(path),
        Ok(_) => Err(outside()),
        // A path that does not exist is judged by its lexical form, so that a probe outside the directory
        // learns nothing about what exists there.
        Err(_) if !lexically_normal(&joined).starts_with(&allowed) => Err(outside()),
        Err(error) => {
            Err(ApiError::not_found("no_such_file", format!("cannot open {}: {error}", requested.display())))
        }
    }
}

/// Removes `.` and resolves `..` without touching the file system.
fn lexically_normal(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    normal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(check_identifier("table", "prices_2024").is_ok());
        assert!(check_identifier("table", "_x").is_ok());
        for bad in ["", "1abc", "a-b", "a\"b", "a b", "x; DROP TABLE y"] {
            assert!(check_identifier("table", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("data");
        std::fs::create_dir(&inside).unwrap();
        std::fs::write(inside.join("a.sqlite"), b"").unwrap();
        std::fs::write(dir.path().join("secret.sqlite"), b"").unwrap();
        assert!(allowed_path(&inside, Path::new("a.sqlite")).is_ok());
        assert_eq!(allowed_path(&inside, Path::new("../secret.sqlite")).unwrap_err().status.as_u16(), 403);
        let absolute = dir.path().join("secret.sqlite");
        assert_eq!(allowed_path(&inside, &absolute).unwrap_err().status.as_u16(), 403);
        assert_eq!(allowed_path(&inside, Path::new("missing.sqlite")).unwrap_err().status.as_u16(), 404);
        assert_eq!(allowed_path(&inside, Path::new("../../missing")).unwrap_err().status.as_u16(), 403);
    }
}
