//! The consumer-app's error type. Every variant keeps its source and says what was being done, so a log
//! line is enough to find the cause. HTTP status codes are chosen in `http/mod.rs`, not here.

use thiserror::Error;

/// What went wrong inside the consumer-app.
#[derive(Debug, Error)]
pub enum Error {
    /// The segment log refused or failed an operation.
    #[error("storage failed while {context} (topic {topic:?})")]
    Storage {
        /// What was being done.
        context: &'static str,
        /// The topic concerned (empty for the whole store).
        topic: String,
        /// The storage error (boxed: it is large, and errors are the rare path).
        #[source]
        source: Box<storage::Error>,
    },
    /// `app.sqlite` failed.
    #[error("app.sqlite failed while {context}")]
    Sqlite {
        /// What was being done.
        context: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// Records from the broker (or read back from the local copy) did not decode.
    #[error("bad records for topic {topic:?}")]
    Records {
        /// The topic concerned.
        topic: String,
        /// What was wrong with the bytes.
        #[source]
        source: protocol::WireError,
    },
    /// The broker connection failed.
    #[error("broker connection failed")]
    Client(#[from] client::Error),
    /// The broker sent something that does not fit what this copy holds.
    #[error("broker sent {what} for topic {topic:?}")]
    Unexpected {
        /// The topic concerned.
        topic: String,
        /// What was unexpected.
        what: String,
    },
    /// A filesystem operation outside the storage engine failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A refresh swapped the copy of a topic out under every attempt to read it whole.
    #[error("a refresh swapped the copy of topic {topic:?} out under every attempt to read it")]
    Swapped {
        /// The topic concerned.
        topic: String,
    },
    /// A blocking task panicked or was cancelled.
    #[error("a blocking task failed")]
    Join(#[from] tokio::task::JoinError),
}
