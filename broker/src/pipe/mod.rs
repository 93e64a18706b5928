//! The pipe: the WebSocket a child broker opens to its parent's HTTP port (`GET /api/v1/pipe`), carrying
//! one protocol frame per binary message.
//!
//! - `server.rs`: the parent side. The endpoint upgrades the request and runs the ordinary delivery
//!   session (`session.rs`) with `Role::Pipe` over the WebSocket; the child is a group of its own.
//! - `upstream.rs`: the child side, a `client::follow` follower: it chooses the parent
//!   (`registration::find_parent`) and reports the link's state; the follower says HELLO with where each
//!   topic stands, keeps the link alive and reconnects with backoff.
//! - `copy.rs`: the follower's sink, what the child does with what arrives: proven batches appended
//!   verbatim, topics created with the parent's uid and log start, full refreshes built aside and switched
//!   at READY.
//!
//! This module also owns [`PipeState`], the link's state as `/api/v1/node`, `/ready`, heartbeats and
//! metrics show it. It never writes a segment file except through `storage`.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::Serialize;

use crate::registration::ParentRef;
use protocol::now_ms;

mod copy;
pub mod server;
mod upstream;

pub use upstream::run_pipe_client;

/// What the link to the parent is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// This node is ROOT: it has no parent.
    Root,
    /// No parent is known yet (waiting for the registry, or none configured).
    #[default]
    Waiting,
    /// Connecting to a parent, or saying HELLO.
    Connecting,
    /// WELCOME received: records flow.
    Streaming,
    /// The parent refused the pipe (a wrong token, a level that does not fit); retrying later.
    Refused,
    /// The link broke; waiting before the next attempt.
    Disconnected,
}

impl LinkState {
    /// The state's name, as heartbeats report it.
    pub fn name(self) -> &'static str {
        match self {
            LinkState::Root => "root",
            LinkState::Waiting => "waiting",
            LinkState::Connecting => "connecting",
            LinkState::Streaming => "streaming",
            LinkState::Refused => "refused",
            LinkState::Disconnected => "disconnected",
        }
    }
}

/// A snapshot of the link to the parent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PipeStatus {
    /// What the link is doing.
    pub state: LinkState,
    /// The parent being tried or streamed from.
    pub parent: Option<ParentRef>,
    /// When the current stream started (WELCOME), in ms since the epoch.
    pub connected_since_ms: Option<u64>,
    /// Links that ended and were tried again.
    pub reconnects: u64,
    /// Why the last link ended or was refused.
    pub last_error: Option<String>,
    /// Per topic, the parent's log end as its last BATCH or WELCOME said: the base of this node's lag.
    pub parent_end: BTreeMap<String, u64>,
}

impl PipeStatus {
    /// The parent records are streaming from right now, if any.
    pub fn connected_parent(&self) -> Option<&ParentRef> {
        if self.state == LinkState::Streaming { self.parent.as_ref() } else { None }
    }
}

/// The shared state of the link to the parent; updated by the pipe client, read by HTTP handlers and the
/// registration task.
#[derive(Debug, Default)]
pub struct PipeState {
    /// The status.
    status: Mutex<PipeStatus>,
}

impl PipeState {
    /// The state of a node at `is_root` or not.
    pub fn new(is_root: bool) -> PipeState {
        let state = if is_root { LinkState::Root } else { LinkState::Waiting };
        PipeState { status: Mutex::new(PipeStatus { state, ..PipeStatus::default() }) }
    }

    /// A copy of the status.
    pub fn snapshot(&self) -> PipeStatus {
        self.lock().clone()
    }

    /// Whether records are streaming from a parent.
    pub fn is_streaming(&self) -> bool {
        self.lock().state == LinkState::Streaming
    }

    /// A new attempt on `parent`.
    pub(crate) fn connecting(&self, parent: &ParentRef) {
        let mut status = self.lock();
        status.state = LinkState::Connecting;
        status.parent = Some(parent.clone());
        status.connected_since_ms = None;
    }

    /// WELCOME arrived.
    pub(crate) fn streaming(&self) {
        let mut status = self.lock();
        status.state = LinkState::Streaming;
        status.connected_since_ms = Some(now_ms());
        status.last_error = None;
    }

    /// The link ended (or was refused) for `reason`.
    pub(crate) fn ended(&self, refused: bool, reason: &str) {
        let mut status = self.lock();
        status.state = if refused { LinkState::Refused } else { LinkState::Disconnected };
        status.connected_since_ms = None;
        status.reconnects += 1;
        status.last_error = Some(reason.to_string());
    }

    /// No parent is known.
    pub(crate) fn waiting(&self) {
        let mut status = self.lock();
        status.state = LinkState::Waiting;
        status.parent = None;
    }

    /// Records the parent's log end for a topic.
    pub(crate) fn parent_end(&self, topic: &str, end_offset: u64) {
        let mut status = self.lock();
        match status.parent_end.get_mut(topic) {
            Some(end) => *end = end_offset,
            None => {
                status.parent_end.insert(topic.to_string(), end_offset);
            }
        }
    }

    /// The status, even after a panic elsewhere: every change is a plain field assignment.
    fn lock(&self) -> MutexGuard<'_, PipeStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_link() {
        let state = PipeState::new(false);
        assert_eq!(state.snapshot().state, LinkState::Waiting);
        let parent = ParentRef { id: "l2".to_string(), http_addr: "127.0.0.1:1".to_string() };
        state.connecting(&parent);
        assert!(state.snapshot().connected_parent().is_none());
        state.streaming();
        assert!(state.is_streaming());
        assert_eq!(state.snapshot().connected_parent(), Some(&parent));
        state.parent_end("t", 10);
        state.ended(true, "refused");
        let status = state.snapshot();
        assert_eq!((status.state, status.reconnects), (LinkState::Refused, 1));
        assert_eq!(status.parent_end.get("t"), Some(&10));
        assert_eq!(PipeState::new(true).snapshot().state, LinkState::Root);
    }
}
