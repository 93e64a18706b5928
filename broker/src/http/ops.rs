//! Operations endpoints: liveness (`/health`), readiness (`/ready`) and Prometheus metrics (`/metrics`).
//! Gauges that mirror state owned elsewhere (log offsets, storage bytes, group and child lag) are refreshed
//! here, at scrape time, so the data paths never pay for them.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::error::ApiError;
use crate::metrics::{ChildLabels, GroupLabels, Metrics, gauge_value};
use crate::node::Node;

/// `GET /health`: 200 while the process is serving HTTP at all.
pub async fn health(State(node): State<AppState>) -> Response {
    let body = json!({
        "status": "ok",
        "node_id": node.config.node_id,
        "level": node.config.level.as_str(),
        "uptime_s": node.started.elapsed().as_secs(),
    });
    axum::Json(body).into_response()
}

/// `GET /ready`: 200 while the broker serves its copy (ROOT always; a child once its pipe streams, or
/// while it holds topics from before to serve), 503 before that and once it is shutting down.
pub async fn ready(State(node): State<AppState>) -> Response {
    if node.shutdown.is_triggered() {
        return ApiError::unavailable("shutting_down", "the broker is shutting down").into_response();
    }
    if !node.is_serving() {
        let detail = "no pipe to a parent yet and no copy of any topic to serve";
        return ApiError::unavailable("not_connected", detail).into_response();
    }
    axum::Json(json!({"status": "ready", "pipe": node.pipe.snapshot().state})).into_response()
}

/// `GET /metrics`: every metric in the Prometheus text format.
pub async fn metrics(State(node): State<AppState>) -> Response {
    refresh_gauges(&node);
    let text = node.metrics.encode();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
        .into_response()
}

/// Copies offsets, sizes and lags into their gauges.
fn refresh_gauges(node: &Node) {
    let metrics = &node.metrics;
    let mut storage_bytes = 0u64;
    for log in node.store.topics() {
        let labels = Metrics::topic(log.name());
        metrics.log_end_offset.get_or_create(&labels).set(gauge_value(log.next_offset()));
        metrics.log_start_offset.get_or_create(&labels).set(gauge_value(log.log_start()));
        if log.compacts() {
            metrics.delete_horizon.get_or_create(&labels).set(gauge_value(log.delete_horizon()));
        }
        storage_bytes = storage_bytes.saturating_add(log.stats().size_bytes);
    }
    metrics.storage_bytes.set(gauge_value(storage_bytes));
    metrics.damaged_segments.set(gauge_value(node.store.damaged_segments().len() as u64));
    // Groups of deleted topics must disappear, so the family is rebuilt on every scrape.
    metrics.group_lag.clear();
    for row in node.groups.snapshot() {
        if let Some(log) = node.store.topic(&row.topic)
            && log.uid() == row.committed.uid
        {
            let lag = log.next_offset().saturating_sub(row.committed.next_offset);
            let labels = GroupLabels { group: row.group, topic: row.topic };
            metrics.group_lag.get_or_create(&labels).set(gauge_value(lag));
        }
    }
    // Only connected children are shown, so this family is rebuilt too.
    metrics.child_lag.clear();
    for child in super::tree::children(node) {
        for topic in child.topics {
            let labels = ChildLabels { child: child.id.clone(), topic: topic.topic };
            metrics.child_lag.get_or_create(&labels).set(gauge_value(topic.lag));
        }
    }
}
