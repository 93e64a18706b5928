//! What each event from the broker does to the consumer-app's copy: the [`client::Sink`] of its follower.
//! A group of proven batches is appended (one write, one flush), then its keys are indexed (one SQLite
//! transaction) on the blocking pool while the next group is received and appended; an indexed group goes
//! to the handler queue, or is acknowledged at once with the `store` handler. RESET ... READY builds a new
//! copy beside the old one and swaps it in. Acknowledgements the handler finishes later, and refreshes
//! asked for over REST, come out of [`Sink::next_work`], which the handler queue wakes.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use client::{Durable, Fault, Sink, Work};
use protocol::frame::{
    Epochs, Ready, Reset, Settings, StartPosition, TopicAnnounce, TopicPosition, TopicStart, Welcome,
};
use protocol::{ALL_TOPICS, CheckedBatch, EpochHistory, NO_EPOCH, RecordView, TopicSettings, TopicUid};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{SyncCommand, SyncLoop};
use crate::copy::{AppendSummary, Appended};
use crate::error::Error;
use crate::handler::HandlerItem;
use crate::metrics::TopicLabel;
use crate::now_ms;
use crate::refresh::Refresh;

/// The consumer-app's copy as a follower's sink.
pub(super) struct AppSink<'s> {
    /// The loop's parts.
    sync: &'s SyncLoop,
    /// Refresh requests from REST.
    commands: mpsc::Receiver<SyncCommand>,
    /// Whether REST can still send requests.
    commands_open: bool,
    /// Tags this connection's handler items, so acks never cross connections.
    epoch: u64,
    /// The broker's uid of each topic, from WELCOME, TOPIC, POSITION and RESET.
    uids: HashMap<String, TopicUid>,
    /// Refreshes in progress.
    refreshes: HashMap<String, Refresh>,
    /// Epoch histories received for topics not held yet, adopted once their first records are stored.
    histories: HashMap<String, EpochHistory>,
    /// Settings received for topics not held yet, recorded once their first records are stored.
    settings: HashMap<String, (TopicUid, Option<TopicSettings>)>,
    /// The group whose keys are being indexed.
    indexing: Option<Indexing>,
    /// Indexed groups waiting for room in the handler queue.
    to_handler: VecDeque<HandlerItem>,
    /// Acknowledgements ready to send.
    acks: Vec<Durable>,
}

/// A group stored in the log whose keys are being indexed on the blocking pool.
struct Indexing {
    /// Topic of the group.
    topic: String,
    /// The records, for the handler.
    records: Bytes,
    /// Records below this offset are not handed to the handler.
    handler_from: u64,
    /// What the append did.
    appended: Appended,
    /// The index transaction.
    task: JoinHandle<Result<AppendSummary, Error>>,
}

impl<'s> AppSink<'s> {
    pub(super) fn new(sync: &'s SyncLoop, commands: mpsc::Receiver<SyncCommand>) -> AppSink<'s> {
        AppSink {
            sync,
            commands,
            commands_open: true,
            epoch: 0,
            uids: HashMap::new(),
            refreshes: HashMap::new(),
            histories: HashMap::new(),
            settings: HashMap::new(),
            indexing: None,
            to_handler: VecDeque::new(),
            acks: Vec::new(),
        }
    }
}

impl Sink for AppSink<'_> {
    /// Every topic held locally resumes from its own end with its uid (or asks for a full refresh if one is
    /// pending); configured topics not held yet start at the earliest record. Requests that came while
    /// disconnected are already pending in `app.sqlite`, and the key index is brought up to the log first.
    async fn hello_topics(&mut self) -> Result<Vec<TopicStart>, Fault> {
        while self.commands.try_recv().is_ok() {}
        let copy = self.sync.copy.clone();
        match tokio::task::spawn_blocking(move || copy.catch_up_index()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "cannot bring the key index up to the log"),
            Err(error) => tracing::error!(%error, "cannot bring the key index up to the log"),
        }
        self.hello_starts().await.map_err(storage_fault)
    }

    async fn on_welcome(&mut self, welcome: &Welcome) -> Result<(), Fault> {
        self.epoch += 1;
        for position in &welcome.topics {
            self.uids.insert(position.topic.clone(), position.uid);
            self.sync.status.set_broker_end(&position.topic, position.end_offset);
            self.update_lag(&position.topic, None);
        }
        self.check_caught_up().await;
        Ok(())
    }

    async fn on_topic(&mut self, announce: &TopicAnnounce) -> Result<(), Fault> {
        tracing::info!(topic = %announce.topic, uid = %announce.uid, "broker announced a topic");
        self.uids.insert(announce.topic.clone(), announce.uid);
        self.sync.status.set_broker_end(&announce.topic, announce.end_offset);
        Ok(())
    }

    /// Stores a group of consecutive batches of one topic (one append, durable), then starts indexing their
    /// keys on the blocking pool; the index of the previous group is finished first, so positions only move
    /// forward. Indexing group N while group N+1 is received and appended keeps the disk and SQLite busy at
    /// the same time.
    async fn on_batches(&mut self, batches: Vec<CheckedBatch>) -> Result<Vec<Durable>, Fault> {
        let Some(last) = batches.last() else {
            return Ok(Vec::new());
        };
        let (topic, end_offset) = (last.topic().to_string(), last.end_offset());
        self.sync.metrics.batches_received.inc_by(batches.len() as u64);
        self.sync.metrics.appends.inc();
        self.sync.status.set_broker_end(&topic, end_offset);
        // The handler takes the records as one buffer; without a handler they are not copied.
        let records = if self.sync.handler_wants_records { concat_records(&batches) } else { Bytes::new() };
        let copy = self.sync.copy.clone();
        let (appended, handler_from, batches) = if let Some(mut refresh) = self.refreshes.remove(&topic) {
            let (refresh, appended, batches) = tokio::task::spawn_blocking(move || {
                let appended = copy.append_refresh_log(&mut refresh, &batches);
                (refresh, appended, batches)
            })
            .await
            .map_err(join_fault)?;
            let handler_from = refresh.handler_from;
            self.sync.status.refresh_progress(&topic, refresh.n_records());
            self.refreshes.insert(topic.clone(), refresh);
            let appended = appended.map_err(storage_fault)?;
            let handler_from = handler_from.max(appended.first_new_offset);
            (appended, handler_from, batches)
        } else {
            let Some(uid) = self.uid_of(&topic) else {
                return Err(Fault::Protocol(format!("BATCH for topic {topic:?}, which was never announced")));
            };
            let name = topic.clone();
            let (appended, batches) = tokio::task::spawn_blocking(move || {
                let appended = copy.append_log(&name, uid, &batches);
                (appended, batches)
            })
            .await
            .map_err(join_fault)?;
            match appended {
                Ok(appended) => {
                    if !self.histories.is_empty()
                        && let Some(history) = self.histories.remove(&topic)
                    {
                        self.adopt_epochs(&topic, uid, history).await?;
                    }
                    if !self.settings.is_empty()
                        && let Some((settings_uid, settings)) = self.settings.remove(&topic)
                    {
                        self.store_settings(&topic, settings_uid, settings).await?;
                    }
                    let first_new_offset = appended.first_new_offset;
                    (appended, first_new_offset, batches)
                }
                Err(error) => return Err(self.refresh_after_bad_batch(&topic, error).await),
            }
        };
        self.finish_indexing().await?;
        let (copy, metrics) = (self.sync.copy.clone(), self.sync.metrics.clone());
        let job = appended.clone();
        let task = tokio::task::spawn_blocking(move || {
            let durable_s = job.durable_ms as f64 / 1000.0;
            // Refresh records are old by design; only live ones say how long ROOT to here takes.
            let live = job.live;
            copy.index_appended(&job, &batches, |view: &RecordView<'_>| {
                if live {
                    let latency = durable_s - view.timestamp_ms() as f64 / 1000.0;
                    metrics.end_to_end_latency.observe(latency.max(0.0));
                }
            })
        });
        self.indexing = Some(Indexing { topic, records, handler_from, appended, task });
        Ok(std::mem::take(&mut self.acks))
    }

    /// The broker's epoch history of a topic: for the refresh being built, for the live copy (unless it
    /// holds records the history says ROOT lost: then the follower asks for a full refresh), or kept for
    /// a copy not created yet.
    async fn on_epochs(&mut self, epochs: Epochs) -> Result<bool, Fault> {
        let Epochs { topic, uid, history } = epochs;
        if let Some(refresh) = self.refreshes.get(&topic) {
            refresh.set_epochs(history);
            return Ok(false);
        }
        if self.sync.copy.view(&topic).is_some() {
            // A copy of another uid is left alone (it is refreshed whole anyway).
            return self.adopt_epochs(&topic, uid, history).await;
        }
        self.histories.insert(topic, history);
        Ok(false)
    }

    /// The broker's settings of a topic: for the refresh being built, for the live copy, or kept for a
    /// topic not held yet until its first records are stored.
    async fn on_settings(&mut self, settings: Settings) -> Result<(), Fault> {
        let Settings { topic, uid, settings } = settings;
        if let Some(refresh) = self.refreshes.get(&topic) {
            refresh.set_settings(settings);
            return Ok(());
        }
        if self.sync.copy.view(&topic).is_some() {
            self.settings.remove(&topic);
            return self.store_settings(&topic, uid, settings).await;
        }
        self.settings.insert(topic, (uid, settings));
        Ok(())
    }

    async fn on_reset(&mut self, reset: Reset) -> Result<Vec<Durable>, Fault> {
        let Reset { topic, uid, log_start, end_offset } = reset;
        self.finish_indexing().await?;
        if let Some(previous) = self.refreshes.remove(&topic) {
            self.abandon(previous).await.map_err(storage_fault)?;
        }
        // The handler's position becomes the new copy's starting point, so let it finish first.
        self.drain_handler().await?;
        self.uids.insert(topic.clone(), uid);
        self.sync.status.set_broker_end(&topic, end_offset);
        // Settings kept for a topic not held yet describe the copy before this one; the broker sends the
        // new copy's after RESET.
        self.settings.remove(&topic);
        let copy = self.sync.copy.clone();
        let name = topic.clone();
        let refresh = tokio::task::spawn_blocking(move || copy.begin_refresh(&name, uid, log_start))
            .await
            .map_err(join_fault)?
            .map_err(storage_fault)?;
        self.sync.status.refresh_started(&topic, uid, end_offset);
        self.refreshes.insert(topic, refresh);
        Ok(std::mem::take(&mut self.acks))
    }

    async fn on_ready(&mut self, ready: Ready) -> Result<Vec<Durable>, Fault> {
        let Ready { topic, uid, end_offset } = ready;
        self.finish_indexing().await?;
        self.sync.status.set_broker_end(&topic, end_offset);
        let Some(refresh) = self.refreshes.remove(&topic) else {
            tracing::debug!(topic, "READY without a refresh in progress");
            self.mark_ready().await;
            return Ok(std::mem::take(&mut self.acks));
        };
        if refresh.uid() != uid {
            self.abandon(refresh).await.map_err(storage_fault)?;
            return Err(Fault::Protocol(format!(
                "READY of {topic:?} for uid {uid} during a refresh of another uid"
            )));
        }
        let copy = self.sync.copy.clone();
        let view = tokio::task::spawn_blocking(move || copy.commit_refresh(refresh))
            .await
            .map_err(join_fault)?
            .map_err(storage_fault)?;
        self.sync.status.refresh_ended(&topic);
        self.sync.metrics.refreshes.get_or_create(&TopicLabel::new(&topic)).inc();
        let next_offset = view.log.next_offset();
        self.update_lag(&topic, Some(next_offset));
        self.mark_ready().await;
        // The broker commits a refresh only on an ACK after READY, so one is always sent; with a handler it
        // goes through the queue, behind the refresh's records still being handled.
        if self.sync.handler_wants_records {
            let item = HandlerItem {
                epoch: self.epoch,
                topic: view.name.clone(),
                records: Bytes::new(),
                from_offset: next_offset,
                ack_to: next_offset,
                handled_to: None,
            };
            self.to_handler.push_back(item);
            self.feed_handler().await?;
        } else {
            self.acks.push(Durable { topic, next_offset });
        }
        Ok(std::mem::take(&mut self.acks))
    }

    /// Batches sent from the old position before this answer are still records of the same history
    /// continuing the live copy, so they were kept (offsets make them exact); only a SEEK FULL_REFRESH is
    /// ever sent, and its RESET follows.
    async fn on_position(&mut self, position: &TopicPosition) -> Result<(), Fault> {
        self.uids.insert(position.topic.clone(), position.uid);
        self.sync.status.set_broker_end(&position.topic, position.end_offset);
        Ok(())
    }

    /// Cancel-safe: every await is a join handle polled by reference, a queue reservation, a notification
    /// or a channel receive, and state changes only after one completed.
    async fn next_work(&mut self) -> Result<Work, Fault> {
        loop {
            if !self.acks.is_empty() {
                return Ok(Work { acks: std::mem::take(&mut self.acks), seeks: Vec::new() });
            }
            let done = self.sync.queue.take_done(self.epoch);
            if !done.is_empty() {
                let acks = done
                    .into_iter()
                    .map(|(topic, next_offset)| Durable { topic: topic.to_string(), next_offset });
                return Ok(Work { acks: acks.collect(), seeks: Vec::new() });
            }
            tokio::select! {
                indexed = wait_for_index(&mut self.indexing), if self.indexing.is_some() => {
                    if let Some(indexing) = self.indexing.take() {
                        self.complete(indexing, indexed).await?;
                    }
                }
                slot = self.sync.queue.reserve(), if !self.to_handler.is_empty() => {
                    let slot = slot.map_err(storage_fault)?;
                    if let Some(item) = self.to_handler.pop_front() {
                        slot.push(item);
                    }
                }
                () = self.sync.queue.changed() => {}
                command = self.commands.recv(), if self.commands_open => match command {
                    Some(SyncCommand::Refresh(topics)) => {
                        let seeks = topics.into_iter().map(|topic| (topic, StartPosition::FullRefresh)).collect();
                        return Ok(Work { acks: Vec::new(), seeks });
                    }
                    None => self.commands_open = false,
                },
            }
        }
    }

    /// Whether the copy can allocate disk space again after an append failed.
    async fn probe(&mut self) -> Result<(), Fault> {
        let copy = self.sync.copy.clone();
        tokio::task::spawn_blocking(move || copy.probe_space())
            .await
            .map_err(join_fault)?
            .map_err(storage_fault)
    }

    /// The group being indexed is finished and handed to the handler (its acknowledgement, of a connection
    /// that is gone, is dropped); refreshes not completed are abandoned.
    async fn on_link_end(&mut self) {
        if let Err(fault) = self.finish_indexing().await {
            tracing::error!(%fault, "indexing failed; it is repaired at the next start");
        }
        if let Err(fault) = self.feed_handler().await {
            tracing::error!(%fault, "cannot hand records to the handler");
        }
        self.acks.clear();
        for (topic, refresh) in self.refreshes.drain().collect::<Vec<_>>() {
            if let Err(error) = self.abandon(refresh).await {
                tracing::error!(topic, %error, "cannot abandon a refresh");
            }
        }
    }
}

impl AppSink<'_> {
    /// The HELLO subscription.
    async fn hello_starts(&self) -> Result<Vec<TopicStart>, Error> {
        let db = self.sync.copy.db().clone();
        let pending: std::collections::HashSet<String> =
            tokio::task::spawn_blocking(move || db.pending_refreshes()).await??.into_iter().collect();
        let topics = &self.sync.settings.topics;
        let all = topics.iter().any(|topic| topic == ALL_TOPICS);
        let mut starts = Vec::new();
        let mut held = std::collections::HashSet::new();
        for view in self.sync.copy.views() {
            if !all && !topics.iter().any(|topic| **topic == *view.name) {
                continue;
            }
            held.insert(view.name.to_string());
            let start = if pending.contains(&*view.name) {
                StartPosition::FullRefresh
            } else {
                StartPosition::Offset(view.log.next_offset())
            };
            let (uid, epoch) = (view.log.uid(), view.log.epoch_claim());
            starts.push(TopicStart { topic: view.name.to_string(), uid, epoch, start });
        }
        for topic in topics {
            if topic != ALL_TOPICS && !held.contains(topic) {
                let start = if pending.contains(topic) {
                    StartPosition::FullRefresh
                } else {
                    StartPosition::Earliest
                };
                starts.push(TopicStart {
                    topic: topic.clone(),
                    uid: TopicUid::UNKNOWN,
                    epoch: NO_EPOCH,
                    start,
                });
            }
        }
        if all {
            starts.push(TopicStart {
                topic: ALL_TOPICS.to_string(),
                uid: TopicUid::UNKNOWN,
                epoch: NO_EPOCH,
                start: StartPosition::Earliest,
            });
        }
        Ok(starts)
    }

    /// Waits for the group being indexed, if any, then completes it.
    async fn finish_indexing(&mut self) -> Result<(), Fault> {
        let Some(mut indexing) = self.indexing.take() else {
            return Ok(());
        };
        let indexed = (&mut indexing.task).await;
        self.complete(indexing, indexed).await
    }

    /// A group is durable and indexed: count it, then queue it for the handler or acknowledge it.
    async fn complete(
        &mut self,
        indexing: Indexing,
        indexed: Result<Result<AppendSummary, Error>, tokio::task::JoinError>,
    ) -> Result<(), Fault> {
        let summary = indexed.map_err(join_fault)?.map_err(storage_fault)?;
        let Indexing { topic, records, handler_from, appended, .. } = indexing;
        self.count(&topic, &summary);
        if appended.live {
            self.update_lag(&topic, Some(summary.next_offset));
        }
        if self.sync.handler_wants_records {
            self.to_handler.push_back(HandlerItem {
                epoch: self.epoch,
                topic: appended.topic.clone(),
                records,
                from_offset: handler_from,
                ack_to: summary.next_offset,
                handled_to: appended.live.then_some(summary.next_offset),
            });
        } else {
            self.acks.push(Durable { topic, next_offset: summary.next_offset });
        }
        self.check_caught_up().await;
        Ok(())
    }

    /// Hands every waiting group to the handler queue, waiting for room.
    async fn feed_handler(&mut self) -> Result<(), Fault> {
        while let Some(item) = self.to_handler.pop_front() {
            self.sync.queue.push(item).await.map_err(storage_fault)?;
        }
        Ok(())
    }

    /// Waits until the handler has finished every queued group, collecting acknowledgements as it goes.
    async fn drain_handler(&mut self) -> Result<(), Fault> {
        self.feed_handler().await?;
        loop {
            let done = self.sync.queue.take_done(self.epoch);
            self.acks.extend(
                done.into_iter()
                    .map(|(topic, next_offset)| Durable { topic: topic.to_string(), next_offset }),
            );
            if self.sync.queue.outstanding() == 0 {
                return Ok(());
            }
            // The handler task notifies after every item; a notification that came before this wait is kept.
            self.sync.queue.changed().await;
        }
    }

    /// A batch the copy cannot take (a gap, another uid) means this copy and the broker disagree: the topic
    /// is marked for a full refresh and the link is dropped, so the next HELLO asks for one.
    async fn refresh_after_bad_batch(&self, topic: &str, error: Error) -> Fault {
        let refusable = match &error {
            Error::Unexpected { .. } => true,
            Error::Storage { source, .. } => matches!(**source, storage::Error::OffsetGap { .. }),
            _ => false,
        };
        if !refusable {
            return storage_fault(error);
        }
        tracing::warn!(topic, %error, "the broker's records do not continue the local copy; asking for a full refresh");
        let db = self.sync.copy.db().clone();
        let topics = vec![topic.to_string()];
        match tokio::task::spawn_blocking(move || db.request_refresh(&topics, now_ms())).await {
            Ok(Ok(())) => Fault::BadRecords(error.to_string()),
            Ok(Err(db_error)) => storage_fault(db_error),
            Err(join) => join_fault(join),
        }
    }

    async fn abandon(&self, refresh: Refresh) -> Result<(), Error> {
        let topic = refresh.topic().to_string();
        let copy = self.sync.copy.clone();
        tokio::task::spawn_blocking(move || copy.abandon_refresh(refresh)).await??;
        self.sync.status.refresh_ended(&topic);
        Ok(())
    }

    /// The uid records of `topic` belong to: the broker's, or failing that the local copy's.
    /// Records the broker's history of the live copy of `topic`; `true` if the copy diverged from it.
    async fn adopt_epochs(&self, topic: &str, uid: TopicUid, history: EpochHistory) -> Result<bool, Fault> {
        let copy = self.sync.copy.clone();
        let name = topic.to_string();
        tokio::task::spawn_blocking(move || copy.adopt_epochs(&name, uid, history))
            .await
            .map_err(join_fault)?
            .map_err(storage_fault)
    }

    /// Records the broker's settings of the live copy of `topic` (of `uid`), durably.
    async fn store_settings(
        &self,
        topic: &str,
        uid: TopicUid,
        settings: Option<TopicSettings>,
    ) -> Result<(), Fault> {
        let copy = self.sync.copy.clone();
        let name = topic.to_string();
        tokio::task::spawn_blocking(move || copy.set_settings(&name, uid, settings))
            .await
            .map_err(join_fault)?
            .map_err(storage_fault)
    }

    fn uid_of(&self, topic: &str) -> Option<TopicUid> {
        self.uids.get(topic).copied().or_else(|| self.sync.copy.view(topic).map(|view| view.log.uid()))
    }

    fn count(&self, topic: &str, summary: &AppendSummary) {
        let label = TopicLabel::new(topic);
        let metrics = &self.sync.metrics;
        metrics.records_received.get_or_create(&label).inc_by(summary.n_appended);
        metrics.bytes_received.get_or_create(&label).inc_by(summary.bytes_appended);
        if summary.n_duplicates > 0 {
            metrics.duplicates_dropped.get_or_create(&label).inc_by(summary.n_duplicates);
        }
    }

    /// Sets the lag gauge of `topic` from the broker's end and the copy's end (`next_offset`, or the live
    /// log's end when not given).
    fn update_lag(&self, topic: &str, next_offset: Option<u64>) {
        let next = next_offset.or_else(|| self.sync.copy.view(topic).map(|view| view.log.next_offset()));
        if let (Some(end), Some(next)) = (self.sync.status.broker_end(topic), next) {
            let lag = end.saturating_sub(next).min(i64::MAX as u64) as i64;
            self.sync.metrics.lag.get_or_create(&TopicLabel::new(topic)).set(lag);
        }
    }

    /// Marks the copy ready, and remembers it in `app.sqlite` so a restart without a broker still serves the
    /// copy it has.
    async fn mark_ready(&self) {
        if self.sync.status.set_ready() {
            let db = self.sync.copy.db().clone();
            match tokio::task::spawn_blocking(move || db.set_ready_once()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "cannot remember readiness"),
                Err(error) => tracing::warn!(%error, "cannot remember readiness"),
            }
        }
    }

    /// Marks the copy ready once every topic the broker told of is held up to the broker's end.
    async fn check_caught_up(&self) {
        if self.sync.status.is_ready() || !self.refreshes.is_empty() {
            return;
        }
        let caught_up = self.sync.status.broker_ends().iter().all(|(topic, end)| {
            self.sync.copy.view(topic).map_or(*end == 0, |view| view.log.next_offset() >= *end)
        });
        if caught_up {
            tracing::info!("caught up with the broker; ready");
            self.mark_ready().await;
        }
    }
}

/// The records of a group laid end to end, for the handler; a group of one keeps its buffer without a copy.
fn concat_records(group: &[CheckedBatch]) -> Bytes {
    if let [one] = group {
        return one.records().clone();
    }
    let mut records = Vec::with_capacity(group.iter().map(|batch| batch.records().len()).sum());
    for batch in group {
        records.extend_from_slice(batch.records());
    }
    Bytes::from(records)
}

/// Waits for the group being indexed; never completes when there is none (its select branch is off then).
async fn wait_for_index(
    indexing: &mut Option<Indexing>,
) -> Result<Result<AppendSummary, Error>, tokio::task::JoinError> {
    match indexing {
        Some(indexing) => (&mut indexing.task).await,
        None => std::future::pending().await,
    }
}

/// A failure of the copy, as the follower reports it (the detail stays in our log).
fn storage_fault(error: Error) -> Fault {
    Fault::Storage(error.to_string())
}

/// A blocking task that did not finish.
fn join_fault(error: tokio::task::JoinError) -> Fault {
    Fault::Storage(format!("a storage task failed: {error}"))
}
