//! The REST API: [`router`] over the shared [`AppState`]. Queries read the local copy only, through one
//! topic view at a time, so an answer always comes from one complete copy.
//!
//! This module wires the routes, serves liveness, readiness, metrics and the OpenAPI document, and says
//! how the app's own errors and query parameters become an [`ApiError`] (whose JSON body and status
//! mapping `service` owns); the query endpoints are in `messages.rs` and `keys.rs`, the operational ones in `stats.rs`.
//! It never writes to the copy.

pub mod keys;
pub mod messages;
pub mod openapi;
pub mod stats;

use std::collections::HashMap;
use std::future::Future;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
pub use service::ApiError;
use service::HttpLimits;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use crate::app::AppState;
use crate::error::Error;

/// The largest request body accepted (only `POST /api/v1/refresh` has one).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The default page size of list endpoints.
pub const DEFAULT_LIMIT: usize = 100;

/// The largest page size of list endpoints.
pub const MAX_LIMIT: usize = 1000;

/// Every route of the REST API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_document))
        .route("/api/v1/topics", get(messages::list_topics))
        .route("/api/v1/topics/{topic}/messages", get(messages::list_messages))
        .route("/api/v1/topics/{topic}/messages/{offset}", get(messages::get_message))
        .route("/api/v1/topics/{topic}/keys", get(keys::list_keys))
        .route("/api/v1/topics/{topic}/keys/{key}", get(keys::get_by_key))
        .route("/api/v1/stats", get(stats::stats))
        .route("/api/v1/segments", get(stats::segments))
        .route("/api/v1/refresh", post(stats::refresh))
        .route("/api/v1/dead-letters", get(stats::dead_letters))
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves the REST API on `listener` within `limits` (`service::serve_http`: connection cap, header and
/// idle timeouts) until `shutdown` completes, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    service::serve_http(listener, router(state), limits, shutdown).await;
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if state.status.is_ready() {
        Ok(Json(json!({ "ready": true })))
    } else {
        Err(ApiError::unavailable(
            "not_ready",
            "no complete copy yet: waiting for the first READY or to catch up with the broker",
        ))
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], state.metrics.encode()).into_response()
}

async fn openapi_document() -> Json<serde_json::Value> {
    Json(openapi::document())
}

async fn no_such_route() -> ApiError {
    ApiError::no_such_route("no such endpoint; see /openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// The 404 for a topic this copy does not hold.
pub(crate) fn unknown_topic(topic: &str) -> ApiError {
    ApiError::not_found("unknown_topic", format!("no local copy of topic {topic:?}"))
}

impl From<Error> for ApiError {
    /// Every error of the app's own machinery is a fault of the app: a 500 whose causes go to the log.
    fn from(error: Error) -> ApiError {
        ApiError::internal_with_sources(&error)
    }
}

/// Parses an optional unsigned integer query parameter.
pub(crate) fn parse_u64(
    params: &HashMap<String, String>,
    name: &'static str,
) -> Result<Option<u64>, ApiError> {
    match params.get(name) {
        None => Ok(None),
        Some(text) => text.parse::<u64>().map(Some).map_err(|_| {
            ApiError::bad_request(
                if name == "limit" { "bad_limit" } else { "bad_offset" },
                format!("{name}={text:?} is not an unsigned integer"),
            )
        }),
    }
}

/// The `limit` parameter: default [`DEFAULT_LIMIT`], 1 to [`MAX_LIMIT`].
pub(crate) fn parse_limit(params: &HashMap<String, String>) -> Result<usize, ApiError> {
    match parse_u64(params, "limit")? {
        None => Ok(DEFAULT_LIMIT),
        Some(limit) if (1..=MAX_LIMIT as u64).contains(&limit) => Ok(limit as usize),
        Some(limit) => {
            Err(ApiError::bad_request("bad_limit", format!("limit={limit} is outside 1..={MAX_LIMIT}")))
        }
    }
}
