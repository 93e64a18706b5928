//! The one place where REST errors become HTTP status codes: 400 for a bad request, 404 for something
//! that does not exist, 503 while not ready, 500 for our own faults (the detail goes to the log, the
//! client gets a generic body). Every error body is `{"error": "...", "detail": "..."}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::Error;

/// A REST error.
#[derive(Debug)]
pub enum ApiError {
    /// The request is malformed: a bad offset, a limit over the maximum, a bad JSON body.
    BadRequest {
        /// A short machine-readable name, such as `bad_offset`.
        error: &'static str,
        /// What exactly was wrong, for a person.
        detail: String,
    },
    /// The thing asked for does not exist: a topic, an offset, a key.
    NotFound {
        /// A short machine-readable name, such as `unknown_topic`.
        error: &'static str,
        /// What was looked for.
        detail: String,
    },
    /// The request body is over the limit.
    TooLarge {
        /// What the limit is.
        detail: String,
    },
    /// A fault of the app itself.
    Internal(Error),
}

impl ApiError {
    /// A 400 answer.
    pub fn bad_request(error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::BadRequest { error, detail: detail.into() }
    }

    /// A 404 answer.
    pub fn not_found(error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::NotFound { error, detail: detail.into() }
    }

    /// The 404 for a topic this copy does not hold.
    pub fn unknown_topic(topic: &str) -> ApiError {
        ApiError::not_found("unknown_topic", format!("no local copy of topic {topic:?}"))
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError::Internal(error)
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(error: tokio::task::JoinError) -> Self {
        ApiError::Internal(Error::Join(error))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, detail) = match self {
            ApiError::BadRequest { error, detail } => (StatusCode::BAD_REQUEST, error, detail),
            ApiError::NotFound { error, detail } => (StatusCode::NOT_FOUND, error, detail),
            ApiError::TooLarge { detail } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", detail),
            ApiError::Internal(source) => {
                tracing::error!(error = %source, cause = ?std::error::Error::source(&source), "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the app's log".to_string(),
                )
            }
        };
        (status, Json(json!({ "error": error, "detail": detail }))).into_response()
    }
}
