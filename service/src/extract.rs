//! Request extractors whose every failure is an [`ApiError`], so that none of axum's plain-text rejections
//! reaches a client: [`ApiJson`] for JSON bodies, [`ApiBytes`] for raw ones, [`ApiQuery`] for query
//! strings, [`ApiPath`] for path parameters.
//!
//! This module owns how a request's body, query string and path are read and what a malformed one is
//! answered. It does not know what the handlers do with them, nor the body limit (each router sets it with
//! `DefaultBodyLimit`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::api_error::ApiError;

/// A JSON body.
///
/// The content type is not checked, so that brokers, shell scripts and `curl -d` do not fail over a
/// missing or generic header. An empty (or all-whitespace) body reads as JSON `null`: a handler whose body
/// is optional takes `ApiJson<Option<T>>`, and any other answers `bad_json` saying the body is empty.
///
/// Failures: 413 `body_too_large` over the router's body limit, 400 `bad_body` for a body that cannot be
/// read, 400 `bad_json` for one that is not JSON or not the expected shape (the detail names the field).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = Bytes::from_request(request, state).await.map_err(body_rejection)?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return serde_json::from_slice(b"null").map(ApiJson).map_err(|_| {
                ApiError::bad_json("the request body is empty; this endpoint needs a JSON body")
            });
        }
        let mut deserializer = serde_json::Deserializer::from_slice(&body);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(json_error)?;
        deserializer.end().map_err(|error| ApiError::bad_json(error.to_string()))?;
        Ok(ApiJson(value))
    }
}

/// A raw body, for endpoints that take binary data.
///
/// Failures: 413 `body_too_large` over the router's body limit, 400 `bad_body` for a body that cannot be
/// read. What the bytes must hold is the handler's business.
#[derive(Debug, Clone, Default)]
pub struct ApiBytes(pub Bytes);

impl<S> FromRequest<S> for ApiBytes
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(request, state).await.map(ApiBytes).map_err(body_rejection)
    }
}

/// A query string, such as `?from=10&limit=100`. A malformed one is 400 `bad_query`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection| ApiError::bad_query(rejection.body_text()))
    }
}

/// Path parameters, such as the `{topic}` of `/api/v1/topics/{topic}`. One that cannot be read (not
/// UTF-8 once percent-decoded, or not the expected type) is 400 `bad_path`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state).await.map(|Path(value)| ApiPath(value)).map_err(
            |rejection| {
                // A route whose pattern does not match its extractor is our bug, not the client's.
                if rejection.status().is_server_error() {
                    ApiError::internal(rejection.body_text())
                } else {
                    ApiError::bad_path(rejection.body_text())
                }
            },
        )
    }
}

/// Maps a body that could not be buffered onto our error body.
fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::body_too_large(format!(
            "the request body is over this service's limit: {}",
            rejection.body_text()
        ))
    } else {
        ApiError::bad_body(format!("cannot read the request body: {}", rejection.body_text()))
    }
}

/// Names the field that failed, when there is one: `records[2].key: invalid type: ...`.
fn json_error(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path().to_string();
    if path == "." {
        ApiError::bad_json(error.into_inner().to_string())
    } else {
        ApiError::bad_json(format!("{path}: {}", error.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use axum::Router;
    use axum::body::Body;
    use axum::extract::DefaultBodyLimit;
    use axum::routing::{get, post};
    use serde::Deserialize;
    use tower::ServiceExt;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Record {
        key: String,
    }

    fn router() -> Router {
        Router::new()
            .route("/required", post(|ApiJson(record): ApiJson<Record>| async move { record.key }))
            .route(
                "/optional",
                post(|ApiJson(record): ApiJson<Option<Record>>| async move {
                    record.map_or_else(|| "none".to_string(), |record| record.key)
                }),
            )
            .route(
                "/query",
                get(|ApiQuery(query): ApiQuery<HashMap<String, u64>>| async move { format!("{query:?}") }),
            )
            .route("/path/{n}", get(|ApiPath(n): ApiPath<u64>| async move { n.to_string() }))
            .route("/bytes", post(|ApiBytes(bytes): ApiBytes| async move { bytes.len().to_string() }))
            .layer(DefaultBodyLimit::max(64))
    }

    async fn call(method: &str, uri: &str, body: &str) -> (StatusCode, String) {
        let request = Request::builder().method(method).uri(uri).body(Body::from(body.to_string())).unwrap();
        let response = router().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    fn code(body: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(value["detail"].as_str().is_some_and(|detail| !detail.is_empty()), "{body}");
        value["error"].as_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn bodies_are_json_whatever_the_content_type() {
        assert_eq!(call("POST", "/required", r#"{"key": "a"}"#).await, (StatusCode::OK, "a".to_string()));
        assert_eq!(call("POST", "/optional", "").await, (StatusCode::OK, "none".to_string()));
        assert_eq!(call("POST", "/optional", " \n").await, (StatusCode::OK, "none".to_string()));
        assert_eq!(call("POST", "/optional", r#"{"key": "b"}"#).await, (StatusCode::OK, "b".to_string()));
    }

    #[tokio::test]
    async fn bad_bodies_are_json_errors() {
        for body in ["", "{not json", "[]", r#"{"key": 1}"#, r#"{"key": "a"} trailing"#, r#"{"kye": "a"}"#] {
            let (status, answer) = call("POST", "/required", body).await;
            assert_eq!((status, code(&answer)), (StatusCode::BAD_REQUEST, "bad_json".to_string()), "{body}");
        }
        let (_, answer) = call("POST", "/required", r#"{"key": 1}"#).await;
        assert!(answer.contains("key: invalid type"), "{answer}");
        let (status, answer) =
            call("POST", "/required", &format!(r#"{{"key": "{}"}}"#, "x".repeat(100))).await;
        assert_eq!((status, code(&answer)), (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large".to_string()));
    }

    #[tokio::test]
    async fn raw_bodies_are_bytes_within_the_limit() {
        assert_eq!(call("POST", "/bytes", "\u{0}\u{1}binary").await, (StatusCode::OK, "8".to_string()));
        let (status, answer) = call("POST", "/bytes", &"x".repeat(100)).await;
        assert_eq!((status, code(&answer)), (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large".to_string()));
    }

    #[tokio::test]
    async fn bad_queries_and_paths_are_json_errors() {
        assert_eq!(call("GET", "/query?from=1", "").await.0, StatusCode::OK);
        let (status, answer) = call("GET", "/query?from=x", "").await;
        assert_eq!((status, code(&answer)), (StatusCode::BAD_REQUEST, "bad_query".to_string()));
        assert_eq!(call("GET", "/path/7", "").await, (StatusCode::OK, "7".to_string()));
        let (status, answer) = call("GET", "/path/seven", "").await;
        assert_eq!((status, code(&answer)), (StatusCode::BAD_REQUEST, "bad_path".to_string()));
    }
}
