//! Query endpoints by key, for topics read as the latest value of each key: one key's latest record (or why
//! there is none), and the latest record of every live key in byte order of the key, a page at a time.
//! Records are shown as `protocol::json::RecordJson`, keys as the records show them: text when they are
//! UTF-8, base64 otherwise. Reads run on the blocking pool and go through one topic view each.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use protocol::json::RecordJson;
use serde::Serialize;
use service::{ApiPath, ApiQuery};

use super::messages::one_json;
use super::{ApiError, parse_limit, unknown_topic};
use crate::app::AppState;
use crate::copy::KeyLookup;

/// A page of `GET /api/v1/topics/{topic}/keys`.
#[derive(Debug, Clone, Serialize)]
pub struct KeyListPage {
    /// Topic name.
    pub topic: String,
    /// The latest record of each live key on the page, in byte order of the key.
    pub keys: Vec<RecordJson>,
    /// The `after` of the next page: the last key on the page, as text. `None` when no live key follows, or
    /// when the last key is not UTF-8 (then `next_after_base64` is set).
    pub next_after: Option<String>,
    /// The `after_base64` of the next page when the last key on the page is not UTF-8; omitted otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after_base64: Option<String>,
}

/// `GET /api/v1/topics/{topic}/keys/{key}`: the latest record with the key; 404 `deleted` (with the
/// tombstone's offset) if the latest is a tombstone, 404 `unknown_key` if the copy holds no record of it.
pub async fn get_by_key(
    State(state): State<AppState>,
    ApiPath((topic, key)): ApiPath<(String, String)>,
) -> Result<Json<RecordJson>, ApiError> {
    let copy = state.copy.clone();
    let (name, key_bytes) = (topic.clone(), key.clone().into_bytes());
    let lookup = tokio::task::spawn_blocking(move || copy.latest_by_key(&name, &key_bytes))
        .await??
        .ok_or_else(|| unknown_topic(&topic))?;
    match lookup {
        KeyLookup::Live(record) => Ok(Json(one_json(&topic, &record)?)),
        KeyLookup::Deleted { offset } => Err(ApiError::not_found(
            "deleted",
            format!("key {key:?} of topic {topic:?} was deleted by the tombstone at offset {offset}"),
        )
        .with_field("key", key)
        .with_field("offset", offset)),
        KeyLookup::Unknown => Err(ApiError::not_found(
            "unknown_key",
            format!("topic {topic:?} holds no record with key {key:?}"),
        )
        .with_field("key", key)),
    }
}

/// `GET /api/v1/topics/{topic}/keys?after=&after_base64=&limit=`: the latest record of each live key above
/// `after` (exclusive; from the first key when absent), in byte order of the key, `limit` (1 to 1000,
/// default 100) at most. A page holds fewer than `limit` keys only when it is the last.
pub async fn list_keys(
    State(state): State<AppState>,
    ApiPath(topic): ApiPath<String>,
    ApiQuery(params): ApiQuery<HashMap<String, String>>,
) -> Result<Json<KeyListPage>, ApiError> {
    let after = parse_after(&params)?;
    let limit = parse_limit(&params)?;
    let copy = state.copy.clone();
    let name = topic.clone();
    let page = tokio::task::spawn_blocking(move || copy.live_keys(&name, after.as_deref(), limit))
        .await??
        .ok_or_else(|| unknown_topic(&topic))?;
    let keys = page.records.iter().map(|record| one_json(&topic, record)).collect::<Result<Vec<_>, _>>()?;
    let (next_after, next_after_base64) = match keys.last() {
        // A record shows an empty key as neither text nor base64; as a cursor it is the empty text.
        Some(last) if page.more => match (&last.key, &last.key_base64) {
            (None, None) => (Some(String::new()), None),
            (key, key_base64) => (key.clone(), key_base64.clone()),
        },
        _ => (None, None),
    };
    Ok(Json(KeyListPage { topic, keys, next_after, next_after_base64 }))
}

/// The `after` cursor: `after` as text, or `after_base64` for a key that is not UTF-8; not both.
fn parse_after(params: &HashMap<String, String>) -> Result<Option<Vec<u8>>, ApiError> {
    match (params.get("after"), params.get("after_base64")) {
        (None, None) => Ok(None),
        (Some(after), None) => Ok(Some(after.clone().into_bytes())),
        (None, Some(encoded)) => BASE64.decode(encoded.as_bytes()).map(Some).map_err(|source| {
            ApiError::bad_query(format!("after_base64={encoded:?} is not standard base64: {source}"))
        }),
        (Some(_), Some(_)) => {
            Err(ApiError::bad_query("give the cursor as after or as after_base64, not both"))
        }
    }
}
