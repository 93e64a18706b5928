//! The producer connection: new records sent to ROOT's consumer port in PUBLISH frames, in the producer
//! record layout (`protocol::producer`), no JSON and no base64. HELLO with the producer role, WELCOME,
//! then any number of publishes in flight at once, up to the window, each answered by a PUBLISH_ACK once
//! ROOT has its records on disk.
//!
//! [`Producer::publish`] returns as soon as the frame is queued, in order, and hands back a
//! [`PendingAck`], the future of its acknowledgement; it waits only while the window is full. One task per
//! producer owns the [`Link`]: it numbers and sends the frames, matches each PUBLISH_ACK to the oldest
//! publish waiting (the broker answers in order), PINGs every heartbeat, answers the broker's PINGs and
//! ends a link silent for three heartbeats. It never blocks on a send while acks wait to be read, so a
//! broker that stops reading until it has answered is never stuck behind us.
//!
//! Nothing is retried here: when the connection fails, every publish still waiting fails with the cause
//! ([`Error::Lost`]), and its records may or may not be stored; a caller that retries may store them twice.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use protocol::frame::{
    DEFAULT_MAX_FRAME_LEN, Frame, Hello, LEVEL_CONSUMER, PROTOCOL_VERSION, Ping, Publish, PublishAck, Role,
    Welcome,
};
use protocol::{NewRecord, ProducerRecords, WireError, now_ms};
use tokio::net::ToSocketAddrs;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::consumer::SILENT_INTERVALS;
use crate::error::{Error, Result};
use crate::link::Link;
use crate::tcp::connect_tcp;

/// The window a producer asks for unless configured otherwise: ROOT's default `--max-publish-in-flight`.
pub const DEFAULT_MAX_IN_FLIGHT: u16 = 64;

/// How long closing waits for queued frames to be written.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What a producer says when it connects.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Names this producer in the broker's logs.
    pub client_id: String,
    /// The token the broker requires, or empty.
    pub token: String,
    /// How many publishes may wait for their acknowledgement at once (at least 1). The broker may take
    /// fewer at a time (its `--max-publish-in-flight`); the rest then wait in the socket.
    pub max_in_flight: u16,
    /// The handshake timeout is three of these; after WELCOME the broker's own interval paces our PINGs
    /// and the silence check.
    pub heartbeat: Duration,
    /// The largest frame sent or accepted: the broker's `--max-frame-bytes`. A publish whose frame is
    /// larger is refused here, before it is sent.
    pub max_frame_len: usize,
}

impl ProducerConfig {
    /// A configuration with defaults for everything but the name.
    pub fn new(client_id: impl Into<String>) -> Self {
        ProducerConfig {
            client_id: client_id.into(),
            token: String::new(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            heartbeat: Duration::from_secs(2),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

/// A connected producer. Publishing takes `&self`, so tasks may share one through an `Arc`; the
/// publishes of one caller are sent in the order it makes them.
#[derive(Debug)]
pub struct Producer {
    /// Publishes for the driver task, in order.
    requests: mpsc::Sender<Request>,
    /// One permit per publish waiting for its acknowledgement.
    window: Arc<Semaphore>,
    /// Why the connection ended, once it has.
    failure: Failure,
    /// The largest frame sent.
    max_frame_len: usize,
    /// The task that owns the connection.
    driver: JoinHandle<()>,
}

/// The future of one publish's acknowledgement, from [`Producer::publish`]. It resolves whether or not it
/// is polled meanwhile, so a caller may keep many and await them later, in any order.
#[derive(Debug)]
pub struct PendingAck {
    /// Where the driver puts the answer.
    reply: oneshot::Receiver<Result<PublishAck>>,
}

impl Future for PendingAck {
    type Output = Result<PublishAck>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.reply).poll(cx).map(|answer| answer.unwrap_or(Err(Error::Closed)))
    }
}

/// One publish on its way to the driver.
#[derive(Debug)]
struct Request {
    /// The topic.
    topic: String,
    /// The records, proven.
    records: ProducerRecords,
    /// Where the acknowledgement goes.
    reply: oneshot::Sender<Result<PublishAck>>,
    /// Its place in the window, given back with the acknowledgement.
    permit: OwnedSemaphorePermit,
}

/// Why the connection ended, shared between the driver and the handle.
type Failure = Arc<Mutex<Option<Arc<Error>>>>;

impl Producer {
    /// Connects, says HELLO as a producer and waits for WELCOME. An ERROR answer (a broker that is not
    /// ROOT, a wrong token) is [`Error::Refused`].
    pub async fn connect(addr: impl ToSocketAddrs, config: ProducerConfig) -> Result<(Producer, Welcome)> {
        let handshake_timeout = config.heartbeat * SILENT_INTERVALS;
        let connecting = async {
            let mut link = connect_tcp(addr, config.max_frame_len).await?;
            let hello = Hello {
                version: PROTOCOL_VERSION,
                role: Role::Producer,
                level: LEVEL_CONSUMER,
                client_id: config.client_id.clone(),
                group: String::new(),
                token: config.token.clone(),
                max_in_flight: config.max_in_flight,
                batch_max_records: 0,
                batch_max_bytes: 0,
                topics: Vec::new(),
            };
            link.send(&Frame::Hello(hello)).await?;
            loop {
                match link.recv().await? {
                    Frame::Welcome(welcome) => return Ok((link, welcome)),
                    Frame::Error(error) => return Err(Error::Refused(error)),
                    Frame::Ping(ping) => link.send(&Frame::Pong(ping)).await?,
                    Frame::Pong(_) => {}
                    other => {
                        return Err(Error::Protocol(format!("expected WELCOME, got {}", other.name())));
                    }
                }
            }
        };
        let (link, welcome) = tokio::time::timeout(handshake_timeout, connecting)
            .await
            .unwrap_or(Err(Error::HandshakeTimeout(handshake_timeout)))?;
        let heartbeat = match welcome.heartbeat_ms {
            0 => config.heartbeat,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let window = usize::from(config.max_in_flight.max(1));
        let (requests, receiver) = mpsc::channel(window);
        let failure = Failure::default();
        let driver = Driver {
            link,
            requests: Some(receiver),
            waiting: VecDeque::new(),
            outgoing: VecDeque::new(),
            next_sequence: 1,
            next_nonce: 1,
            heartbeat,
        };
        let driver = tokio::spawn(driver.run(Arc::clone(&failure)));
        let producer = Producer {
            requests,
            window: Arc::new(Semaphore::new(window)),
            failure,
            max_frame_len: config.max_frame_len,
            driver,
        };
        Ok((producer, welcome))
    }

    /// Queues `records` for `topic` and returns the future of their acknowledgement. Waits only while the
    /// window is full. Fails at once, sending nothing, when a record breaks the producer layout's rules or
    /// the frame would be larger than `max_frame_len`, and when the connection has already failed.
    pub async fn publish(&self, topic: &str, records: &[NewRecord<'_>]) -> Result<PendingAck> {
        let records = ProducerRecords::encode(records)?;
        self.publish_records(topic, records).await
    }

    /// [`Producer::publish`] for records already in the producer layout (read from a file, say).
    pub async fn publish_records(&self, topic: &str, records: ProducerRecords) -> Result<PendingAck> {
        if records.is_empty() {
            return Err(Error::Wire(WireError::EmptyBatch));
        }
        // The frame's payload: the topic, the sequence, the count and the records.
        let payload_len = 2 + topic.len() + 8 + 4 + records.as_bytes().len();
        if payload_len > self.max_frame_len {
            return Err(Error::Wire(WireError::FrameTooLarge { len: payload_len, max: self.max_frame_len }));
        }
        let permit = Arc::clone(&self.window).acquire_owned().await.map_err(|_| self.lost())?;
        let (reply, answer) = oneshot::channel();
        let request = Request { topic: topic.to_string(), records, reply, permit };
        self.requests.send(request).await.map_err(|_| self.lost())?;
        Ok(PendingAck { reply: answer })
    }

    /// Stops publishing: waits (for as long as the broker keeps answering) until every publish queued has
    /// its answer, then closes the connection politely.
    pub async fn close(self) -> Result<()> {
        let Producer { requests, driver, failure, .. } = self;
        drop(requests);
        driver.await.map_err(|error| Error::Protocol(format!("the producer's task failed: {error}")))?;
        match lock(&failure).clone() {
            Some(cause) => Err(Error::Lost(cause)),
            None => Ok(()),
        }
    }

    /// The error for a publish made after the connection ended.
    fn lost(&self) -> Error {
        Error::Lost(lock(&self.failure).clone().unwrap_or_else(|| Arc::new(Error::Closed)))
    }
}

/// One publish sent and not yet acknowledged.
#[derive(Debug)]
struct Waiting {
    /// The topic it was sent to.
    topic: String,
    /// Its sequence number.
    sequence: u64,
    /// How many records it carried.
    n_records: u64,
    /// Where the acknowledgement goes.
    reply: oneshot::Sender<Result<PublishAck>>,
    /// Its place in the window, released when this is dropped.
    _permit: OwnedSemaphorePermit,
}

/// The task that owns a producer's connection.
#[derive(Debug)]
struct Driver {
    /// The connection.
    link: Link,
    /// Publishes from the handle; `None` once every handle is gone.
    requests: Option<mpsc::Receiver<Request>>,
    /// Publishes sent, oldest first: the order their acks come in.
    waiting: VecDeque<Waiting>,
    /// Encoded frames waiting for room in the link's write queue.
    outgoing: VecDeque<Bytes>,
    /// The sequence number of the next PUBLISH.
    next_sequence: u64,
    /// The nonce of the next PING.
    next_nonce: u64,
    /// The broker's heartbeat interval.
    heartbeat: Duration,
}

impl Driver {
    /// Runs until every handle is gone and every publish answered, or the connection fails; then answers
    /// every publish still waiting with the cause, records it for later publishes, and closes the link.
    async fn run(mut self, failure: Failure) {
        let result = self.serve().await;
        if let Err(error) = result {
            tracing::info!(%error, waiting = self.waiting.len(), "the producer's connection ended");
            let cause = Arc::new(error);
            *lock(&failure) = Some(Arc::clone(&cause));
            for waiting in self.waiting.drain(..) {
                let _ = waiting.reply.send(Err(Error::Lost(Arc::clone(&cause))));
            }
            // Publishes queued behind the failure were never sent.
            if let Some(requests) = &mut self.requests {
                requests.close();
                while let Ok(request) = requests.try_recv() {
                    let _ = request.reply.send(Err(Error::Lost(Arc::clone(&cause))));
                }
            }
        }
        self.link.close(CLOSE_GRACE).await;
    }

    /// The loop: send what is queued, take acks and heartbeats, notice silence.
    async fn serve(&mut self) -> Result<()> {
        let limit = self.heartbeat * SILENT_INTERVALS;
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + self.heartbeat, self.heartbeat);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sender = self.link.sender();
        loop {
            if self.requests.is_none() && self.waiting.is_empty() && self.outgoing.is_empty() {
                return Ok(());
            }
            let accepting = self.requests.is_some();
            let sending = !self.outgoing.is_empty();
            tokio::select! {
                biased;
                frame = self.link.recv() => self.on_frame(frame?)?,
                permit = sender.reserve(), if sending => {
                    let permit = permit.map_err(|_| Error::Closed)?;
                    if let Some(bytes) = self.outgoing.pop_front() {
                        permit.send(bytes);
                    }
                }
                request = recv_request(&mut self.requests), if accepting => match request {
                    Some(request) => self.send_publish(request)?,
                    None => self.requests = None,
                },
                _ = ticks.tick() => {
                    if let Some(silent) = self.link.gone_silent(limit) {
                        return Err(Error::Silent(silent));
                    }
                    let nonce = self.next_nonce;
                    self.next_nonce += 1;
                    self.outgoing.push_back(Frame::Ping(Ping { nonce, timestamp_ms: now_ms() }).to_bytes()?);
                }
            }
        }
    }

    /// Numbers a publish, encodes its frame and queues it.
    fn send_publish(&mut self, request: Request) -> Result<()> {
        let Request { topic, records, reply, permit } = request;
        let sequence = self.next_sequence;
        let n_records = records.len() as u64;
        let frame = Frame::Publish(Publish { topic: topic.clone(), sequence, records });
        let bytes = match frame.to_bytes() {
            Ok(bytes) => bytes,
            // Only this publish is at fault (checked sizes make this unlikely); the link is fine.
            Err(error) => {
                let _ = reply.send(Err(Error::Wire(error)));
                return Ok(());
            }
        };
        self.next_sequence += 1;
        self.outgoing.push_back(bytes);
        self.waiting.push_back(Waiting { topic, sequence, n_records, reply, _permit: permit });
        Ok(())
    }

    /// Handles a frame from the broker.
    fn on_frame(&mut self, frame: Frame) -> Result<()> {
        match frame {
            Frame::PublishAck(ack) => {
                let Some(waiting) = self.waiting.pop_front() else {
                    return Err(Error::Protocol(format!(
                        "PUBLISH_ACK {} with no publish waiting",
                        ack.sequence
                    )));
                };
                let n_acked = (ack.last_offset - ack.first_offset).checked_add(1);
                let matches = ack.sequence == waiting.sequence
                    && ack.topic == waiting.topic
                    && n_acked == Some(waiting.n_records);
                if !matches {
                    return Err(Error::Protocol(format!(
                        "PUBLISH_ACK {} of {:?} for offsets {}..={} does not answer the oldest publish, {} of \
                         {:?} with {} records",
                        ack.sequence,
                        ack.topic,
                        ack.first_offset,
                        ack.last_offset,
                        waiting.sequence,
                        waiting.topic,
                        waiting.n_records
                    )));
                }
                let _ = waiting.reply.send(Ok(ack));
                Ok(())
            }
            Frame::Ping(ping) => {
                self.outgoing.push_back(Frame::Pong(ping).to_bytes()?);
                Ok(())
            }
            Frame::Pong(_) => Ok(()),
            Frame::Error(error) if error.fatal => Err(Error::Rejected(error)),
            Frame::Error(error) => {
                tracing::warn!(code = %error.code, message = %error.message, "the broker reported an error");
                Ok(())
            }
            other => Err(Error::Protocol(format!("unexpected {} on a producer connection", other.name()))),
        }
    }
}

/// The next publish, or `None` once every handle is gone; never resolves when there are no handles left
/// to wait for (the `select!` branch is then disabled anyway).
async fn recv_request(requests: &mut Option<mpsc::Receiver<Request>>) -> Option<Request> {
    match requests {
        Some(requests) => requests.recv().await,
        None => std::future::pending().await,
    }
}

/// The failure cell, even after a panic elsewhere: it only ever holds a finished value.
fn lock(failure: &Failure) -> std::sync::MutexGuard<'_, Option<Arc<Error>>> {
    failure.lock().unwrap_or_else(PoisonError::into_inner)
}
