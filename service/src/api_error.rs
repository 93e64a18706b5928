//! The one HTTP error of every service: a status, a stable machine-readable `error` code and a `detail` for a
//! person, always answered as the JSON body `{"error": "...", "detail": "..."}`, plus the few facts an error
//! may carry for a client to act on (`"offset": 7`).
//!
//! This module owns the response shape, the rule that a 500 answers a generic body and logs its detail, and
//! the codes every service shares: a body, query string or path that cannot be read, an unknown route, a
//! method not allowed and a fault of the service itself. Each service names its own domain codes (an unknown
//! topic, a refused parent) and converts its own errors into [`ApiError`]; this module never decides when a
//! request fails.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// What a client is told when a request fails.
///
/// Client errors (4xx, and 503 while a service is not ready) name the problem in `detail`. A 500 answers
/// [`INTERNAL_DETAIL`] and the real `detail` goes to the log only, because it may expose internals such as
/// file paths or SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A short, stable, snake_case name of the problem, such as `bad_json` or `unknown_topic`; clients match
    /// on it.
    pub error: &'static str,
    /// A sentence for a person saying what exactly was wrong.
    pub detail: String,
    /// Facts a client may act on without reading `detail` (the offset of the tombstone that deleted a key),
    /// answered beside `error` and `detail`; empty for most errors, and never answered with a 500.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// The `detail` every 500 answers; the real one is in the service's log.
pub const INTERNAL_DETAIL: &str = "the service failed to handle this request; see its log";

/// The JSON body of every error answer.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    /// The machine-readable code.
    error: &'a str,
    /// The human-readable explanation.
    detail: &'a str,
    /// The error's [`ApiError::fields`], flattened into the body.
    #[serde(flatten)]
    fields: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    /// An answer with any status and code.
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status, error, detail: detail.into(), fields: serde_json::Map::new() }
    }

    /// The same error with `name: value` added to its [`ApiError::fields`]. `name` must not be `error` or
    /// `detail`.
    pub fn with_field(mut self, name: &'static str, value: impl Into<serde_json::Value>) -> ApiError {
        self.fields.insert(name.to_string(), value.into());
        self
    }

    /// A 400 answer: the request is malformed.
    pub fn bad_request(error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error, detail)
    }

    /// A 401 answer: a credential is missing or wrong.
    pub fn unauthorized(error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, error, detail)
    }

    /// A 403 answer: the request is understood and refused.
    pub fn forbidden(error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, error, detail)
    }

    /// A 404 answer: the thing asked for does not exist.
    pub fn not_found(error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, error, detail)
    }

    /// A 409 answer: the request contradicts the service's state.
    pub fn conflict(error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, error, detail)
    }

    /// A 503 answer: the service cannot serve this now (not ready, out of disk space).
    pub fn unavailable(error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error, detail)
    }

    /// 400 `bad_json`: the body is not JSON, or not the shape the endpoint expects.
    pub fn bad_json(detail: impl Into<String>) -> ApiError {
        ApiError::bad_request("bad_json", detail)
    }

    /// 400 `bad_body`: the body could not be read at all.
    pub fn bad_body(detail: impl Into<String>) -> ApiError {
        ApiError::bad_request("bad_body", detail)
    }

    /// 400 `bad_query`: the query string, or one of its parameters, cannot be read.
    pub fn bad_query(detail: impl Into<String>) -> ApiError {
        ApiError::bad_request("bad_query", detail)
    }

    /// 400 `bad_path`: a parameter in the path cannot be read.
    pub fn bad_path(detail: impl Into<String>) -> ApiError {
        ApiError::bad_request("bad_path", detail)
    }

    /// 413 `body_too_large`: the body is over the service's limit.
    pub fn body_too_large(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", detail)
    }

    /// 404 `no_such_route`: no route matches the path. `detail` says where the routes are listed.
    pub fn no_such_route(detail: impl Into<String>) -> ApiError {
        ApiError::not_found("no_such_route", detail)
    }

    /// 405 `method_not_allowed`: the path exists, but not with this method.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this endpoint does not accept that method",
        )
    }

    /// 500 `internal`: a fault of the service itself. `error` and its chain of sources are logged when the
    /// answer is sent; the client gets [`INTERNAL_DETAIL`].
    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", error.to_string())
    }

    /// 500 `internal` for an error with sources: the detail keeps every cause, `: `-separated, so that the
    /// log line names the root cause.
    pub fn internal_with_sources(error: &(dyn std::error::Error + 'static)) -> ApiError {
        let mut detail = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        ApiError::internal(detail)
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
        let (detail, fields) = if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = self.error, detail = %self.detail, "request failed");
            (INTERNAL_DETAIL, None)
        } else {
            (self.detail.as_str(), Some(&self.fields))
        };
        (self.status, Json(ErrorBody { error: self.error, detail, fields })).into_response()
    }
}

impl From<tokio::task::JoinError> for ApiError {
    /// A blocking task that panicked or was cancelled is the service's own fault.
    fn from(error: tokio::task::JoinError) -> ApiError {
        ApiError::internal(format!("a blocking task failed: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(error: ApiError) -> (StatusCode, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn client_errors_name_the_problem() {
        let (status, body) = answer(ApiError::not_found("unknown_topic", "no topic \"x\"")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, serde_json::json!({"error": "unknown_topic", "detail": "no topic \"x\""}));
        let (status, body) = answer(ApiError::no_such_route("see the README")).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("no_such_route")));
        let (status, body) = answer(ApiError::method_not_allowed()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
        );
        let (status, body) = answer(ApiError::body_too_large("over 64 KiB")).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large")));
        let (status, body) = answer(ApiError::unavailable("not_ready", "no copy yet")).await;
        assert_eq!((status, body["detail"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("no copy yet")));
        let deleted = ApiError::not_found("deleted", "key \"k\" was deleted").with_field("offset", 7);
        let (status, body) = answer(deleted).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body,
            serde_json::json!({"error": "deleted", "detail": "key \"k\" was deleted", "offset": 7})
        );
    }

    #[tokio::test]
    async fn internal_errors_hide_their_detail_from_clients() {
        let io = std::io::Error::other("disk on fire at /var/lib/relay");
        let error = ApiError::internal_with_sources(&io);
        assert!(error.detail.contains("/var/lib/relay"));
        let (status, body) = answer(error).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, serde_json::json!({"error": "internal", "detail": INTERNAL_DETAIL}));
    }

    #[test]
    fn sources_are_kept_in_the_detail() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("cannot read the index")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let error = ApiError::internal_with_sources(&Outer(std::io::Error::other("short read")));
        assert_eq!(error.detail, "cannot read the index: short read");
    }
}
