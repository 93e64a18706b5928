//! Reading topics over HTTP: the list, one topic's description (with its settings; setting them is
//! `settings.rs`), and records from an offset, as JSON for
//! people (with a `next` cursor) or as the raw record bytes for tools and polling clients
//! (`Accept: application/octet-stream`, with `X-First-Offset` and `X-Next-Offset` headers). The raw form is
//! the design's HTTP fetch endpoint: the same bytes as a BATCH, straight from the segment.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use protocol::{RecordIter, RecordJson, SettingsJson};
use serde::{Deserialize, Serialize};
use service::{ApiPath, ApiQuery};
use storage::Log;

use super::{AppState, checked_topic};
use crate::error::{ApiError, storage_api_error};

/// Records per JSON page unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 100;
/// Most records per JSON page.
const MAX_LIMIT: usize = 10_000;
/// Bytes per raw answer unless `max_bytes` says otherwise.
const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
/// Most bytes per raw answer.
const MAX_MAX_BYTES: usize = 16 * 1024 * 1024;

/// One topic as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TopicInfo {
    /// The name.
    pub topic: String,
    /// The uid, 32 hex digits.
    pub uid: String,
    /// The oldest offset stored.
    pub log_start: u64,
    /// The offset the next record will get.
    pub end_offset: u64,
    /// Everything below this offset is on disk.
    pub durable_offset: u64,
    /// Records stored.
    pub records: u64,
    /// Bytes of segment files.
    pub bytes: u64,
    /// Number of segment files.
    pub segments: usize,
    /// The epoch history, oldest first: `[epoch, start_offset]` pairs (empty if not known yet).
    pub epochs: Vec<(u32, u64)>,
    /// The topic's settings: explicit (set at ROOT, carried down the tree), or this node's defaults.
    pub settings: SettingsJson,
}

impl TopicInfo {
    /// Describes a log.
    pub fn of(log: &Log) -> TopicInfo {
        let stats = log.stats();
        TopicInfo {
            topic: log.name().to_string(),
            uid: log.uid().to_string(),
            log_start: log.log_start(),
            end_offset: log.next_offset(),
            durable_offset: log.durable_offset(),
            records: log.next_offset().saturating_sub(log.log_start()),
            bytes: stats.size_bytes,
            segments: stats.n_segments,
            epochs: log.epochs().entries().iter().map(|entry| (entry.epoch, entry.start_offset)).collect(),
            settings: SettingsJson::of(log.settings(), log.retention_limits()),
        }
    }
}

/// `GET /api/v1/topics`.
pub async fn list(State(node): State<AppState>) -> Response {
    let mut topics: Vec<TopicInfo> = node.store.topics().iter().map(|log| TopicInfo::of(log)).collect();
    topics.sort_by(|a, b| a.topic.cmp(&b.topic));
    axum::Json(serde_json::json!({ "topics": topics })).into_response()
}

/// `GET /api/v1/topics/{topic}`.
pub async fn describe(
    State(node): State<AppState>,
    ApiPath(topic): ApiPath<String>,
) -> Result<Response, ApiError> {
    let log = existing_topic(&node, &topic)?;
    Ok(axum::Json(TopicInfo::of(&log)).into_response())
}

/// The query of a records request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsQuery {
    /// The first offset wanted; the log start if absent.
    pub from: Option<u64>,
    /// Most records (JSON and raw).
    pub limit: Option<usize>,
    /// Most bytes (raw; a single larger record still comes whole).
    pub max_bytes: Option<usize>,
}

/// A JSON page of records.
#[derive(Debug, Clone, Serialize)]
pub struct RecordsPage {
    /// The topic.
    pub topic: String,
    /// Its uid.
    pub uid: String,
    /// The records.
    pub records: Vec<RecordJson>,
    /// The offset to ask for next.
    pub next: u64,
    /// The log end when read.
    pub end_offset: u64,
}

/// `GET /api/v1/topics/{topic}/records?from=&limit=&max_bytes=`.
pub async fn records(
    State(node): State<AppState>,
    ApiPath(topic): ApiPath<String>,
    ApiQuery(query): ApiQuery<RecordsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let log = existing_topic(&node, &topic)?;
    let from = query.from.unwrap_or_else(|| log.log_start());
    let end_offset = log.readable_offset();
    let raw = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("application/octet-stream"));
    if raw {
        let limit = query.limit.unwrap_or(MAX_LIMIT).clamp(1, MAX_LIMIT * 10);
        let max_bytes = query.max_bytes.unwrap_or(DEFAULT_MAX_BYTES).clamp(1, MAX_MAX_BYTES);
        let (records, next) = if from == end_offset {
            (bytes::Bytes::new(), from)
        } else {
            let chunk = log.read(from, limit, max_bytes).map_err(storage_api_error)?;
            (chunk.records, chunk.next_offset)
        };
        let mut response = records.into_response();
        let response_headers = response.headers_mut();
        response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        response_headers.insert("x-first-offset", HeaderValue::from(from));
        response_headers.insert("x-next-offset", HeaderValue::from(next));
        response_headers.insert("x-end-offset", HeaderValue::from(end_offset));
        response_headers.insert("x-topic-uid", header_value(&log.uid().to_string()));
        return Ok(response);
    }
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let max_bytes = query.max_bytes.unwrap_or(MAX_MAX_BYTES).clamp(1, MAX_MAX_BYTES);
    let mut page = RecordsPage {
        topic: log.name().to_string(),
        uid: log.uid().to_string(),
        records: Vec::new(),
        next: from,
        end_offset,
    };
    if from < end_offset {
        let chunk = log.read(from, limit, max_bytes).map_err(storage_api_error)?;
        for record in RecordIter::new(&chunk.records) {
            let record = record.map_err(ApiError::internal)?;
            page.records.push(RecordJson::from_view(&record).map_err(ApiError::internal)?);
        }
        page.next = chunk.next_offset;
    } else if from > end_offset {
        return Err(ApiError::bad_request(
            "offset_out_of_range",
            format!("offset {from} is beyond the log end {end_offset}"),
        ));
    }
    Ok(axum::Json(page).into_response())
}

/// The log of an existing topic, or 404.
pub fn existing_topic(node: &crate::node::Node, topic: &str) -> Result<std::sync::Arc<Log>, ApiError> {
    checked_topic(topic)?;
    node.store
        .topic(topic)
        .ok_or_else(|| ApiError::not_found("unknown_topic", format!("topic {topic:?} does not exist")))
}

/// A header value from text that is known to be visible ASCII.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}
