//! Ingest at ROOT: `POST /api/v1/topics/{topic}/messages` takes one record or an array as JSON, or, with
//! `Content-Type: application/octet-stream`, records in the producer layout laid end to end (the bytes a
//! PUBLISH frame carries, see `protocol::producer`). Both are appended through `crate::publish` (the
//! first publish creates the topic with a new uid) and answered with the assigned offsets once they are
//! durable. Any other level refuses with 409: data enters the tree at ROOT only.

use std::sync::Arc;

use axum::extract::{FromRequest, Request, State};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use protocol::{IngestBody, IngestRecord, OwnedRecord, ProducerRecords};
use serde::Serialize;
use service::{ApiBytes, ApiJson, ApiPath};
use storage::Log;

use super::{AppState, checked_topic};
use crate::error::{ApiError, storage_api_error};
use crate::node::Node;
use crate::publish::{NewRecords, Stored, store, topic_log};

/// The content type of a body of raw producer records.
const OCTET_STREAM: &str = "application/octet-stream";

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

/// `POST /api/v1/topics/{topic}/messages`: JSON, or raw producer records when the content type is
/// `application/octet-stream`.
pub async fn publish(
    State(node): State<AppState>,
    ApiPath(topic): ApiPath<String>,
    request: Request,
) -> Result<Response, ApiError> {
    refuse_unless_root(&node)?;
    checked_topic(&topic)?;
    let appended = if is_octet_stream(request.headers()) {
        let ApiBytes(body) = ApiBytes::from_request(request, &()).await?;
        let records = ProducerRecords::check(body)
            .map_err(|error| ApiError::bad_request("bad_record", error.to_string()))?;
        append_durably(&node, topic, records).await?
    } else {
        let ApiJson(body) = ApiJson::<IngestBody>::from_request(request, &()).await?;
        append_durably(&node, topic, owned_records(body.into_records())?).await?
    };
    Ok(axum::Json(appended).into_response())
}

/// Whether the body is raw producer records: the content type's essence, whatever its parameters.
fn is_octet_stream(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(OCTET_STREAM))
}

/// Refuses ingest on a node that is not ROOT.
pub fn refuse_unless_root(node: &Node) -> Result<(), ApiError> {
    only_at_root(node, "data enters the tree at ROOT only: publish to the ROOT broker")
}

/// 409 `not_root` on a node that is not ROOT, saying what is done at ROOT instead (`what`).
pub fn only_at_root(node: &Node, what: &str) -> Result<(), ApiError> {
    if node.is_root() {
        return Ok(());
    }
    Err(ApiError::conflict(
        "not_root",
        format!("this is a {} node, not ROOT; {what}", node.config.level.as_str()),
    ))
}

/// The topic's log, created with a new random uid by the first publish.
pub fn topic_for_publish(node: &Node, topic: &str) -> Result<Arc<Log>, ApiError> {
    topic_log(node, topic).map_err(storage_api_error)
}

/// Appends records and returns once they are durable: storage applies the flush policy before it returns
/// (concurrent requests share a flush); only the unsafe benchmark mode answers without one. A body without
/// records is refused.
async fn append_durably(
    node: &Arc<Node>,
    topic: String,
    records: impl NewRecords,
) -> Result<Appended, ApiError> {
    if records.n_records() == 0 {
        return Err(ApiError::bad_request("no_records", "the body holds no records"));
    }
    let Stored { log, outcome } = store(node, topic, records).await?;
    Ok(Appended {
        topic: log.name().to_string(),
        uid: log.uid().to_string(),
        first_offset: outcome.first_offset,
        last_offset: outcome.next_offset.saturating_sub(1),
        count: outcome.n_appended,
        timestamp_ms: outcome.timestamp_ms,
    })
}

/// Records as JSON gave them, checked and owned; the first bad one is a 400 `bad_record` naming it.
pub(super) fn owned_records(records: Vec<IngestRecord>) -> Result<Vec<OwnedRecord>, ApiError> {
    records
        .into_iter()
        .enumerate()
        .map(|(index, record)| {
            record
                .into_owned_record()
                .map_err(|error| ApiError::bad_request("bad_record", format!("record {index}: {error}")))
        })
        .collect()
}
