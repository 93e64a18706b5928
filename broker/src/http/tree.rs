//! This node's place in the tree over HTTP: `GET /api/v1/node` (id, level, parent and pipe state,
//! registration, children) and the per-child positions that `/test/stats` and `/metrics` show. A child's
//! position in a topic is what it acknowledged (its group is its node id), against this node's log end.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use crate::node::Node;

/// One topic as a connected child stands in it.
#[derive(Debug, Clone, Serialize)]
pub struct ChildTopic {
    /// The topic.
    pub topic: String,
    /// The offset the child acknowledged (everything below is durable there); `None` before its first
    /// acknowledgement of the current copy.
    pub acked: Option<u64>,
    /// This node's log end.
    pub end_offset: u64,
    /// Records stored here that the child has not acknowledged.
    pub lag: u64,
}

/// One connected child broker.
#[derive(Debug, Clone, Serialize)]
pub struct ChildInfo {
    /// Its node id.
    pub id: String,
    /// Its address, as this node sees it.
    pub peer: Option<String>,
    /// Where it stands in each topic of this node.
    pub topics: Vec<ChildTopic>,
}

/// The connected children and their positions, by id.
pub fn children(node: &Node) -> Vec<ChildInfo> {
    let logs = node.store.topics();
    let mut children: Vec<ChildInfo> = node
        .members
        .connections()
        .into_iter()
        .filter(|connection| connection.kind == "pipe" && !connection.client_id.is_empty())
        .map(|connection| {
            let topics = logs
                .iter()
                .map(|log| {
                    let end_offset = log.next_offset();
                    let acked = node
                        .groups
                        .committed(&connection.group, log.name())
                        .filter(|committed| committed.uid == log.uid())
                        .map(|committed| committed.next_offset);
                    let lag = end_offset.saturating_sub(acked.unwrap_or_else(|| log.log_start()));
                    ChildTopic { topic: log.name().to_string(), acked, end_offset, lag }
                })
                .collect();
            ChildInfo { id: connection.client_id, peer: connection.peer.map(|peer| peer.to_string()), topics }
        })
        .collect();
    children.sort_by(|a, b| a.id.cmp(&b.id));
    children
}

/// `GET /api/v1/node`.
pub async fn describe(State(node): State<AppState>) -> Response {
    let pipe = node.pipe.snapshot();
    let placement = node.placement.snapshot();
    let consumers =
        node.members.connections().iter().filter(|connection| connection.kind == "consumer").count();
    let parent = pipe.parent.as_ref().map(|parent| {
        serde_json::json!({
            "id": parent.id,
            "http_addr": parent.http_addr,
            "connected": pipe.connected_parent().is_some(),
            "connected_since_ms": pipe.connected_since_ms,
        })
    });
    let body = serde_json::json!({
        "id": node.config.node_id,
        "level": node.config.level.as_str(),
        "parent": parent,
        "pipe": {
            "state": pipe.state,
            "reconnects": pipe.reconnects,
            "last_error": pipe.last_error,
            "parent_end": pipe.parent_end,
            "serving": node.is_serving(),
        },
        "registry": {
            "url": node.registry.as_ref().map(|registry| registry.base_url().to_string()),
            "registered": placement.registered,
            "reachable": placement.registry_reachable,
            "error": placement.registry_error,
            "source": placement.source,
            "assigned_parent": placement.parent,
            "alternates": placement.alternates,
        },
        "children": children(&node),
        "consumers": consumers,
    });
    axum::Json(body).into_response()
}
