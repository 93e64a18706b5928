//! The child side of the pipe: find a parent, open `ws://{parent}/api/v1/pipe`, say HELLO with every topic
//! held (uid, next offset) plus `*` from the earliest offset, check that WELCOME comes from exactly one level
//! up, then apply what arrives to the local copy (`copy.rs`) and acknowledge what is durable. PING/PONG keep
//! the link alive; a parent silent for three pipe heartbeats counts as dead. When a link ends, the client
//! waits (exponential backoff with jitter) and asks for another parent, excluding the ones that failed;
//! it resumes from its local next offset, so switching parents neither loses nor repeats a record.
//!
//! This module owns the connection and its timing; it stores nothing itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use protocol::WireError;
use protocol::frame::{
    Ack, Batch, ErrorCode, ErrorFrame, FRAME_HEADER_LEN, Frame, Hello, PROTOCOL_VERSION, Ping, Role,
    StartPosition, Welcome,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::copy::{Durable, Fault, LocalCopy};
use super::{MESSAGE_SLACK, decode_message, encode_message};
use crate::backoff::Backoff;
use crate::node::{Node, Shutdown, now_ms};
use crate::registration::{ParentRef, find_parent};

/// The WebSocket to the parent.
type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The first wait before trying again after a link ended.
const RECONNECT_INITIAL: Duration = Duration::from_millis(100);

/// How long connecting (TCP and the WebSocket upgrade) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long to wait for the registry to name a parent before looking again.
const WAIT_FOR_PARENT: Duration = Duration::from_secs(1);

/// Frames decoded ahead of the copy. Small: a parent that sends faster than this node stores is paced
/// by TCP and by its in-flight window.
const INBOUND_CAPACITY: usize = 16;

/// Most batches appended (and flushed) together.
const MAX_GROUP_BATCHES: usize = 64;

/// Most record bytes appended (and flushed) together.
const MAX_GROUP_BYTES: usize = 8 * 1024 * 1024;

/// The child only sends small frames (ACK, PING, PONG); this caps what waits in its write buffer.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

/// How many pipe heartbeats of silence make the parent count as gone.
const SILENT_INTERVALS: u32 = 3;

/// Keeps this node's copy fed from a parent until the node shuts down. Does nothing at ROOT.
pub async fn run_pipe_client(node: Arc<Node>) {
    if node.is_root() {
        return;
    }
    let mut copy = LocalCopy::new(Arc::clone(&node));
    let mut failed: Vec<String> = Vec::new();
    let mut backoff = Backoff::new(RECONNECT_INITIAL, node.config.pipe_reconnect_max);
    let mut placement_changes = node.placement.subscribe();
    let mut last_reason: Option<String> = None;
    let shutdown = node.shutdown.clone();
    while !shutdown.is_triggered() {
        let Some(parent) = find_parent(&node, &mut failed).await else {
            node.pipe.waiting();
            tokio::select! {
                () = shutdown.wait() => break,
                _ = placement_changes.changed() => {}
                () = tokio::time::sleep(WAIT_FOR_PARENT) => {}
            }
            continue;
        };
        node.pipe.connecting(&parent);
        tracing::debug!(parent = %parent.id, addr = %parent.http_addr, "connecting the pipe");
        let end = run_link(&node, &parent, &mut copy).await;
        node.metrics.pipe_connected.set(0);
        copy.abandon_refreshes().await;
        let LinkEnd::Failed { streamed, refused, reason } = end else {
            break;
        };
        node.metrics.pipe_reconnects.inc();
        node.pipe.ended(refused, &reason);
        // The same failure again and again (a parent down for an hour) is logged once, then quietly.
        let repeated = !streamed && last_reason.as_deref() == Some(reason.as_str());
        if repeated {
            tracing::debug!(parent = %parent.id, %reason, "the pipe to the parent failed again");
        } else if refused {
            tracing::error!(parent = %parent.id, addr = %parent.http_addr, %reason, "the parent refused the pipe");
        } else {
            tracing::warn!(parent = %parent.id, addr = %parent.http_addr, %reason, "the pipe to the parent ended");
        }
        last_reason = Some(reason);
        if streamed {
            backoff.reset();
            failed.clear();
        }
        if !failed.contains(&parent.id) {
            failed.push(parent.id.clone());
        }
        tokio::select! {
            () = shutdown.wait() => break,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
    tracing::debug!("the pipe client stopped");
}

/// How one link ended.
#[derive(Debug)]
enum LinkEnd {
    /// The node is shutting down.
    Shutdown,
    /// The link failed or was refused.
    Failed {
        /// Whether records streamed (WELCOME arrived) before it ended.
        streamed: bool,
        /// Whether the parent refused this node (token, level), a problem retrying alone will not fix.
        refused: bool,
        /// What happened, for the log and `/api/v1/node`.
        reason: String,
    },
}

/// What the reader task passes on.
#[derive(Debug)]
enum Inbound {
    /// A decoded frame.
    Frame(Frame),
    /// A message that did not decode; reading stopped.
    Undecodable(WireError),
    /// The connection ended; reading stopped.
    Broken(String),
}

/// One connection to a parent.
struct Link<'a> {
    /// The broker.
    node: &'a Arc<Node>,
    /// The parent.
    parent: &'a ParentRef,
    /// The writing half of the WebSocket.
    sink: SplitSink<Socket, Message>,
    /// Frames from the reader task.
    inbound: mpsc::Receiver<Inbound>,
    /// A frame taken from `inbound` while gathering batches, to handle next.
    pending: Option<Inbound>,
    /// When the reader last got a message, in ms since the epoch.
    last_seen: Arc<AtomicU64>,
    /// Whether WELCOME has arrived.
    streaming: bool,
    /// The PING interval.
    heartbeat: Duration,
    /// The nonce of the next PING.
    next_nonce: u64,
    /// The node's shutdown signal.
    shutdown: Shutdown,
}

/// Connects to `parent`, shakes hands and streams until the link ends.
async fn run_link(node: &Arc<Node>, parent: &ParentRef, copy: &mut LocalCopy) -> LinkEnd {
    let max_frame_len = usize::try_from(node.config.max_frame_bytes).unwrap_or(usize::MAX);
    let max_message = max_frame_len + FRAME_HEADER_LEN + MESSAGE_SLACK;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .max_write_buffer_size(MAX_WRITE_BUFFER);
    let url = format!("ws://{}/api/v1/pipe", parent.http_addr);
    let connecting = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
    let shutdown = node.shutdown.clone();
    let failed = |reason: String| LinkEnd::Failed { streamed: false, refused: false, reason };
    let socket = tokio::select! {
        () = shutdown.wait() => return LinkEnd::Shutdown,
        connected = tokio::time::timeout(CONNECT_TIMEOUT, connecting) => match connected {
            Err(_) => return failed(format!("connecting to {url} timed out")),
            Ok(Err(error)) => return failed(format!("cannot connect to {url}: {error}")),
            Ok(Ok((socket, _response))) => socket,
        },
    };
    let (sink, stream) = socket.split();
    let last_seen = Arc::new(AtomicU64::new(now_ms()));
    let (inbound_sender, inbound) = mpsc::channel(INBOUND_CAPACITY);
    let reader = tokio::spawn(read_messages(stream, max_frame_len, inbound_sender, Arc::clone(&last_seen)));
    let mut link = Link {
        node,
        parent,
        sink,
        inbound,
        pending: None,
        last_seen,
        streaming: false,
        heartbeat: node.config.pipe_heartbeat,
        next_nonce: 1,
        shutdown,
    };
    let end = link.run(copy).await;
    link.close().await;
    reader.abort();
    end
}

impl Link<'_> {
    /// HELLO, WELCOME, then the stream.
    async fn run(&mut self, copy: &mut LocalCopy) -> LinkEnd {
        let config = &self.node.config;
        let topics = copy.hello_topics();
        let resume_from = topics
            .iter()
            .filter_map(|topic| match topic.start {
                StartPosition::Offset(offset) => Some(format!("{}@{offset}", topic.topic)),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(",");
        let hello = Hello {
            version: PROTOCOL_VERSION,
            role: Role::Pipe,
            level: config.level.as_u8(),
            client_id: config.node_id.clone(),
            group: config.node_id.clone(),
            token: config.token_for_parent().to_string(),
            max_in_flight: 0,
            topics,
        };
        if let Err(end) = self.send(Frame::Hello(hello)).await {
            return end;
        }
        let welcome = match self.welcome().await {
            Ok(welcome) => welcome,
            Err(end) => return end,
        };
        if let Err(fault) = copy.on_welcome(&welcome).await {
            return self.fault(fault).await;
        }
        self.streaming = true;
        self.node.pipe.streaming();
        self.node.metrics.pipe_connected.set(1);
        tracing::info!(parent = %self.parent.id, addr = %self.parent.http_addr, topics = welcome.topics.len(),
            %resume_from, "the pipe is streaming from the parent");
        self.stream(copy).await
    }

    /// Waits for WELCOME and checks that it comes from a parent exactly one level up.
    async fn welcome(&mut self) -> Result<Welcome, LinkEnd> {
        let wait = (self.heartbeat * SILENT_INTERVALS).max(CONNECT_TIMEOUT);
        let shutdown = self.shutdown.clone();
        let received = tokio::select! {
            () = shutdown.wait() => return Err(LinkEnd::Shutdown),
            received = tokio::time::timeout(wait, self.inbound.recv()) => received,
        };
        let welcome = match received {
            Err(_) => return Err(self.end(false, format!("no WELCOME within {wait:?}"))),
            Ok(None) => return Err(self.end(false, "the parent closed the pipe during the handshake".into())),
            Ok(Some(Inbound::Broken(reason))) => return Err(self.end(false, reason)),
            Ok(Some(Inbound::Undecodable(error))) => return Err(self.undecodable(error).await),
            Ok(Some(Inbound::Frame(Frame::Welcome(welcome)))) => welcome,
            Ok(Some(Inbound::Frame(Frame::Error(error)))) => {
                return Err(self.end(true, format!("{}: {}", error.code, error.message)));
            }
            Ok(Some(Inbound::Frame(other))) => {
                let reason = format!("the parent answered HELLO with {}", other.name());
                return Err(self.fatal(ErrorCode::ProtocolViolation, reason, false).await);
            }
        };
        let own = self.node.config.level;
        if welcome.version != PROTOCOL_VERSION {
            let reason = format!("the parent speaks protocol version {}", welcome.version);
            return Err(self.fatal(ErrorCode::BadRequest, reason, true).await);
        }
        if Some(welcome.level) != own.as_u8().checked_sub(1) {
            let reason = format!(
                "{} ({}) is at level {}, but a {} node's parent must be one level up",
                welcome.node_id,
                self.parent.http_addr,
                welcome.level,
                own.as_str()
            );
            return Err(self.fatal(ErrorCode::BadRequest, reason, true).await);
        }
        Ok(welcome)
    }

    /// Applies frames and heartbeats until the link ends.
    async fn stream(&mut self, copy: &mut LocalCopy) -> LinkEnd {
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + self.heartbeat, self.heartbeat);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.shutdown.clone();
        loop {
            let item = match self.pending.take() {
                Some(item) => item,
                None => tokio::select! {
                    biased;
                    () = shutdown.wait() => return LinkEnd::Shutdown,
                    _ = ticks.tick() => {
                        if let Err(end) = self.on_tick().await {
                            return end;
                        }
                        continue;
                    }
                    item = self.inbound.recv() => match item {
                        Some(item) => item,
                        None => return self.end(false, "the parent closed the pipe".to_string()),
                    },
                },
            };
            let result = match item {
                Inbound::Frame(frame) => self.on_frame(frame, copy).await,
                Inbound::Undecodable(error) => Err(self.undecodable(error).await),
                Inbound::Broken(reason) => Err(self.end(false, reason)),
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    /// Handles one frame from the parent.
    async fn on_frame(&mut self, frame: Frame, copy: &mut LocalCopy) -> Result<(), LinkEnd> {
        match frame {
            Frame::Batch(batch) => {
                let group = self.gather(batch);
                match copy.on_batches(group).await {
                    Ok(durable) => self.ack(durable).await,
                    Err(fault) => Err(self.fault(fault).await),
                }
            }
            Frame::Topic(announce) => match copy.on_topic(&announce).await {
                Ok(()) => Ok(()),
                Err(fault) => Err(self.fault(fault).await),
            },
            Frame::Reset(reset) => match copy.on_reset(reset).await {
                Ok(()) => Ok(()),
                Err(fault) => Err(self.fault(fault).await),
            },
            Frame::Ready(ready) => match copy.on_ready(ready).await {
                Ok(durable) => self.ack(durable).await,
                Err(fault) => Err(self.fault(fault).await),
            },
            Frame::Ping(ping) => self.send(Frame::Pong(ping)).await,
            Frame::Pong(_) => Ok(()),
            Frame::Error(error) if error.fatal => {
                let refused = matches!(error.code, ErrorCode::Unauthorized | ErrorCode::BadRequest);
                Err(self
                    .end(refused, format!("the parent ended the pipe: {}: {}", error.code, error.message)))
            }
            Frame::Error(error) => {
                tracing::warn!(code = %error.code, message = %error.message, "the parent reported a problem");
                Ok(())
            }
            other => {
                let reason = format!("{} is not a frame a parent sends", other.name());
                Err(self.fatal(ErrorCode::ProtocolViolation, reason, false).await)
            }
        }
    }

    /// Takes the batches that follow `first` in the queue, of the same topic and contiguous, so that they
    /// are appended and flushed together; the first other frame is kept for next.
    fn gather(&mut self, first: Batch) -> Vec<Batch> {
        let mut n_bytes = first.records.len();
        let mut group = vec![first];
        while group.len() < MAX_GROUP_BATCHES && n_bytes < MAX_GROUP_BYTES {
            let Ok(item) = self.inbound.try_recv() else {
                break;
            };
            match item {
                Inbound::Frame(Frame::Batch(next))
                    if group.last().is_some_and(|last| {
                        last.topic == next.topic && last.last_offset.checked_add(1) == Some(next.first_offset)
                    }) =>
                {
                    n_bytes += next.records.len();
                    group.push(next);
                }
                other => {
                    self.pending = Some(other);
                    break;
                }
            }
        }
        group
    }

    /// Heartbeat: give up on a silent parent, else PING it.
    async fn on_tick(&mut self) -> Result<(), LinkEnd> {
        let silent_ms = now_ms().saturating_sub(self.last_seen.load(Ordering::Acquire));
        let limit = self.heartbeat * SILENT_INTERVALS;
        // Frames waiting in the queue prove the parent is alive; only this node is slow.
        if u128::from(silent_ms) >= limit.as_millis() && self.inbound.is_empty() && self.pending.is_none() {
            return Err(self.end(false, format!("the parent was silent for {silent_ms} ms")));
        }
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        self.send(Frame::Ping(Ping { nonce, timestamp_ms: now_ms() })).await
    }

    /// Acknowledges what is durable.
    async fn ack(&mut self, durable: Durable) -> Result<(), LinkEnd> {
        self.send(Frame::Ack(Ack { topic: durable.topic, next_offset: durable.next_offset })).await
    }

    /// Sends one frame, bounded in time: a parent that stops reading is as good as gone.
    async fn send(&mut self, frame: Frame) -> Result<(), LinkEnd> {
        let message = match encode_message(&frame) {
            Ok(message) => Message::Binary(message),
            Err(error) => return Err(self.end(false, format!("cannot encode {}: {error}", frame.name()))),
        };
        let limit = (self.heartbeat * SILENT_INTERVALS).max(CONNECT_TIMEOUT);
        match tokio::time::timeout(limit, self.sink.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(self.end(false, format!("writing to the parent failed: {error}"))),
            Err(_) => Err(self.end(false, format!("the parent did not take a frame within {limit:?}"))),
        }
    }

    /// Reports a fault in what the parent sent (or in storing it) with an ERROR frame, and ends the link.
    async fn fault(&mut self, fault: Fault) -> LinkEnd {
        let code = match &fault {
            Fault::BadRecords(_) => ErrorCode::BadRecords,
            Fault::Protocol(_) => ErrorCode::ProtocolViolation,
            Fault::Storage(_) => ErrorCode::Internal,
        };
        let message = match &fault {
            Fault::Storage(_) => "the child failed to store the records; see its log".to_string(),
            other => other.to_string(),
        };
        let _ = self.send(Frame::Error(ErrorFrame { code, fatal: true, message })).await;
        self.end(false, fault.to_string())
    }

    /// Sends a fatal ERROR frame and ends the link.
    async fn fatal(&mut self, code: ErrorCode, reason: String, refused: bool) -> LinkEnd {
        let _ = self.send(Frame::Error(ErrorFrame { code, fatal: true, message: reason.clone() })).await;
        self.end(refused, reason)
    }

    /// Reports an undecodable message and ends the link.
    async fn undecodable(&mut self, error: WireError) -> LinkEnd {
        let _ = self.send(Frame::Error(ErrorFrame::from_wire_error(&error))).await;
        self.end(false, format!("an undecodable message from the parent: {error}"))
    }

    /// The end of this link.
    fn end(&self, refused: bool, reason: String) -> LinkEnd {
        LinkEnd::Failed { streamed: self.streaming, refused, reason }
    }

    /// Closes the WebSocket, bounded.
    async fn close(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.sink.close()).await;
    }
}

/// Reads messages, decoding each into its one frame, until the connection ends or a message does not
/// decode. Every message counts as a sign of life.
async fn read_messages(
    mut stream: SplitStream<Socket>,
    max_frame_len: usize,
    inbound: mpsc::Sender<Inbound>,
    last_seen: Arc<AtomicU64>,
) {
    let ending = loop {
        let Some(message) = stream.next().await else {
            break Inbound::Broken("the connection to the parent closed".to_string());
        };
        last_seen.store(now_ms(), Ordering::Release);
        let item = match message {
            Ok(Message::Binary(bytes)) => match decode_message(bytes, max_frame_len) {
                Ok(frame) => Inbound::Frame(frame),
                Err(error) => break Inbound::Undecodable(error),
            },
            Ok(Message::Text(_)) => {
                break Inbound::Undecodable(WireError::Malformed {
                    frame: "WebSocket message",
                    reason: "a text message; the pipe carries binary messages only".to_string(),
                });
            }
            Ok(Message::Close(_)) => break Inbound::Broken("the parent closed the pipe".to_string()),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            Err(error) => break Inbound::Broken(format!("reading from the parent failed: {error}")),
        };
        if inbound.send(item).await.is_err() {
            return;
        }
    };
    let _ = inbound.send(ending).await;
}
