//! The child's copy of its parent's topics, as the pipe feeds it: topics created with the parent's uid and
//! log start, batches checked (`protocol::check_batch`) and appended verbatim (duplicates dropped, a gap
//! refused), full refreshes built in a replacement and switched in at READY, and the durable offset to
//! acknowledge after each step. Blocking storage calls run on blocking threads.
//!
//! This module decides what is written and what is acknowledged; the connection, its frames and its
//! timing belong to `client.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use protocol::frame::{Batch, Ready, Reset, StartPosition, TopicAnnounce, TopicStart, Welcome};
use protocol::record::peek_record_len;
use protocol::{ALL_TOPICS, TopicUid, check_batch};
use storage::{Log, Replacement};

use crate::config::FlushMode;
use crate::node::Node;

/// Why the copy cannot take what the parent sent. Each ends the link with an ERROR frame to the parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fault {
    /// Records that fail their checks or leave a gap (BAD_RECORDS).
    BadRecords(String),
    /// A frame that makes no sense now (PROTOCOL_VIOLATION).
    Protocol(String),
    /// This node failed to store (INTERNAL on the wire; the detail stays in the log).
    Storage(String),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::BadRecords(detail) => write!(f, "bad records from the parent: {detail}"),
            Fault::Protocol(detail) => write!(f, "protocol violation by the parent: {detail}"),
            Fault::Storage(detail) => write!(f, "storing failed: {detail}"),
        }
    }
}

/// What one step of the copy made durable: the ACK to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Durable {
    /// The topic.
    pub topic: String,
    /// Every record below this is durable here.
    pub next_offset: u64,
}

/// The local copy and the refreshes being built into it.
#[derive(Debug)]
pub(super) struct LocalCopy {
    /// The broker.
    node: Arc<Node>,
    /// Full refreshes between RESET and READY, by topic.
    refreshes: HashMap<String, Replacement>,
}

impl LocalCopy {
    /// The copy of `node`.
    pub(super) fn new(node: Arc<Node>) -> LocalCopy {
        LocalCopy { node, refreshes: HashMap::new() }
    }

    /// The topics of HELLO: each topic held, with its uid, from its next offset; then `*` from the
    /// earliest offset for every topic not held yet.
    pub(super) fn hello_topics(&self) -> Vec<TopicStart> {
        let mut topics: Vec<TopicStart> = self
            .node
            .store
            .topics()
            .iter()
            .map(|log| TopicStart {
                topic: log.name().to_string(),
                uid: log.uid(),
                start: StartPosition::Offset(log.next_offset()),
            })
            .collect();
        topics.push(TopicStart {
            topic: ALL_TOPICS.to_string(),
            uid: TopicUid::UNKNOWN,
            start: StartPosition::Earliest,
        });
        topics
    }

    /// Creates every topic WELCOME lists that this node does not hold yet, where delivery will start.
    pub(super) async fn on_welcome(&mut self, welcome: &Welcome) -> Result<(), Fault> {
        for position in &welcome.topics {
            self.node.pipe.parent_end(&position.topic, position.end_offset);
            self.create_if_missing(&position.topic, position.uid, position.start_at).await?;
        }
        Ok(())
    }

    /// Creates a topic announced after WELCOME, from the parent's log start.
    pub(super) async fn on_topic(&mut self, announce: &TopicAnnounce) -> Result<(), Fault> {
        self.node.pipe.parent_end(&announce.topic, announce.end_offset);
        self.create_if_missing(&announce.topic, announce.uid, announce.log_start).await
    }

    /// Checks and appends consecutive batches of one topic in one storage call (one flush for all), and
    /// returns the offset to acknowledge. Batches wholly below the local end are duplicates and dropped;
    /// a batch starting above it is a gap.
    pub(super) async fn on_batches(&mut self, batches: Vec<Batch>) -> Result<Durable, Fault> {
        let Some(first) = batches.first() else {
            return Err(Fault::Protocol("an empty group of batches".to_string()));
        };
        let topic = first.topic.clone();
        let log = match self.refreshes.get(&topic) {
            Some(replacement) => Arc::clone(replacement.log()),
            None => self.node.store.topic(&topic).ok_or_else(|| {
                Fault::Protocol(format!("BATCH for topic {topic:?}, which was never announced"))
            })?,
        };
        let received_records: u64 =
            batches.iter().map(|b| b.last_offset.saturating_sub(b.first_offset) + 1).sum();
        let received_bytes: u64 = batches.iter().map(|b| b.records.len() as u64).sum();
        let parent_end = batches.iter().map(|b| b.end_offset).max().unwrap_or(0);
        let flush = self.node.config.flush;
        let appended = tokio::task::spawn_blocking(move || append_batches(&log, batches, flush))
            .await
            .map_err(|error| Fault::Storage(error.to_string()))??;
        let metrics = &self.node.metrics;
        metrics.pipe_records_received.inc_by(received_records);
        metrics.pipe_bytes_received.inc_by(received_bytes);
        metrics.stored(&topic, appended.n_records, appended.n_bytes);
        self.node.pipe.parent_end(&topic, parent_end);
        Ok(Durable { topic, next_offset: appended.ack })
    }

    /// Starts a full refresh of a topic: a replacement from the parent's log start, with the parent's uid.
    /// A refresh already running for the topic is thrown away first.
    pub(super) async fn on_reset(&mut self, reset: Reset) -> Result<(), Fault> {
        tracing::info!(topic = %reset.topic, uid = %reset.uid, log_start = reset.log_start,
            end_offset = reset.end_offset, "full refresh from the parent");
        self.node.pipe.parent_end(&reset.topic, reset.end_offset);
        if let Some(previous) = self.refreshes.remove(&reset.topic) {
            abort(previous).await;
        }
        let store = Arc::clone(&self.node.store);
        let topic = reset.topic.clone();
        let replacement =
            tokio::task::spawn_blocking(move || store.begin_replace(&topic, reset.uid, reset.log_start))
                .await
                .map_err(|error| Fault::Storage(error.to_string()))?
                .map_err(|error| Fault::Storage(error.to_string()))?;
        self.node.metrics.pipe_refreshes.inc();
        self.refreshes.insert(reset.topic, replacement);
        Ok(())
    }

    /// Ends a full refresh: the replacement, complete up to READY's end, becomes the topic in one step.
    pub(super) async fn on_ready(&mut self, ready: Ready) -> Result<Durable, Fault> {
        let Some(replacement) = self.refreshes.remove(&ready.topic) else {
            return Err(Fault::Protocol(format!("READY for {:?} without a RESET", ready.topic)));
        };
        let built = replacement.log().next_offset();
        if replacement.log().uid() != ready.uid || built != ready.end_offset {
            let detail = format!(
                "READY for {:?} ends at {} with uid {}, but the refresh holds records up to {built} with uid {}",
                ready.topic,
                ready.end_offset,
                ready.uid,
                replacement.log().uid()
            );
            abort(replacement).await;
            return Err(Fault::BadRecords(detail));
        }
        let store = Arc::clone(&self.node.store);
        let log = tokio::task::spawn_blocking(move || store.commit_replace(replacement))
            .await
            .map_err(|error| Fault::Storage(error.to_string()))?
            .map_err(|error| Fault::Storage(error.to_string()))?;
        tracing::info!(topic = %ready.topic, uid = %ready.uid, log_start = log.log_start(),
            end_offset = log.next_offset(), "full refresh complete");
        Ok(Durable { topic: ready.topic, next_offset: log.next_offset() })
    }

    /// Throws away every refresh not completed: the link that fed them is gone, and the next parent
    /// starts its own. The topics keep their old, complete copies.
    pub(super) async fn abandon_refreshes(&mut self) {
        for (topic, replacement) in self.refreshes.drain() {
            tracing::info!(%topic, "abandoning an unfinished full refresh; the old copy stays");
            abort(replacement).await;
        }
    }

    /// Creates a topic this node does not hold, starting at `first_offset`. A known topic is left alone:
    /// if its uid differs from the parent's, the parent sends a full refresh.
    async fn create_if_missing(&self, topic: &str, uid: TopicUid, first_offset: u64) -> Result<(), Fault> {
        if uid.is_unknown() || self.node.store.topic(topic).is_some() || self.refreshes.contains_key(topic) {
            return Ok(());
        }
        let store = Arc::clone(&self.node.store);
        let name = topic.to_string();
        let created = tokio::task::spawn_blocking(move || store.create_topic(&name, uid, first_offset))
            .await
            .map_err(|error| Fault::Storage(error.to_string()))?;
        match created {
            Ok(_) => {
                tracing::info!(%topic, %uid, first_offset, "new topic from the parent");
                Ok(())
            }
            Err(storage::Error::TopicExists { .. }) => Ok(()),
            Err(error) => Err(Fault::Storage(error.to_string())),
        }
    }
}

/// What [`append_batches`] stored and what to acknowledge.
#[derive(Debug, Clone, Copy)]
struct Appended {
    /// Records appended (duplicates excluded).
    n_records: u64,
    /// Bytes of the records appended.
    n_bytes: u64,
    /// The offset to acknowledge.
    ack: u64,
}

/// Checks each batch, drops whole duplicates, refuses a gap, appends the rest in one call (copied into one
/// buffer only when there are several), makes it durable per the flush mode, and answers what to
/// acknowledge: the durable end, never past the last offset received. Blocking.
fn append_batches(log: &Log, batches: Vec<Batch>, flush: FlushMode) -> Result<Appended, Fault> {
    let mut next = log.next_offset();
    let mut parts: Vec<Bytes> = Vec::with_capacity(batches.len());
    let mut received_end = next;
    for batch in batches {
        let summary = check_batch(&batch.records, batch.first_offset).map_err(|error| {
            Fault::BadRecords(format!("{:?} at {}: {error}", batch.topic, batch.first_offset))
        })?;
        if summary.last_offset != batch.last_offset {
            return Err(Fault::BadRecords(format!(
                "BATCH of {:?} says it ends at {} but its records end at {}",
                batch.topic, batch.last_offset, summary.last_offset
            )));
        }
        received_end = received_end.max(batch.last_offset + 1);
        if batch.last_offset < next {
            continue;
        }
        if batch.first_offset > next {
            return Err(Fault::BadRecords(format!(
                "a gap in {:?}: this node holds records up to {next}, the parent sent {} next",
                batch.topic, batch.first_offset
            )));
        }
        next = batch.last_offset + 1;
        parts.push(batch.records);
    }
    let mut appended = Appended { n_records: 0, n_bytes: 0, ack: 0 };
    if !parts.is_empty() {
        let joined = if parts.len() == 1 { parts.swap_remove(0) } else { Bytes::from(parts.concat()) };
        let outcome = log.append_records(&joined).map_err(|error| Fault::Storage(error.to_string()))?;
        appended.n_records = outcome.n_appended;
        appended.n_bytes = joined.len() as u64 - duplicate_bytes(&joined, outcome.n_duplicates);
        if flush == FlushMode::Interval {
            log.flush().map_err(|error| Fault::Storage(error.to_string()))?;
        }
    }
    let durable = if flush == FlushMode::Never { log.next_offset() } else { log.durable_offset() };
    appended.ack = durable.min(received_end);
    Ok(appended)
}

/// The bytes taken by the first `n_duplicates` records of a checked batch.
fn duplicate_bytes(records: &[u8], n_duplicates: u64) -> u64 {
    let mut position = 0usize;
    for _ in 0..n_duplicates {
        match records.get(position..).map(peek_record_len) {
            Some(Ok(Some(len))) => position += len,
            _ => break,
        }
    }
    position as u64
}

/// Throws a replacement away on a blocking thread (it deletes files).
async fn abort(replacement: Replacement) {
    let topic = replacement.log().name().to_string();
    match tokio::task::spawn_blocking(move || replacement.abort()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%topic, %error, "discarding an unfinished refresh failed"),
        Err(error) => tracing::warn!(%topic, %error, "discarding an unfinished refresh failed"),
    }
}
