//! The broker's errors: [`Error`] for what stops the broker or a background task, [`RegistryError`] for
//! talking to the registry, and how storage and broker errors become an HTTP [`ApiError`] (whose status
//! and JSON body `service` owns). Protocol-level failures on a connection are ERROR frames and live in
//! `session.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;

pub use service::ApiError;

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

/// The HTTP answer to a storage error: a client's mistake names it, a full disk is 503, anything else is
/// the broker's own fault.
pub fn storage_api_error(error: storage::Error) -> ApiError {
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
        storage::Error::RecordTooLarge { .. } => ApiError::bad_request("record_too_large", error.to_string()),
        storage::Error::NoSpace { .. } => ApiError::unavailable("no_space", error.to_string()),
        storage::Error::Damaged { .. } => ApiError::unavailable("damaged_range", error.to_string()),
        other => ApiError::internal_with_sources(&other),
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        match error {
            Error::Storage(error) => storage_api_error(error),
            other => ApiError::internal_with_sources(&other),
        }
    }
}
