//! The child side of the pipe, as a [`client::follow`] follower: this module chooses the parent (a fixed
//! `--parent-url`, the registry asked with `exclude=` the parents that failed, or the known candidates in
//! order) and keeps [`PipeState`] and the pipe metrics up to date; the copy is `copy.rs`, and the
//! conversation (HELLO, WELCOME one level up, heartbeats, gathering, ACKs, reconnecting with backoff) is
//! the follower's. A child resumes from its own next offset, so switching parents neither loses nor repeats
//! a record.

use std::sync::Arc;
use std::time::Duration;

use client::{Endpoint, FollowConfig, LinkEnd, Target, Upstream};
use protocol::frame::{Hello, PROTOCOL_VERSION, Role, Welcome};
use tokio::sync::watch;

use super::copy::ChildCopy;
use crate::node::Node;
use crate::registration::{ParentRef, find_parent};

/// The first wait before trying again after a link ended.
const RECONNECT_INITIAL: Duration = Duration::from_millis(100);

/// How long connecting (TCP and the WebSocket upgrade) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Keeps this node's copy fed from a parent until the node shuts down. Does nothing at ROOT.
pub async fn run_pipe_client(node: Arc<Node>) {
    let Some(parent_level) = node.config.level.as_u8().checked_sub(1) else {
        return;
    };
    let config = &node.config;
    let follow = FollowConfig {
        hello: Hello {
            version: PROTOCOL_VERSION,
            role: Role::Pipe,
            level: config.level.as_u8(),
            client_id: config.node_id.clone(),
            group: config.node_id.clone(),
            token: config.token_for_parent().to_string(),
            max_in_flight: 0,
            batch_max_records: 0,
            batch_max_bytes: 0,
            topics: Vec::new(),
        },
        heartbeat: config.pipe_heartbeat,
        max_frame_len: usize::try_from(config.max_frame_bytes).unwrap_or(usize::MAX),
        connect_timeout: CONNECT_TIMEOUT,
        reconnect_initial: RECONNECT_INITIAL,
        reconnect_max: config.pipe_reconnect_max,
        upstream_level: Some(parent_level),
        upstream_noun: "parent",
        link_noun: "pipe",
    };
    let mut upstream = Parents {
        node: Arc::clone(&node),
        failed: Vec::new(),
        placement_changes: node.placement.subscribe(),
        chosen: None,
    };
    let mut copy = ChildCopy::new(Arc::clone(&node));
    let shutdown = node.shutdown.clone();
    client::follow(&follow, &mut upstream, &mut copy, async move { shutdown.wait().await }).await;
    tracing::debug!("the pipe client stopped");
}

/// The parents this node may follow, and the pipe's state as others see it.
struct Parents {
    /// The broker.
    node: Arc<Node>,
    /// Parents that failed since the last link that streamed, excluded when asking the registry.
    failed: Vec<String>,
    /// Wakes when the known candidates change.
    placement_changes: watch::Receiver<u64>,
    /// The parent last chosen.
    chosen: Option<ParentRef>,
}

impl Upstream for Parents {
    async fn choose(&mut self) -> Option<Target> {
        let parent = find_parent(&self.node, &mut self.failed).await;
        if parent.is_none() {
            self.node.pipe.waiting();
        }
        self.chosen.clone_from(&parent);
        parent.map(|parent| Target {
            endpoint: Endpoint::WebSocket(format!("ws://{}/api/v1/pipe", parent.http_addr)),
            name: parent.id,
        })
    }

    async fn changed(&mut self) {
        let _ = self.placement_changes.changed().await;
    }

    fn connecting(&mut self, _target: &Target) {
        if let Some(parent) = &self.chosen {
            self.node.pipe.connecting(parent);
        }
    }

    fn streaming(&mut self, _target: &Target, _welcome: &Welcome) {
        self.node.pipe.streaming();
        self.node.metrics.pipe_connected.set(1);
    }

    fn ended(&mut self, target: &Target, end: &LinkEnd) {
        self.node.metrics.pipe_connected.set(0);
        let LinkEnd::Failed { streamed, refused, reason, .. } = end else {
            return;
        };
        self.node.metrics.pipe_reconnects.inc();
        self.node.pipe.ended(*refused, reason);
        if *streamed {
            self.failed.clear();
        }
        if !self.failed.contains(&target.name) {
            self.failed.push(target.name.clone());
        }
    }
}
