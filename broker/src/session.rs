//! The delivery state machine of one connection: HELLO, WELCOME, then batches pushed as records become
//! readable, bounded by an in-flight window, with ACK commits, SEEK, full refresh (RESET...READY), TOPIC
//! announcements, heartbeats, slow-consumer pacing and take-over within a group.
//!
//! A session speaks frames, not bytes: the transport hands it decoded frames (or the decode error) on one
//! bounded channel and takes [`Outbound`] items on another. The TCP consumer server (`connection.rs`) is
//! one transport; the pipe server, a WebSocket at `GET /api/v1/pipe`, runs the same session with
//! [`Role::Pipe`]. A HELLO with the producer role on the consumer port hands the connection to the producer
//! session (`producer.rs`) instead. This module never touches a socket.
//!
//! Delivery is event-driven: each attached log (`Log::wake_on_change`) and the store's topic list wake the
//! session through one `Notify`; nothing polls.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use protocol::WireError;
use protocol::frame::{
    ErrorCode, ErrorFrame, Frame, Ping, Ready, Reset, Role, StartPosition, encode_batch_header,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::cursor::{Begin, Cursor};
use crate::groups::Committed;
use crate::metrics::KindLabels;
use crate::node::Node;
use protocol::now_ms;

mod changes;
pub(crate) mod hello;
mod requests;

/// How many heartbeat intervals of silence make a peer count as gone.
pub(crate) const SILENT_INTERVALS: u32 = 3;

/// Most control frames (PONG, RESET, READY, TOPIC, ERROR) queued for a peer that is not reading; past this
/// the peer is dropped as a slow consumer.
pub(crate) const MAX_CONTROL_QUEUE: usize = 256;

/// How long the final ERROR frame may wait for room in the outbound queue.
const FINAL_FRAME_WAIT: Duration = Duration::from_secs(1);

/// One item for the transport to write.
#[derive(Debug)]
pub enum Outbound {
    /// A frame to encode and send.
    Frame(Frame),
    /// A BATCH frame as its encoded header (see `encode_batch_header`) and the records that complete it,
    /// straight from the log, for a vectored write.
    Batch {
        /// Frame header and BATCH fields.
        header: Vec<u8>,
        /// The records, verbatim.
        records: Bytes,
    },
}

/// The transport's side of a session: decoded frames in, items to write out.
#[derive(Debug)]
pub struct SessionIo {
    /// Frames from the peer, or the decode error that ends the connection. Closed when the peer closes.
    pub inbound: mpsc::Receiver<Result<Frame, WireError>>,
    /// Items for the transport to write, in order. Bounded: a full queue paces the session.
    pub outbound: mpsc::Sender<Outbound>,
}

/// Who is on the other end, as far as the transport knows.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The peer's address, if the transport has one.
    pub addr: Option<SocketAddr>,
    /// The role the transport accepts: [`Role::Consumer`] on the TCP consumer port (which takes
    /// [`Role::Producer`] too), [`Role::Pipe`] on the pipe endpoint.
    pub role: Role,
}

/// How a session (a delivery or a producer session) ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The peer closed the connection.
    Closed,
    /// The peer was silent for three heartbeat intervals.
    Silent,
    /// The session sends this ERROR frame and closes.
    Fatal(ErrorFrame),
}

impl End {
    /// A fatal end with this code and message.
    pub(crate) fn fatal(code: ErrorCode, message: impl Into<String>) -> End {
        End::Fatal(ErrorFrame { code, fatal: true, message: message.into() })
    }
}

/// Runs one session to its end. Never fails: every problem becomes an ERROR frame to the peer and a log
/// line here.
pub async fn run_session(node: Arc<Node>, io: SessionIo, peer: Peer) {
    let SessionIo { mut inbound, outbound } = io;
    let hello = match hello::receive_hello(&node, &mut inbound).await {
        Ok(hello) if hello.role == Role::Producer && peer.role == Role::Consumer => {
            let io = SessionIo { inbound, outbound };
            return crate::producer::run_producer(node, io, peer.addr, hello).await;
        }
        other => other,
    };
    let kind = peer.role.name();
    let connection_id = node.members.connect(peer.addr, kind);
    let gauge = node.metrics.connections.get_or_create(&KindLabels { kind: kind.to_string() }).clone();
    gauge.inc();
    let mut session = Session::new(Arc::clone(&node), connection_id, inbound, outbound.clone());
    let end = match hello {
        Ok(hello) => match session.handshake(hello, peer).await {
            Ok(()) => session.deliver().await,
            Err(end) => end,
        },
        Err(end) => end,
    };
    let queued: Vec<Frame> = session.control.drain(..).collect();
    drop(session);
    close(&node, connection_id, peer.addr, end, queued, &outbound).await;
    node.members.disconnect(connection_id);
    gauge.dec();
}

/// Ends a session's conversation: logs how it ended and, for a fatal end, sends the control frames still
/// queued (a non-fatal ERROR, a PUBLISH_ACK, say), in order, then the ERROR. Room may never come if the
/// peer stopped reading, so the whole goodbye is bounded.
pub(crate) async fn close(
    node: &Node,
    connection_id: u64,
    peer: Option<SocketAddr>,
    end: End,
    queued: Vec<Frame>,
    outbound: &mpsc::Sender<Outbound>,
) {
    match end {
        End::Closed => tracing::debug!(connection_id, ?peer, "peer closed the connection"),
        End::Silent => tracing::info!(connection_id, ?peer, "dropping a silent peer"),
        End::Fatal(error) => {
            tracing::info!(connection_id, ?peer, code = %error.code, message = %error.message,
                "closing the connection with an error");
            node.metrics.protocol_errors.inc();
            let mut goodbye = queued;
            goodbye.push(Frame::Error(error));
            let _ = tokio::time::timeout(FINAL_FRAME_WAIT, async {
                for frame in goodbye {
                    if outbound.send(Outbound::Frame(frame)).await.is_err() {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

/// The state of one session.
#[derive(Debug)]
struct Session {
    /// The broker.
    node: Arc<Node>,
    /// This connection's id in the membership table.
    connection_id: u64,
    /// Frames from the peer.
    inbound: mpsc::Receiver<Result<Frame, WireError>>,
    /// Items to the transport.
    outbound: mpsc::Sender<Outbound>,
    /// The group from HELLO.
    group: String,
    /// The client id from HELLO.
    client_id: String,
    /// Consumer or pipe child, as the transport accepts.
    role: Role,
    /// One cursor per subscribed topic.
    cursors: Vec<Cursor>,
    /// Topic name -> index in `cursors`.
    by_topic: HashMap<String, usize>,
    /// The start position of a `*` subscription, if any.
    all_topics: Option<StartPosition>,
    /// The store's topic-list version, watched for `*` and for topics waited on.
    topics_version: watch::Receiver<u64>,
    /// The task turning topic-list changes into wake-ups.
    topics_watcher: Option<tokio::task::JoinHandle<()>>,
    /// Wakes the session: readable offsets, topic list, claim signals.
    wake: Arc<Notify>,
    /// Control frames to send before any batch.
    control: VecDeque<Frame>,
    /// Most unacknowledged batches across topics.
    window: usize,
    /// Most records in one BATCH: the server's limit for the role, lowered to the client's wish.
    batch_max_records: usize,
    /// Most record bytes in one BATCH (a single larger record still goes alone), likewise.
    batch_max_bytes: usize,
    /// Unacknowledged batches across topics.
    in_flight: usize,
    /// Where the next round-robin scan for a batch starts.
    next_cursor: usize,
    /// When a frame last arrived.
    last_received: Instant,
    /// When the session last made progress or was not blocked (for the slow-consumer timeout).
    last_progress: Instant,
    /// The nonce of the next PING.
    next_nonce: u64,
    /// Set when a send slot found nothing to send; cleared by the next event.
    nothing_to_cut: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(watcher) = self.topics_watcher.take() {
            watcher.abort();
        }
    }
}

impl Session {
    /// A session before HELLO.
    fn new(
        node: Arc<Node>,
        connection_id: u64,
        inbound: mpsc::Receiver<Result<Frame, WireError>>,
        outbound: mpsc::Sender<Outbound>,
    ) -> Session {
        let topics_version = node.store.subscribe_topics();
        let window = usize::from(node.config.max_in_flight);
        let batch_max_records = node.config.batch_max_records;
        let batch_max_bytes = usize::try_from(node.config.batch_max_bytes).unwrap_or(usize::MAX);
        Session {
            node,
            connection_id,
            inbound,
            outbound,
            group: String::new(),
            client_id: String::new(),
            role: Role::Consumer,
            cursors: Vec::new(),
            by_topic: HashMap::new(),
            all_topics: None,
            topics_version,
            topics_watcher: None,
            wake: Arc::new(Notify::new()),
            control: VecDeque::new(),
            window,
            batch_max_records,
            batch_max_bytes,
            in_flight: 0,
            next_cursor: 0,
            last_received: Instant::now(),
            last_progress: Instant::now(),
            next_nonce: 1,
            nothing_to_cut: false,
        }
    }

    /// Delivers until the session ends.
    async fn deliver(&mut self) -> End {
        let heartbeat = self.node.config.heartbeat;
        let mut ticks = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let shutdown = self.node.shutdown.clone();
        let stopping = shutdown.wait();
        tokio::pin!(stopping);
        loop {
            let has_work = match self.has_work() {
                Ok(has_work) => has_work,
                Err(end) => return end,
            };
            let outbound = self.outbound.clone();
            // Sending comes last: a consumer that acknowledges fast enough keeps it ready forever, and
            // take-overs, refreshes and heartbeats must still be noticed.
            tokio::select! {
                biased;
                () = &mut stopping => {
                    return End::fatal(ErrorCode::ShuttingDown, "the broker is shutting down; reconnect later");
                }
                frame = self.inbound.recv() => {
                    self.last_received = Instant::now();
                    self.nothing_to_cut = false;
                    let result = match frame {
                        None => Err(End::Closed),
                        Some(Err(error)) => Err(End::Fatal(ErrorFrame::from_wire_error(&error))),
                        Some(Ok(frame)) => self.on_frame(frame),
                    };
                    if let Err(end) = result {
                        return end;
                    }
                }
                () = self.wake.notified() => {
                    self.nothing_to_cut = false;
                    if let Err(end) = self.on_wake() {
                        return end;
                    }
                }
                _ = ticks.tick() => {
                    self.nothing_to_cut = false;
                    if let Err(end) = self.on_tick() {
                        return end;
                    }
                }
                permit = outbound.reserve_owned(), if has_work => {
                    let Ok(permit) = permit else {
                        return End::Closed;
                    };
                    match self.next_outbound() {
                        Ok(Some(item)) => {
                            permit.send(item);
                        }
                        // Readable records that yield no batch should not happen; if they do, wait for the
                        // next event instead of spinning on them.
                        Ok(None) => self.nothing_to_cut = true,
                        Err(end) => return end,
                    }
                }
            }
        }
    }

    /// Handles one frame from the peer.
    fn on_frame(&mut self, frame: Frame) -> Result<(), End> {
        match frame {
            Frame::Ack(ack) => self.on_ack(ack),
            Frame::Seek(seek) => self.on_seek(seek),
            Frame::Ping(ping) => self.queue(Frame::Pong(ping)),
            Frame::Pong(_) => Ok(()),
            Frame::Error(error) => {
                tracing::info!(connection_id = self.connection_id, code = %error.code, message = %error.message,
                    "peer sent an ERROR frame");
                if error.code == ErrorCode::BadRecords {
                    self.verify_in_flight();
                }
                if error.fatal { Err(End::Closed) } else { Ok(()) }
            }
            Frame::Hello(_) => {
                Err(End::fatal(ErrorCode::ProtocolViolation, "a second HELLO on one connection"))
            }
            Frame::Publish(_) => Err(End::fatal(
                ErrorCode::ProtocolViolation,
                "PUBLISH needs a producer connection (HELLO with role 2, at ROOT)",
            )),
            other => Err(End::fatal(
                ErrorCode::ProtocolViolation,
                format!("{} is a server frame; a client may not send it", other.name()),
            )),
        }
    }

    /// Starts a full refresh of one cursor and queues its RESET.
    fn begin_refresh(&mut self, index: usize) -> Result<(), End> {
        let cursor = &mut self.cursors[index];
        let uid = cursor.uid();
        let Some((forgotten, refresh)) = cursor.begin_refresh() else {
            return Ok(());
        };
        // The new copy gets the history and the settings too, after its RESET.
        if let Some(attached) = cursor.attached.as_mut() {
            attached.epochs_sent = None;
            attached.settings_sent = None;
        }
        self.in_flight -= forgotten;
        let topic = cursor.topic.clone();
        tracing::info!(connection_id = self.connection_id, group = %self.group, %topic, log_start = refresh.start,
            end_offset = refresh.end, "full refresh");
        self.queue(Frame::Reset(Reset { topic, uid, log_start: refresh.start, end_offset: refresh.end }))
    }

    /// Whether the session has something to send now.
    fn has_work(&mut self) -> Result<bool, End> {
        if !self.control.is_empty() {
            return Ok(true);
        }
        if self.nothing_to_cut {
            return Ok(false);
        }
        let window_open = self.in_flight < self.window;
        Ok(self.cursors.iter().any(|cursor| {
            cursor.epochs_due()
                || cursor.settings_due()
                || cursor.ready_due()
                || (window_open && cursor.has_records())
        }))
    }

    /// The next item to send: a control frame, a READY, or a batch from the next topic in turn.
    fn next_outbound(&mut self) -> Result<Option<Outbound>, End> {
        if let Some(frame) = self.control.pop_front() {
            return Ok(Some(Outbound::Frame(frame)));
        }
        let n_cursors = self.cursors.len();
        for step in 0..n_cursors {
            let index = (self.next_cursor + step) % n_cursors;
            // A replaced log is never read again: its successor is a new copy, sent whole (RESET...READY).
            if self.cursors[index].attached.as_ref().is_some_and(crate::cursor::Attached::is_closed) {
                self.reattach(index)?;
                return Ok(self.control.pop_front().map(Outbound::Frame));
            }
            // The history goes before any batch it covers.
            if let Some(epochs) = self.cursors[index].take_epochs() {
                return Ok(Some(Outbound::Frame(Frame::Epochs(epochs))));
            }
            // The settings too, so that a copy applies them from its first record.
            if let Some(settings) = self.cursors[index].take_settings() {
                return Ok(Some(Outbound::Frame(Frame::Settings(settings))));
            }
            if self.cursors[index].ready_due() {
                return Ok(Some(Outbound::Frame(self.ready(index))));
            }
            if self.in_flight >= self.window || !self.cursors[index].has_records() {
                continue;
            }
            if self.cursors[index].below_delete_horizon() {
                self.begin_refresh(index)?;
                return Ok(self.control.pop_front().map(Outbound::Frame));
            }
            // Whatever is readable goes at once, up to the batch limits: a batch never waits to fill.
            let cut = self.cursors[index].cut_batch(self.batch_max_records, self.batch_max_bytes);
            let batch = match cut {
                Ok(Some(batch)) => batch,
                Ok(None) => continue,
                // Damaged bytes are never sent: the cursor waits there until the segment is repaired (a
                // repair wakes the log's readers).
                Err(storage::Error::Damaged { .. }) => continue,
                Err(storage::Error::OffsetBelowLogStart { .. }) => {
                    // Retention overtook this consumer: only a full refresh can serve it now.
                    self.begin_refresh(index)?;
                    return Ok(self.control.pop_front().map(Outbound::Frame));
                }
                Err(error) => {
                    tracing::error!(topic = %self.cursors[index].topic, %error, "reading a log for delivery failed");
                    return Err(End::fatal(ErrorCode::Internal, "the broker failed to read the topic"));
                }
            };
            let topic = &self.cursors[index].topic;
            let mut header = Vec::with_capacity(64 + topic.len());
            if let Err(error) = encode_batch_header(
                topic,
                batch.first_offset,
                batch.last_offset,
                batch.end_offset,
                &batch.records,
                &mut header,
            ) {
                tracing::error!(%topic, %error, "framing a batch failed");
                return Err(End::fatal(ErrorCode::Internal, "the broker failed to frame a batch"));
            }
            self.node.metrics.delivered(
                topic,
                batch.n_records,
                batch.records.len() as u64,
                batch.last_timestamp_ms,
            );
            self.in_flight += 1;
            self.last_progress = Instant::now();
            self.next_cursor = index + 1;
            return Ok(Some(Outbound::Batch { header, records: batch.records }));
        }
        Ok(None)
    }

    /// Marks a refresh's READY as sent and returns the frame. An empty refresh is complete at once.
    fn ready(&mut self, index: usize) -> Frame {
        let cursor = &mut self.cursors[index];
        let uid = cursor.uid();
        let mut end_offset = cursor.next_send;
        if let Some(refresh) = &mut cursor.refresh {
            refresh.ready_sent = true;
            end_offset = refresh.end;
            let empty = refresh.start == refresh.end;
            let acked = cursor.acked >= refresh.end && cursor.in_flight.is_empty();
            if empty || acked {
                cursor.refresh = None;
                self.node.groups.clear_refresh(&self.group, &cursor.topic);
                if !cursor.claim.signals.is_superseded() {
                    self.node.groups.commit(
                        &self.group,
                        &cursor.topic,
                        Committed { uid, next_offset: end_offset },
                    );
                }
            }
        }
        Frame::Ready(Ready { topic: cursor.topic.clone(), uid, end_offset })
    }

    /// Heartbeat: drop a silent peer, PING, and drop a consumer that has blocked delivery for too long.
    fn on_tick(&mut self) -> Result<(), End> {
        let heartbeat = self.node.config.heartbeat;
        if self.last_received.elapsed() >= heartbeat * SILENT_INTERVALS {
            return Err(End::Silent);
        }
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        self.queue(Frame::Ping(Ping { nonce, timestamp_ms: now_ms() }))?;
        let blocked = self.in_flight >= self.window || self.outbound.capacity() == 0;
        if !blocked {
            self.last_progress = Instant::now();
        } else if self.last_progress.elapsed() >= self.node.config.slow_consumer_timeout {
            return Err(End::fatal(
                ErrorCode::SlowConsumer,
                format!(
                    "no progress for {:?}: the consumer stopped reading or acknowledging",
                    self.node.config.slow_consumer_timeout
                ),
            ));
        }
        Ok(())
    }

    /// Queues a control frame; a peer that lets too many pile up is too slow to keep.
    fn queue(&mut self, frame: Frame) -> Result<(), End> {
        if self.control.len() >= MAX_CONTROL_QUEUE {
            return Err(End::fatal(
                ErrorCode::SlowConsumer,
                "too many control frames queued for a peer that is not reading",
            ));
        }
        self.control.push_back(frame);
        Ok(())
    }

    /// Adjusts a resolved start for this session's role: for a pipe child, an offset beyond this node's
    /// end is not an error but a position to wait at (this node is catching up, or lost an unflushed tail
    /// that its own parent will send again); the child's copy is ahead and continues once the range exists.
    fn for_role(&self, begin: Begin) -> Begin {
        match begin {
            Begin::OutOfRange { requested, .. } if self.role == Role::Pipe => Begin::At(requested),
            other => other,
        }
    }

    /// The peer refused records this session sent: the stored bytes of every range in flight (at most the
    /// window's batches) are checked, so damage on this node's disk is marked and never sent again.
    fn verify_in_flight(&self) {
        let ranges = self.cursors.iter().filter_map(|cursor| {
            let attached = cursor.attached.as_ref()?;
            (cursor.next_send > cursor.acked)
                .then(|| (Arc::clone(&attached.log), cursor.acked, cursor.next_send))
        });
        crate::repair::verify_refused(ranges.collect());
    }

    /// Queues a non-fatal ERROR frame.
    fn queue_error(&mut self, code: ErrorCode, message: String) -> Result<(), End> {
        self.node.metrics.protocol_errors.inc();
        self.queue(Frame::Error(ErrorFrame { code, fatal: false, message }))
    }
}
