//! Operational endpoints: stats (per topic counts, offsets, lag, last refresh; connection, handler and
//! dead-letter figures), the segment files, the dead letters, and the request for a full refresh.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use protocol::SettingsJson;
use serde::{Deserialize, Serialize};
use service::{ApiJson, ApiQuery};
use tokio::sync::mpsc::error::TrySendError;

use super::{ApiError, parse_limit, parse_u64, unknown_topic};
use crate::app::{AppState, StatusSnapshot};
use crate::db::{DeadLetter, RefreshRow};
use crate::now_ms;
use crate::sync::SyncCommand;

/// How many recent refreshes stats list.
const RECENT_REFRESHES: u32 = 10;

/// `GET /api/v1/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// The broker connection.
    pub connection: StatusSnapshot,
    /// Per topic figures, by name.
    pub topics: BTreeMap<String, TopicStats>,
    /// The handler and its counts.
    pub handler: HandlerStats,
    /// Dead letters stored.
    pub dead_letters: u64,
    /// The most recent refreshes, newest first.
    pub recent_refreshes: Vec<RefreshRow>,
}

/// One topic's figures.
#[derive(Debug, Clone, Serialize)]
pub struct TopicStats {
    /// Uid of the local copy.
    pub uid: String,
    /// Records held.
    pub records: u64,
    /// Bytes of records held.
    pub bytes: u64,
    /// Offset of the first record held, if any.
    pub first_offset: Option<u64>,
    /// Offset of the last record held, if any.
    pub last_offset: Option<u64>,
    /// The copy's position: every record below this offset is durable and readable.
    pub position: u64,
    /// The broker's log end, from its latest BATCH, if known.
    pub broker_end_offset: Option<u64>,
    /// Records the copy is behind the broker, if known.
    pub lag: Option<u64>,
    /// Segment files.
    pub segments: usize,
    /// ROOT timestamp of the newest record (ms since the epoch; zero if none).
    pub last_timestamp_ms: u64,
    /// When the last full refresh completed, if ever.
    pub last_refresh_ms: Option<u64>,
    /// Whether a full refresh is being received.
    pub refreshing: bool,
    /// The topic's settings as the broker sent them (explicit), or the defaults of this copy.
    pub settings: SettingsJson,
}

/// The handler's counts.
#[derive(Debug, Clone, Serialize)]
pub struct HandlerStats {
    /// `store`, `log` or `webhook`.
    pub name: &'static str,
    /// Records handled successfully.
    pub successes: u64,
    /// Failed attempts, retries included.
    pub failures: u64,
    /// Records given up on.
    pub dead_letters: u64,
}

/// One topic in `GET /api/v1/segments`.
#[derive(Debug, Clone, Serialize)]
pub struct TopicSegments {
    /// Topic name.
    pub topic: String,
    /// Its segments, oldest first.
    pub segments: Vec<SegmentJson>,
}

/// One segment file.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentJson {
    /// Offset of its first record.
    pub base_offset: u64,
    /// Offset of its last record, if any.
    pub last_offset: Option<u64>,
    /// Bytes of records in it.
    pub size_bytes: u64,
    /// Whether it is sealed.
    pub sealed: bool,
    /// When it was created (ms since the epoch).
    pub created_ms: u64,
    /// When it was sealed.
    pub sealed_ms: Option<u64>,
    /// Its file.
    pub path: String,
}

/// Body of `POST /api/v1/refresh`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The topic to refresh; every topic held when absent.
    pub topic: Option<String>,
}

/// `GET /api/v1/stats`.
pub async fn stats(State(state): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let db = state.copy.db().clone();
    let (rows, dead_letters, recent_refreshes) = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::Error>((db.topics()?, db.dead_letter_count()?, db.refreshes(RECENT_REFRESHES)?))
    })
    .await??;
    let last_refresh: HashMap<String, Option<u64>> =
        rows.into_iter().map(|row| (row.topic, row.last_refresh_ms)).collect();
    let mut topics = BTreeMap::new();
    for view in state.copy.views() {
        let log_stats = view.log.stats();
        let broker_end = state.status.broker_end(&view.name);
        // What readers can see: with durable appends, a record is readable once it is on disk.
        let (start, position) = (log_stats.log_start, log_stats.readable_offset);
        let held = position > start;
        let topic = TopicStats {
            uid: log_stats.uid.to_string(),
            records: position - start,
            bytes: log_stats.size_bytes,
            first_offset: held.then_some(start),
            last_offset: held.then(|| position - 1),
            position,
            broker_end_offset: broker_end,
            lag: broker_end.map(|end| end.saturating_sub(position)),
            segments: log_stats.n_segments,
            last_timestamp_ms: log_stats.last_timestamp_ms,
            last_refresh_ms: last_refresh.get(&*view.name).copied().flatten(),
            refreshing: state.status.is_refreshing(&view.name),
            settings: SettingsJson::of(view.log.settings(), view.log.retention_limits()),
        };
        topics.insert(view.name.to_string(), topic);
    }
    let handler = HandlerStats {
        name: state.handler_name,
        successes: state.metrics.handler_successes.get(),
        failures: state.metrics.handler_failures.get(),
        dead_letters: state.metrics.dead_letters.get(),
    };
    Ok(Json(Stats { connection: state.status.snapshot(), topics, handler, dead_letters, recent_refreshes }))
}

/// `GET /api/v1/segments`.
pub async fn segments(State(state): State<AppState>) -> Json<Vec<TopicSegments>> {
    let topics = state
        .copy
        .views()
        .into_iter()
        .map(|view| TopicSegments {
            topic: view.name.to_string(),
            segments: view
                .log
                .segments()
                .into_iter()
                .map(|segment| SegmentJson {
                    base_offset: segment.base_offset,
                    last_offset: segment.last_offset,
                    size_bytes: segment.size_bytes,
                    sealed: segment.sealed,
                    created_ms: segment.created_ms,
                    sealed_ms: segment.sealed_ms,
                    path: segment.path.display().to_string(),
                })
                .collect(),
        })
        .collect();
    Json(topics)
}

/// `GET /api/v1/dead-letters?after=&limit=`.
pub async fn dead_letters(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<HashMap<String, String>>,
) -> Result<Json<Vec<DeadLetter>>, ApiError> {
    let after = parse_u64(&params, "after")?.unwrap_or(0).min(i64::MAX as u64) as i64;
    let limit = parse_limit(&params)? as u32;
    let db = state.copy.db().clone();
    let letters = tokio::task::spawn_blocking(move || db.dead_letters(after, limit)).await??;
    Ok(Json(letters))
}

/// `POST /api/v1/refresh` with an optional `{"topic": "..."}`: remembers the request (so it survives a
/// reconnect or a restart) and asks the sync loop to send SEEK FULL_REFRESH now.
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<Option<RefreshRequest>>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let request = request.unwrap_or_default();
    let topics = match request.topic {
        Some(topic) => {
            if state.copy.view(&topic).is_none() {
                return Err(unknown_topic(&topic));
            }
            vec![topic]
        }
        None => state.copy.views().into_iter().map(|view| view.name.to_string()).collect(),
    };
    let db = state.copy.db().clone();
    let pending = topics.clone();
    tokio::task::spawn_blocking(move || db.request_refresh(&pending, now_ms())).await??;
    match state.commands.try_send(SyncCommand::Refresh(topics.clone())) {
        Ok(()) => {}
        // The request is stored as pending, so the next connection asks for it even if this one cannot.
        Err(TrySendError::Full(_)) | Err(TrySendError::Closed(_)) => {
            tracing::warn!(?topics, "refresh request queued for the next broker connection");
        }
    }
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "requested": topics }))))
}
