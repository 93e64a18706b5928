//! The registration task: register (retrying with backoff while the registry is down), heartbeat every
//! interval the registry asks for with this node's statistics, register again when the registry answers
//! that it does not know this node, and deregister on graceful shutdown. Every answer updates the
//! [`super::Placement`] and, when the candidates changed, `topology.json`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{HeartbeatBody, RegisterBody, RegistryClient, TopicHeartbeat, save};
use crate::error::RegistryError;
use crate::node::Node;
use client::Backoff;

/// The first wait after a failed registration.
const RETRY_INITIAL: Duration = Duration::from_millis(200);
/// The longest wait between registration attempts.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Bounds on the heartbeat interval a registry may ask for.
const HEARTBEAT_BOUNDS: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(60));
/// How long the goodbye at shutdown may take.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(2);

/// Registers and heartbeats until the node shuts down, then deregisters. `http_addr` and `tcp_addr` are
/// the advertised addresses.
pub async fn run_registration(
    node: Arc<Node>,
    registry: RegistryClient,
    http_addr: String,
    tcp_addr: String,
) {
    let body = RegisterBody {
        id: node.config.node_id.clone(),
        level: node.config.level.as_str(),
        labels: node.config.labels.0.clone(),
        http_addr,
        tcp_addr: Some(tcp_addr),
        preferred_parent: node.config.preferred_parent.clone(),
    };
    let shutdown = node.shutdown.clone();
    let mut backoff = Backoff::new(RETRY_INITIAL, RETRY_MAX);
    let mut failures = 0u64;
    'register: loop {
        let interval = loop {
            match registry.register(&body).await {
                Ok(assignment) => {
                    tracing::info!(registry = %registry.base_url(), parent = ?assignment.parent.as_ref().map(|p| &p.id),
                        alternates = assignment.alternates.len(), "registered");
                    node.placement.set_registered(true);
                    save(&node, node.placement.apply(&node.config.node_id, &assignment)).await;
                    backoff.reset();
                    failures = 0;
                    break heartbeat_interval(assignment.heartbeat_interval_ms);
                }
                Err(error) => {
                    note_failure(&node, &error, &mut failures, "registering");
                    tokio::select! {
                        () = shutdown.wait() => return,
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        };
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.wait() => break 'register,
                _ = ticks.tick() => {}
            }
            match registry.heartbeat(&heartbeat_body(&node)).await {
                Ok(assignment) => {
                    if failures > 0 {
                        tracing::info!(failures, "the registry answers again");
                    }
                    failures = 0;
                    save(&node, node.placement.apply(&node.config.node_id, &assignment)).await;
                    let asked = heartbeat_interval(assignment.heartbeat_interval_ms);
                    if asked != ticks.period() {
                        ticks = tokio::time::interval_at(tokio::time::Instant::now() + asked, asked);
                        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                }
                Err(RegistryError::UnknownNode) => {
                    tracing::info!("the registry does not know this node; registering again");
                    node.placement.set_registered(false);
                    continue 'register;
                }
                Err(error) => note_failure(&node, &error, &mut failures, "heartbeating"),
            }
        }
    }
    match tokio::time::timeout(DEREGISTER_TIMEOUT, registry.deregister()).await {
        Ok(Ok(())) => tracing::info!("deregistered from the registry"),
        Ok(Err(error)) => tracing::warn!(%error, "could not deregister; the registry will expire this node"),
        Err(_) => tracing::warn!("deregistering timed out; the registry will expire this node"),
    }
}

/// What this node reports in a heartbeat: the pipe's state and parent, where each topic stands (and how
/// far behind the parent), the children connected, and the number of consumers.
pub fn heartbeat_body(node: &Node) -> HeartbeatBody {
    let pipe = node.pipe.snapshot();
    let mut topics = BTreeMap::new();
    for log in node.store.topics() {
        let end_offset = log.next_offset();
        let lag =
            pipe.parent_end.get(log.name()).map_or(0, |parent_end| parent_end.saturating_sub(end_offset));
        topics.insert(log.name().to_string(), TopicHeartbeat { end_offset, lag });
    }
    let mut children = Vec::new();
    let mut consumers = 0;
    for connection in node.members.connections() {
        match connection.kind {
            "pipe" if !connection.client_id.is_empty() => children.push(connection.client_id),
            "consumer" => consumers += 1,
            _ => {}
        }
    }
    children.sort();
    children.dedup();
    HeartbeatBody {
        state: pipe.state.name().to_string(),
        parent: pipe.connected_parent().map(|parent| parent.id.clone()),
        topics,
        children,
        consumers,
    }
}

/// The heartbeat interval asked for, within sane bounds.
fn heartbeat_interval(asked_ms: u64) -> Duration {
    Duration::from_millis(asked_ms).clamp(HEARTBEAT_BOUNDS.0, HEARTBEAT_BOUNDS.1)
}

/// Records a failed registry call; the first of a run is a warning, the rest are quieter so that a
/// registry down for an hour does not flood the log.
fn note_failure(node: &Node, error: &RegistryError, failures: &mut u64, doing: &str) {
    node.placement.registry_failed(&error.to_string());
    *failures += 1;
    if *failures == 1 {
        tracing::warn!(%error, "{doing} failed; retrying (the pipe keeps running on the known parents)");
    } else {
        tracing::debug!(%error, failures = *failures, "{doing} failed again");
    }
}
