//! The broker client loop: connect with a HELLO that resumes every topic from the local copy's own end,
//! then for each event: a BATCH is appended to the copy (durable, keys indexed), queued for the handler and
//! acknowledged once handled; RESET ... READY builds a new copy beside the old one and swaps it in.
//! Connection failures are retried with exponential backoff and jitter.
//!
//! This module owns the conversation with the broker; the copy (`copy.rs`, `refresh.rs`) owns the bytes
//! and `app.sqlite`, and the handler queue (`handler/queue.rs`) owns the handler's pace.

mod session;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use client::{Consumer, ConsumerConfig};
use protocol::frame::{StartPosition, TopicStart};
use protocol::{ALL_TOPICS, TopicUid};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::app::SyncStatus;
use crate::copy::{LocalCopy, READ_CHUNK_BYTES, READ_CHUNK_RECORDS};
use crate::error::Error;
use crate::handler::{HandlerItem, HandlerQueue};
use crate::metrics::Metrics;
use session::{Session, SessionEnd};

/// What the REST API can ask of the sync loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncCommand {
    /// Ask the broker for a full refresh of these topics (already recorded as pending in `app.sqlite`).
    Refresh(Vec<String>),
}

/// How to reach the broker and what to ask it for.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// The broker's TCP consumer address.
    pub broker: String,
    /// This consumer's id.
    pub client_id: String,
    /// The consumer group.
    pub group: String,
    /// Configured topics; `*` for every topic.
    pub topics: Vec<String>,
    /// Token the broker requires, or empty.
    pub token: String,
    /// Unacknowledged batches the broker may push ahead.
    pub max_in_flight: u16,
    /// Heartbeat interval before the broker's WELCOME names its own.
    pub heartbeat: Duration,
    /// Largest frame accepted.
    pub max_frame_len: usize,
    /// First wait before reconnecting.
    pub reconnect_backoff: Duration,
    /// Longest wait before reconnecting.
    pub reconnect_max_backoff: Duration,
}

/// The sync loop and what it works with.
#[derive(Debug)]
pub struct SyncLoop {
    /// The local copy.
    pub copy: Arc<LocalCopy>,
    /// The handler queue.
    pub queue: HandlerQueue,
    /// Whether the handler wants records (if not, batches are acknowledged at once).
    pub handler_wants_records: bool,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The status REST reads.
    pub status: Arc<SyncStatus>,
    /// Connection settings.
    pub settings: SyncSettings,
}

impl SyncLoop {
    /// Runs until `shutdown` completes: replays records the handler has not seen, then connects, streams,
    /// and reconnects after any failure.
    pub async fn run(self, mut commands: mpsc::Receiver<SyncCommand>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        if self.handler_wants_records {
            tokio::select! {
                () = &mut shutdown => return,
                replayed = replay_unhandled(&self.copy, &self.queue) => {
                    if let Err(error) = replayed {
                        tracing::error!(%error, "cannot hand stored records to the handler");
                    }
                }
            }
        }
        let mut backoff = self.settings.reconnect_backoff;
        let mut epoch = 0u64;
        loop {
            // Requests that came while disconnected are already pending in app.sqlite; HELLO asks for them.
            while commands.try_recv().is_ok() {}
            let copy = self.copy.clone();
            match tokio::task::spawn_blocking(move || copy.catch_up_index()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "cannot bring the key index up to the log"),
                Err(error) => tracing::error!(%error, "cannot bring the key index up to the log"),
            }
            let connected = match self.hello_topics().await {
                Ok(topics) => {
                    let config = ConsumerConfig {
                        client_id: self.settings.client_id.clone(),
                        group: self.settings.group.clone(),
                        topics,
                        token: self.settings.token.clone(),
                        max_in_flight: self.settings.max_in_flight,
                        heartbeat: self.settings.heartbeat,
                        max_frame_len: self.settings.max_frame_len,
                    };
                    tokio::select! {
                        () = &mut shutdown => return,
                        connected = Consumer::connect(self.settings.broker.as_str(), config) => {
                            connected.map_err(Error::from)
                        }
                    }
                }
                Err(error) => Err(error),
            };
            match connected {
                Ok((consumer, welcome)) => {
                    epoch += 1;
                    self.metrics.broker_connects.inc();
                    self.metrics.broker_connected.set(1);
                    self.status.set_connected(&welcome.node_id);
                    tracing::info!(broker = %self.settings.broker, node = %welcome.node_id, n_topics = welcome.topics.len(), "connected");
                    let mut session = Session::new(&self, consumer, epoch);
                    let started = Instant::now();
                    let ended = session.run(welcome, &mut commands, &mut shutdown).await;
                    let made_progress =
                        session.n_events > 0 || started.elapsed() > self.settings.reconnect_max_backoff;
                    session.settle().await;
                    session.abandon_refreshes().await;
                    self.metrics.broker_connected.set(0);
                    match ended {
                        Ok(SessionEnd::Shutdown) => {
                            self.status.set_disconnected(None);
                            tracing::info!("broker connection closed for shutdown");
                            return;
                        }
                        Err(error) => {
                            tracing::warn!(%error, cause = ?std::error::Error::source(&error), "broker connection lost");
                            self.status.set_disconnected(Some(error.to_string()));
                        }
                    }
                    if made_progress {
                        backoff = self.settings.reconnect_backoff;
                    }
                }
                Err(error) => {
                    tracing::warn!(broker = %self.settings.broker, %error, "cannot connect to the broker");
                    self.status.set_disconnected(Some(error.to_string()));
                }
            }
            let wait = jitter(backoff);
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
            }
            backoff = (backoff * 2).min(self.settings.reconnect_max_backoff);
        }
    }

    /// The HELLO subscription: every topic held locally resumes from its own end with its uid (or asks for
    /// a full refresh if one is pending); configured topics not held yet start at the earliest record.
    async fn hello_topics(&self) -> Result<Vec<TopicStart>, Error> {
        let db = self.copy.db().clone();
        let pending: HashSet<String> =
            tokio::task::spawn_blocking(move || db.pending_refreshes()).await??.into_iter().collect();
        let all = self.settings.topics.iter().any(|topic| topic == ALL_TOPICS);
        let mut starts = Vec::new();
        let mut held = HashSet::new();
        for view in self.copy.views() {
            if !all && !self.settings.topics.iter().any(|topic| **topic == *view.name) {
                continue;
            }
            held.insert(view.name.to_string());
            let start = if pending.contains(&*view.name) {
                StartPosition::FullRefresh
            } else {
                StartPosition::Offset(view.log.next_offset())
            };
            starts.push(TopicStart { topic: view.name.to_string(), uid: view.log.uid(), start });
        }
        for topic in &self.settings.topics {
            if topic != ALL_TOPICS && !held.contains(topic) {
                let start = if pending.contains(topic) {
                    StartPosition::FullRefresh
                } else {
                    StartPosition::Earliest
                };
                starts.push(TopicStart { topic: topic.clone(), uid: TopicUid::UNKNOWN, start });
            }
        }
        if all {
            starts.push(TopicStart {
                topic: ALL_TOPICS.to_string(),
                uid: TopicUid::UNKNOWN,
                start: StartPosition::Earliest,
            });
        }
        Ok(starts)
    }
}

/// Hands the handler every stored record it has not finished (after a crash or a stop with a busy
/// handler), before the broker connection starts.
async fn replay_unhandled(copy: &Arc<LocalCopy>, queue: &HandlerQueue) -> Result<(), Error> {
    let db = copy.db().clone();
    let rows = tokio::task::spawn_blocking(move || db.topics()).await??;
    for row in rows {
        let Some(view) = copy.view(&row.topic) else { continue };
        let mut next = row.handled_to.max(view.log.log_start());
        let end = view.log.next_offset();
        if next < end {
            tracing::info!(
                topic = row.topic,
                from = next,
                to = end,
                "handing stored records to the handler again"
            );
        }
        while next < end {
            let log = view.log.clone();
            let chunk =
                tokio::task::spawn_blocking(move || log.read(next, READ_CHUNK_RECORDS, READ_CHUNK_BYTES))
                    .await?
                    .map_err(|source| Error::Storage {
                        context: "replaying records",
                        topic: row.topic.clone(),
                        source: Box::new(source),
                    })?;
            if chunk.n_records == 0 {
                break;
            }
            let item = HandlerItem {
                epoch: 0,
                topic: view.name.clone(),
                records: chunk.records,
                from_offset: next,
                ack_to: chunk.next_offset,
                handled_to: Some(chunk.next_offset),
            };
            queue.push(item).await?;
            next = chunk.next_offset;
        }
    }
    Ok(())
}

/// `base` scaled by a random factor in [0.5, 1.0), so many consumers do not reconnect in step.
fn jitter(base: Duration) -> Duration {
    base.mul_f64(rand::random_range(0.5..1.0))
}
