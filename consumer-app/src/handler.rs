//! What happens to each record once it is durable in the local copy: the [`MessageHandler`] trait, the
//! [`RetryPolicy`], the dispatcher that retries and writes dead letters, and the `store` and `log`
//! handlers (the `webhook` handler is in `handler/webhook.rs`).
//!
//! Handlers never touch the local copy: by the time one runs, the record is stored and indexed. A record
//! that still fails after its retries is written to the dead-letter table and the stream goes on.

pub mod queue;
pub mod webhook;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use protocol::{RecordIter, RecordView, WireError};

use crate::db::{Db, DeadLetter};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::now_ms;

pub use queue::{HandlerItem, HandlerQueue};
pub use webhook::WebhookHandler;

/// One record handed to a handler. The fields are cheap slices of the batch it arrived in.
#[derive(Debug, Clone)]
pub struct Message {
    /// The topic the record belongs to.
    pub topic: Arc<str>,
    /// The record's offset, assigned at ROOT.
    pub offset: u64,
    /// ROOT's timestamp, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The key (possibly empty).
    pub key: Bytes,
    /// The value (possibly empty).
    pub value: Bytes,
    /// Whether the record deletes its key.
    pub tombstone: bool,
    /// The whole record as stored, for handlers that want the headers or the verbatim bytes.
    pub record: Bytes,
}

impl Message {
    /// Builds a message from a checked view into `batch`, slicing rather than copying.
    pub fn from_view(topic: &Arc<str>, batch: &Bytes, view: &RecordView<'_>) -> Message {
        Message {
            topic: topic.clone(),
            offset: view.offset(),
            timestamp_ms: view.timestamp_ms(),
            key: batch.slice_ref(view.key()),
            value: batch.slice_ref(view.value()),
            tombstone: view.is_tombstone(),
            record: batch.slice_ref(view.as_bytes()),
        }
    }

    /// The record's checked view, for headers and JSON encoding.
    pub fn view(&self) -> Result<RecordView<'_>, WireError> {
        match RecordView::decode(&self.record)? {
            Some((view, _)) => Ok(view),
            None => Err(WireError::TruncatedBatch { remaining: self.record.len() }),
        }
    }
}

/// Why a handler failed on one record; kept as text in the dead-letter table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError(pub String);

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HandlerError {}

/// The future a handler returns for one record.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

/// Something done with every record after it is durable in the local copy.
///
/// The future is boxed so that handlers can be chosen at run time (`dyn MessageHandler`) without a macro.
/// A handler may be called more than once for a record (after a crash, or on retry), so it should be
/// idempotent by `(topic, offset)`.
pub trait MessageHandler: Send + Sync + fmt::Debug + 'static {
    /// A short name for logs and stats.
    fn name(&self) -> &'static str;

    /// Processes one record; an error is retried by the dispatcher's policy.
    fn handle<'a>(&'a self, message: &'a Message) -> HandlerFuture<'a>;

    /// Whether the handler wants records at all. The `store` handler does not, which spares the sync loop
    /// from building messages.
    fn wants_records(&self) -> bool {
        true
    }
}

/// How a failing handler is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included; at least 1.
    pub max_attempts: u32,
    /// Wait before the first retry.
    pub initial_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// Factor applied to the wait after each retry.
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.max(1.0).powi(attempt.saturating_sub(1).min(64) as i32);
        let wait = self.initial_backoff.as_secs_f64() * factor;
        Duration::from_secs_f64(wait.min(self.max_backoff.as_secs_f64()))
    }
}

/// The `store` handler: the local copy is the whole job.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreHandler;

impl MessageHandler for StoreHandler {
    fn name(&self) -> &'static str {
        "store"
    }

    fn handle<'a>(&'a self, _message: &'a Message) -> HandlerFuture<'a> {
        Box::pin(async { Ok(()) })
    }

    fn wants_records(&self) -> bool {
        false
    }
}

/// The `log` handler: one `tracing` event per record.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogHandler;

impl MessageHandler for LogHandler {
    fn name(&self) -> &'static str {
        "log"
    }

    fn handle<'a>(&'a self, message: &'a Message) -> HandlerFuture<'a> {
        Box::pin(async move {
            tracing::info!(
                topic = %message.topic,
                offset = message.offset,
                timestamp_ms = message.timestamp_ms,
                key = %String::from_utf8_lossy(&message.key),
                value_len = message.value.len(),
                tombstone = message.tombstone,
                "record"
            );
            Ok(())
        })
    }
}

/// Runs the configured handler on records with retries, and writes the dead letters.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    /// The handler.
    handler: Arc<dyn MessageHandler>,
    /// Its retry policy.
    policy: RetryPolicy,
    /// Where dead letters go.
    db: Arc<Db>,
    /// Success, failure and dead-letter counts.
    metrics: Arc<Metrics>,
}

impl Dispatcher {
    /// A dispatcher for `handler`.
    pub fn new(
        handler: Arc<dyn MessageHandler>,
        policy: RetryPolicy,
        db: Arc<Db>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Dispatcher { handler, policy, db, metrics }
    }

    /// The handler's name.
    pub fn handler_name(&self) -> &'static str {
        self.handler.name()
    }

    /// Whether the handler wants records at all.
    pub fn wants_records(&self) -> bool {
        self.handler.wants_records()
    }

    /// Runs the handler on every record of `batch` (checked records laid end to end) whose offset is at
    /// least `from_offset`, one after the other. Only a failure to store a dead letter is an error.
    pub async fn dispatch_batch(
        &self,
        topic: &Arc<str>,
        batch: &Bytes,
        from_offset: u64,
    ) -> Result<(), Error> {
        if !self.handler.wants_records() {
            return Ok(());
        }
        for view in RecordIter::new(batch) {
            let view = view.map_err(|source| Error::Records { topic: topic.to_string(), source })?;
            if view.offset() < from_offset {
                continue;
            }
            let message = Message::from_view(topic, batch, &view);
            self.dispatch(&message).await?;
        }
        Ok(())
    }

    /// Runs the handler on one message, retrying by the policy; what still fails becomes a dead letter.
    /// Returns whether the handler succeeded.
    pub async fn dispatch(&self, message: &Message) -> Result<bool, Error> {
        let max_attempts = self.policy.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.handler.handle(message).await {
                Ok(()) => {
                    self.metrics.handler_successes.inc();
                    return Ok(true);
                }
                Err(error) => {
                    self.metrics.handler_failures.inc();
                    if attempt >= max_attempts {
                        tracing::warn!(
                            topic = %message.topic, offset = message.offset, attempts = attempt, %error,
                            handler = self.handler.name(), "handler gave up; record goes to the dead letters"
                        );
                        self.dead_letter(message, &error, attempt).await?;
                        return Ok(false);
                    }
                    tracing::debug!(topic = %message.topic, offset = message.offset, attempt, %error, "handler failed; retrying");
                    tokio::time::sleep(self.policy.backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn dead_letter(&self, message: &Message, error: &HandlerError, attempts: u32) -> Result<(), Error> {
        let letter = DeadLetter {
            id: 0,
            topic: message.topic.to_string(),
            offset: message.offset,
            key: String::from_utf8_lossy(&message.key).into_owned(),
            error: error.0.clone(),
            attempts,
            time_ms: now_ms(),
        };
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.add_dead_letter(&letter)).await??;
        self.metrics.dead_letters.inc();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    use protocol::NewRecord;

    /// Fails its first `failures` calls, then succeeds.
    #[derive(Debug)]
    struct Flaky {
        failures: u32,
        calls: AtomicU32,
    }

    impl MessageHandler for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }

        fn handle<'a>(&'a self, _message: &'a Message) -> HandlerFuture<'a> {
            Box::pin(async move {
                let call = self.calls.fetch_add(1, Ordering::SeqCst);
                if call < self.failures { Err(HandlerError(format!("failure {call}"))) } else { Ok(()) }
            })
        }
    }

    fn batch(offsets: std::ops::Range<u64>) -> Bytes {
        let mut out = Vec::new();
        for offset in offsets {
            NewRecord::new(format!("k{offset}").as_bytes(), b"v").encode_to_vec(offset, 1, &mut out);
        }
        Bytes::from(out)
    }

    fn quick() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            multiplier: 2.0,
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            multiplier: 2.0,
        };
        assert_eq!(policy.backoff(1), Duration::from_millis(100));
        assert_eq!(policy.backoff(2), Duration::from_millis(200));
        assert_eq!(policy.backoff(3), Duration::from_millis(350));
        assert_eq!(policy.backoff(1000), Duration::from_millis(350));
    }

    #[tokio::test]
    async fn retries_to_success_then_dead_letters_what_still_fails() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&crate::db::db_path(dir.path())).unwrap());
        let metrics = Arc::new(Metrics::new());
        let topic: Arc<str> = Arc::from("prices");
        let records = batch(0..1);

        let twice = Arc::new(Flaky { failures: 2, calls: AtomicU32::new(0) });
        let dispatcher = Dispatcher::new(twice.clone(), quick(), db.clone(), metrics.clone());
        dispatcher.dispatch_batch(&topic, &records, 0).await.unwrap();
        assert_eq!(twice.calls.load(Ordering::SeqCst), 3);
        assert_eq!(db.dead_letter_count().unwrap(), 0);

        let always = Arc::new(Flaky { failures: u32::MAX, calls: AtomicU32::new(0) });
        let dispatcher = Dispatcher::new(always.clone(), quick(), db.clone(), metrics.clone());
        dispatcher.dispatch_batch(&topic, &batch(0..4), 2).await.unwrap();
        // Offsets 2 and 3 were each tried three times; 0 and 1 were below `from_offset`.
        assert_eq!(always.calls.load(Ordering::SeqCst), 6);
        let letters = db.dead_letters(0, 10).unwrap();
        assert_eq!(letters.iter().map(|l| (l.offset, l.attempts)).collect::<Vec<_>>(), vec![(2, 3), (3, 3)]);
        assert_eq!(letters[0].key, "k2");
        assert_eq!(metrics.dead_letters.get(), 2);
        assert_eq!(metrics.handler_successes.get(), 1);
        assert_eq!(metrics.handler_failures.get(), 2 + 6);
    }

    #[test]
    fn message_slices_the_batch() {
        let records = batch(5..7);
        let topic: Arc<str> = Arc::from("prices");
        let views: Vec<_> = RecordIter::new(&records).collect::<Result<_, _>>().unwrap();
        let message = Message::from_view(&topic, &records, &views[1]);
        assert_eq!((message.offset, &message.key[..], &message.value[..]), (6, &b"k6"[..], &b"v"[..]));
        assert_eq!(message.view().unwrap().offset(), 6);
    }
}
