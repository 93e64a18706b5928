//! Ingest at ROOT: `POST /api/v1/topics/{topic}/messages` takes one record or an array, appends them (the
//! first publish creates the topic with a new uid) and answers with the assigned offsets once they are
//! durable. Any other level refuses with 409: data enters the tree at ROOT only.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use protocol::{IngestBody, NewRecord, OwnedRecord, TopicUid};
use serde::Serialize;
use service::{ApiJson, ApiPath};
use storage::Log;

use super::{AppState, checked_topic};
use crate::error::{ApiError, storage_api_error};
use crate::node::Node;

/// The answer to a publish.
#[derive(Debug, Clone, Serialize)]
pub struct Appended {
    /// The topic.
    pub topic: String,
    /// The topic's uid, 32 hex digits.
    pub uid: String,
    /// Offset of the first record stored.
    pub first_offset: u64,
    /// Offset of the last record stored.
    pub last_offset: u64,
    /// Number of records stored.
    pub count: u64,
    /// The timestamp ROOT gave the records.
    pub timestamp_ms: u64,
}

/// `POST /api/v1/topics/{topic}/messages`.
pub async fn publish(
    State(node): State<AppState>,
    ApiPath(topic): ApiPath<String>,
    ApiJson(body): ApiJson<IngestBody>,
) -> Result<Response, ApiError> {
    refuse_unless_root(&node)?;
    checked_topic(&topic)?;
    let records = body
        .into_records()
        .into_iter()
        .enumerate()
        .map(|(index, record)| {
            record
                .into_owned_record()
                .map_err(|error| ApiError::bad_request("bad_record", format!("record {index}: {error}")))
        })
        .collect::<Result<Vec<OwnedRecord>, ApiError>>()?;
    if records.is_empty() {
        return Err(ApiError::bad_request("no_records", "the body holds no records"));
    }
    let log = topic_for_publish(&node, &topic)?;
    let appended = append_durably(&node, log, records).await?;
    Ok(axum::Json(appended).into_response())
}

/// Refuses ingest on a node that is not ROOT.
pub fn refuse_unless_root(node: &Node) -> Result<(), ApiError> {
    if node.is_root() {
        return Ok(());
    }
    Err(ApiError::conflict(
        "not_root",
        format!(
            "this is a {} node; data enters the tree at ROOT only: publish to the ROOT broker",
            node.config.level.as_str()
        ),
    ))
}

/// The topic's log, created with a new random uid by the first publish.
pub fn topic_for_publish(node: &Node, topic: &str) -> Result<Arc<Log>, ApiError> {
    if let Some(log) = node.store.topic(topic) {
        return Ok(log);
    }
    let uid = TopicUid(uuid::Uuid::new_v4().as_u128());
    let log = node.store.get_or_create_topic(topic, uid).map_err(storage_api_error)?;
    if log.uid() == uid {
        tracing::info!(%topic, %uid, "created topic");
    }
    Ok(log)
}

/// Appends records and returns once they are durable: storage applies the flush policy before it returns
/// (concurrent requests share a flush); only the unsafe benchmark mode answers without one.
pub async fn append_durably(
    node: &Node,
    log: Arc<Log>,
    records: Vec<OwnedRecord>,
) -> Result<Appended, ApiError> {
    let n_bytes: u64 = records.iter().map(|record| record.as_new_record().encoded_len() as u64).sum();
    let outcome = tokio::task::spawn_blocking(move || {
        let new_records: Vec<NewRecord<'_>> = records.iter().map(OwnedRecord::as_new_record).collect();
        let outcome = log.append(&new_records)?;
        Ok::<_, storage::Error>((outcome, log))
    })
    .await?;
    let (outcome, log) = outcome.map_err(storage_api_error)?;
    node.metrics.stored(log.name(), outcome.n_appended, n_bytes);
    Ok(Appended {
        topic: log.name().to_string(),
        uid: log.uid().to_string(),
        first_offset: outcome.first_offset,
        last_offset: outcome.next_offset.saturating_sub(1),
        count: outcome.n_appended,
        timestamp_ms: outcome.timestamp_ms,
    })
}
