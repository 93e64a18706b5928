//! The checker of the tree tests: a topic's whole range read from a node's HTTP API as raw record bytes,
//! every record checked, lost, duplicated and out-of-order offsets counted, and the bytes hashed so that
//! two nodes' copies can be compared with one number.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hasher};
use std::net::SocketAddr;

use protocol::RecordIter;
use serde_json::Value;

/// What the checker found in one node's copy of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The topic's uid.
    pub uid: String,
    /// The first offset stored.
    pub log_start: u64,
    /// The node's log end.
    pub end_offset: u64,
    /// Records read.
    pub n_records: u64,
    /// Offsets between the log start and the end that never came.
    pub lost: u64,
    /// Offsets that came more than once.
    pub duplicated: u64,
    /// Offsets that came after a higher one.
    pub out_of_order: u64,
    /// A hash of every record's bytes, in order.
    pub hash: u64,
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "uid {} offsets {}..{} records {} lost {} duplicated {} out of order {} hash {:016x}",
            self.uid,
            self.log_start,
            self.end_offset,
            self.n_records,
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.hash
        )
    }
}

/// Reads a topic's whole range from `http` as raw record bytes (paged), checking every record and
/// counting lost, duplicated and out-of-order offsets.
pub async fn fetch_range(client: &reqwest::Client, http: SocketAddr, topic: &str) -> Range {
    let info: Value = client
        .get(format!("http://{http}/api/v1/topics/{topic}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let log_start = info["log_start"].as_u64().unwrap();
    let end_offset = info["end_offset"].as_u64().unwrap();
    let mut range = Range {
        uid: info["uid"].as_str().unwrap().to_string(),
        log_start,
        end_offset,
        n_records: 0,
        lost: 0,
        duplicated: 0,
        out_of_order: 0,
        hash: 0,
    };
    let mut hasher = DefaultHasher::new();
    let mut seen = HashSet::new();
    let mut expected = log_start;
    let mut from = log_start;
    // Each page holds at least one record, so this loop is bounded by the range.
    while from < end_offset {
        let response = client
            .get(format!("http://{http}/api/v1/topics/{topic}/records?from={from}&max_bytes=16777216"))
            .header("accept", "application/octet-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let next: u64 = response.headers()["x-next-offset"].to_str().unwrap().parse().unwrap();
        let bytes = response.bytes().await.unwrap();
        assert!(next > from, "no progress reading {topic} at {from}");
        for record in RecordIter::new(&bytes) {
            let record = record.expect("a valid record");
            let offset = record.offset();
            range.n_records += 1;
            hasher.write(record.as_bytes());
            if !seen.insert(offset) {
                range.duplicated += 1;
                continue;
            }
            if offset < expected {
                range.out_of_order += 1;
            } else {
                range.lost += offset - expected;
                expected = offset + 1;
            }
        }
        from = next;
    }
    range.lost += end_offset.saturating_sub(expected);
    range.hash = hasher.finish();
    range
}
