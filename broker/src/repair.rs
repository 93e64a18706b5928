//! Repairing damaged segments. Storage marks a segment damaged when a check finds a record that fails its
//! CRC (the background scrub, or a receiver that refused bytes this node sent) and stops serving it from
//! that record on; this task notices, and on a relaying node fetches the segment's records from the parent
//! (the HTTP fetch endpoint, raw bytes: the same records, byte for byte) and has storage switch them in.
//! ROOT holds the only copy: it says so once, in one line, and the range stays unserved (and counted in
//! `relay_damaged_segments`) until an operator restores it. A compacted topic's segment rarely matches
//! the parent's bytes (each node compacts on its own schedule), so when the parent's records are not the
//! same, the relay asks the parent for a full refresh of that topic instead (its operator refresh of the
//! group that is this node's id), which replaces the whole copy. Readers waiting at the damage wake once it is
//! repaired. Sessions hand this module the ranges a receiver refused (`verify_refused`) to check.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use storage::{DamagedSegment, Log};

use crate::node::Node;

/// How often the store is looked at for damage.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// The most bytes one fetch from the parent asks for.
const FETCH_BYTES: usize = 8 * 1024 * 1024;

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Repairs damaged segments until the node shuts down.
pub async fn run_repairs(node: Arc<Node>) {
    let http = match reqwest::Client::builder().timeout(FETCH_TIMEOUT).build() {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "cannot build the HTTP client that repairs damaged segments");
            return;
        }
    };
    let shutdown = node.shutdown.clone();
    let mut reported: HashSet<(String, u64)> = HashSet::new();
    // Damaged compacted segments whose topic this node asked its parent to refresh; forgotten once the
    // refresh replaced the copy (the damaged segment is then gone).
    let mut refresh_asked: HashSet<(String, u64)> = HashSet::new();
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let damaged_now = node.store.damaged_segments();
        refresh_asked.retain(|(topic, base)| {
            damaged_now.iter().any(|damaged| &damaged.topic == topic && damaged.base_offset == *base)
        });
        for damaged in damaged_now {
            let key = (damaged.topic.clone(), damaged.base_offset);
            let Some(log) = node.store.topic(&damaged.topic) else { continue };
            if !node.is_root() && !damaged.sealed {
                // Only a sealed segment can be repaired: seal it; the next look repairs it.
                let sealing = Arc::clone(&log);
                match tokio::task::spawn_blocking(move || sealing.seal_damaged_active()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(topic = %damaged.topic, %error, "cannot seal a damaged segment")
                    }
                    Err(error) => {
                        tracing::warn!(topic = %damaged.topic, %error, "cannot seal a damaged segment")
                    }
                }
                continue;
            }
            if node.is_root() {
                if reported.insert(key) {
                    tracing::error!(topic = %damaged.topic, from = damaged.damaged_at, to = damaged.end_offset,
                        "a damaged range cannot be repaired here (ROOT holds the only copy; restore it from a \
                         backup); it is not served");
                }
                continue;
            }
            let Some(parent) = node.pipe.snapshot().connected_parent().cloned() else { continue };
            let started = Instant::now();
            let repaired = match fetch_segment(&http, &parent.http_addr, &log, &damaged).await {
                Ok(records) => {
                    let log = Arc::clone(&log);
                    let base = damaged.base_offset;
                    tokio::task::spawn_blocking(move || log.repair_segment(base, records))
                        .await
                        .map_err(|error| error.to_string())
                        .and_then(|repaired| repaired.map_err(|error| error.to_string()))
                }
                Err(error) => Err(error),
            };
            match repaired {
                Ok(()) => {
                    reported.remove(&key);
                    tracing::info!(topic = %damaged.topic, from = damaged.base_offset, to = damaged.end_offset,
                        parent = %parent.id, elapsed_ms = started.elapsed().as_millis() as u64,
                        "repaired a damaged range from the parent");
                }
                Err(reason) if log.compacts() => {
                    if refresh_asked.insert(key.clone()) {
                        tracing::warn!(topic = %damaged.topic, from = damaged.base_offset, %reason,
                            "the parent's records differ from a damaged compacted segment; asking it for a full refresh");
                        if let Err(error) =
                            ask_refresh(&http, &parent.http_addr, &node.config.node_id, &damaged.topic).await
                        {
                            tracing::warn!(topic = %damaged.topic, %error, "asking the parent for a full refresh failed; trying again");
                            refresh_asked.remove(&key);
                        }
                    }
                }
                Err(reason) => tracing::warn!(topic = %damaged.topic, from = damaged.base_offset, %reason,
                    "repairing a damaged range from the parent failed; trying again"),
            }
        }
    }
}

/// Checks, on a blocking thread, the stored bytes of ranges a receiver refused (`(log, from, to)`), so that
/// damage is marked (and then repaired or kept unserved) instead of being sent again.
pub fn verify_refused(ranges: Vec<(Arc<Log>, u64, u64)>) {
    tokio::task::spawn_blocking(move || {
        for (log, from, to) in ranges {
            if let Some(offset) = log.verify(from, to) {
                tracing::warn!(
                    topic = log.name(),
                    offset,
                    "a receiver refused records this node holds damaged"
                );
            }
        }
    });
}

/// Asks the parent for a full refresh of `topic` for this node (its operator refresh of the group named
/// after this node's id, which the parent's pipe session serves).
async fn ask_refresh(http: &reqwest::Client, parent: &str, node_id: &str, topic: &str) -> Result<(), String> {
    let url = format!("http://{parent}/api/v1/groups/{node_id}/refresh");
    let response = http
        .post(&url)
        .json(&serde_json::json!({ "topic": topic }))
        .send()
        .await
        .map_err(|error| format!("POST {url}: {error}"))?;
    if response.status().is_success() { Ok(()) } else { Err(format!("POST {url}: {}", response.status())) }
}

/// The records of the damaged segment's whole range, fetched from the parent as raw bytes.
async fn fetch_segment(
    http: &reqwest::Client,
    parent: &str,
    log: &Log,
    damaged: &DamagedSegment,
) -> Result<Bytes, String> {
    let mut records = BytesMut::new();
    let mut from = damaged.base_offset;
    while from < damaged.end_offset {
        let url = format!("http://{parent}/api/v1/topics/{}/records", damaged.topic);
        let response = http
            .get(&url)
            .query(&[
                ("from", from.to_string()),
                ("limit", (damaged.end_offset - from).to_string()),
                ("max_bytes", FETCH_BYTES.to_string()),
            ])
            .header(reqwest::header::ACCEPT, "application/octet-stream")
            .send()
            .await
            .map_err(|error| format!("GET {url}: {error}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: {}", response.status()));
        }
        let header = |name: &str| {
            response.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_string)
        };
        if header("x-topic-uid").as_deref() != Some(log.uid().to_string().as_str()) {
            return Err(format!("the parent holds another history of {:?}", damaged.topic));
        }
        let next: u64 = header("x-next-offset").and_then(|next| next.parse().ok()).unwrap_or(from);
        let body = response.bytes().await.map_err(|error| format!("GET {url}: {error}"))?;
        if next <= from || body.is_empty() {
            return Err(format!("the parent sent nothing from offset {from}"));
        }
        records.extend_from_slice(&body);
        from = next;
    }
    if from != damaged.end_offset {
        return Err(format!("the parent's records end at {from}, the segment at {}", damaged.end_offset));
    }
    Ok(records.freeze())
}
