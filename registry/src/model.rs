//! The registry's vocabulary as it appears on the wire: levels, nodes, heartbeat statistics, the assignment
//! answer, the topology view and history events.
//!
//! This module owns JSON shapes only. It does not check input (`registration`), decide parents (`assign`),
//! keep state (`topology`) or touch SQLite (`db`).

use std::collections::BTreeMap;

pub use protocol::Level;
use serde::{Deserialize, Serialize};

/// A node's labels, such as `region` or `store`. Sorted so that JSON output and comparisons are stable.
pub type Labels = BTreeMap<String, String>;

/// Whether the registry currently counts a node as alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// The node has registered or heartbeated within the expiry time.
    Alive,
    /// The node has been silent for longer than the expiry time; it is never chosen as a parent.
    Expired,
}

impl NodeState {
    /// The lower-case name used in JSON and in SQLite.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Alive => "alive",
            NodeState::Expired => "expired",
        }
    }
}

/// A broker as the registry knows it. This is the `Node` object of the HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The broker's unique id.
    pub id: String,
    /// The broker's level in the tree.
    pub level: Level,
    /// The broker's labels; they restrict which parents it may get.
    pub labels: Labels,
    /// The `host:port` of the broker's HTTP API, where its children open their pipe.
    pub http_addr: String,
    /// The `host:port` where the broker serves TCP consumers, if it does.
    pub tcp_addr: Option<String>,
    /// The parent the node asked for at registration, if any.
    pub preferred_parent: Option<String>,
    /// The id of the parent assigned to this node, if one is.
    pub parent: Option<String>,
    /// Whether the node is alive or expired.
    pub state: NodeState,
    /// When the node first registered, in milliseconds since the Unix epoch.
    pub registered_ms: u64,
    /// When the node last registered or heartbeated, in milliseconds since the Unix epoch.
    pub last_heartbeat_ms: u64,
    /// The body of the node's last heartbeat.
    pub stats: HeartbeatStats,
}

/// What a broker reports about itself in a heartbeat. Every field is optional; unknown fields are ignored so
/// that brokers may report more than this registry displays.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatStats {
    /// The broker's own description of its state, such as `streaming` or `connecting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The parent the broker is actually connected to, which may differ from the one assigned after a failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Where each topic the broker carries stands.
    #[serde(default)]
    pub topics: BTreeMap<String, TopicStats>,
    /// The ids of the children connected to the broker.
    #[serde(default)]
    pub children: Vec<String>,
    /// How many TCP consumers are connected to the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers: Option<u64>,
}

/// Where one topic stands at a broker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicStats {
    /// The offset the next stored record will get at this broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_offset: Option<u64>,
    /// How many records this broker is behind its parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
}

/// The body of `POST /api/v1/nodes`.
#[derive(Debug, Clone, Deserialize)]
pub struct RegisterRequest {
    /// The broker's unique id.
    pub id: String,
    /// The level name; parsed by the handler so that an unknown level gets its own clear error.
    pub level: String,
    /// The broker's labels.
    #[serde(default)]
    pub labels: Labels,
    /// The `host:port` of the broker's HTTP API.
    pub http_addr: String,
    /// The `host:port` where the broker serves TCP consumers, if it does.
    #[serde(default)]
    pub tcp_addr: Option<String>,
    /// A parent the broker would like, honoured when it is alive, one level up and label-compatible.
    #[serde(default)]
    pub preferred_parent: Option<String>,
    /// The shared token, for clients that cannot set an `Authorization` header.
    #[serde(default)]
    pub token: Option<String>,
}

/// The body of `POST /api/v1/nodes/{id}/heartbeat`: the statistics plus an optional token.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HeartbeatRequest {
    /// What the broker reports about itself.
    #[serde(flatten)]
    pub stats: HeartbeatStats,
    /// The shared token, for clients that cannot set an `Authorization` header.
    #[serde(default)]
    pub token: Option<String>,
}

/// The answer to register, heartbeat and parent requests: the node, its parent and the alternates it may fail
/// over to, and the timing it must keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The node as the registry now knows it.
    pub node: Node,
    /// The assigned parent; `None` for ROOT and while no live candidate exists (the broker retries).
    pub parent: Option<Node>,
    /// Other candidate parents, least loaded first, for failover without a round trip.
    pub alternates: Vec<Node>,
    /// How often the broker should heartbeat.
    pub heartbeat_interval_ms: u64,
    /// How long a silent broker stays alive.
    pub expiry_ms: u64,
}

/// One node of the topology tree: the node and the nodes assigned to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeNode {
    /// The node itself.
    #[serde(flatten)]
    pub node: Node,
    /// The nodes whose parent this node is, by id.
    pub children: Vec<TreeNode>,
}

/// The answer to `GET /api/v1/topology`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopologyView {
    /// Every node, by id.
    pub nodes: Vec<Node>,
    /// The ROOT nodes with their subtrees, then every node that is not attached to a parent one level up.
    pub roots: Vec<TreeNode>,
}

/// What happened to a node, as recorded in the topology history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A node registered for the first time, or re-registered while alive.
    Registered,
    /// A node without a parent got one.
    ParentAssigned,
    /// A node's parent changed to another node or to none.
    ParentChanged,
    /// A node stopped heartbeating for longer than the expiry time.
    Expired,
    /// A node deregistered itself.
    Deregistered,
    /// An expired node heartbeated or registered again.
    Revived,
}

impl EventKind {
    /// The snake-case name used in JSON and in SQLite.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Registered => "registered",
            EventKind::ParentAssigned => "parent_assigned",
            EventKind::ParentChanged => "parent_changed",
            EventKind::Expired => "expired",
            EventKind::Deregistered => "deregistered",
            EventKind::Revived => "revived",
        }
    }

    /// The kind named by `text`, if any.
    pub fn parse(text: &str) -> Option<EventKind> {
        [
            EventKind::Registered,
            EventKind::ParentAssigned,
            EventKind::ParentChanged,
            EventKind::Expired,
            EventKind::Deregistered,
            EventKind::Revived,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// One entry of the topology history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// A sequence number that grows with every event.
    pub seq: i64,
    /// When it happened, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The node it happened to.
    pub node: String,
    /// A human-readable explanation, such as the old and new parent.
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kinds_round_trip_through_their_names() {
        for kind in [EventKind::Registered, EventKind::ParentChanged, EventKind::Revived] {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert_eq!(EventKind::parse("nope"), None);
    }

    #[test]
    fn heartbeat_body_accepts_the_documented_shape_and_an_empty_object() {
        let body = r#"{"state":"streaming","parent":"l2-eu","topics":{"prices":{"end_offset":123,"lag":0}},
                       "children":["pos-1"],"consumers":2,"token":"t","extra":true}"#;
        let request: HeartbeatRequest = serde_json::from_str(body).unwrap();
        assert_eq!(request.token.as_deref(), Some("t"));
        assert_eq!(request.stats.parent.as_deref(), Some("l2-eu"));
        assert_eq!(request.stats.topics["prices"].end_offset, Some(123));
        assert_eq!(request.stats.consumers, Some(2));
        let empty: HeartbeatRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(empty.stats, HeartbeatStats::default());
    }
}
