//! What the sync loop reports about the broker connection and the copy's readiness, for `/ready`, stats
//! and metrics: connected or not (and why not), the broker's log end per topic, refreshes in progress.
//! Written by the sync loop only; read by REST handlers at any time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use protocol::TopicUid;
use serde::Serialize;

use crate::now_ms;

/// The broker connection as the sync loop last reported it.
#[derive(Debug, Default)]
pub struct SyncStatus {
    /// Whether a broker connection is up.
    connected: AtomicBool,
    /// Whether the copy is ready to serve: after the first READY, or once caught up with the broker.
    ready: AtomicBool,
    /// The rest, changed rarely.
    inner: Mutex<StatusInner>,
}

/// The parts of [`SyncStatus`] behind its lock.
#[derive(Debug, Default, Clone)]
struct StatusInner {
    /// The broker node connected to.
    broker_node: Option<String>,
    /// When the current connection came up.
    connected_since_ms: Option<u64>,
    /// Why the last connection ended or failed.
    last_error: Option<String>,
    /// The broker's log end of each topic, from WELCOME, TOPIC, BATCH and READY.
    broker_end: BTreeMap<String, u64>,
    /// Refreshes in progress.
    refreshing: BTreeMap<String, RefreshProgress>,
}

/// A refresh in progress, as stats show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefreshProgress {
    /// Uid of the new copy.
    pub uid: String,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// Records received so far.
    pub n_records: u64,
    /// The broker's log end when it started: the new copy is complete around here.
    pub end_offset: u64,
}

/// A copy of the status for stats.
#[derive(Debug, Clone, Serialize)]
pub struct StatusSnapshot {
    /// Whether a broker connection is up.
    pub connected: bool,
    /// Whether the copy is ready to serve.
    pub ready: bool,
    /// The broker node connected to.
    pub broker_node: Option<String>,
    /// When the current connection came up.
    pub connected_since_ms: Option<u64>,
    /// Why the last connection ended or failed.
    pub last_error: Option<String>,
    /// Refreshes in progress by topic.
    pub refreshing: BTreeMap<String, RefreshProgress>,
}

impl SyncStatus {
    fn inner(&self) -> MutexGuard<'_, StatusInner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A connection to `broker_node` is up.
    pub fn set_connected(&self, broker_node: &str) {
        let mut inner = self.inner();
        inner.broker_node = Some(broker_node.to_string());
        inner.connected_since_ms = Some(now_ms());
        self.connected.store(true, Ordering::SeqCst);
    }

    /// The connection is down (or could not be made), for `reason`.
    pub fn set_disconnected(&self, reason: Option<String>) {
        let mut inner = self.inner();
        inner.connected_since_ms = None;
        if reason.is_some() {
            inner.last_error = reason;
        }
        inner.refreshing.clear();
        self.connected.store(false, Ordering::SeqCst);
    }

    /// Whether a broker connection is up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// The copy is ready to serve from now on; returns whether it was not before.
    pub fn set_ready(&self) -> bool {
        !self.ready.swap(true, Ordering::SeqCst)
    }

    /// Whether the copy is ready to serve.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Notes the broker's log end of `topic`.
    pub fn set_broker_end(&self, topic: &str, end_offset: u64) {
        let mut inner = self.inner();
        match inner.broker_end.get_mut(topic) {
            Some(end) => *end = end_offset,
            None => {
                inner.broker_end.insert(topic.to_string(), end_offset);
            }
        }
    }

    /// The broker's log end of `topic`, if known.
    pub fn broker_end(&self, topic: &str) -> Option<u64> {
        self.inner().broker_end.get(topic).copied()
    }

    /// Every known broker log end.
    pub fn broker_ends(&self) -> BTreeMap<String, u64> {
        self.inner().broker_end.clone()
    }

    /// A refresh of `topic` started.
    pub fn refresh_started(&self, topic: &str, uid: TopicUid, end_offset: u64) {
        let progress =
            RefreshProgress { uid: uid.to_string(), started_ms: now_ms(), n_records: 0, end_offset };
        self.inner().refreshing.insert(topic.to_string(), progress);
    }

    /// A refresh of `topic` has received `n_records` so far.
    pub fn refresh_progress(&self, topic: &str, n_records: u64) {
        if let Some(progress) = self.inner().refreshing.get_mut(topic) {
            progress.n_records = n_records;
        }
    }

    /// The refresh of `topic` ended (completed or abandoned).
    pub fn refresh_ended(&self, topic: &str) {
        self.inner().refreshing.remove(topic);
    }

    /// Whether a refresh of `topic` is in progress.
    pub fn is_refreshing(&self, topic: &str) -> bool {
        self.inner().refreshing.contains_key(topic)
    }

    /// A copy for stats.
    pub fn snapshot(&self) -> StatusSnapshot {
        let inner = self.inner().clone();
        StatusSnapshot {
            connected: self.is_connected(),
            ready: self.is_ready(),
            broker_node: inner.broker_node,
            connected_since_ms: inner.connected_since_ms,
            last_error: inner.last_error,
            refreshing: inner.refreshing,
        }
    }
}
