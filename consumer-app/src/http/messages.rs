//! Query endpoints: the topics held, records by offset range with a cursor and one record by offset (the
//! queries by key are in `keys.rs`). Records are shown as `protocol::json::RecordJson`. Reads run on the blocking pool
//! and go through one topic view each, so a page never mixes two copies.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use bytes::Bytes;
use protocol::json::RecordJson;
use protocol::{RecordIter, RecordView, SettingsJson};
use serde::Serialize;
use service::{ApiPath, ApiQuery};

use super::{ApiError, parse_limit, parse_u64, unknown_topic};
use crate::app::AppState;
use crate::error::Error;

/// One topic in `GET /api/v1/topics`.
#[derive(Debug, Clone, Serialize)]
pub struct TopicSummary {
    /// Topic name.
    pub topic: String,
    /// Uid of the local copy.
    pub uid: String,
    /// Offset of the first record held.
    pub first_offset: u64,
    /// The copy holds every record below this offset, durable and readable.
    pub next_offset: u64,
    /// Number of records held.
    pub records: u64,
    /// Whether a full refresh is being received (queries still answer from this copy).
    pub refreshing: bool,
    /// The topic's settings as the broker sent them (explicit), or the defaults of this copy.
    pub settings: SettingsJson,
}

/// A page of `GET /api/v1/topics/{topic}/messages`.
#[derive(Debug, Clone, Serialize)]
pub struct MessagePage {
    /// Topic name.
    pub topic: String,
    /// Uid of the copy the page was read from.
    pub uid: String,
    /// The records, in offset order.
    pub messages: Vec<RecordJson>,
    /// The `from` of the next page, or `None` when the page reaches the end of the copy.
    pub next: Option<u64>,
}

/// `GET /api/v1/topics`.
pub async fn list_topics(State(state): State<AppState>) -> Json<Vec<TopicSummary>> {
    let topics = state
        .copy
        .views()
        .into_iter()
        .map(|view| {
            let (first_offset, next_offset) = (view.log.log_start(), view.log.readable_offset());
            TopicSummary {
                topic: view.name.to_string(),
                uid: view.log.uid().to_string(),
                first_offset,
                next_offset,
                records: next_offset - first_offset,
                refreshing: state.status.is_refreshing(&view.name),
                settings: SettingsJson::of(view.log.settings(), view.log.retention_limits()),
            }
        })
        .collect();
    Json(topics)
}

/// `GET /api/v1/topics/{topic}/messages?from=&limit=`.
pub async fn list_messages(
    State(state): State<AppState>,
    ApiPath(topic): ApiPath<String>,
    ApiQuery(params): ApiQuery<HashMap<String, String>>,
) -> Result<Json<MessagePage>, ApiError> {
    let from = parse_u64(&params, "from")?;
    let limit = parse_limit(&params)?;
    let copy = state.copy.clone();
    let name = topic.clone();
    let page = tokio::task::spawn_blocking(move || copy.read_page(&name, from, limit))
        .await??
        .ok_or_else(|| unknown_topic(&topic))?;
    let end = page.view.log.readable_offset();
    if let Some(from) = from
        && from > end
    {
        return Err(ApiError::bad_request(
            "bad_offset",
            format!("from={from} is beyond the end of the copy ({end})"),
        ));
    }
    let messages = to_json(&topic, &page.records)?;
    let next = (page.next_offset < end).then_some(page.next_offset);
    Ok(Json(MessagePage { topic, uid: page.view.log.uid().to_string(), messages, next }))
}

/// `GET /api/v1/topics/{topic}/messages/{offset}`.
pub async fn get_message(
    State(state): State<AppState>,
    ApiPath((topic, offset_text)): ApiPath<(String, String)>,
) -> Result<Json<RecordJson>, ApiError> {
    let offset = offset_text.parse::<u64>().map_err(|_| {
        ApiError::bad_request("bad_offset", format!("offset {offset_text:?} is not an unsigned integer"))
    })?;
    let copy = state.copy.clone();
    let name = topic.clone();
    let record = tokio::task::spawn_blocking(move || copy.record_at(&name, offset))
        .await??
        .ok_or_else(|| unknown_topic(&topic))?
        .ok_or_else(|| {
            ApiError::not_found(
                "no_such_offset",
                format!("topic {topic:?} holds no record at offset {offset}"),
            )
        })?;
    Ok(Json(one_json(&topic, &record)?))
}

/// The JSON form of every record in `records`.
fn to_json(topic: &str, records: &Bytes) -> Result<Vec<RecordJson>, ApiError> {
    RecordIter::new(records)
        .map(|view| view.and_then(|view| RecordJson::from_view(&view)))
        .collect::<Result<_, _>>()
        .map_err(|source| ApiError::from(Error::Records { topic: topic.to_string(), source }))
}

/// The JSON form of the single record in `record`.
pub(crate) fn one_json(topic: &str, record: &Bytes) -> Result<RecordJson, ApiError> {
    let decoded = RecordView::decode(record).and_then(|decoded| match decoded {
        Some((view, _)) => RecordJson::from_view(&view),
        None => Err(protocol::WireError::TruncatedBatch { remaining: record.len() }),
    });
    decoded.map_err(|source| ApiError::from(Error::Records { topic: topic.to_string(), source }))
}
