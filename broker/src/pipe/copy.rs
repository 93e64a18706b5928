//! The child's copy of its parent's topics, as the pipe feeds it: the [`client::Sink`] of this node's
//! follower. Topics are created with the parent's uid and log start, proven batches appended verbatim
//! (`Log::append_checked`: duplicates dropped, a gap refused, durability decided by storage), full
//! refreshes built in a replacement and switched in at READY, and the durable offset to acknowledge after
//! each step. Blocking storage calls run on blocking threads, except a small live append that only writes
//! into the active segment (`Log::appends_in_place`).
//!
//! This module decides what is written and what may be acknowledged; the connection, its frames and its
//! timing belong to the follower (`client::follow`), and the choice of parent to `upstream.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use client::{Durable, Fault, Sink, Work};
use protocol::frame::{Epochs, Ready, Reset, Settings, StartPosition, TopicAnnounce, TopicStart, Welcome};
use protocol::{ALL_TOPICS, CheckedBatch, NO_EPOCH, TopicUid};
use storage::{Adopted, Log, Replacement};
use tokio::task::JoinHandle;

use crate::node::Node;

/// Most record bytes a live append writes on the async task itself rather than on a blocking thread.
const INLINE_APPEND_BYTES: u64 = 256 * 1024;

/// The local copy and the refreshes being built into it.
#[derive(Debug)]
pub(super) struct ChildCopy {
    /// The broker.
    node: Arc<Node>,
    /// Full refreshes between RESET and READY, by topic.
    refreshes: HashMap<String, Replacement>,
    /// Live topics written since the last flush started: each log, and the end of what the parent sent.
    unflushed: HashMap<String, (Arc<Log>, u64)>,
    /// The flush running on a blocking thread; it answers what became durable.
    flushing: Option<JoinHandle<Result<Vec<Durable>, String>>>,
    /// When the last flush was due to start.
    last_flush: tokio::time::Instant,
}

impl ChildCopy {
    /// The copy of `node`.
    pub(super) fn new(node: Arc<Node>) -> ChildCopy {
        ChildCopy {
            node,
            refreshes: HashMap::new(),
            unflushed: HashMap::new(),
            flushing: None,
            last_flush: tokio::time::Instant::now(),
        }
    }

    /// Starts flushing every topic written since the last flush, unless a flush is running (it starts the
    /// next one when it completes): one flush at a time, covering everything written before it began.
    fn start_flush(&mut self) {
        if self.flushing.is_some() || self.unflushed.is_empty() {
            return;
        }
        // Flushes start at most once per `--flush-interval`: the records are relayed already, and what a
        // flush costs (an fdatasync) is then shared by everything written in the interval.
        let not_before = self.last_flush + self.node.config.flush_interval;
        self.last_flush = not_before.max(tokio::time::Instant::now());
        let unflushed: Vec<_> = self.unflushed.drain().collect();
        self.flushing = Some(tokio::spawn(async move {
            tokio::time::sleep_until(not_before).await;
            let flushed = tokio::task::spawn_blocking(move || {
                let mut acks = Vec::with_capacity(unflushed.len());
                for (topic, (log, received_end)) in unflushed {
                    log.flush().map_err(|error| error.to_string())?;
                    acks.push(Durable { topic, next_offset: log.durable_offset().min(received_end) });
                }
                Ok(acks)
            });
            flushed.await.unwrap_or_else(|error| Err(error.to_string()))
        }));
    }
}

impl Sink for ChildCopy {
    /// Each topic held, with its uid, from its next offset; then `*` from the earliest offset for every
    /// topic not held yet.
    async fn hello_topics(&mut self) -> Result<Vec<TopicStart>, Fault> {
        let mut topics: Vec<TopicStart> = self
            .node
            .store
            .topics()
            .iter()
            .map(|log| TopicStart {
                topic: log.name().to_string(),
                uid: log.uid(),
                epoch: log.epoch_claim(),
                start: StartPosition::Offset(log.next_offset()),
            })
            .collect();
        topics.push(TopicStart {
            topic: ALL_TOPICS.to_string(),
            uid: TopicUid::UNKNOWN,
            epoch: NO_EPOCH,
            start: StartPosition::Earliest,
        });
        Ok(topics)
    }

    /// Creates every topic WELCOME lists that this node does not hold yet, where delivery will start.
    async fn on_welcome(&mut self, welcome: &Welcome) -> Result<(), Fault> {
        for position in &welcome.topics {
            self.node.pipe.parent_end(&position.topic, position.end_offset);
            self.create_if_missing(&position.topic, position.uid, position.start_at).await?;
        }
        Ok(())
    }

    /// Creates a topic announced after WELCOME, from the parent's log start.
    async fn on_topic(&mut self, announce: &TopicAnnounce) -> Result<(), Fault> {
        self.node.pipe.parent_end(&announce.topic, announce.end_offset);
        self.create_if_missing(&announce.topic, announce.uid, announce.log_start).await
    }

    /// Appends consecutive proven batches of one topic in one storage call (one flush for all), and
    /// returns the offset to acknowledge: what storage reports durable, never past the last offset
    /// received. Records the copy already holds are dropped; a batch starting above its end is a gap.
    async fn on_batches(&mut self, batches: Vec<CheckedBatch>) -> Result<Vec<Durable>, Fault> {
        let Some(last) = batches.last() else {
            return Ok(Vec::new());
        };
        let topic = last.topic().to_string();
        let (received_end, parent_end) = (last.next_offset(), last.end_offset());
        // A live copy relays what it wrote at once (its readers see written records) and is flushed in the
        // background, so the next batches are written while the flush runs; a refresh is flushed as it is
        // built, since nobody reads it before READY.
        let (log, live) = match self.refreshes.get(&topic) {
            Some(replacement) => (Arc::clone(replacement.log()), false),
            None => (
                self.node.store.topic(&topic).ok_or_else(|| {
                    Fault::Protocol(format!("BATCH for topic {topic:?}, which was never announced"))
                })?,
                true,
            ),
        };
        let received_records: u64 = batches.iter().map(CheckedBatch::n_records).sum();
        let received_bytes: u64 = batches.iter().map(|batch| batch.records().len() as u64).sum();
        let writer = Arc::clone(&log);
        let append = move || {
            let outcome = if live {
                writer.append_checked_unflushed(&batches)
            } else {
                writer.append_checked(&batches)
            };
            let bytes = outcome.as_ref().map_or(0, |outcome| appended_bytes(&batches, outcome.first_offset));
            outcome.map(|outcome| (outcome, bytes))
        };
        // A small live append is one write into the page cache: made here, it saves two thread hand-offs
        // per batch, which is most of what a relayed record costs when records come one at a time. Anything
        // that may seal a segment (a sync) or flush (a refresh) runs on a blocking thread.
        let appended = if live
            && received_bytes <= INLINE_APPEND_BYTES
            && log.appends_in_place(received_bytes as usize)
        {
            append()
        } else {
            tokio::task::spawn_blocking(append).await.map_err(|error| Fault::Storage(error.to_string()))?
        };
        let (outcome, n_bytes) = appended.map_err(|error| match error {
            storage::Error::OffsetGap { expected, found, .. } => Fault::BadRecords(format!(
                "a gap in {topic:?}: this node holds records up to {expected}, the parent sent {found} next"
            )),
            storage::Error::BadBatch { .. } => Fault::BadRecords(error.to_string()),
            other => Fault::Storage(other.to_string()),
        })?;
        let metrics = &self.node.metrics;
        metrics.pipe_records_received.inc_by(received_records);
        metrics.pipe_bytes_received.inc_by(received_bytes);
        metrics.stored(&topic, outcome.n_appended, n_bytes);
        self.node.pipe.parent_end(&topic, parent_end);
        if live {
            self.unflushed.insert(topic, (log, received_end));
            self.start_flush();
            return Ok(Vec::new());
        }
        Ok(vec![Durable { topic, next_offset: outcome.durable_offset.min(received_end) }])
    }

    /// What the background flush made durable, to acknowledge; then the next flush starts, covering what
    /// was written meanwhile.
    async fn next_work(&mut self) -> Result<Work, Fault> {
        let Some(flushing) = self.flushing.as_mut() else {
            return std::future::pending().await;
        };
        // Awaiting the handle by reference is cancel-safe: if the follower turns to a frame first, the
        // flush goes on and is awaited next time.
        let flushed = flushing.await;
        self.flushing = None;
        let acks = flushed.map_err(|error| Fault::Storage(error.to_string()))?.map_err(Fault::Storage)?;
        self.start_flush();
        Ok(Work { acks, seeks: Vec::new() })
    }

    /// Records the parent's epoch history of a topic: for the refresh being built, or for the copy, unless
    /// the copy holds records the history says ROOT lost (then the follower asks for a full refresh).
    async fn on_epochs(&mut self, epochs: Epochs) -> Result<bool, Fault> {
        if let Some(replacement) = self.refreshes.get(&epochs.topic) {
            replacement.set_epochs(epochs.history);
            return Ok(false);
        }
        let Some(log) = self.node.store.topic(&epochs.topic).filter(|log| log.uid() == epochs.uid) else {
            // Not held, or another history: the parent refreshes it whole anyway.
            return Ok(false);
        };
        let store = Arc::clone(&self.node.store);
        let adopted = tokio::task::spawn_blocking(move || store.adopt_epochs(&log, epochs.history))
            .await
            .map_err(|error| Fault::Storage(error.to_string()))?
            .map_err(|error| Fault::Storage(error.to_string()))?;
        Ok(matches!(adopted, Adopted::Diverged { .. }))
    }

    /// Records the parent's settings of a topic: for the refresh being built, or for the copy (durably,
    /// before the batches that follow are stored), so that this node applies the same retention. Settings
    /// of a topic not held, or of another uid, are left alone: the parent refreshes such a copy whole, and
    /// sends them again after its RESET.
    async fn on_settings(&mut self, settings: Settings) -> Result<(), Fault> {
        if let Some(replacement) = self.refreshes.get(&settings.topic) {
            replacement.set_settings(settings.settings);
            return Ok(());
        }
        let Some(log) = self.node.store.topic(&settings.topic).filter(|log| log.uid() == settings.uid) else {
            return Ok(());
        };
        if log.settings() == settings.settings {
            return Ok(());
        }
        let store = Arc::clone(&self.node.store);
        let changed = tokio::task::spawn_blocking(move || store.set_settings(&log, settings.settings))
            .await
            .map_err(|error| Fault::Storage(error.to_string()))?;
        match changed {
            Ok(_) => {
                tracing::info!(topic = %settings.topic, settings = ?settings.settings, "topic settings from the parent");
                Ok(())
            }
            // Replaced or deleted meanwhile: its successor gets the settings after its RESET.
            Err(storage::Error::Closed { .. }) => Ok(()),
            Err(error) => Err(Fault::Storage(error.to_string())),
        }
    }

    /// Starts a full refresh of a topic: a replacement from the parent's log start, with the parent's uid.
    /// A refresh already running for the topic is thrown away first.
    async fn on_reset(&mut self, reset: Reset) -> Result<Vec<Durable>, Fault> {
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
        Ok(Vec::new())
    }

    /// Ends a full refresh: the replacement, complete up to READY's end, becomes the topic in one step.
    async fn on_ready(&mut self, ready: Ready) -> Result<Vec<Durable>, Fault> {
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
        Ok(vec![Durable { topic: ready.topic, next_offset: log.next_offset() }])
    }

    /// Whether the store can allocate disk space again after an append failed.
    async fn probe(&mut self) -> Result<(), Fault> {
        let store = Arc::clone(&self.node.store);
        tokio::task::spawn_blocking(move || store.probe_space())
            .await
            .map_err(|error| Fault::Storage(error.to_string()))?
            .map_err(|error| Fault::Storage(error.to_string()))
    }

    /// Throws away every refresh not completed: the link that fed them is gone, and the next parent
    /// starts its own. The topics keep their old, complete copies.
    async fn on_link_end(&mut self) {
        // What the flush makes durable can no longer be acknowledged on this link; the next HELLO starts
        // from the copy's end anyway. A failed flush shows again at the next append.
        if let Some(flushing) = self.flushing.take() {
            let _ = flushing.await;
        }
        self.unflushed.clear();
        for (topic, replacement) in self.refreshes.drain() {
            tracing::info!(%topic, "abandoning an unfinished full refresh; the old copy stays");
            abort(replacement).await;
        }
    }
}

impl ChildCopy {
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

/// The bytes of the records appended from `first_appended` on: what the batches held past the duplicates.
fn appended_bytes(batches: &[CheckedBatch], first_appended: u64) -> u64 {
    batches.iter().map(|batch| batch.from_offset(first_appended).0.len() as u64).sum()
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
