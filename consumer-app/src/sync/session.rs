//! One broker connection: the events of a session and what each does to the local copy. A BATCH, together
//! with the following batches of its topic that are already received, is appended (one flush), then indexed
//! (one SQLite transaction) on the blocking pool while the next group is received and appended, then
//! queued for the handler or acknowledged once; RESET ... READY runs a refresh; ERROR, TOPIC and POSITION update
//! what the session knows. The loop around sessions (connect, backoff) is `sync.rs`.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use client::{Consumer, Event};
use protocol::frame::{Batch, ErrorFrame, Ready, Reset, StartPosition, Welcome};
use protocol::{RecordView, TopicUid};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{SyncCommand, SyncLoop};
use crate::copy::{AppendSummary, Appended};
use crate::error::Error;
use crate::handler::HandlerItem;
use crate::metrics::TopicLabel;
use crate::now_ms;
use crate::refresh::Refresh;

/// The most BATCH frames handled as one group (one flush, one index transaction, one ACK).
const GROUP_MAX_BATCHES: usize = 64;

/// The most record bytes handled as one group.
const GROUP_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Why a session ended without an error.
pub(super) enum SessionEnd {
    /// Shutdown was asked for.
    Shutdown,
}

/// One broker connection.
pub(super) struct Session<'s> {
    /// The loop's parts.
    sync: &'s SyncLoop,
    /// The connection.
    consumer: Consumer,
    /// Tags this connection's handler items, so acks never cross connections.
    epoch: u64,
    /// The broker's uid of each topic, from WELCOME, TOPIC and RESET.
    uids: HashMap<String, TopicUid>,
    /// Refreshes in progress.
    refreshes: HashMap<String, Refresh>,
    /// Events handled on this connection.
    pub(super) n_events: u64,
    /// The batch whose keys are being indexed.
    pending: Option<PendingIndex>,
}

/// A batch stored in the log whose keys are being indexed on the blocking pool.
struct PendingIndex {
    /// Topic of the batch.
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

impl<'s> Session<'s> {
    pub(super) fn new(sync: &'s SyncLoop, consumer: Consumer, epoch: u64) -> Self {
        Session {
            sync,
            consumer,
            epoch,
            uids: HashMap::new(),
            refreshes: HashMap::new(),
            n_events: 0,
            pending: None,
        }
    }

    pub(super) async fn run(
        &mut self,
        welcome: Welcome,
        commands: &mut mpsc::Receiver<SyncCommand>,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<SessionEnd, Error> {
        for position in &welcome.topics {
            self.uids.insert(position.topic.clone(), position.uid);
            self.sync.status.set_broker_end(&position.topic, position.end_offset);
            self.update_lag(&position.topic, None);
        }
        self.check_caught_up().await;
        let mut commands_open = true;
        loop {
            for (topic, next_offset) in self.sync.queue.take_done(self.epoch) {
                self.consumer.ack(&topic, next_offset).await?;
            }
            tokio::select! {
                biased;
                () = shutdown.as_mut() => return Ok(SessionEnd::Shutdown),
                command = commands.recv(), if commands_open => match command {
                    Some(SyncCommand::Refresh(topics)) => {
                        for topic in topics {
                            tracing::info!(topic, "asking the broker for a full refresh");
                            self.consumer.seek(&topic, StartPosition::FullRefresh).await?;
                        }
                    }
                    None => commands_open = false,
                },
                () = self.sync.queue.changed() => {}
                indexed = wait_for_index(&mut self.pending), if self.pending.is_some() => {
                    if let Some(pending) = self.pending.take() {
                        self.complete(pending, indexed).await?;
                    }
                }
                event = self.consumer.next_event() => {
                    let events = self.take_received(event?).await?;
                    self.on_events(events).await?;
                }
            }
        }
    }

    /// `first`, and after a BATCH every further event already received, up to the group bounds. Gathering
    /// stops at the first event that is not a BATCH, which is handled after the batches before it.
    async fn take_received(&mut self, first: Event) -> Result<Vec<Event>, Error> {
        let mut bytes = batch_len(&first);
        let mut events = vec![first];
        while matches!(events.last(), Some(Event::Batch(_)))
            && events.len() < GROUP_MAX_BATCHES
            && bytes < GROUP_MAX_BYTES
        {
            let Some(event) = self.consumer.try_next_event().await? else { break };
            bytes += batch_len(&event);
            events.push(event);
        }
        Ok(events)
    }

    /// Handles events in order; each run of consecutive batches of one topic whose offsets follow on is one
    /// group: one append, one index transaction, one acknowledgement.
    async fn on_events(&mut self, events: Vec<Event>) -> Result<(), Error> {
        let mut events = events.into_iter().peekable();
        while let Some(event) = events.next() {
            self.n_events += 1;
            let Event::Batch(batch) = event else {
                self.on_event(event).await?;
                continue;
            };
            let mut group = vec![batch];
            while let Some(Event::Batch(next)) = events.peek()
                && group.last().is_some_and(|last| follows(last, next))
            {
                if let Some(Event::Batch(next)) = events.next() {
                    self.n_events += 1;
                    group.push(next);
                }
            }
            self.on_batches(group).await?;
        }
        Ok(())
    }

    async fn on_event(&mut self, event: Event) -> Result<(), Error> {
        // Everything but a batch (a refresh's start or end above all) acts on a fully indexed copy.
        if !matches!(event, Event::Batch(_)) {
            self.finish_pending().await?;
        }
        match event {
            Event::Batch(batch) => self.on_batches(vec![batch]).await,
            Event::Reset(reset) => self.on_reset(reset).await,
            Event::Ready(ready) => self.on_ready(ready).await,
            Event::Topic(announce) => {
                tracing::info!(topic = %announce.topic, uid = %announce.uid, "broker announced a topic");
                self.uids.insert(announce.topic.clone(), announce.uid);
                self.sync.status.set_broker_end(&announce.topic, announce.end_offset);
                Ok(())
            }
            // Batches sent from the old position before this answer are still records of the same
            // history continuing the live copy, so they were kept (offsets make them exact); only a
            // SEEK FULL_REFRESH is ever sent, and its RESET follows.
            Event::Position(position) => {
                self.uids.insert(position.topic.clone(), position.uid);
                self.sync.status.set_broker_end(&position.topic, position.end_offset);
                Ok(())
            }
            Event::Error(error) => self.on_error(error),
        }
    }

    fn on_error(&mut self, error: ErrorFrame) -> Result<(), Error> {
        if error.fatal {
            return Err(Error::Unexpected {
                topic: String::new(),
                what: format!("a fatal error {:?}: {}", error.code, error.message),
            });
        }
        tracing::warn!(code = ?error.code, message = %error.message, "broker reported an error");
        Ok(())
    }

    /// Stores a group of consecutive batches of one topic (one append, durable), then starts indexing
    /// their keys on the blocking pool; the index of the previous group is committed first, so positions
    /// only move forward. Indexing group N while group N+1 is received and appended keeps the disk and
    /// SQLite busy at the same time.
    async fn on_batches(&mut self, group: Vec<Batch>) -> Result<(), Error> {
        let Some((topic, end_offset)) = group.last().map(|last| (last.topic.clone(), last.end_offset)) else {
            return Ok(());
        };
        self.sync.metrics.batches_received.inc_by(group.len() as u64);
        self.sync.metrics.appends.inc();
        let records = concat_records(group);
        self.sync.status.set_broker_end(&topic, end_offset);
        let copy = self.sync.copy.clone();
        let (appended, handler_from) = if let Some(mut refresh) = self.refreshes.remove(&topic) {
            let bytes = records.clone();
            let (refresh, appended) = tokio::task::spawn_blocking(move || {
                let appended = copy.append_refresh_log(&mut refresh, &bytes);
                (refresh, appended)
            })
            .await?;
            let handler_from = refresh.handler_from;
            self.sync.status.refresh_progress(&topic, refresh.n_records());
            self.refreshes.insert(topic.clone(), refresh);
            let appended = appended?;
            let handler_from = handler_from.max(appended.first_new_offset);
            (appended, handler_from)
        } else {
            let Some(uid) = self.uid_of(&topic) else {
                return Err(Error::Unexpected {
                    topic,
                    what: "records for a topic it never announced".into(),
                });
            };
            let (name, bytes) = (topic.clone(), records.clone());
            match tokio::task::spawn_blocking(move || copy.append_log(&name, uid, &bytes)).await? {
                Ok(appended) => {
                    let first_new_offset = appended.first_new_offset;
                    (appended, first_new_offset)
                }
                Err(error) => return Err(self.refresh_after_bad_batch(&topic, error).await),
            }
        };
        self.finish_pending().await?;
        let (copy, metrics) = (self.sync.copy.clone(), self.sync.metrics.clone());
        let (bytes, job) = (records.clone(), appended.clone());
        let task = tokio::task::spawn_blocking(move || {
            let durable_s = job.durable_ms as f64 / 1000.0;
            // Refresh records are old by design; only live ones say how long ROOT to here takes.
            let live = job.live;
            copy.index_appended(&job, &bytes, |view: &RecordView<'_>| {
                if live {
                    let latency = durable_s - view.timestamp_ms() as f64 / 1000.0;
                    metrics.end_to_end_latency.observe(latency.max(0.0));
                }
            })
        });
        self.pending = Some(PendingIndex { topic, records, handler_from, appended, task });
        Ok(())
    }

    /// Waits for the batch being indexed, if any, then hands it on (handler queue or ack).
    async fn finish_pending(&mut self) -> Result<(), Error> {
        let Some(mut pending) = self.pending.take() else {
            return Ok(());
        };
        let indexed = (&mut pending.task).await;
        self.complete(pending, indexed).await
    }

    /// A batch is durable and indexed: count it, then queue it for the handler or acknowledge it.
    async fn complete(
        &mut self,
        pending: PendingIndex,
        indexed: Result<Result<AppendSummary, Error>, tokio::task::JoinError>,
    ) -> Result<(), Error> {
        let summary = indexed??;
        let PendingIndex { topic, records, handler_from, appended, .. } = pending;
        self.count(&topic, &summary);
        if appended.live {
            self.update_lag(&topic, Some(summary.next_offset));
        }
        if self.sync.handler_wants_records {
            let item = HandlerItem {
                epoch: self.epoch,
                topic: appended.topic.clone(),
                records,
                from_offset: handler_from,
                ack_to: summary.next_offset,
                handled_to: appended.live.then_some(summary.next_offset),
            };
            self.sync.queue.push(item).await?;
        } else {
            self.consumer.ack(&topic, summary.next_offset).await?;
        }
        self.check_caught_up().await;
        Ok(())
    }

    /// Lets the batch being indexed finish without acknowledging it, when the connection is gone.
    pub(super) async fn settle(&mut self) {
        if let Some(pending) = self.pending.take()
            && let Ok(Err(error)) = pending.task.await
        {
            tracing::error!(topic = pending.topic, %error, "indexing failed; it is repaired at the next start");
        }
    }

    /// A batch the copy cannot take (a gap, another uid) means this copy and the broker disagree: the
    /// topic is marked for a full refresh and the connection is dropped, so the next HELLO asks for one.
    async fn refresh_after_bad_batch(&self, topic: &str, error: Error) -> Error {
        let refusable = match &error {
            Error::Unexpected { .. } => true,
            Error::Storage { source, .. } => matches!(**source, storage::Error::OffsetGap { .. }),
            _ => false,
        };
        if refusable {
            tracing::warn!(topic, %error, "the broker's records do not continue the local copy; asking for a full refresh");
            let db = self.sync.copy.db().clone();
            let topics = vec![topic.to_string()];
            match tokio::task::spawn_blocking(move || db.request_refresh(&topics, now_ms())).await {
                Ok(Ok(())) => {}
                Ok(Err(db_error)) => return db_error,
                Err(join) => return Error::Join(join),
            }
        }
        error
    }

    async fn on_reset(&mut self, reset: Reset) -> Result<(), Error> {
        let Reset { topic, uid, log_start, end_offset } = reset;
        if let Some(previous) = self.refreshes.remove(&topic) {
            self.abandon(previous).await?;
        }
        // The handler's position becomes the new copy's starting point, so let it finish first.
        self.drain_handler().await?;
        self.uids.insert(topic.clone(), uid);
        self.sync.status.set_broker_end(&topic, end_offset);
        let copy = self.sync.copy.clone();
        let name = topic.clone();
        let refresh =
            tokio::task::spawn_blocking(move || copy.begin_refresh(&name, uid, log_start)).await??;
        self.sync.status.refresh_started(&topic, uid, end_offset);
        self.refreshes.insert(topic, refresh);
        Ok(())
    }

    async fn on_ready(&mut self, ready: Ready) -> Result<(), Error> {
        let Ready { topic, uid, end_offset } = ready;
        self.sync.status.set_broker_end(&topic, end_offset);
        let Some(refresh) = self.refreshes.remove(&topic) else {
            tracing::debug!(topic, "READY without a refresh in progress");
            self.mark_ready().await;
            return Ok(());
        };
        if refresh.uid() != uid {
            self.abandon(refresh).await?;
            return Err(Error::Unexpected {
                topic,
                what: format!("READY for uid {uid} during a refresh of another uid"),
            });
        }
        let copy = self.sync.copy.clone();
        let view = tokio::task::spawn_blocking(move || copy.commit_refresh(refresh)).await??;
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
            self.sync.queue.push(item).await?;
        } else {
            self.consumer.ack(&topic, next_offset).await?;
        }
        Ok(())
    }

    /// Waits until the handler has finished every queued batch, acknowledging as it goes.
    async fn drain_handler(&mut self) -> Result<(), Error> {
        while self.sync.queue.outstanding() > 0 {
            for (topic, next_offset) in self.sync.queue.take_done(self.epoch) {
                self.consumer.ack(&topic, next_offset).await?;
            }
            if self.sync.queue.outstanding() == 0 {
                break;
            }
            // A bounded wait: the notification may have come before this call, so look again regularly.
            let _ = tokio::time::timeout(Duration::from_millis(50), self.sync.queue.changed()).await;
        }
        for (topic, next_offset) in self.sync.queue.take_done(self.epoch) {
            self.consumer.ack(&topic, next_offset).await?;
        }
        Ok(())
    }

    async fn abandon(&self, refresh: Refresh) -> Result<(), Error> {
        let topic = refresh.topic().to_string();
        let copy = self.sync.copy.clone();
        tokio::task::spawn_blocking(move || copy.abandon_refresh(refresh)).await??;
        self.sync.status.refresh_ended(&topic);
        Ok(())
    }

    /// Gives up every refresh in progress when the connection ends.
    pub(super) async fn abandon_refreshes(&mut self) {
        for (topic, refresh) in self.refreshes.drain().collect::<Vec<_>>() {
            if let Err(error) = self.abandon(refresh).await {
                tracing::error!(topic, %error, "cannot abandon a refresh");
            }
        }
    }

    /// The uid records of `topic` belong to: the broker's, or failing that the local copy's.
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

    /// Marks the copy ready, and remembers it in `app.sqlite` so a restart without a broker still serves
    /// the copy it has.
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

/// The record bytes of a BATCH event, 0 for any other event.
fn batch_len(event: &Event) -> usize {
    match event {
        Event::Batch(batch) => batch.records.len(),
        _ => 0,
    }
}

/// Whether `next` continues `last`: the same topic, and offsets that follow on, so their records laid end
/// to end are one valid batch for the log. Anything else (which the broker does not send within one
/// connection) is handled as a group of its own, exactly as a lone batch would be.
fn follows(last: &Batch, next: &Batch) -> bool {
    next.topic == last.topic && last.last_offset.checked_add(1) == Some(next.first_offset)
}

/// The records of a group laid end to end; a group of one keeps its buffer without a copy.
fn concat_records(group: Vec<Batch>) -> Bytes {
    if group.len() == 1 {
        return group.into_iter().next().map(|batch| batch.records).unwrap_or_default();
    }
    let mut records = BytesMut::with_capacity(group.iter().map(|batch| batch.records.len()).sum());
    for batch in &group {
        records.extend_from_slice(&batch.records);
    }
    records.freeze()
}

/// Waits for the batch being indexed; never completes when there is none (its select branch is off then).
async fn wait_for_index(
    pending: &mut Option<PendingIndex>,
) -> Result<Result<AppendSummary, Error>, tokio::task::JoinError> {
    match pending {
        Some(pending) => (&mut pending.task).await,
        None => std::future::pending().await,
    }
}
