//! Test endpoints, served only with `--test-endpoints`: `POST /test/inject-messages` (explicit records, or
//! a count of generated ones, appended in batches) and `GET /test/stats` (topics, group positions and lag,
//! connections, connected children with their lag, the pipe to the parent). `POST /test/load-from-sqlite` lives in `test_sqlite.rs`. Like ingest, injection is for
//! ROOT only: any other node's offsets must come from ROOT.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use protocol::{IngestRecord, NewRecord, OwnedRecord};
use serde::{Deserialize, Serialize};
use service::ApiJson;
use storage::Log;

use super::groups::positions;
use super::ingest::{owned_records, refuse_unless_root, topic_for_publish};
use super::topics::TopicInfo;
use super::{AppState, checked_topic};
use crate::error::{ApiError, storage_api_error};
use crate::node::Node;

/// Most records appended in one call to the store.
pub(super) const RECORDS_PER_APPEND: usize = 1000;
/// Most generated records per request.
const MAX_GENERATED: u64 = 10_000_000;
/// Largest generated value.
const MAX_GENERATED_SIZE: usize = 1024 * 1024;

/// The body of `POST /test/inject-messages`: either `records`, or `count` (with `size` and an optional
/// `key_prefix`) for generated ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectRequest {
    /// The topic, created if needed.
    pub topic: String,
    /// Explicit records.
    pub records: Option<Vec<IngestRecord>>,
    /// How many records to generate.
    pub count: Option<u64>,
    /// The size of each generated value in bytes (default 100).
    pub size: Option<usize>,
    /// The prefix of generated keys (default `key-`), followed by the record's sequence number.
    pub key_prefix: Option<String>,
}

/// The answer of the injection and loading endpoints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Injected {
    /// The topic.
    pub topic: String,
    /// Its uid (empty if nothing was appended to a topic that did not exist).
    pub uid: String,
    /// Records appended.
    pub count: u64,
    /// Offset of the first record appended.
    pub first_offset: Option<u64>,
    /// Offset of the last record appended.
    pub last_offset: Option<u64>,
    /// Wall time the request took.
    pub elapsed_ms: u64,
}

/// `POST /test/inject-messages`.
pub async fn inject(
    State(node): State<AppState>,
    ApiJson(request): ApiJson<InjectRequest>,
) -> Result<Response, ApiError> {
    refuse_unless_root(&node)?;
    checked_topic(&request.topic)?;
    let started = Instant::now();
    let generate = match (&request.records, request.count) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("bad_request", "give either records or count, not both"));
        }
        (None, None) => return Err(ApiError::bad_request("bad_request", "give records or count")),
        (Some(_), None) => None,
        (None, Some(count)) => {
            let size = request.size.unwrap_or(100);
            if count == 0 || count > MAX_GENERATED {
                return Err(ApiError::bad_request(
                    "bad_request",
                    format!("count must be 1 to {MAX_GENERATED}"),
                ));
            }
            if size > MAX_GENERATED_SIZE {
                return Err(ApiError::bad_request(
                    "bad_request",
                    format!("size must be at most {MAX_GENERATED_SIZE}"),
                ));
            }
            Some((count, size, request.key_prefix.clone().unwrap_or_else(|| "key-".to_string())))
        }
    };
    let explicit = match request.records {
        Some(records) => owned_records(records)?,
        None => Vec::new(),
    };
    let topic = request.topic;
    let blocking_node = Arc::clone(&node);
    let mut injected = tokio::task::spawn_blocking(move || {
        let mut appender = BatchAppender::new(blocking_node, topic);
        match generate {
            Some((count, size, prefix)) => generate_records(&mut appender, count, size, &prefix)?,
            None => {
                for chunk in explicit.chunks(RECORDS_PER_APPEND) {
                    let batch: Vec<NewRecord<'_>> = chunk.iter().map(OwnedRecord::as_new_record).collect();
                    appender.append(&batch)?;
                }
            }
        }
        appender.finish()
    })
    .await??;
    injected.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(axum::Json(injected).into_response())
}

/// Appends `count` generated records: key `{prefix}{n}`, a value of `size` bytes starting with `n`.
fn generate_records(
    appender: &mut BatchAppender,
    count: u64,
    size: usize,
    prefix: &str,
) -> Result<(), ApiError> {
    let mut keys: Vec<Vec<u8>> = Vec::with_capacity(RECORDS_PER_APPEND);
    let mut values: Vec<Vec<u8>> = Vec::with_capacity(RECORDS_PER_APPEND);
    let mut sequence = 0u64;
    while sequence < count {
        keys.clear();
        values.clear();
        let end = count.min(sequence + RECORDS_PER_APPEND as u64);
        for n in sequence..end {
            keys.push(format!("{prefix}{n}").into_bytes());
            let mut value = n.to_string().into_bytes();
            value.resize(size, b'x');
            values.push(value);
        }
        let batch: Vec<NewRecord<'_>> =
            keys.iter().zip(&values).map(|(key, value)| NewRecord::new(key, value)).collect();
        appender.append(&batch)?;
        sequence = end;
    }
    Ok(())
}

/// Appends batches to one topic from a blocking thread, creating it at the first batch, and sums up.
pub(super) struct BatchAppender {
    /// The broker.
    node: Arc<Node>,
    /// The topic name.
    topic: String,
    /// The log, once created or found.
    log: Option<Arc<Log>>,
    /// What was appended so far.
    injected: Injected,
}

impl BatchAppender {
    /// An appender for `topic`.
    pub(super) fn new(node: Arc<Node>, topic: String) -> BatchAppender {
        let injected = Injected { topic: topic.clone(), ..Injected::default() };
        BatchAppender { node, topic, log: None, injected }
    }

    /// Appends one batch. Blocking.
    pub(super) fn append(&mut self, batch: &[NewRecord<'_>]) -> Result<(), ApiError> {
        if batch.is_empty() {
            return Ok(());
        }
        let log = match &self.log {
            Some(log) => Arc::clone(log),
            None => {
                let log = topic_for_publish(&self.node, &self.topic)?;
                self.injected.uid = log.uid().to_string();
                self.log = Some(Arc::clone(&log));
                log
            }
        };
        let outcome = log.append(batch).map_err(storage_api_error)?;
        let n_bytes: u64 = batch.iter().map(|record| record.encoded_len() as u64).sum();
        self.node.metrics.stored(&self.topic, outcome.n_appended, n_bytes);
        self.injected.first_offset.get_or_insert(outcome.first_offset);
        self.injected.last_offset = Some(outcome.next_offset.saturating_sub(1));
        self.injected.count += outcome.n_appended;
        Ok(())
    }

    /// The sums; every append was made durable by storage before it returned.
    pub(super) fn finish(self) -> Result<Injected, ApiError> {
        Ok(self.injected)
    }
}

/// `GET /test/stats`.
pub async fn stats(State(node): State<AppState>) -> Response {
    let mut topics: Vec<TopicInfo> = node.store.topics().iter().map(|log| TopicInfo::of(log)).collect();
    topics.sort_by(|a, b| a.topic.cmp(&b.topic));
    let connections: Vec<serde_json::Value> = node
        .members
        .connections()
        .into_iter()
        .map(|info| {
            serde_json::json!({
                "id": info.connection_id,
                "kind": info.kind,
                "peer": info.peer.map(|peer| peer.to_string()),
                "client_id": info.client_id,
                "group": info.group,
            })
        })
        .collect();
    let body = serde_json::json!({
        "node_id": node.config.node_id,
        "level": node.config.level.as_str(),
        "topics": topics,
        "groups": positions(&node),
        "connections": { "count": connections.len(), "list": connections },
        "children": super::tree::children(&node),
        "pipe": node.pipe.snapshot(),
    });
    axum::Json(body).into_response()
}
