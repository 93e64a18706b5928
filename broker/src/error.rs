//! The broker's errors: [`Error`] for what stops the broker or a background task, and [`ApiError`], the one
//! place where HTTP failures become a status code and a `{"error", "detail"}` JSON body. Protocol-level
//! failures on a connection are ERROR frames and live in `session.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// What can stop the broker from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration does not hold together.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A listener could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// Which server: "HTTP" or "consumers".
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The storage engine failed.
    #[error("storage: {0}")]
    Storage(#[from] storage::Error),
    /// The group offset database failed.
    #[error("group offsets in {path}: {source}")]
    GroupsDb {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// A blocking task panicked or was cancelled.
    #[error("a background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A server's I/O failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The HTTP client for the registry could not be built.
    #[error("cannot build the registry client: {0}")]
    RegistryClient(reqwest::Error),
}

/// What can go wrong talking to the registry. None of it stops the broker: registration retries, and the
/// pipe falls back on the cached topology.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached or did not answer in time.
    #[error("the registry at {url} is unreachable: {source}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The registry does not know this node (it lost its state, or expired and forgot it): re-register.
    #[error("the registry does not know this node")]
    UnknownNode,
    /// The registry refused the request.
    #[error("the registry refused {what} with status {status}: {body}")]
    Refused {
        /// The request, such as "register".
        what: &'static str,
        /// The HTTP status.
        status: u16,
        /// The answer's body, shortened.
        body: String,
    },
    /// The registry's answer could not be read.
    #[error("the registry's answer to {what} could not be read: {source}")]
    BadAnswer {
        /// The request.
        what: &'static str,
        /// Why.
        source: reqwest::Error,
    },
}

/// An HTTP failure: a status and a JSON body `{"error": "<kind>", "detail": "<what exactly>"}`.
///
/// Client errors name the problem; a server error answers a generic body and logs the detail, because the
/// detail may expose internals such as file paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A short, stable, machine-readable kind such as `bad_json` or `unknown_topic`.
    pub error: &'static str,
    /// A sentence for a person.
    pub detail: String,
}

impl ApiError {
    /// A 400 answer.
    pub fn bad_request(error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, error, detail: detail.into() }
    }

    /// A 403 answer.
    pub fn forbidden(error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::FORBIDDEN, error, detail: detail.into() }
    }

    /// A 404 answer.
    pub fn not_found(error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, error, detail: detail.into() }
    }

    /// A 409 answer.
    pub fn conflict(error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::CONFLICT, error, detail: detail.into() }
    }

    /// A 413 answer.
    pub fn too_large(detail: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::PAYLOAD_TOO_LARGE, error: "body_too_large", detail: detail.into() }
    }

    /// A 503 answer.
    pub fn unavailable(error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::SERVICE_UNAVAILABLE, error, detail: detail.into() }
    }

    /// A 500 answer; `detail` goes to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        let detail = detail.to_string();
        tracing::error!(%detail, "internal error answering an HTTP request");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "internal",
            detail: "the broker failed to handle this request; see its log".to_string(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.error, self.detail)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.error, "detail": self.detail });
        (self.status, Json(body)).into_response()
    }
}

impl From<storage::Error> for ApiError {
    fn from(error: storage::Error) -> ApiError {
        match error {
            storage::Error::OffsetBelowLogStart { requested, log_start } => ApiError::bad_request(
                "offset_out_of_range",
                format!("offset {requested} is below the log start {log_start}"),
            ),
            storage::Error::OffsetBeyondEnd { requested, next_offset } => ApiError::bad_request(
                "offset_out_of_range",
                format!("offset {requested} is beyond the log end {next_offset}"),
            ),
            storage::Error::BadTopicName { .. } => ApiError::bad_request("bad_topic_name", error.to_string()),
            storage::Error::NoSpace { .. } => ApiError::unavailable("no_space", error.to_string()),
            other => ApiError::internal(other),
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        match error {
            Error::Storage(error) => ApiError::from(error),
            other => ApiError::internal(other),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(error: tokio::task::JoinError) -> ApiError {
        ApiError::internal(error)
    }
}
