//! The sync loop: the consumer-app's copy kept current by a [`client::follow`] follower over TCP. The
//! follower owns the conversation with the broker (HELLO, heartbeats, gathering and proving batches, ACKs,
//! reconnecting with backoff and jitter); this module says where the broker is and reports the connection
//! (`status.rs`), and `sink.rs` is what each event does to the copy, the key index and the handler queue.
//!
//! Before the first connection, records the handler has not finished (a crash, a stop with a busy handler)
//! are handed to it again from the copy.

mod sink;
mod status;

use std::sync::Arc;
use std::time::Duration;

use client::{Endpoint, FollowConfig, LinkEnd, Target, Upstream};
use protocol::frame::{Hello, LEVEL_CONSUMER, PROTOCOL_VERSION, Role, Welcome};
use tokio::sync::mpsc;

use crate::copy::{LocalCopy, READ_CHUNK_BYTES, READ_CHUNK_RECORDS};
use crate::error::Error;
use crate::handler::{HandlerItem, HandlerQueue};
use crate::metrics::Metrics;
use sink::AppSink;
pub use status::{RefreshProgress, StatusSnapshot, SyncStatus};

/// How long connecting to the broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

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
    /// Our heartbeat interval (the broker's, from WELCOME, if shorter).
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
    /// Runs until `shutdown` completes: replays records the handler has not seen, then follows the broker.
    pub async fn run(self, commands: mpsc::Receiver<SyncCommand>, shutdown: impl Future<Output = ()> + Send) {
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
        let settings = &self.settings;
        let config = FollowConfig {
            hello: Hello {
                version: PROTOCOL_VERSION,
                role: Role::Consumer,
                level: LEVEL_CONSUMER,
                client_id: settings.client_id.clone(),
                group: settings.group.clone(),
                token: settings.token.clone(),
                max_in_flight: settings.max_in_flight,
                // The broker's batches, bounded by bytes.
                batch_max_records: 0,
                batch_max_bytes: 0,
                topics: Vec::new(),
            },
            heartbeat: settings.heartbeat,
            max_frame_len: settings.max_frame_len,
            connect_timeout: CONNECT_TIMEOUT,
            reconnect_initial: settings.reconnect_backoff,
            reconnect_max: settings.reconnect_max_backoff,
            upstream_level: None,
            upstream_noun: "broker",
            link_noun: "connection",
        };
        let mut broker = Broker {
            target: Target {
                name: settings.broker.clone(),
                endpoint: Endpoint::Tcp(settings.broker.clone()),
            },
            status: Arc::clone(&self.status),
            metrics: Arc::clone(&self.metrics),
        };
        let mut sink = AppSink::new(&self, commands);
        client::follow(&config, &mut broker, &mut sink, shutdown).await;
    }
}

/// The one broker a consumer-app follows, and the status it reports about the connection.
struct Broker {
    /// Where it is.
    target: Target,
    /// The status REST reads.
    status: Arc<SyncStatus>,
    /// Metrics.
    metrics: Arc<Metrics>,
}

impl Upstream for Broker {
    async fn choose(&mut self) -> Option<Target> {
        Some(self.target.clone())
    }

    fn streaming(&mut self, target: &Target, welcome: &Welcome) {
        self.metrics.broker_connects.inc();
        self.metrics.broker_connected.set(1);
        self.status.set_connected(&welcome.node_id);
        tracing::info!(broker = %target.endpoint, node = %welcome.node_id, n_topics = welcome.topics.len(), "connected");
    }

    fn ended(&mut self, _target: &Target, end: &LinkEnd) {
        self.metrics.broker_connected.set(0);
        match end {
            LinkEnd::Shutdown => {
                self.status.set_disconnected(None);
                tracing::info!("broker connection closed for shutdown");
            }
            LinkEnd::Failed { reason, .. } => self.status.set_disconnected(Some(reason.clone())),
        }
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
