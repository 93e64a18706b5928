//! The consumer connection: HELLO/WELCOME, then events pulled one at a time with
//! [`Consumer::next_event`], which also answers the broker's PINGs and notices a silent broker. One small
//! task sends our own PINGs, so the broker sees a live process even while the application is busy; an
//! application that stops reading is still paced and, in the end, dropped by the broker as slow.
//!
//! Every outgoing frame is encoded whole and handed to one writer task through a bounded channel, so no
//! method here can leave half a frame on the socket when its future is dropped: `next_event`, `ack` and
//! `seek` are cancel-safe and may sit in a `select!`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use protocol::frame::{
    Ack, Batch, DEFAULT_MAX_FRAME_LEN, ErrorFrame, Frame, Hello, LEVEL_CONSUMER, PROTOCOL_VERSION, Ping,
    Ready, Reset, Role, Seek, StartPosition, TopicAnnounce, TopicPosition, TopicStart, Welcome,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// How many heartbeat intervals of silence make the broker count as gone.
const SILENT_INTERVALS: u32 = 3;

/// How much the read buffer grows by at a time.
const READ_CHUNK: usize = 64 * 1024;

/// How many encoded frames may wait for the writer task; a sender beyond this waits for the socket.
const WRITE_QUEUE_FRAMES: usize = 64;

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
            heartbeat: Duration::from_secs(2),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

/// A subscription entry: `topic` from `start`, holding no copy yet (uid unknown).
pub fn topic_start(topic: impl Into<String>, start: StartPosition) -> TopicStart {
    TopicStart { topic: topic.into(), uid: protocol::TopicUid::UNKNOWN, start }
}

/// Something the broker sent that the application must handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Records, verbatim; iterate them with `protocol::RecordIter`. Acknowledge with [`Consumer::ack`]
    /// once they are durable on this side.
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

/// A connected consumer.
#[derive(Debug)]
pub struct Consumer {
    /// The reading half of the connection.
    reader: OwnedReadHalf,
    /// Whole encoded frames for the writer task, which owns the writing half.
    outgoing: mpsc::Sender<Vec<u8>>,
    /// The task writing `outgoing` to the socket; it shuts the writing half down once every sender is gone.
    writer: Option<JoinHandle<()>>,
    /// Bytes read but not yet decoded.
    read_buffer: BytesMut,
    /// The largest frame accepted.
    max_frame_len: usize,
    /// The broker's heartbeat interval once WELCOME arrived.
    heartbeat: Duration,
    /// When the last frame arrived.
    last_received: Instant,
    /// The task sending our PINGs; aborted on drop.
    pinger: Option<JoinHandle<()>>,
}

impl Consumer {
    /// Connects, says HELLO and waits for WELCOME. An ERROR answer is [`Error::Refused`].
    pub async fn connect(addr: impl ToSocketAddrs, config: ConsumerConfig) -> Result<(Consumer, Welcome)> {
        let handshake_timeout = config.heartbeat * SILENT_INTERVALS;
        let connecting = async {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (reader, writer) = stream.into_split();
            let (outgoing, queued) = mpsc::channel(WRITE_QUEUE_FRAMES);
            let mut consumer = Consumer {
                reader,
                outgoing,
                writer: Some(tokio::spawn(write_frames(writer, queued))),
                read_buffer: BytesMut::with_capacity(READ_CHUNK),
                max_frame_len: config.max_frame_len,
                heartbeat: config.heartbeat,
                last_received: Instant::now(),
                pinger: None,
            };
            let hello = Hello {
                version: PROTOCOL_VERSION,
                role: Role::Consumer,
                level: LEVEL_CONSUMER,
                client_id: config.client_id,
                group: config.group,
                token: config.token,
                max_in_flight: config.max_in_flight,
                topics: config.topics,
            };
            consumer.send(&Frame::Hello(hello)).await?;
            loop {
                match consumer.read_frame().await? {
                    Frame::Welcome(welcome) => {
                        if welcome.heartbeat_ms > 0 {
                            consumer.heartbeat = Duration::from_millis(u64::from(welcome.heartbeat_ms));
                        }
                        consumer.pinger =
                            Some(tokio::spawn(send_pings(consumer.outgoing.clone(), consumer.heartbeat)));
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

    /// Waits for the next event, answering the broker's PINGs meanwhile.
    pub async fn next_event(&mut self) -> Result<Event> {
        loop {
            match self.read_frame().await? {
                Frame::Batch(batch) => return Ok(Event::Batch(batch)),
                Frame::Reset(reset) => return Ok(Event::Reset(reset)),
                Frame::Ready(ready) => return Ok(Event::Ready(ready)),
                Frame::Topic(topic) => return Ok(Event::Topic(topic)),
                Frame::Position(position) => return Ok(Event::Position(position)),
                Frame::Error(error) => return Ok(Event::Error(error)),
                Frame::Ping(ping) => self.send(&Frame::Pong(ping)).await?,
                Frame::Pong(_) => {}
                other => {
                    return Err(Error::Protocol(format!("unexpected {} from the broker", other.name())));
                }
            }
        }
    }

    /// Takes the next event only if it is already received: decoded from bytes read earlier, or readable
    /// from the socket without waiting. `Ok(None)` means taking one would mean waiting; call
    /// [`Consumer::next_event`] for that. Lets an application handle several events that arrived together
    /// as one unit (one flush, one acknowledgement). PINGs met on the way are answered.
    pub async fn try_next_event(&mut self) -> Result<Option<Event>> {
        // Each pass either returns or consumes a PING or PONG frame that was already received, and the
        // bytes already received are finite, so the loop ends.
        loop {
            let Some(frame) = self.try_read_frame()? else {
                return Ok(None);
            };
            match frame {
                Frame::Batch(batch) => return Ok(Some(Event::Batch(batch))),
                Frame::Reset(reset) => return Ok(Some(Event::Reset(reset))),
                Frame::Ready(ready) => return Ok(Some(Event::Ready(ready))),
                Frame::Topic(topic) => return Ok(Some(Event::Topic(topic))),
                Frame::Position(position) => return Ok(Some(Event::Position(position))),
                Frame::Error(error) => return Ok(Some(Event::Error(error))),
                Frame::Ping(ping) => self.send(&Frame::Pong(ping)).await?,
                Frame::Pong(_) => {}
                other => {
                    return Err(Error::Protocol(format!("unexpected {} from the broker", other.name())));
                }
            }
        }
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
        let mut bytes = Vec::with_capacity(64);
        frame.encode(&mut bytes)?;
        self.outgoing.send(bytes).await.map_err(|_| Error::Closed)
    }

    /// Closes the connection politely: frames already queued are written, then our side stops sending and
    /// the broker closes its side.
    pub async fn close(mut self) -> Result<()> {
        if let Some(pinger) = self.pinger.take() {
            pinger.abort();
        }
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.outgoing, closed));
        if let Some(writer) = self.writer.take() {
            writer.await.map_err(|_| Error::Closed)?;
        }
        Ok(())
    }

    /// Reads one frame. Fails if nothing arrives for three heartbeat intervals; bytes already waiting in
    /// the socket count as arrived, so a caller that was busy elsewhere is not mistaken for a dead broker.
    async fn read_frame(&mut self) -> Result<Frame> {
        loop {
            if let Some(frame) = Frame::decode_from(&mut self.read_buffer, self.max_frame_len)? {
                self.last_received = Instant::now();
                return Ok(frame);
            }
            self.read_buffer.reserve(READ_CHUNK);
            let silent_limit = self.heartbeat * SILENT_INTERVALS;
            let deadline = Instant::now().max(self.last_received + silent_limit);
            tokio::select! {
                biased;
                read = self.reader.read_buf(&mut self.read_buffer) => {
                    if read? == 0 {
                        return Err(Error::Closed);
                    }
                    self.last_received = Instant::now();
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(Error::Silent(self.last_received.elapsed()));
                }
            }
        }
    }
}

impl Consumer {
    /// Decodes one frame from bytes already received, reading the socket only while it has bytes ready;
    /// `Ok(None)` when no whole frame is available without waiting.
    fn try_read_frame(&mut self) -> Result<Option<Frame>> {
        loop {
            if let Some(frame) = Frame::decode_from(&mut self.read_buffer, self.max_frame_len)? {
                self.last_received = Instant::now();
                return Ok(Some(frame));
            }
            self.read_buffer.reserve(READ_CHUNK);
            match self.reader.try_read_buf(&mut self.read_buffer) {
                Ok(0) => return Err(Error::Closed),
                Ok(_) => self.last_received = Instant::now(),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
                Err(error) => return Err(error.into()),
            }
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // The writer task is left to write what is queued (an ACK just sent, say) and then shut the
        // connection down, which it does once this handle's sender and the pinger's are gone.
        if let Some(pinger) = self.pinger.take() {
            pinger.abort();
        }
    }
}

/// Writes whole frames to the socket in the order they were queued, then shuts the writing half down once
/// every sender is gone. A write error ends the task; the reading side then sees the connection close.
async fn write_frames(mut half: OwnedWriteHalf, mut queued: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = queued.recv().await {
        if half.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = half.shutdown().await;
}

/// Sends a PING every `interval`, so the broker knows this process is alive even while the application
/// is busy between two calls of [`Consumer::next_event`]. Whether the application keeps up is a separate
/// question, which the broker answers with its in-flight window and slow-consumer timeout.
async fn send_pings(outgoing: mpsc::Sender<Vec<u8>>, interval: Duration) {
    let mut nonce = 0u64;
    loop {
        tokio::time::sleep(interval).await;
        nonce += 1;
        let mut bytes = Vec::with_capacity(32);
        if Frame::Ping(Ping { nonce, timestamp_ms: now_ms() }).encode(&mut bytes).is_err() {
            return;
        }
        if outgoing.send(bytes).await.is_err() {
            return;
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}
