//! Helpers shared by the consumer-app's integration tests: records made with the real record encoder, a
//! local copy and REST router over a temporary directory, and JSON requests through the router.
#![allow(dead_code)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use consumer_app::app::{AppState, SyncStatus};
use consumer_app::copy::LocalCopy;
use consumer_app::metrics::Metrics;
use consumer_app::sync::SyncCommand;
use protocol::NewRecord;
use protocol::record::ATTR_TOMBSTONE;
use serde_json::Value;
use tokio::sync::mpsc;
use tower::ServiceExt;

/// Storage settings for tests: small segments so a few thousand records span several files.
pub fn log_config() -> storage::LogConfig {
    storage::LogConfig {
        segment_bytes: 1024 * 1024,
        preallocate_chunk_bytes: 256 * 1024,
        ..storage::LogConfig::default()
    }
}

/// Records `offsets` laid end to end, each with the key and value `record(offset)` gives.
pub fn records(offsets: std::ops::Range<u64>, record: impl Fn(u64) -> (String, String)) -> Vec<u8> {
    let mut out = Vec::new();
    for offset in offsets {
        let (key, value) = record(offset);
        NewRecord::new(key.as_bytes(), value.as_bytes()).encode_to_vec(
            offset,
            1_700_000_000_000 + offset,
            &mut out,
        );
    }
    out
}

/// A tombstone for `key` at `offset`.
pub fn tombstone(offset: u64, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let record = NewRecord { key: key.as_bytes(), headers: &[], value: &[], attributes: ATTR_TOMBSTONE };
    record.encode_to_vec(offset, 1_700_000_000_000 + offset, &mut out);
    out
}

/// The five records of the end-to-end example, offsets 0 to 4.
pub const FIVE: [&str; 5] = ["AAPL", "GOOGL", "MSFT", "TSLA", "AMZN"];

/// `{"symbol": KEY, "price": N}` for the five-record example.
pub fn five_records() -> Vec<u8> {
    records(0..5, |offset| {
        let key = FIVE[offset as usize].to_string();
        let value = format!("{{\"price\":{},\"symbol\":\"{key}\"}}", 100 + offset);
        (key, value)
    })
}

/// A local copy opened in `dir`.
pub fn open_copy(dir: &std::path::Path) -> Arc<LocalCopy> {
    Arc::new(LocalCopy::open(dir, log_config()).unwrap())
}

/// The REST router over `copy`, and the receiving end of its refresh requests.
pub fn router(copy: Arc<LocalCopy>) -> (Router, Arc<SyncStatus>, mpsc::Receiver<SyncCommand>) {
    let (commands, receiver) = mpsc::channel(8);
    let status = Arc::new(SyncStatus::default());
    let state = AppState {
        copy,
        metrics: Arc::new(Metrics::new()),
        status: status.clone(),
        commands,
        handler_name: "store",
    };
    (consumer_app::http::router(state), status, receiver)
}

/// Sends one request through the router and returns the status and the body as JSON (`Value::Null` if
/// the body is not JSON).
pub async fn call(router: &Router, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
    let request = Request::builder().method(method).uri(uri).body(Body::from(body.to_string())).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// `GET uri` through the router.
pub async fn get(router: &Router, uri: &str) -> (StatusCode, Value) {
    call(router, "GET", uri, "").await
}

/// The offsets of a messages page.
pub fn offsets(page: &Value) -> Vec<u64> {
    page["messages"].as_array().unwrap().iter().map(|message| message["offset"].as_u64().unwrap()).collect()
}
