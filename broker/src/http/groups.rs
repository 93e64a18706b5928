//! Consumer groups over HTTP: their committed positions and lag, and the operator's full refresh
//! (`POST /api/v1/groups/{group}/refresh`, optional JSON `{"topic": "..."}`). A refresh reaches connected
//! members at once; it is also recorded, so a group with no live member refreshes at its next HELLO, and a
//! refresh cut short by a disconnect is done again.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use service::{ApiJson, ApiPath};

use super::{AppState, checked_topic};
use crate::error::ApiError;
use crate::node::Node;

/// One group's position in one topic.
#[derive(Debug, Clone, Serialize)]
pub struct GroupPosition {
    /// The group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The committed offset: every record below it is acknowledged.
    pub committed: u64,
    /// The topic's end offset, if the topic exists with the uid the commit was made for.
    pub end_offset: Option<u64>,
    /// Records not yet acknowledged, when `end_offset` is known.
    pub lag: Option<u64>,
    /// Whether an operator refresh is waiting or running.
    pub refresh_pending: bool,
}

/// Every group position, with lag against the current logs.
pub fn positions(node: &Node) -> Vec<GroupPosition> {
    node.groups
        .snapshot()
        .into_iter()
        .map(|row| {
            let end_offset = node
                .store
                .topic(&row.topic)
                .filter(|log| log.uid() == row.committed.uid)
                .map(|log| log.next_offset());
            GroupPosition {
                refresh_pending: node.groups.refresh_pending(&row.group, &row.topic),
                lag: end_offset.map(|end| end.saturating_sub(row.committed.next_offset)),
                group: row.group,
                topic: row.topic,
                committed: row.committed.next_offset,
                end_offset,
            }
        })
        .collect()
}

/// `GET /api/v1/groups`.
pub async fn list(State(node): State<AppState>) -> Response {
    axum::Json(serde_json::json!({ "groups": positions(&node) })).into_response()
}

/// The optional body of a refresh request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// Refresh only this topic; all of the group's topics if absent.
    pub topic: Option<String>,
}

/// The answer to a refresh request.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshAnswer {
    /// The group.
    pub group: String,
    /// Every topic the refresh covers.
    pub topics: Vec<String>,
    /// The topics whose connected member was told now.
    pub live: Vec<String>,
}

/// `POST /api/v1/groups/{group}/refresh`, with an optional body naming one topic.
pub async fn refresh(
    State(node): State<AppState>,
    ApiPath(group): ApiPath<String>,
    ApiJson(request): ApiJson<Option<RefreshRequest>>,
) -> Result<Response, ApiError> {
    let request = request.unwrap_or_default();
    let topics: Vec<String> = match &request.topic {
        Some(topic) => {
            checked_topic(topic)?;
            if node.store.topic(topic).is_none() {
                return Err(ApiError::not_found("unknown_topic", format!("topic {topic:?} does not exist")));
            }
            vec![topic.clone()]
        }
        None => {
            let known: BTreeSet<String> =
                node.groups.topics_of(&group).into_iter().chain(node.members.topics_of(&group)).collect();
            if known.is_empty() {
                return Err(ApiError::not_found(
                    "unknown_group",
                    format!("group {group:?} has no committed offset and no connected member; name a topic"),
                ));
            }
            known.into_iter().collect()
        }
    };
    for topic in &topics {
        node.groups.request_refresh(&group, topic);
    }
    let live = node.members.request_refresh(&group, request.topic.as_deref());
    tracing::info!(%group, ?topics, ?live, "operator requested a full refresh");
    Ok(axum::Json(RefreshAnswer { group, topics, live }).into_response())
}
