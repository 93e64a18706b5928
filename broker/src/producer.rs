//! The producer session: a connection to ROOT's consumer port whose HELLO has the producer role. After
//! WELCOME (no topics), PUBLISH frames come in and each gets a PUBLISH_ACK, in order, once its records are
//! durable; PING and PONG keep both sides alive.
//!
//! Publishes are pipelined and committed in groups. At most `max_in_flight` PUBLISH frames (the HELLO's
//! value, lowered to `--max-publish-in-flight`), and at most [`MAX_BYTES_AHEAD`] of their records, are
//! taken from the connection before their acks are sent; past that, the session stops reading and TCP
//! pushes back. One append runs at a time per connection, so
//! records keep the order they were sent in; the frames that arrive while it flushes are stored together
//! by the next one (one write, one flush), and appends from other connections and HTTP requests share the
//! flush in storage (`Log`'s group commit). Every record is proven by the frame decoder before the frame
//! exists, and each frame is checked on arrival against what would make an append refuse it (its topic
//! name, a record bigger than a segment), so a gathered append holds only frames that can all be stored.
//!
//! A frame that is malformed, or breaks a rule, ends this connection only: the frames received before it
//! are stored and acknowledged, then the fatal ERROR is sent. Nothing of a frame that did not arrive whole
//! is stored, since the decoder only ever yields whole frames. This module owns the producer's
//! conversation; storing is `crate::publish`'s, sockets are the transport's.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use protocol::frame::{
    ErrorCode, ErrorFrame, Frame, Hello, LEVEL_CONSUMER, PROTOCOL_VERSION, Ping, Publish, PublishAck, Welcome,
};
use protocol::{ProducerRecords, WireError, now_ms, validate_topic_name};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::error::Error;
use crate::metrics::KindLabels;
use crate::node::Node;
use crate::publish::{Stored, store};
use crate::session::hello::{MAX_NAME_LEN, check_credentials};
use crate::session::{End, MAX_CONTROL_QUEUE, Outbound, SILENT_INTERVALS, SessionIo, close};

/// Most producer record bytes stored by one append: frames gathered beyond this wait for the next one.
const MAX_GROUP_BYTES: usize = 8 * 1024 * 1024;

/// Most producer record bytes taken from a connection and not yet acknowledged (at least one frame is
/// always taken): what bounds a producer's memory here, whatever its window and frame size.
const MAX_BYTES_AHEAD: usize = 32 * 1024 * 1024;

/// An append in progress, resolving to what it stored.
type Appending = Pin<Box<dyn Future<Output = Result<Stored, Error>> + Send>>;

/// Runs a producer connection to its end, from the HELLO already received. Never fails: every problem
/// becomes an ERROR frame to the producer and a log line here.
pub(crate) async fn run_producer(node: Arc<Node>, io: SessionIo, peer: Option<SocketAddr>, hello: Hello) {
    let kind = hello.role.name();
    let connection_id = node.members.connect(peer, kind);
    node.members.identify(connection_id, &hello.client_id, "");
    let gauge = node.metrics.connections.get_or_create(&KindLabels { kind: kind.to_string() }).clone();
    gauge.inc();
    let SessionIo { inbound, outbound } = io;
    let mut session = ProducerSession::new(Arc::clone(&node), inbound, outbound.clone());
    let end = match session.open(&hello).await {
        Ok(()) => {
            tracing::info!(connection_id, client_id = %hello.client_id, ?peer, window = session.window,
                "producer session started");
            session.serve().await
        }
        Err(end) => end,
    };
    let queued: Vec<Frame> = session.control.drain(..).collect();
    drop(session);
    close(&node, connection_id, peer, end, queued, &outbound).await;
    node.members.disconnect(connection_id);
    gauge.dec();
}

/// A PUBLISH taken from the connection whose PUBLISH_ACK has not been queued yet.
#[derive(Debug)]
struct Pending {
    /// The topic.
    topic: String,
    /// The producer's sequence number, echoed in the ack.
    sequence: u64,
    /// How many records the frame carries.
    n_records: u64,
    /// The size of its records in the producer layout.
    n_bytes: usize,
}

/// The state of one producer connection.
struct ProducerSession {
    /// The broker.
    node: Arc<Node>,
    /// Frames from the producer.
    inbound: mpsc::Receiver<Result<Frame, WireError>>,
    /// Items to the transport.
    outbound: mpsc::Sender<Outbound>,
    /// Most PUBLISH frames taken from the connection and not yet acknowledged.
    window: usize,
    /// Record bytes of the frames taken and not yet acknowledged.
    bytes_ahead: usize,
    /// Frames received whole and checked, waiting for the next append, oldest first.
    received: VecDeque<(Pending, ProducerRecords)>,
    /// The frames the append in progress stores, oldest first.
    in_append: Vec<Pending>,
    /// The append in progress.
    appending: Option<Appending>,
    /// Frames to send (PUBLISH_ACK, PONG, PING), in order.
    control: VecDeque<Frame>,
    /// Set once the session is to end: no more frames are read, and the frames received are stored and
    /// acknowledged first.
    closing: Option<End>,
    /// When a frame last arrived.
    last_received: Instant,
    /// When a frame last left, or the session last had nothing waiting to leave.
    last_progress: Instant,
    /// The nonce of the next PING.
    next_nonce: u64,
}

impl ProducerSession {
    /// A session before its HELLO is checked.
    fn new(
        node: Arc<Node>,
        inbound: mpsc::Receiver<Result<Frame, WireError>>,
        outbound: mpsc::Sender<Outbound>,
    ) -> ProducerSession {
        let window = usize::from(node.config.max_publish_in_flight);
        ProducerSession {
            node,
            inbound,
            outbound,
            window,
            bytes_ahead: 0,
            received: VecDeque::new(),
            in_append: Vec::new(),
            appending: None,
            control: VecDeque::new(),
            closing: None,
            last_received: Instant::now(),
            last_progress: Instant::now(),
            next_nonce: 1,
        }
    }

    /// Checks the HELLO and answers WELCOME, with no topics.
    async fn open(&mut self, hello: &Hello) -> Result<(), End> {
        let bad = |message: String| Err(End::fatal(ErrorCode::BadRequest, message));
        check_credentials(&self.node, hello)?;
        if !self.node.is_root() {
            return bad(format!(
                "this is a {} node; producers publish to the ROOT broker only, where data enters the tree",
                self.node.config.level.as_str()
            ));
        }
        if hello.level != LEVEL_CONSUMER {
            return bad(format!("a producer's level must be {LEVEL_CONSUMER}, not {}", hello.level));
        }
        if hello.client_id.len() > MAX_NAME_LEN {
            return bad(format!("the client id must be at most {MAX_NAME_LEN} bytes"));
        }
        if !hello.topics.is_empty() {
            return bad("a producer's HELLO names no topics; each PUBLISH names its own".to_string());
        }
        if hello.max_in_flight > 0 {
            self.window = self.window.min(usize::from(hello.max_in_flight));
        }
        let config = &self.node.config;
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            node_id: config.node_id.clone(),
            level: config.level.as_u8(),
            heartbeat_ms: u32::try_from(config.heartbeat.as_millis()).unwrap_or(u32::MAX),
            topics: Vec::new(),
        };
        self.outbound.send(Outbound::Frame(Frame::Welcome(welcome))).await.map_err(|_| End::Closed)
    }

    /// Takes frames, stores and acknowledges them until the session ends.
    async fn serve(&mut self) -> End {
        let heartbeat = self.node.config.heartbeat;
        let mut ticks = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let shutdown = self.node.shutdown.clone();
        let stopping = shutdown.wait();
        tokio::pin!(stopping);
        loop {
            if self.closing.is_some() && self.appending.is_none() && self.received.is_empty() {
                return self.closing.take().unwrap_or(End::Closed);
            }
            let outbound = self.outbound.clone();
            let reading = self.closing.is_none() && self.has_room();
            let sending = !self.control.is_empty();
            tokio::select! {
                biased;
                () = &mut stopping, if self.closing.is_none() => {
                    self.end(End::fatal(ErrorCode::ShuttingDown, "the broker is shutting down; reconnect later"));
                }
                stored = poll_append(&mut self.appending) => self.on_stored(stored),
                permit = outbound.reserve_owned(), if sending => {
                    let Ok(permit) = permit else {
                        // The transport is gone: nothing more can be said, but what was received is
                        // still stored.
                        self.control.clear();
                        self.end(End::Closed);
                        continue;
                    };
                    if let Some(frame) = self.control.pop_front() {
                        permit.send(Outbound::Frame(frame));
                    }
                    self.last_progress = Instant::now();
                }
                frame = self.inbound.recv(), if reading => {
                    self.last_received = Instant::now();
                    match frame {
                        None => self.end(End::Closed),
                        Some(Err(error)) => self.end(End::Fatal(ErrorFrame::from_wire_error(&error))),
                        Some(Ok(frame)) => {
                            if let Err(end) = self.on_frame(frame) {
                                self.end(end);
                            }
                        }
                    }
                }
                _ = ticks.tick() => {
                    if let Err(end) = self.on_tick() {
                        self.end(end);
                    }
                }
            }
            if self.appending.is_none() {
                self.start_append();
            }
        }
    }

    /// Whether another frame may be taken: fewer than the window are unacknowledged (an ack waiting in the
    /// control queue counts, so a producer that does not read its acks is paced), and their records take
    /// less than [`MAX_BYTES_AHEAD`].
    fn has_room(&self) -> bool {
        let in_flight = self.received.len() + self.in_append.len() + self.control.len();
        in_flight < self.window && self.bytes_ahead < MAX_BYTES_AHEAD
    }

    /// Marks the session as ending, keeping the first reason given.
    fn end(&mut self, end: End) {
        if self.closing.is_none() {
            self.closing = Some(end);
        }
    }

    /// Handles one frame from the producer.
    fn on_frame(&mut self, frame: Frame) -> Result<(), End> {
        match frame {
            Frame::Publish(publish) => self.on_publish(publish),
            Frame::Ping(ping) => self.queue(Frame::Pong(ping)),
            Frame::Pong(_) => Ok(()),
            Frame::Error(error) => {
                tracing::info!(code = %error.code, message = %error.message, "a producer sent an ERROR frame");
                if error.fatal { Err(End::Closed) } else { Ok(()) }
            }
            Frame::Hello(_) => {
                Err(End::fatal(ErrorCode::ProtocolViolation, "a second HELLO on one connection"))
            }
            other => Err(End::fatal(
                ErrorCode::ProtocolViolation,
                format!("a producer sends PUBLISH, PING and PONG, not {}", other.name()),
            )),
        }
    }

    /// Checks a PUBLISH beyond what its decoder proved, and queues it for the next append.
    fn on_publish(&mut self, publish: Publish) -> Result<(), End> {
        let Publish { topic, sequence, records } = publish;
        if let Err(reason) = validate_topic_name(&topic) {
            return Err(End::fatal(ErrorCode::BadRequest, format!("PUBLISH {sequence}: {reason}")));
        }
        // An append refuses a record bigger than a segment; refusing it here keeps it out of a gathered
        // append, which would then store none of the frames gathered with it.
        let segment_bytes = self.node.config.segment_bytes;
        if let Some((index, record)) =
            records.iter().enumerate().find(|(_, record)| record.encoded_len() as u64 > segment_bytes)
        {
            return Err(End::fatal(
                ErrorCode::BadRequest,
                format!(
                    "PUBLISH {sequence}: record {index} takes {} bytes stored, more than a segment of \
                     {segment_bytes} bytes",
                    record.encoded_len()
                ),
            ));
        }
        let (n_records, n_bytes) = (records.len() as u64, records.as_bytes().len());
        self.bytes_ahead += n_bytes;
        self.received.push_back((Pending { topic, sequence, n_records, n_bytes }, records));
        Ok(())
    }

    /// Starts an append of the frames received, if any (see [`take_group`]).
    fn start_append(&mut self) {
        let Some((topic, frames, batches)) = take_group(&mut self.received, MAX_GROUP_BYTES) else {
            return;
        };
        self.in_append = frames;
        let node = Arc::clone(&self.node);
        self.appending = Some(Box::pin(async move { store(&node, topic, batches).await }));
    }

    /// An append finished: queue the acks of its frames, whose records storage made durable, or end the
    /// session if it failed.
    fn on_stored(&mut self, stored: Result<Stored, Error>) {
        self.appending = None;
        let frames = std::mem::take(&mut self.in_append);
        self.bytes_ahead -= frames.iter().map(|frame| frame.n_bytes).sum::<usize>();
        let outcome = match stored {
            Ok(Stored { outcome, .. }) => outcome,
            Err(error) => {
                // Nothing after a failed append is stored, so that the producer's order holds.
                self.received.clear();
                self.bytes_ahead = 0;
                self.closing = Some(End::Fatal(refusal(&error)));
                return;
            }
        };
        let expected: u64 = frames.iter().map(|frame| frame.n_records).sum();
        if outcome.n_appended != expected || outcome.durable_offset < outcome.next_offset {
            tracing::error!(
                ?outcome,
                expected,
                "an append did not store its frames durably; not acknowledging"
            );
            self.received.clear();
            self.bytes_ahead = 0;
            self.closing =
                Some(End::fatal(ErrorCode::Internal, "the broker could not store the records durably"));
            return;
        }
        let mut first_offset = outcome.first_offset;
        for frame in frames {
            let ack = PublishAck {
                topic: frame.topic,
                sequence: frame.sequence,
                first_offset,
                last_offset: first_offset + frame.n_records - 1,
            };
            first_offset += frame.n_records;
            // Acks are bounded by the window, so only the control queue's own limit can refuse one.
            self.control.push_back(Frame::PublishAck(ack));
        }
    }

    /// Heartbeat: drop a silent producer, PING, and drop one that stopped reading its acks for too long.
    /// A producer whose frames wait unread (the window is full) is not silent: this side is busy.
    fn on_tick(&mut self) -> Result<(), End> {
        let heartbeat = self.node.config.heartbeat;
        let waiting_for_producer = self.has_room() && self.inbound.is_empty();
        if self.closing.is_none()
            && waiting_for_producer
            && self.last_received.elapsed() >= heartbeat * SILENT_INTERVALS
        {
            return Err(End::Silent);
        }
        let blocked = !self.control.is_empty() && self.outbound.capacity() == 0;
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        self.queue(Frame::Ping(Ping { nonce, timestamp_ms: now_ms() }))?;
        if !blocked {
            self.last_progress = Instant::now();
        } else if self.last_progress.elapsed() >= self.node.config.slow_consumer_timeout {
            return Err(End::fatal(
                ErrorCode::SlowConsumer,
                format!(
                    "no progress for {:?}: the producer stopped reading its acknowledgements",
                    self.node.config.slow_consumer_timeout
                ),
            ));
        }
        Ok(())
    }

    /// Queues a frame to send; a producer that lets too many pile up is too slow to keep.
    fn queue(&mut self, frame: Frame) -> Result<(), End> {
        if self.control.len() >= self.window + MAX_CONTROL_QUEUE {
            return Err(End::fatal(
                ErrorCode::SlowConsumer,
                "too many frames queued for a producer that is not reading",
            ));
        }
        self.control.push_back(frame);
        Ok(())
    }
}

/// Takes the frames one append stores from the front of `received`: the oldest frames of one topic, up to
/// `max_bytes` of records (at least one frame). `None` if nothing was received.
fn take_group(
    received: &mut VecDeque<(Pending, ProducerRecords)>,
    max_bytes: usize,
) -> Option<(String, Vec<Pending>, Vec<ProducerRecords>)> {
    let topic = received.front()?.0.topic.clone();
    let mut bytes = 0;
    let mut frames = Vec::new();
    let mut batches = Vec::new();
    while let Some((pending, records)) = received.front() {
        let size = records.as_bytes().len();
        if pending.topic != topic || (!batches.is_empty() && bytes + size > max_bytes) {
            break;
        }
        bytes += size;
        if let Some((pending, records)) = received.pop_front() {
            frames.push(pending);
            batches.push(records);
        }
    }
    Some((topic, frames, batches))
}

/// Waits for the append in progress; never resolves when there is none, so it can sit in a `select!`.
async fn poll_append(appending: &mut Option<Appending>) -> Result<Stored, Error> {
    match appending {
        Some(append) => append.await,
        None => std::future::pending().await,
    }
}

/// The ERROR a failed append is answered with: the producer's mistake names it; a full disk or another
/// storage fault is the broker's (details in its log).
fn refusal(error: &Error) -> ErrorFrame {
    let (code, message) = match error {
        Error::Storage(
            storage::Error::BadTopicName { .. }
            | storage::Error::RecordTooLarge { .. }
            | storage::Error::BadRecord { .. },
        ) => (ErrorCode::BadRequest, error.to_string()),
        Error::Storage(storage::Error::NoSpace { .. }) => {
            tracing::error!(%error, "a producer's records could not be stored");
            (ErrorCode::Internal, "the broker's disk is full; try again later".to_string())
        }
        other => {
            tracing::error!(error = %other, "a producer's records could not be stored");
            (ErrorCode::Internal, "the broker failed to store the records; see its log".to_string())
        }
    };
    ErrorFrame { code, fatal: true, message }
}

#[cfg(test)]
mod tests {
    use protocol::NewRecord;

    use super::*;

    fn frame(topic: &str, sequence: u64, value_len: usize) -> (Pending, ProducerRecords) {
        let value = vec![b'v'; value_len];
        let records = ProducerRecords::encode(&[NewRecord::new(b"k", &value)]).unwrap();
        let n_bytes = records.as_bytes().len();
        (Pending { topic: topic.to_string(), sequence, n_records: 1, n_bytes }, records)
    }

    fn sequences(frames: &[Pending]) -> Vec<u64> {
        frames.iter().map(|frame| frame.sequence).collect()
    }

    #[test]
    fn frames_received_meanwhile_are_stored_by_one_append_per_topic_run() {
        let mut received: VecDeque<_> =
            [frame("a", 1, 10), frame("a", 2, 10), frame("a", 3, 10), frame("b", 4, 10), frame("a", 5, 10)]
                .into_iter()
                .collect();
        let (topic, frames, batches) = take_group(&mut received, 1 << 20).unwrap();
        assert_eq!((topic.as_str(), sequences(&frames), batches.len()), ("a", vec![1, 2, 3], 3));
        let (topic, frames, _) = take_group(&mut received, 1 << 20).unwrap();
        assert_eq!((topic.as_str(), sequences(&frames)), ("b", vec![4]));
        let (topic, frames, _) = take_group(&mut received, 1 << 20).unwrap();
        assert_eq!((topic.as_str(), sequences(&frames)), ("a", vec![5]));
        assert!(take_group(&mut received, 1 << 20).is_none());
    }

    #[test]
    fn a_group_stops_at_the_byte_limit_but_takes_at_least_one_frame() {
        let mut received: VecDeque<_> = (1..=4).map(|sequence| frame("a", sequence, 100)).collect();
        let one = received[0].1.as_bytes().len();
        let (_, frames, _) = take_group(&mut received, 2 * one + 1).unwrap();
        assert_eq!(sequences(&frames), [1, 2]);
        let (_, frames, _) = take_group(&mut received, 1).unwrap();
        assert_eq!(sequences(&frames), [3], "a frame larger than the limit goes alone");
    }
}
