//! One link of a follower: connect, HELLO, the WELCOME checks, then frames and heartbeats until the link
//! ends. Consecutive batches already received are gathered (same topic, offsets following on, up to
//! [`MAX_GROUP_BATCHES`] or [`MAX_GROUP_BYTES`]), each proven once, and handed to the sink together, so one
//! append, one flush and one ACK serve them all.

use std::collections::HashSet;
use std::time::Duration;

use protocol::CheckedBatch;
use protocol::frame::{
    Ack, Batch, ErrorCode, ErrorFrame, Frame, Hello, PROTOCOL_VERSION, Ping, Seek, StartPosition, Welcome,
};

use super::{Durable, Fault, FollowConfig, LinkEnd, Sink, Stop, Target, Upstream, Work};
use crate::consumer::SILENT_INTERVALS;
use crate::error::Error;
use crate::link::Link;
use crate::tcp::connect_tcp;
use crate::ws::connect_ws;
use protocol::now_ms;

/// Most batches handed to the sink together.
pub const MAX_GROUP_BATCHES: usize = 64;

/// Most record bytes handed to the sink together (at least one batch always is). Kept well below the CPU's
/// cache: the bytes were just read and checked, and copying them into the page cache while they are still
/// cached costs half as much as copying a group of several MiB (measured: 8 MiB groups made a 1 KiB record
/// cost 2.7 us of CPU per hop, 512 KiB groups 1.1 us).
pub const MAX_GROUP_BYTES: usize = 512 * 1024;

/// How long closing a link waits for queued frames (a last ACK, an ERROR) to be written.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Connects to `target`, shakes hands and streams until the link ends.
pub(super) async fn run_link<U: Upstream, S: Sink>(
    config: &FollowConfig,
    target: &Target,
    upstream: &mut U,
    sink: &mut S,
    stop: &mut Stop<'_>,
) -> LinkEnd {
    let connecting = async {
        match &target.endpoint {
            super::Endpoint::Tcp(addr) => connect_tcp(addr.as_str(), config.max_frame_len).await,
            super::Endpoint::WebSocket(url) => connect_ws(url, config.max_frame_len).await,
        }
    };
    let failed = |reason: String| LinkEnd::Failed {
        streamed: false,
        refused: false,
        faulted: false,
        local: false,
        reason,
    };
    let link = tokio::select! {
        () = stop.wait() => return LinkEnd::Shutdown,
        connected = tokio::time::timeout(config.connect_timeout, connecting) => match connected {
            Err(_) => return failed(format!("connecting to {} timed out", target.endpoint)),
            Ok(Err(error)) => return failed(format!("cannot connect to {}: {error}", target.endpoint)),
            Ok(Ok(link)) => link,
        },
    };
    let mut session = Session {
        config,
        link,
        pending: None,
        streamed: false,
        heartbeat: config.heartbeat,
        next_nonce: 1,
        local_fault: false,
        diverged: HashSet::new(),
    };
    let end = session.run(target, upstream, sink, stop).await;
    session.link.close(CLOSE_GRACE).await;
    end
}

/// One link's state.
struct Session<'c> {
    /// The follower's settings.
    config: &'c FollowConfig,
    /// The connection.
    link: Link,
    /// A frame taken while gathering batches, to handle next.
    pending: Option<Frame>,
    /// Whether WELCOME has arrived.
    streamed: bool,
    /// The PING interval in force.
    heartbeat: Duration,
    /// The nonce of the next PING.
    next_nonce: u64,
    /// Whether the copy failed to store.
    local_fault: bool,
    /// Topics whose copy diverged from the upstream's epoch history: their batches are dropped until the
    /// RESET of the full refresh asked for.
    diverged: HashSet<String>,
}

impl Session<'_> {
    /// HELLO, WELCOME, then the stream.
    async fn run<U: Upstream, S: Sink>(
        &mut self,
        target: &Target,
        upstream: &mut U,
        sink: &mut S,
        stop: &mut Stop<'_>,
    ) -> LinkEnd {
        let topics = match sink.hello_topics().await {
            Ok(topics) => topics,
            Err(fault) => return self.end(false, true, fault.to_string()),
        };
        let config = self.config;
        let resume_from = topics
            .iter()
            .filter_map(|topic| match topic.start {
                StartPosition::Offset(offset) => Some(format!("{}@{offset}", topic.topic)),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(",");
        let hello = Hello { version: PROTOCOL_VERSION, topics, ..config.hello.clone() };
        if let Err(end) = self.send(Frame::Hello(hello)).await {
            return end;
        }
        let welcome = match self.welcome(stop).await {
            Ok(welcome) => welcome,
            Err(end) => return end,
        };
        if let Err(fault) = sink.on_welcome(&welcome).await {
            return self.fault(fault).await;
        }
        if welcome.heartbeat_ms > 0 {
            self.heartbeat = self.heartbeat.min(Duration::from_millis(u64::from(welcome.heartbeat_ms)));
        }
        self.streamed = true;
        upstream.streaming(target, &welcome);
        tracing::info!(upstream = %target.name, endpoint = %target.endpoint, node = %welcome.node_id,
            topics = welcome.topics.len(), %resume_from, "the {} is streaming from the {}",
            config.link_noun, config.upstream_noun);
        self.stream(sink, stop).await
    }

    /// Waits for WELCOME and checks its version and level.
    async fn welcome(&mut self, stop: &mut Stop<'_>) -> Result<Welcome, LinkEnd> {
        let wait = (self.heartbeat * SILENT_INTERVALS).max(self.config.connect_timeout);
        let deadline = tokio::time::Instant::now() + wait;
        let welcome = loop {
            let received = tokio::select! {
                () = stop.wait() => return Err(LinkEnd::Shutdown),
                received = tokio::time::timeout_at(deadline, self.link.recv()) => received,
            };
            match received {
                Err(_) => return Err(self.end(false, false, format!("no WELCOME within {wait:?}"))),
                Ok(Err(error)) => return Err(self.link_error(error).await),
                Ok(Ok(Frame::Welcome(welcome))) => break welcome,
                Ok(Ok(Frame::Ping(ping))) => self.send(Frame::Pong(ping)).await?,
                Ok(Ok(Frame::Pong(_))) => {}
                Ok(Ok(Frame::Error(error))) => {
                    return Err(self.end(true, true, format!("{}: {}", error.code, error.message)));
                }
                Ok(Ok(other)) => {
                    let reason = format!("HELLO was answered with {}", other.name());
                    return Err(self.fatal(ErrorCode::ProtocolViolation, reason, false).await);
                }
            }
        };
        if welcome.version != PROTOCOL_VERSION {
            let reason = format!(
                "the upstream speaks protocol version {}, this node {PROTOCOL_VERSION}",
                welcome.version
            );
            return Err(self.fatal(ErrorCode::BadRequest, reason, true).await);
        }
        if let Some(level) = self.config.upstream_level
            && welcome.level != level
        {
            let reason = format!(
                "{} is at level {}, but this node's upstream must be at level {level}",
                welcome.node_id, welcome.level
            );
            return Err(self.fatal(ErrorCode::BadRequest, reason, true).await);
        }
        Ok(welcome)
    }

    /// Frames, background work and heartbeats until the link ends.
    async fn stream<S: Sink>(&mut self, sink: &mut S, stop: &mut Stop<'_>) -> LinkEnd {
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + self.heartbeat, self.heartbeat);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let frame = match self.pending.take() {
                Some(frame) => frame,
                None => tokio::select! {
                    biased;
                    () = stop.wait() => return LinkEnd::Shutdown,
                    _ = ticks.tick() => {
                        if let Err(end) = self.on_tick().await {
                            return end;
                        }
                        continue;
                    }
                    work = sink.next_work() => {
                        let sent = match work {
                            Ok(work) => self.on_work(work).await,
                            Err(fault) => Err(self.fault(fault).await),
                        };
                        if let Err(end) = sent {
                            return end;
                        }
                        continue;
                    }
                    received = self.link.recv() => match received {
                        Ok(frame) => frame,
                        Err(error) => return self.link_error(error).await,
                    },
                },
            };
            if let Err(end) = self.on_frame(frame, sink).await {
                return end;
            }
        }
    }

    /// Handles one frame from the upstream.
    async fn on_frame<S: Sink>(&mut self, frame: Frame, sink: &mut S) -> Result<(), LinkEnd> {
        let acks = match frame {
            Frame::Batch(batch) if self.diverged.contains(&batch.topic) => return Ok(()),
            Frame::Batch(batch) => {
                let group = match self.gather(batch) {
                    Ok(group) => group,
                    Err(fault) => return Err(self.fault(fault).await),
                };
                sink.on_batches(group).await
            }
            Frame::Epochs(epochs) => {
                let topic = epochs.topic.clone();
                match sink.on_epochs(epochs).await {
                    Ok(true) => return self.refresh_diverged(topic).await,
                    Ok(false) => Ok(Vec::new()),
                    Err(fault) => Err(fault),
                }
            }
            Frame::Settings(settings) => sink.on_settings(settings).await.map(|()| Vec::new()),
            Frame::Topic(announce) => sink.on_topic(&announce).await.map(|()| Vec::new()),
            Frame::Reset(reset) => {
                self.diverged.remove(&reset.topic);
                sink.on_reset(reset).await
            }
            Frame::Ready(ready) => sink.on_ready(ready).await,
            Frame::Position(position) => sink.on_position(&position).await.map(|()| Vec::new()),
            Frame::Ping(ping) => return self.send(Frame::Pong(ping)).await,
            Frame::Pong(_) => return Ok(()),
            Frame::Error(error) if error.fatal => {
                let refused = matches!(error.code, ErrorCode::Unauthorized | ErrorCode::BadRequest);
                let reason = format!("the upstream ended the link: {}: {}", error.code, error.message);
                return Err(self.end(refused, true, reason));
            }
            Frame::Error(error) => {
                tracing::warn!(code = %error.code, message = %error.message, "the upstream reported a problem");
                return Ok(());
            }
            other => {
                let reason = format!("{} is not a frame an upstream sends", other.name());
                return Err(self.fatal(ErrorCode::ProtocolViolation, reason, false).await);
            }
        };
        match acks {
            Ok(acks) => self.ack(acks).await,
            Err(fault) => Err(self.fault(fault).await),
        }
    }

    /// Proves `first` and the batches already received after it that continue it (same topic, offsets
    /// following on), up to the group bounds; the first other frame is kept for next.
    fn gather(&mut self, first: Batch) -> Result<Vec<CheckedBatch>, Fault> {
        let mut n_bytes = first.records.len();
        let mut group = vec![check(first)?];
        while group.len() < MAX_GROUP_BATCHES && n_bytes < MAX_GROUP_BYTES {
            let Ok(Some(frame)) = self.link.try_recv() else {
                break;
            };
            match frame {
                Frame::Batch(next)
                    if group.last().is_some_and(|last| {
                        last.topic() == next.topic && last.next_offset() == next.first_offset
                    }) =>
                {
                    n_bytes += next.records.len();
                    group.push(check(next)?);
                }
                other => {
                    self.pending = Some(other);
                    break;
                }
            }
        }
        Ok(group)
    }

    /// Heartbeat: give up on a silent upstream, else PING it.
    async fn on_tick(&mut self) -> Result<(), LinkEnd> {
        // Frames waiting in the queue, or the one kept while gathering, prove the upstream is alive.
        if let Some(silent) = self.link.gone_silent(self.heartbeat * SILENT_INTERVALS)
            && self.pending.is_none()
        {
            let reason =
                format!("the {} was silent for {} ms", self.config.upstream_noun, silent.as_millis());
            return Err(self.end(false, false, reason));
        }
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        self.send(Frame::Ping(Ping { nonce, timestamp_ms: now_ms() })).await
    }

    /// The copy of `topic` holds records its upstream's history does not: drop what comes of it until a
    /// full refresh replaces it.
    async fn refresh_diverged(&mut self, topic: String) -> Result<(), LinkEnd> {
        tracing::warn!(%topic, "this copy holds records the upstream's epoch history does not (ROOT lost \
            them); asking for a full refresh");
        self.diverged.insert(topic.clone());
        self.send(Frame::Seek(Seek { topic, start: StartPosition::FullRefresh })).await
    }

    /// Sends what background work produced.
    async fn on_work(&mut self, work: Work) -> Result<(), LinkEnd> {
        for (topic, start) in work.seeks {
            tracing::info!(%topic, ?start, "asking the upstream to move a topic");
            self.send(Frame::Seek(Seek { topic, start })).await?;
        }
        self.ack(work.acks).await
    }

    /// Acknowledges what the sink made durable.
    async fn ack(&mut self, acks: Vec<Durable>) -> Result<(), LinkEnd> {
        for Durable { topic, next_offset } in acks {
            self.send(Frame::Ack(Ack { topic, next_offset })).await?;
        }
        Ok(())
    }

    /// Sends one frame, bounded in time: an upstream that stops reading is as good as gone.
    async fn send(&mut self, frame: Frame) -> Result<(), LinkEnd> {
        let limit = (self.heartbeat * SILENT_INTERVALS).max(self.config.connect_timeout);
        match tokio::time::timeout(limit, self.link.send(&frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                Err(self.end(false, false, format!("sending {} failed: {error}", frame.name())))
            }
            Err(_) => {
                Err(self.end(false, false, format!("the upstream did not take a frame within {limit:?}")))
            }
        }
    }

    /// Reports a fault in what the upstream sent (or in storing it) with an ERROR frame, and ends the link.
    async fn fault(&mut self, fault: Fault) -> LinkEnd {
        let (code, message) = match &fault {
            Fault::BadRecords(_) => (ErrorCode::BadRecords, fault.to_string()),
            Fault::Protocol(_) => (ErrorCode::ProtocolViolation, fault.to_string()),
            Fault::Storage(_) => {
                (ErrorCode::Internal, "the follower failed to store the records; see its log".into())
            }
        };
        self.local_fault = matches!(fault, Fault::Storage(_));
        let _ = self.send(Frame::Error(ErrorFrame { code, fatal: true, message })).await;
        self.end(false, true, fault.to_string())
    }

    /// Sends a fatal ERROR frame and ends the link.
    async fn fatal(&mut self, code: ErrorCode, reason: String, refused: bool) -> LinkEnd {
        let _ = self.send(Frame::Error(ErrorFrame { code, fatal: true, message: reason.clone() })).await;
        self.end(refused, true, reason)
    }

    /// The end of a link whose connection failed: undecodable bytes are reported to the upstream first.
    async fn link_error(&mut self, error: Error) -> LinkEnd {
        match error {
            Error::Wire(error) => {
                let _ = self.send(Frame::Error(ErrorFrame::from_wire_error(&error))).await;
                self.end(false, true, format!("an undecodable frame from the upstream: {error}"))
            }
            Error::Closed => self.end(false, false, "the upstream closed the connection".to_string()),
            other => self.end(false, false, other.to_string()),
        }
    }

    /// The end of this link.
    fn end(&self, refused: bool, faulted: bool, reason: String) -> LinkEnd {
        LinkEnd::Failed { streamed: self.streamed, refused, faulted, local: self.local_fault, reason }
    }
}

/// Proves one batch.
fn check(batch: Batch) -> Result<CheckedBatch, Fault> {
    let (topic, first) = (batch.topic.clone(), batch.first_offset);
    CheckedBatch::check(batch).map_err(|error| Fault::BadRecords(format!("{topic:?} at {first}: {error}")))
}
