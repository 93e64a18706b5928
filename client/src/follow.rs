//! The follower: the downstream side of the protocol, written once for everything that keeps a copy of a
//! broker's topics (a child broker over the pipe's WebSocket, a consumer-app over TCP). One loop owns the
//! conversation: HELLO from what the copy holds and the WELCOME checks, heartbeats and the silence limit,
//! gathering contiguous batches and proving each once ([`protocol::CheckedBatch`]), the order of
//! RESET/READY/TOPIC/POSITION, ACK of exactly what the copy reports durable, and reconnecting with backoff
//! and jitter. What is stored, and where to connect, are the caller's: a [`Sink`] and an [`Upstream`].
//!
//! ```text
//!   Upstream::choose ──> connect (TCP | WebSocket) ──> HELLO(Sink::hello_topics) ──> WELCOME checks
//!        ^                                                                         │
//!        │ backoff                     BATCH…BATCH (gathered, checked) ──> Sink::on_batches ──> ACK
//!        │                             RESET / READY / TOPIC / POSITION ─> Sink::on_* ───────> ACK
//!        │                             EPOCHS ─> Sink::on_epochs ─(diverged)─> SEEK FULL_REFRESH
//!        └── Upstream::ended <── link ends (silence, ERROR, fault)    Sink::next_work ───> ACK / SEEK
//! ```
//!
//! Architecture invariant: an ACK leaves only from here, and only for an offset a sink reported durable.

mod session;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use protocol::CheckedBatch;
use protocol::frame::{
    Epochs, Hello, Ready, Reset, Settings, StartPosition, TopicAnnounce, TopicPosition, TopicStart, Welcome,
};

use crate::backoff::Backoff;
use session::run_link;

/// How long to wait for news before asking the upstream again when it named no one.
const WAIT_FOR_TARGET: Duration = Duration::from_secs(1);

/// The longest wait between two probes of a copy that cannot store, if reconnecting waits less.
const PROBE_MAX: Duration = Duration::from_secs(5);

/// Who this follower is and how it keeps the link.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// Who this follower says it is: HELLO's role, level, client id, group, token and in-flight window.
    /// Its `version` and `topics` are the follower's to fill in (this codec's version, and
    /// [`Sink::hello_topics`] at every connection).
    pub hello: Hello,
    /// Our PING interval (the upstream's, from WELCOME, if shorter); three of them without a byte from the
    /// upstream end the link.
    pub heartbeat: Duration,
    /// The largest frame accepted.
    pub max_frame_len: usize,
    /// How long connecting may take; also the least time a WELCOME or a send may take.
    pub connect_timeout: Duration,
    /// The first wait before connecting again.
    pub reconnect_initial: Duration,
    /// The longest wait before connecting again.
    pub reconnect_max: Duration,
    /// The level WELCOME must name (a pipe child's parent is exactly one level up), or `None` for any.
    pub upstream_level: Option<u8>,
    /// What logs call the upstream: "parent", "broker".
    pub upstream_noun: &'static str,
    /// What logs call the link: "pipe", "connection".
    pub link_noun: &'static str,
}

/// How to reach an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A broker's TCP consumer address, `host:port`.
    Tcp(String),
    /// A WebSocket URL, `ws://host:port/api/v1/pipe`.
    WebSocket(String),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
            Endpoint::WebSocket(url) => write!(f, "{url}"),
        }
    }
}

/// One upstream to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its name in logs (a node id, or the address).
    pub name: String,
    /// Where it is.
    pub endpoint: Endpoint,
}

/// How one link ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEnd {
    /// The follower is shutting down.
    Shutdown,
    /// The link failed or was refused.
    Failed {
        /// Whether WELCOME arrived before it ended.
        streamed: bool,
        /// Whether the upstream refused us (token, level, version): retrying alone will not fix it.
        refused: bool,
        /// Whether the link ended over bad input, either way (an ERROR frame sent or received, a frame
        /// that did not decode, records the copy could not take): no reason to trust it came good.
        faulted: bool,
        /// Whether the copy could not store (a full disk, an I/O error): the follower pauses, probing the
        /// sink, instead of asking the upstream to send again what it cannot store.
        local: bool,
        /// What happened, for logs and status pages.
        reason: String,
    },
}

/// Everything below `next_offset` of `topic` is durable in the copy: the ACK to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durable {
    /// The topic.
    pub topic: String,
    /// One past the last durable record.
    pub next_offset: u64,
}

/// What a sink finished in the background, or wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Work {
    /// Offsets that became durable.
    pub acks: Vec<Durable>,
    /// Topics to move (SEEK), such as a full refresh an operator asked for.
    pub seeks: Vec<(String, StartPosition)>,
}

/// Why a copy cannot take what the upstream sent. Each ends the link with an ERROR frame to the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Records that fail their checks or do not continue the copy (BAD_RECORDS).
    BadRecords(String),
    /// A frame that makes no sense now (PROTOCOL_VIOLATION).
    Protocol(String),
    /// The copy failed to store (INTERNAL on the wire; the detail stays in our log).
    Storage(String),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::BadRecords(detail) => write!(f, "bad records from upstream: {detail}"),
            Fault::Protocol(detail) => write!(f, "protocol violation by upstream: {detail}"),
            Fault::Storage(detail) => write!(f, "storing failed: {detail}"),
        }
    }
}

/// The copy a follower keeps. Every method runs on the follower's task, one at a time; blocking work
/// belongs on blocking threads. Futures must be `Send`.
pub trait Sink: Send {
    /// HELLO's topics: each topic held, with its uid, from where the copy stands, and what else to ask for.
    fn hello_topics(&mut self) -> impl Future<Output = Result<Vec<TopicStart>, Fault>> + Send;

    /// WELCOME arrived: where each subscribed topic stands upstream.
    fn on_welcome(&mut self, welcome: &Welcome) -> impl Future<Output = Result<(), Fault>> + Send;

    /// A topic appeared upstream after WELCOME.
    fn on_topic(&mut self, announce: &TopicAnnounce) -> impl Future<Output = Result<(), Fault>> + Send;

    /// Consecutive batches of one topic, each proven; offsets follow on from one batch to the next. Answers
    /// what became durable (possibly nothing yet: see [`Sink::next_work`]).
    fn on_batches(
        &mut self,
        batches: Vec<CheckedBatch>,
    ) -> impl Future<Output = Result<Vec<Durable>, Fault>> + Send;

    /// A topic's epoch history upstream (before its first batch, after a RESET, and whenever it changes;
    /// `protocol::epoch`). Answers `true` if the copy diverged from it (it holds records the history says
    /// ROOT no longer has): the follower then drops the topic's batches and asks for a full refresh. A
    /// history that arrives during a refresh belongs to the copy being built.
    fn on_epochs(&mut self, epochs: Epochs) -> impl Future<Output = Result<bool, Fault>> + Send;

    /// A topic's settings upstream (`protocol::settings`: before its first batch, after a RESET, and
    /// whenever they change at ROOT). The copy keeps them, so that it applies the same retention as its
    /// upstream. Settings that arrive during a refresh belong to the copy being built.
    fn on_settings(&mut self, settings: Settings) -> impl Future<Output = Result<(), Fault>> + Send;

    /// A full refresh of a topic starts: the batches until its READY form the new copy.
    fn on_reset(&mut self, reset: Reset) -> impl Future<Output = Result<Vec<Durable>, Fault>> + Send;

    /// A full refresh of a topic is complete.
    fn on_ready(&mut self, ready: Ready) -> impl Future<Output = Result<Vec<Durable>, Fault>> + Send;

    /// The answer to a SEEK.
    fn on_position(&mut self, position: &TopicPosition) -> impl Future<Output = Result<(), Fault>> + Send {
        let _ = position;
        async { Ok(()) }
    }

    /// Completes when work the sink finished in the background (indexing, a handler) made more durable,
    /// or when it wants a topic moved. Never completes while there is nothing; must be cancel-safe, since
    /// the follower waits on it beside the connection.
    fn next_work(&mut self) -> impl Future<Output = Result<Work, Fault>> + Send {
        std::future::pending()
    }

    /// The link ended: let background work settle and give up refreshes not completed (the next upstream
    /// starts its own).
    fn on_link_end(&mut self) -> impl Future<Output = ()> + Send;

    /// After the copy failed to store: whether it could store again now (space returned, the disk came
    /// back). The follower calls it at a growing interval and connects again once it succeeds.
    fn probe(&mut self) -> impl Future<Output = Result<(), Fault>> + Send {
        async { Ok(()) }
    }
}

/// Where a follower connects, and who hears how it goes.
pub trait Upstream: Send {
    /// The next upstream to try, or `None` while none is known.
    fn choose(&mut self) -> impl Future<Output = Option<Target>> + Send;

    /// Completes when asking [`Upstream::choose`] again may give another answer (the follower also asks
    /// again every second).
    fn changed(&mut self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    /// Connecting to `target` starts.
    fn connecting(&mut self, target: &Target) {
        let _ = target;
    }

    /// WELCOME arrived from `target`: records flow.
    fn streaming(&mut self, target: &Target, welcome: &Welcome) {
        let _ = (target, welcome);
    }

    /// The link to `target` ended.
    fn ended(&mut self, target: &Target, end: &LinkEnd) {
        let _ = (target, end);
    }
}

/// Probes the sink at a growing interval until it can store again; `false` if shutdown came first.
async fn pause_until_stored<S: Sink>(config: &FollowConfig, sink: &mut S, stop: &mut Stop<'_>) -> bool {
    let mut probes = Backoff::new(config.reconnect_initial, config.reconnect_max.max(PROBE_MAX));
    loop {
        tokio::select! {
            () = stop.wait() => return false,
            () = tokio::time::sleep(probes.next_delay()) => {}
        }
        match sink.probe().await {
            Ok(()) => {
                tracing::info!("the copy can store again; resuming");
                return true;
            }
            Err(fault) => tracing::debug!(%fault, "the copy still cannot store"),
        }
    }
}

/// A shutdown future that can be waited on from several places, and is never polled after it completed.
pub(crate) struct Stop<'a> {
    /// The future.
    future: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
    /// Whether it completed.
    done: bool,
}

impl Stop<'_> {
    /// Completes once shutdown was asked for.
    pub(crate) async fn wait(&mut self) {
        if !self.done {
            (&mut self.future).await;
            self.done = true;
        }
    }
}

/// Follows upstreams until `shutdown` completes: choose one, keep a link to it for as long as it works,
/// wait (exponential backoff with jitter), choose again. A link that streamed without a fault, or lasted
/// longer than the longest wait, starts the backoff over.
pub async fn follow<U: Upstream, S: Sink>(
    config: &FollowConfig,
    upstream: &mut U,
    sink: &mut S,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut stop = Stop { future: Box::pin(shutdown), done: false };
    let mut backoff = Backoff::new(config.reconnect_initial, config.reconnect_max);
    let mut last_reason: Option<String> = None;
    loop {
        let chosen = tokio::select! {
            () = stop.wait() => break,
            chosen = upstream.choose() => chosen,
        };
        let Some(target) = chosen else {
            tokio::select! {
                () = stop.wait() => break,
                () = upstream.changed() => {}
                () = tokio::time::sleep(WAIT_FOR_TARGET) => {}
            }
            continue;
        };
        upstream.connecting(&target);
        tracing::debug!(upstream = %target.name, endpoint = %target.endpoint, "connecting");
        let started = Instant::now();
        let end = run_link(config, &target, upstream, sink, &mut stop).await;
        sink.on_link_end().await;
        upstream.ended(&target, &end);
        let LinkEnd::Failed { streamed, refused, faulted, local, reason } = end else {
            break;
        };
        if local {
            tracing::warn!(%reason, "the copy cannot store; the {} pauses until it can", config.link_noun);
            if !pause_until_stored(config, sink, &mut stop).await {
                break;
            }
            last_reason = None;
            continue;
        }
        // The same failure again and again (an upstream down for an hour) is logged once, then quietly.
        let repeated = !streamed && last_reason.as_deref() == Some(reason.as_str());
        let (upstream_noun, link_noun) = (config.upstream_noun, config.link_noun);
        if repeated {
            tracing::debug!(upstream = %target.name, %reason, "the {link_noun} to the {upstream_noun} failed again");
        } else if refused {
            tracing::error!(upstream = %target.name, endpoint = %target.endpoint, %reason,
                "the {upstream_noun} refused the {link_noun}");
        } else {
            tracing::warn!(upstream = %target.name, endpoint = %target.endpoint, %reason,
                "the {link_noun} to the {upstream_noun} ended");
        }
        last_reason = Some(reason);
        if streamed && (!faulted || started.elapsed() >= config.reconnect_max) {
            backoff.reset();
        }
        tokio::select! {
            () = stop.wait() => break,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
    tracing::debug!("the follower stopped");
}
