//! The pipe: the WebSocket a child broker opens to its parent's HTTP port (`GET /api/v1/pipe`), carrying
//! one protocol frame per binary message.
//!
//! - `server.rs`: the parent side. The endpoint upgrades the request and runs the ordinary delivery
//!   session (`session.rs`) with `Role::Pipe` over the WebSocket; the child is a group of its own.
//! - `client.rs`: the child side. It finds a parent (`registration::find_parent`), says HELLO with
//!   where each of its topics stands, and keeps the link alive with PING/PONG, reconnecting with backoff.
//! - `copy.rs`: what the child does with what arrives: batches checked and appended verbatim, topics
//!   created with the parent's uid and log start, full refreshes built aside and switched at READY.
//!
//! This module also owns [`PipeState`], the link's state as `/api/v1/node`, `/ready`, heartbeats and
//! metrics show it. It never writes a segment file except through `storage`.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::{Bytes, BytesMut};
use protocol::WireError;
use protocol::frame::Frame;
use serde::Serialize;

use crate::node::now_ms;
use crate::registration::ParentRef;

mod client;
mod copy;
pub mod server;

pub use client::run_pipe_client;

/// Room a WebSocket message may take beyond the largest frame, so that a frame slightly over the limit
/// reaches the frame decoder and gets a precise FRAME_TOO_LARGE instead of a bare WebSocket failure.
pub const MESSAGE_SLACK: usize = 64 * 1024;

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

/// Decodes the one frame a binary WebSocket message must carry: a message that ends inside a frame, or
/// holds bytes after it, is malformed, because the pipe never splits or packs frames.
pub fn decode_message(message: Bytes, max_frame_len: usize) -> Result<Frame, WireError> {
    let mut buffer = BytesMut::from(message);
    match Frame::decode_from(&mut buffer, max_frame_len)? {
        Some(frame) if buffer.is_empty() => Ok(frame),
        Some(_) => Err(WireError::Malformed {
            frame: "WebSocket message",
            reason: format!("{} bytes follow the frame; a message carries exactly one frame", buffer.len()),
        }),
        None => Err(WireError::Malformed {
            frame: "WebSocket message",
            reason: "the message ends inside a frame; a message carries exactly one whole frame".to_string(),
        }),
    }
}

/// Encodes a frame as the payload of one binary WebSocket message.
pub fn encode_message(frame: &Frame) -> Result<Bytes, WireError> {
    let mut buffer = Vec::new();
    frame.encode(&mut buffer)?;
    Ok(Bytes::from(buffer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::frame::{ErrorCode, Ping};

    #[test]
    fn one_message_is_exactly_one_frame() {
        let ping = Frame::Ping(Ping { nonce: 7, timestamp_ms: 9 });
        let message = encode_message(&ping).unwrap();
        assert_eq!(decode_message(message.clone(), 1024).unwrap(), ping);
        let mut two = message.to_vec();
        two.extend_from_slice(&message);
        let error = decode_message(Bytes::from(two), 1024).unwrap_err();
        assert_eq!(error.error_code(), ErrorCode::MalformedFrame);
        let error = decode_message(message.slice(..message.len() - 1), 1024).unwrap_err();
        assert_eq!(error.error_code(), ErrorCode::MalformedFrame);
        let mut corrupt = message.to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        assert_eq!(decode_message(Bytes::from(corrupt), 1024).unwrap_err().error_code(), ErrorCode::BadCrc);
    }

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
