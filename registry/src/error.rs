//! The registry's errors: `Error` for the database and startup, `ApiError` for what a client is told, and the
//! one place (`impl IntoResponse for ApiError`) where errors become HTTP status codes and JSON bodies.
//!
//! This module does not decide when to fail; it only names the failures and how they are reported.

use std::path::PathBuf;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A failure of the registry's own machinery: opening or using SQLite, or a worker that did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory that should hold the database could not be created.
    #[error("cannot create the database directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened or prepared.
    #[error("cannot open the database {path}")]
    OpenDb {
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// A statement failed.
    #[error("database {operation} failed")]
    Db {
        /// What was being done, for the log.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// A row holds a value this version cannot read (a hand-edited or newer database).
    #[error("the database holds an unreadable {what}: {detail}")]
    Corrupt {
        /// Which column or value.
        what: &'static str,
        /// What was found.
        detail: String,
    },
    /// A value could not be encoded as JSON for storage.
    #[error("cannot encode {what} as JSON")]
    Encode {
        /// Which value.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The metrics could not be encoded.
    #[error("cannot encode the metrics")]
    EncodeMetrics(#[source] std::fmt::Error),
    /// A blocking worker panicked or was cancelled.
    #[error("a registry worker did not finish")]
    Worker(#[source] tokio::task::JoinError),
    /// The state lock was poisoned by a panic in another request.
    #[error("the registry state is unusable after an earlier fault")]
    Poisoned,
}

/// What went wrong with a request, as the client will be told.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON or not the expected shape.
    #[error("bad JSON: {0}")]
    BadJson(String),
    /// A query string or path parameter could not be read.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The level is not one of ROOT, L2, L3, POS, LOCAL.
    #[error("{0}")]
    UnknownLevel(String),
    /// An id, label or address is malformed.
    #[error("{0}")]
    BadField(String),
    /// The body is larger than the limit.
    #[error("the request body is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The token is missing or wrong.
    #[error("a valid token is required")]
    Unauthorized,
    /// No node has this id.
    #[error("no node {0:?} is registered")]
    UnknownNode(String),
    /// No route matches the path.
    #[error("no such endpoint")]
    NoRoute,
    /// The route exists but not with this method.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// A live node with this id is registered at another level.
    #[error("{0}")]
    LevelConflict(String),
    /// The preferred parent is the node itself or below it.
    #[error("{0}")]
    Cycle(String),
    /// The preferred parent is more than one level up.
    #[error("{0}")]
    SkipsLevel(String),
    /// The preferred parent is at a level that cannot parent this node.
    #[error("{0}")]
    WrongLevel(String),
    /// The database does not answer; `/ready` reports it.
    #[error("the registry database is not ready")]
    NotReady,
    /// The registry itself failed; the client gets a generic message and the log gets the cause.
    #[error(transparent)]
    Internal(#[from] Error),
}

/// The JSON body of every error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// A stable, machine-readable name of the problem, such as `unknown_level`.
    pub error: &'static str,
    /// A human-readable explanation.
    pub detail: String,
}

impl ApiError {
    /// The status code and machine-readable name of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadJson(_) => (StatusCode::BAD_REQUEST, "bad_json"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::UnknownLevel(_) => (StatusCode::BAD_REQUEST, "unknown_level"),
            ApiError::BadField(_) => (StatusCode::BAD_REQUEST, "bad_field"),
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::UnknownNode(_) => (StatusCode::NOT_FOUND, "unknown_node"),
            ApiError::NoRoute => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::LevelConflict(_) => (StatusCode::CONFLICT, "level_conflict"),
            ApiError::Cycle(_) => (StatusCode::CONFLICT, "cycle"),
            ApiError::SkipsLevel(_) => (StatusCode::CONFLICT, "skips_level"),
            ApiError::WrongLevel(_) => (StatusCode::CONFLICT, "wrong_level"),
            ApiError::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let detail = match &self {
            ApiError::Internal(source) => {
                tracing::error!(error = %source, cause = ?std::error::Error::source(source), "request failed");
                "the registry failed to handle the request; see its log".to_owned()
            }
            other => other.to_string(),
        };
        (status, Json(ErrorBody { error: code, detail })).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause_from_clients() {
        let error = ApiError::Internal(Error::Poisoned);
        let (status, code) = error.status_and_code();
        assert_eq!((status, code), (StatusCode::INTERNAL_SERVER_ERROR, "internal"));
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn refusals_are_conflicts_and_bad_input_is_a_bad_request() {
        assert_eq!(ApiError::Cycle("x".into()).status_and_code().0, StatusCode::CONFLICT);
        assert_eq!(ApiError::SkipsLevel("x".into()).status_and_code().0, StatusCode::CONFLICT);
        assert_eq!(ApiError::UnknownLevel("x".into()).status_and_code().0, StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::UnknownNode("x".into()).status_and_code().0, StatusCode::NOT_FOUND);
    }
}
