//! The broker's HTTP API: routes, the JSON and query extractors that turn every malformed request into an
//! [`ApiError`] JSON body, and the request body limit. Handlers live in one module per area; this module
//! owns the routing table only. The pipe endpoint (`GET /api/v1/pipe`, a WebSocket running the delivery
//! session with `Role::Pipe`) is routed here and lives in `pipe/server.rs`.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::node::Node;

mod groups;
mod ingest;
mod ops;
mod test_api;
mod test_sqlite;
mod topics;
pub mod tree;

/// The state every handler gets.
pub type AppState = Arc<Node>;

/// The HTTP API of one broker. The `/test/*` routes exist only with `--test-endpoints`.
pub fn router(node: AppState) -> Router {
    let max_body = usize::try_from(node.config.max_body_bytes).unwrap_or(usize::MAX);
    let mut router = Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/api/v1/topics", get(topics::list))
        .route("/api/v1/topics/{topic}", get(topics::describe))
        .route("/api/v1/topics/{topic}/records", get(topics::records))
        .route("/api/v1/topics/{topic}/messages", post(ingest::publish))
        .route("/api/v1/groups", get(groups::list))
        .route("/api/v1/groups/{group}/refresh", post(groups::refresh))
        .route("/api/v1/node", get(tree::describe))
        .route("/api/v1/pipe", get(crate::pipe::server::endpoint));
    if node.config.test_endpoints {
        router = router
            .route("/test/inject-messages", post(test_api::inject))
            .route("/test/load-from-sqlite", post(test_sqlite::load))
            .route("/test/stats", get(test_api::stats));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(node)
}

/// Answers a path no route matches.
async fn not_found() -> ApiError {
    ApiError::not_found("no_such_route", "no such endpoint; see the API list in the README")
}

/// Answers a known path with the wrong method.
async fn method_not_allowed() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        error: "method_not_allowed",
        detail: "this endpoint does not accept that method".to_string(),
    }
}

/// A JSON body whose rejection is an [`ApiError`]: 400 for bad JSON or a wrong content type, 413 for a
/// body over the limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// Maps axum's JSON rejections onto our error body.
fn json_rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::too_large(format!("the request body exceeds the limit: {}", rejection.body_text()));
    }
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::bad_request(
            "bad_content_type",
            "send the body as JSON with Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(error) => ApiError::bad_request("bad_json", error.body_text()),
        JsonRejection::JsonDataError(error) => ApiError::bad_request("bad_json", error.body_text()),
        other => ApiError::bad_request("bad_body", other.body_text()),
    }
}

/// A query string whose rejection is an [`ApiError`] (400).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

/// Maps axum's query rejections onto our error body.
fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::bad_request("bad_query", rejection.body_text())
}

/// Checks a topic name from a path.
pub fn checked_topic(topic: &str) -> Result<(), ApiError> {
    protocol::validate_topic_name(topic).map_err(|reason| ApiError::bad_request("bad_topic_name", reason))
}
