//! The HTTP handlers: one function per endpoint, turning requests into topology operations and their results
//! into JSON.
//!
//! This module owns the endpoints' request and response handling only. Rules live in `assign` and `topology`,
//! error statuses in `error`, the routes themselves in `lib.rs`; requests are read with `service`'s
//! extractors, so a malformed one is a JSON error.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use service::{ApiError, ApiJson, ApiPath, ApiQuery};

use crate::auth::check_token;
use crate::error::{Error, RequestError};
use crate::identities::{Identities, NodeIdentity};
use crate::metrics;
use crate::model::{Assignment, Event, HeartbeatRequest, Node, RegisterRequest, TopologyView};
use crate::page;
use crate::registration::Registration;
use crate::state::AppState;
use crate::topology::now_ms;

/// The most parents one `exclude` list may name.
pub const MAX_EXCLUDE: usize = 64;
/// The number of history events returned when no limit is given.
pub const DEFAULT_HISTORY: u64 = 100;

/// The query of `GET /api/v1/nodes/{id}/parent`.
#[derive(Debug, Default, Deserialize)]
pub struct ParentQuery {
    /// Comma-separated ids of parents the child failed to reach.
    pub exclude: Option<String>,
}

/// The query of `GET /api/v1/topology/history`.
#[derive(Debug, Default, Deserialize)]
pub struct HistoryQuery {
    /// How many events to return, newest first; at most the history limit.
    pub limit: Option<u64>,
}

/// Checks that a request for node `id` may be made: with node identities, it carries `id`'s own token;
/// otherwise the shared token, when one is configured. Answers the node's identity, if identities are used.
fn authorize<'s>(
    state: &'s AppState,
    id: &str,
    headers: &HeaderMap,
    body_token: Option<&str>,
) -> Result<Option<&'s NodeIdentity>, RequestError> {
    let settings = state.settings();
    match &settings.identities {
        Some(identities) => identities.authenticate(id, headers, body_token).map(Some).inspect_err(|_| {
            tracing::warn!(node = %id, "refused a request for a node without that node's token");
        }),
        None => check_token(settings.token.as_deref(), headers, body_token).map(|()| None),
    }
}

/// `POST /api/v1/nodes`: register or re-register.
pub async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<RegisterRequest>,
) -> Result<Json<Assignment>, ApiError> {
    let identity = authorize(&state, &request.id, &headers, request.token.as_deref())?;
    let registration = Registration::parse(request)?;
    if let Some(identity) = identity {
        Identities::admit(identity, &registration).inspect_err(|error| {
            tracing::warn!(node = %registration.id, %error, "refused a registration its identity does not allow");
        })?;
    }
    let id = registration.id.clone();
    let assignment = state.run(move |topology| topology.register(registration, Instant::now())).await??;
    tracing::debug!(node = %id, parent = ?assignment.node.parent, "registered");
    Ok(Json(assignment))
}

/// `POST /api/v1/nodes/{id}/heartbeat`.
pub async fn heartbeat(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<Option<HeartbeatRequest>>,
) -> Result<Json<Assignment>, ApiError> {
    // A heartbeat may carry nothing at all.
    let request = request.unwrap_or_default();
    authorize(&state, &id, &headers, request.token.as_deref())?;
    let assignment =
        state.run(move |topology| topology.heartbeat(&id, request.stats, Instant::now())).await??;
    Ok(Json(assignment))
}

/// `GET /api/v1/nodes/{id}/parent?exclude=a,b`.
pub async fn parent(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ParentQuery>,
) -> Result<Json<Assignment>, ApiError> {
    authorize(&state, &id, &headers, None)?;
    let exclude = parse_exclude(query.exclude.as_deref())?;
    let assignment = state.run(move |topology| topology.parent_for(&id, &exclude)).await??;
    Ok(Json(assignment))
}

/// `DELETE /api/v1/nodes/{id}`: graceful deregistration.
pub async fn deregister(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &id, &headers, None)?;
    state.run(move |topology| topology.deregister(&id)).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/nodes`.
pub async fn list_nodes(State(state): State<AppState>) -> Result<Json<Vec<Node>>, ApiError> {
    Ok(Json(state.run(|topology| topology.nodes()).await?))
}

/// `GET /api/v1/nodes/{id}`.
pub async fn get_node(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Node>, ApiError> {
    let lookup = id.clone();
    let node = state.run(move |topology| topology.node(&lookup)).await?;
    node.map(Json).ok_or_else(|| RequestError::UnknownNode(id).into())
}

/// `GET /api/v1/topology`.
pub async fn topology(State(state): State<AppState>) -> Result<Json<TopologyView>, ApiError> {
    Ok(Json(state.run(|topology| topology.view()).await?))
}

/// `GET /api/v1/topology/history?limit=100`.
pub async fn history(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<Vec<Event>>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_HISTORY).min(state.settings().history_limit);
    Ok(Json(state.run(move |topology| topology.history(limit)).await??))
}

/// `GET /`: the topology page.
pub async fn page(State(state): State<AppState>) -> Result<Html<String>, ApiError> {
    let view = state.run(|topology| topology.view()).await?;
    Ok(Html(page::render(&view, now_ms())))
}

/// `GET /health`: the process is up.
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /ready`: the database answers.
pub async fn ready(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    match state.run(|topology| topology.ping()).await? {
        Ok(()) => Ok(Json(json!({"status": "ready"}))),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            Err(RequestError::NotReady.into())
        }
    }
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let counts = state.run(|topology| topology.counts()).await?;
    state.metrics().set_node_counts(&counts);
    let text = state.metrics().encode().map_err(Error::EncodeMetrics)?;
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

/// Any path without a route.
pub async fn no_such_route() -> ApiError {
    ApiError::no_such_route("no such endpoint; the API is listed in docs/REGISTRY.md")
}

/// A route used with a method it does not have.
pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Splits `a,b,c` into ids, ignoring empty items.
fn parse_exclude(text: Option<&str>) -> Result<Vec<String>, RequestError> {
    let ids: Vec<String> = text
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect();
    if ids.len() > MAX_EXCLUDE {
        return Err(RequestError::BadQuery(format!(
            "exclude names {} parents; the limit is {MAX_EXCLUDE}",
            ids.len()
        )));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_lists_are_split_and_bounded() {
        assert_eq!(parse_exclude(None).unwrap(), Vec::<String>::new());
        assert_eq!(parse_exclude(Some("a, b,,c")).unwrap(), vec!["a", "b", "c"]);
        let many = vec!["x"; MAX_EXCLUDE + 1].join(",");
        assert!(matches!(parse_exclude(Some(&many)), Err(RequestError::BadQuery(_))));
    }
}
