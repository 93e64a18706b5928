//! The consumer connection for applications that drive the protocol themselves: HELLO/WELCOME over TCP,
//! then events pulled one at a time with [`Consumer::next_event`], which also answers the broker's PINGs
//! and notices a silent broker. One small task sends our own PINGs, so the broker sees a live process even
//! while the application is busy; an application that stops reading is still paced and, in the end,
//! dropped by the broker as slow. (A consumer that keeps a copy should use [`crate::follow`] instead, which
//! also reconnects, gathers and acknowledges.)
//!
//! Every outgoing frame is queued whole ([`crate::link`]), so `next_event`, `ack` and `seek` are
//! cancel-safe and may sit in a `select!`.

use std::time::Duration;

use protocol::frame::{
    Ack, Batch, DEFAULT_MAX_FRAME_LEN, ErrorFrame, Frame, Hello, LEVEL_CONSUMER, PROTOCOL_VERSION, Ping,
    Ready, Reset, Role, Seek, StartPosition, TopicAnnounce, TopicPosition, TopicStart, Welcome,
};
use tokio::net::ToSocketAddrs;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::link::Link;
use crate::tcp::connect_tcp;
use protocol::now_ms;

/// How many heartbeat intervals of silence make the broker count as gone.
pub const SILENT_INTERVALS: u32 = 3;

/// How long closing waits for queued frames to be written.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What a consumer asks for when it connects.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Names this consumer in the broker's logs.
    pub client_id: String,
    /// The consumer group: the broker commits acknowledged offsets per group, and within a group the
    /// newest connection takes a topic over from older ones.
    pub group: String,
    /// The topics and where each starts; the topic `*` means every topic, present and future.
    pub topics: Vec<TopicStart>,
    /// The token the broker requires, or empty.
    pub token: String,
    /// How many BATCH frames may be unacknowledged at once (0 = the broker's default).
    pub max_in_flight: u16,
    /// The most records wanted in one BATCH (0 = the broker's default, which also caps it).
    pub batch_max_records: u32,
    /// The most record bytes wanted in one BATCH (0 = the broker's default, which also caps it).
    pub batch_max_bytes: u32,
    /// The handshake timeout is three of these; after WELCOME the broker's own interval paces our PINGs
    /// and the silence check.
    pub heartbeat: Duration,
    /// The largest frame accepted from the broker.
    pub max_frame_len: usize,
}

impl ConsumerConfig {
    /// A configuration with defaults for everything but the names and topics.
    pub fn new(client_id: impl Into<String>, group: impl Into<String>, topics: Vec<TopicStart>) -> Self {
        ConsumerConfig {
            client_id: client_id.into(),
            group: group.into(),
            topics,
            token: String::new(),
            max_in_flight: 0,
            batch_max_records: 0,
            batch_max_bytes: 0,
            heartbeat: Duration::from_secs(2),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

/// A subscription entry: `topic` from `start`, holding no copy yet (uid unknown).
pub fn topic_start(topic: impl Into<String>, start: StartPosition) -> TopicStart {
    TopicStart { topic: topic.into(), uid: protocol::TopicUid::UNKNOWN, epoch: protocol::NO_EPOCH, start }
}

/// Something the broker sent that the application must handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Records, verbatim; check them with `protocol::CheckedBatch::check` before use. Acknowledge with
    /// [`Consumer::ack`] once they are durable on this side.
    Batch(Batch),
    /// A full refresh of one topic starts: the batches up to the matching READY form the new copy.
    Reset(Reset),
    /// The full refresh of one topic is complete.
    Ready(Ready),
    /// A subscribed topic appeared after WELCOME (through `*`, or a named topic that did not exist yet).
    Topic(TopicAnnounce),
    /// The answer to a SEEK: where delivery of the topic restarts. BATCH frames of that topic received
    /// between the SEEK and this event were sent from the old position; drop them.
    Position(TopicPosition),
    /// An ERROR frame. After a fatal one the broker closes the connection.
    Error(ErrorFrame),
}

impl Event {
    /// The event a frame from a broker is, or `None` for heartbeats, epoch histories and settings; a frame a broker never sends is a
    /// protocol violation.
    fn from_frame(frame: Frame) -> Result<Option<Event>> {
        Ok(Some(match frame {
            Frame::Batch(batch) => Event::Batch(batch),
            Frame::Reset(reset) => Event::Reset(reset),
            Frame::Ready(ready) => Event::Ready(ready),
            Frame::Topic(topic) => Event::Topic(topic),
            Frame::Position(position) => Event::Position(position),
            Frame::Error(error) => Event::Error(error),
            // Epoch histories and topic settings matter only to a copy that outlives a connection (kept
            // through `follow`).
            Frame::Ping(_) | Frame::Pong(_) | Frame::Epochs(_) | Frame::Settings(_) => return Ok(None),
            other => return Err(Error::Protocol(format!("unexpected {} from the broker", other.name()))),
        }))
    }
}

/// A connected consumer.
#[derive(Debug)]
pub struct Consumer {
    /// The connection.
    link: Link,
    /// The broker's heartbeat interval once WELCOME arrived.
    heartbeat: Duration,
    /// The task sending our PINGs; stopped when the consumer is dropped.
    pinger: Option<Pinger>,
}

/// The task sending our PINGs, stopped on drop.
#[derive(Debug)]
struct Pinger(JoinHandle<()>);

impl Drop for Pinger {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Consumer {
    /// Connects, says HELLO and waits for WELCOME. An ERROR answer is [`Error::Refused`].
    pub async fn connect(addr: impl ToSocketAddrs, config: ConsumerConfig) -> Result<(Consumer, Welcome)> {
        let handshake_timeout = config.heartbeat * SILENT_INTERVALS;
        let connecting = async {
            let link = connect_tcp(addr, config.max_frame_len).await?;
            let mut consumer = Consumer { link, heartbeat: config.heartbeat, pinger: None };
            let hello = Hello {
                version: PROTOCOL_VERSION,
                role: Role::Consumer,
                level: LEVEL_CONSUMER,
                client_id: config.client_id,
                group: config.group,
                token: config.token,
                max_in_flight: config.max_in_flight,
                batch_max_records: config.batch_max_records,
                batch_max_bytes: config.batch_max_bytes,
                topics: config.topics,
            };
            consumer.send(&Frame::Hello(hello)).await?;
            loop {
                match consumer.link.recv().await? {
                    Frame::Welcome(welcome) => {
                        if welcome.heartbeat_ms > 0 {
                            consumer.heartbeat = Duration::from_millis(u64::from(welcome.heartbeat_ms));
                        }
                        let pings = send_pings(consumer.link.sender(), consumer.heartbeat);
                        consumer.pinger = Some(Pinger(tokio::spawn(pings)));
                        return Ok((consumer, welcome));
                    }
                    Frame::Error(error) => return Err(Error::Refused(error)),
                    Frame::Ping(ping) => consumer.send(&Frame::Pong(ping)).await?,
                    Frame::Pong(_) => {}
                    other => {
                        return Err(Error::Protocol(format!("expected WELCOME, got {}", other.name())));
                    }
                }
            }
        };
        tokio::time::timeout(handshake_timeout, connecting)
            .await
            .unwrap_or(Err(Error::HandshakeTimeout(handshake_timeout)))
    }

    /// Waits for the next event, answering the broker's PINGs meanwhile. Fails if nothing arrives for three
    /// heartbeat intervals; bytes already received count as arrived, so a caller that was busy elsewhere
    /// is not mistaken for a dead broker.
    pub async fn next_event(&mut self) -> Result<Event> {
        let limit = self.heartbeat * SILENT_INTERVALS;
        loop {
            let wait = limit.saturating_sub(self.link.silent_for());
            let frame = tokio::select! {
                biased;
                frame = self.link.recv() => frame?,
                () = tokio::time::sleep(wait) => {
                    if let Some(silent) = self.link.gone_silent(limit) {
                        return Err(Error::Silent(silent));
                    }
                    continue;
                }
            };
            if let Some(event) = self.on_frame(frame).await? {
                return Ok(event);
            }
        }
    }

    /// Takes the next event only if it is already received. `Ok(None)` means taking one would mean
    /// waiting; call [`Consumer::next_event`] for that. Lets an application handle several events that
    /// arrived together as one unit (one flush, one acknowledgement). PINGs met on the way are answered.
    pub async fn try_next_event(&mut self) -> Result<Option<Event>> {
        while let Some(frame) = self.link.try_recv()? {
            if let Some(event) = self.on_frame(frame).await? {
                return Ok(Some(event));
            }
        }
        Ok(None)
    }

    /// Tells the broker that every record of `topic` below `next_offset` is durable here.
    pub async fn ack(&mut self, topic: &str, next_offset: u64) -> Result<()> {
        self.send(&Frame::Ack(Ack { topic: topic.to_string(), next_offset })).await
    }

    /// Moves delivery of `topic` to `start`; the broker answers with [`Event::Position`].
    pub async fn seek(&mut self, topic: &str, start: StartPosition) -> Result<()> {
        self.send(&Frame::Seek(Seek { topic: topic.to_string(), start })).await
    }

    /// Sends any frame; for tools and tests that need to speak the protocol directly. Cancel-safe: the frame
    /// is queued whole or not at all.
    pub async fn send(&mut self, frame: &Frame) -> Result<()> {
        self.link.send(frame).await
    }

    /// Closes the connection politely: frames already queued are written, then our side stops sending and
    /// the broker closes its side.
    pub async fn close(self) -> Result<()> {
        let Consumer { link, pinger, .. } = self;
        drop(pinger);
        link.close(CLOSE_GRACE).await;
        Ok(())
    }

    /// Answers a PING; turns any other frame into its event.
    async fn on_frame(&mut self, frame: Frame) -> Result<Option<Event>> {
        if let Frame::Ping(ping) = &frame {
            self.send(&Frame::Pong(*ping)).await?;
        }
        Event::from_frame(frame)
    }
}

/// Sends a PING every `interval` through the link's write queue, so the broker knows this process is
/// alive even while the application is busy between two calls of [`Consumer::next_event`].
async fn send_pings(outgoing: tokio::sync::mpsc::Sender<bytes::Bytes>, interval: Duration) {
    let mut nonce = 0u64;
    loop {
        tokio::time::sleep(interval).await;
        nonce += 1;
        let Ok(bytes) = Frame::Ping(Ping { nonce, timestamp_ms: now_ms() }).to_bytes() else {
            return;
        };
        if outgoing.send(bytes).await.is_err() {
            return;
        }
    }
}
