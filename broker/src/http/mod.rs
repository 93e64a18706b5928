//! The broker's HTTP API: routes, the JSON answers to unknown routes and methods, and the request body
//! limit. Handlers live in one module per area and read requests with `service`'s extractors, so every
//! malformed request is an [`ApiError`] JSON body; this module owns the routing table only. The pipe
//! endpoint (`GET /api/v1/pipe`, a WebSocket running the delivery session with `Role::Pipe`) is routed here
//! and lives in `pipe/server.rs`.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::error::ApiError;
use crate::node::Node;

mod groups;
mod ingest;
mod ops;
mod settings;
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
        .route("/api/v1/topics/{topic}", get(topics::describe).put(settings::put))
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
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(node)
}

/// Answers a path no route matches.
async fn no_such_route() -> ApiError {
    ApiError::no_such_route("no such endpoint; see the API list in the README")
}

/// Answers a known path with the wrong method.
async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Checks a topic name from a path.
pub fn checked_topic(topic: &str) -> Result<(), ApiError> {
    protocol::validate_topic_name(topic).map_err(|reason| ApiError::bad_request("bad_topic_name", reason))
}
