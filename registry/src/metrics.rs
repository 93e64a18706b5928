//! The registry's Prometheus metrics: the series, the middleware that counts HTTP requests, and the text
//! encoding served at `/metrics`.
//!
//! This module owns metric names and labels. It does not know when nodes register or expire; `topology` and the
//! handlers bump the counters, and the node gauges are refreshed from the topology just before each scrape.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::model::{Level, NodeState};

/// The content type of the OpenMetrics text format, which Prometheus scrapes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The labels of `registry_nodes`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// The node level, such as `L3`.
    pub level: &'static str,
    /// `alive` or `expired`.
    pub state: &'static str,
}

/// The labels of `registry_http_requests`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The HTTP method.
    pub method: String,
    /// The route template (such as `/api/v1/nodes/{id}`), never the raw path, so that ids do not multiply series.
    pub route: String,
    /// The response status code.
    pub status: u16,
}

/// Every series the registry exports. Cloning shares the series.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry that encodes the series below.
    registry: Arc<Registry>,
    /// Nodes by level and state, refreshed before each scrape.
    pub nodes: Family<NodeLabels, Gauge>,
    /// Successful registrations, including re-registrations.
    pub registrations: Counter,
    /// Accepted heartbeats.
    pub heartbeats: Counter,
    /// Nodes that went from alive to expired.
    pub expiries: Counter,
    /// Parent assignments that changed a node's parent, including to or from none.
    pub parent_changes: Counter,
    /// HTTP requests by method, route and status.
    pub http_requests: Family<HttpLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates the series and registers them under the `registry_` prefix.
    pub fn new() -> Metrics {
        let nodes = Family::<NodeLabels, Gauge>::default();
        let registrations = Counter::default();
        let heartbeats = Counter::default();
        let expiries = Counter::default();
        let parent_changes = Counter::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let mut registry = Registry::with_prefix("registry");
        registry.register("nodes", "Registered nodes by level and state", nodes.clone());
        registry.register("registrations", "Successful node registrations", registrations.clone());
        registry.register("heartbeats", "Accepted node heartbeats", heartbeats.clone());
        registry.register("expiries", "Nodes expired for missing heartbeats", expiries.clone());
        registry.register("parent_changes", "Changes of a node's assigned parent", parent_changes.clone());
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            http_requests.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            nodes,
            registrations,
            heartbeats,
            expiries,
            parent_changes,
            http_requests,
        }
    }

    /// Sets `registry_nodes` from `counts`, writing every level and state so that a state that emptied shows 0
    /// instead of its last value.
    pub fn set_node_counts(&self, counts: &[(Level, NodeState, u64)]) {
        for level in Level::ALL {
            for state in [NodeState::Alive, NodeState::Expired] {
                let count = counts
                    .iter()
                    .filter(|(counted_level, counted_state, _)| {
                        *counted_level == level && *counted_state == state
                    })
                    .map(|(_, _, count)| *count)
                    .sum::<u64>();
                let labels = NodeLabels { level: level.as_str(), state: state.as_str() };
                self.nodes.get_or_create(&labels).set(i64::try_from(count).unwrap_or(i64::MAX));
            }
        }
    }

    /// Encodes every series in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Middleware that counts every request by method, route template and status.
pub async fn count_requests(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let labels = HttpLabels { method, route, status: response.status().as_u16() };
    metrics.http_requests.get_or_create(&labels).inc();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_encoded() {
        let metrics = Metrics::new();
        metrics.registrations.inc();
        metrics.set_node_counts(&[(Level::L3, NodeState::Alive, 2)]);
        let text = metrics.encode().unwrap();
        assert!(text.contains("registry_registrations_total 1"), "{text}");
        assert!(text.contains("registry_nodes{level=\"L3\",state=\"alive\"} 2"), "{text}");
        assert!(text.contains("registry_nodes{level=\"ROOT\",state=\"expired\"} 0"), "{text}");
        assert!(text.contains("registry_heartbeats_total 0"), "{text}");
        assert!(text.contains("registry_expiries_total 0"), "{text}");
        assert!(text.contains("registry_parent_changes_total 0"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
