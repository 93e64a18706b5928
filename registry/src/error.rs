//! The registry's errors: `Error` for the database and startup, `RequestError` for what the registry refuses
//! in a request, and the status and code each becomes as an HTTP [`ApiError`] (whose JSON body `service`
//! owns).
//!
//! This module does not decide when to fail; it only names the failures and how they are reported.

use std::path::PathBuf;

pub use service::ApiError;

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

/// What the registry refuses in a request, each with its own `error` code; `From<RequestError> for
/// ApiError` is where each gets its status.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The level is not one of ROOT, L2, L3, POS, LOCAL.
    #[error("{0}")]
    UnknownLevel(String),
    /// An id, label or address is malformed.
    #[error("{0}")]
    BadField(String),
    /// A query parameter has a value the registry cannot take (too many ids in `exclude`).
    #[error("{0}")]
    BadQuery(String),
    /// The token is missing or wrong.
    #[error("a valid token is required")]
    Unauthorized,
    /// The node proved who it is but may not register so (another level, other labels than its identity).
    #[error("{0}")]
    NotAllowed(String),
    /// No node has this id.
    #[error("no node {0:?} is registered")]
    UnknownNode(String),
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

impl From<RequestError> for ApiError {
    fn from(error: RequestError) -> ApiError {
        let detail = error.to_string();
        match error {
            RequestError::UnknownLevel(_) => ApiError::bad_request("unknown_level", detail),
            RequestError::BadField(_) => ApiError::bad_request("bad_field", detail),
            RequestError::BadQuery(_) => ApiError::bad_query(detail),
            RequestError::Unauthorized => ApiError::unauthorized("unauthorized", detail),
            RequestError::NotAllowed(_) => ApiError::forbidden("not_allowed", detail),
            RequestError::UnknownNode(_) => ApiError::not_found("unknown_node", detail),
            RequestError::LevelConflict(_) => ApiError::conflict("level_conflict", detail),
            RequestError::Cycle(_) => ApiError::conflict("cycle", detail),
            RequestError::SkipsLevel(_) => ApiError::conflict("skips_level", detail),
            RequestError::WrongLevel(_) => ApiError::conflict("wrong_level", detail),
            RequestError::NotReady => ApiError::unavailable("not_ready", detail),
            RequestError::Internal(source) => ApiError::from(source),
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        ApiError::internal_with_sources(&error)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn internal_errors_are_500s_that_keep_their_cause_for_the_log() {
        let error = ApiError::from(RequestError::Internal(Error::Poisoned));
        assert_eq!((error.status, error.error), (StatusCode::INTERNAL_SERVER_ERROR, "internal"));
        assert!(error.detail.contains("unusable"), "{}", error.detail);
    }

    #[test]
    fn refusals_are_conflicts_and_bad_input_is_a_bad_request() {
        let status = |error: RequestError| ApiError::from(error).status;
        assert_eq!(status(RequestError::Cycle("x".into())), StatusCode::CONFLICT);
        assert_eq!(status(RequestError::SkipsLevel("x".into())), StatusCode::CONFLICT);
        assert_eq!(status(RequestError::UnknownLevel("x".into())), StatusCode::BAD_REQUEST);
        assert_eq!(status(RequestError::BadQuery("x".into())), StatusCode::BAD_REQUEST);
        assert_eq!(status(RequestError::UnknownNode("x".into())), StatusCode::NOT_FOUND);
        assert_eq!(status(RequestError::Unauthorized), StatusCode::UNAUTHORIZED);
    }
}
