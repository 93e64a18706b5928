//! The opening of a session: the first frame must be a valid HELLO; the session then claims its topics in
//! the group, resolves where each starts, and answers WELCOME (followed by any RESET or non-fatal ERROR).
//! Receiving the HELLO and checking its version and token are shared with the producer session.
//!
//! A named topic that does not exist yet is not an error: the session waits for it and announces it with
//! TOPIC when it is created, which suits consumers that start before the first publish.

use std::collections::HashSet;
use std::sync::Arc;

use protocol::frame::{
    ErrorCode, ErrorFrame, Frame, Hello, LEVEL_CONSUMER, PROTOCOL_VERSION, Role, TopicPosition, TopicStart,
    Welcome,
};
use protocol::{ALL_TOPICS, NO_EPOCH, TopicUid, validate_topic_name};

use protocol::WireError;
use tokio::sync::mpsc;

use super::{End, Outbound, Peer, SILENT_INTERVALS, Session};
use crate::config::Level;
use crate::cursor::{Begin, Cursor, resolve_start};
use crate::node::Node;

/// The longest client id or group name accepted.
pub(crate) const MAX_NAME_LEN: usize = 200;

/// Waits for the first frame, which must be HELLO: within three heartbeat intervals, and unless the broker
/// is stopping.
pub(super) async fn receive_hello(
    node: &Node,
    inbound: &mut mpsc::Receiver<Result<Frame, WireError>>,
) -> Result<Hello, End> {
    let wait = node.config.heartbeat * SILENT_INTERVALS;
    let first = tokio::select! {
        () = node.shutdown.wait() => {
            return Err(End::fatal(ErrorCode::ShuttingDown, "the broker is shutting down; reconnect later"));
        }
        first = tokio::time::timeout(wait, inbound.recv()) => first,
    };
    match first {
        Err(_elapsed) => Err(End::Silent),
        Ok(None) => Err(End::Closed),
        Ok(Some(Err(error))) => Err(End::Fatal(ErrorFrame::from_wire_error(&error))),
        Ok(Some(Ok(Frame::Hello(hello)))) => Ok(hello),
        Ok(Some(Ok(other))) => Err(End::fatal(
            ErrorCode::ProtocolViolation,
            format!("the first frame must be HELLO, not {}", other.name()),
        )),
    }
}

/// Refuses a HELLO of another protocol version, or without the token this broker requires.
pub(crate) fn check_credentials(node: &Node, hello: &Hello) -> Result<(), End> {
    if hello.version != PROTOCOL_VERSION {
        return Err(End::fatal(
            ErrorCode::BadRequest,
            format!(
                "protocol version {} is not supported; this broker speaks {PROTOCOL_VERSION}",
                hello.version
            ),
        ));
    }
    let token = &node.config.token;
    if !token.is_empty() && !constant_time_eq(hello.token.as_bytes(), token.as_bytes()) {
        return Err(End::fatal(ErrorCode::Unauthorized, "missing or wrong token"));
    }
    Ok(())
}

impl Session {
    /// Checks the HELLO received, sets up the cursors and sends WELCOME.
    pub(super) async fn handshake(&mut self, hello: Hello, peer: Peer) -> Result<(), End> {
        self.last_received = tokio::time::Instant::now();
        self.check_hello(&hello, peer)?;
        self.role = peer.role;
        self.group = hello.group.clone();
        self.client_id = hello.client_id.clone();
        self.node.members.identify(self.connection_id, &self.client_id, &self.group);
        if peer.role == Role::Pipe {
            self.window = usize::from(self.node.config.pipe_max_in_flight);
        }
        if hello.max_in_flight > 0 {
            self.window = self.window.min(usize::from(hello.max_in_flight));
        }
        let config = &self.node.config;
        let max_records = match peer.role {
            Role::Consumer | Role::Producer => config.batch_max_records,
            Role::Pipe => config.pipe_batch_max_records,
        };
        self.batch_max_records = lower(max_records, hello.batch_max_records);
        let max_bytes = usize::try_from(config.batch_max_bytes).unwrap_or(usize::MAX);
        self.batch_max_bytes = lower(max_bytes, hello.batch_max_bytes);
        // Mark the topic list as seen before reading it, so a topic created from here on wakes us.
        self.topics_version.borrow_and_update();
        let mut refreshes = Vec::new();
        let mut errors = Vec::new();
        let mut positions = Vec::new();
        let explicit: HashSet<&str> = hello.topics.iter().map(|entry| entry.topic.as_str()).collect();
        for entry in &hello.topics {
            if entry.topic == ALL_TOPICS {
                self.all_topics = Some(entry.start);
                continue;
            }
            self.open_topic(entry, &mut positions, &mut refreshes, &mut errors);
        }
        if let Some(start) = self.all_topics {
            for log in self.node.store.topics() {
                if !explicit.contains(log.name()) {
                    let entry = TopicStart {
                        topic: log.name().to_string(),
                        uid: TopicUid::UNKNOWN,
                        epoch: NO_EPOCH,
                        start,
                    };
                    self.open_topic(&entry, &mut positions, &mut refreshes, &mut errors);
                }
            }
        }
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            node_id: self.node.config.node_id.clone(),
            level: self.node.config.level.as_u8(),
            heartbeat_ms: u32::try_from(self.node.config.heartbeat.as_millis()).unwrap_or(u32::MAX),
            topics: positions,
        };
        if self.outbound.send(Outbound::Frame(Frame::Welcome(welcome))).await.is_err() {
            return Err(End::Closed);
        }
        tracing::info!(connection_id = self.connection_id, client_id = %self.client_id, group = %self.group,
            topics = self.cursors.len(), all_topics = self.all_topics.is_some(), peer = ?peer.addr, "session started");
        for index in refreshes {
            self.begin_refresh(index)?;
        }
        for error in errors {
            self.queue(Frame::Error(error))?;
        }
        let mut topics_changes = self.node.store.subscribe_topics();
        let wake = Arc::clone(&self.wake);
        self.topics_watcher = Some(tokio::spawn(async move {
            while topics_changes.changed().await.is_ok() {
                wake.notify_one();
            }
        }));
        Ok(())
    }

    /// Refuses a HELLO this broker cannot honour.
    fn check_hello(&self, hello: &Hello, peer: Peer) -> Result<(), End> {
        let bad = |message: String| Err(End::fatal(ErrorCode::BadRequest, message));
        check_credentials(&self.node, hello)?;
        if hello.role != peer.role {
            return bad(match peer.role {
                Role::Consumer | Role::Producer => {
                    "pipe children connect through GET /api/v1/pipe, not the consumer port".to_string()
                }
                Role::Pipe => {
                    "consumers and producers connect to the consumer port, not the pipe".to_string()
                }
            });
        }
        match hello.role {
            Role::Consumer if hello.level != LEVEL_CONSUMER => {
                return bad(format!("a consumer's level must be {LEVEL_CONSUMER}, not {}", hello.level));
            }
            Role::Pipe if Some(hello.level) != self.node.config.level.child().map(Level::as_u8) => {
                let claimed = Level::from_u8(hello.level)
                    .map_or_else(|| hello.level.to_string(), |l| l.as_str().into());
                let own = self.node.config.level;
                return bad(match own.child() {
                    Some(child) => format!(
                        "level {claimed} cannot be a child of this {} node; its children are {}",
                        own.as_str(),
                        child.as_str()
                    ),
                    None => format!(
                        "level {claimed} cannot be a child of this {} node, which takes no children",
                        own.as_str()
                    ),
                });
            }
            _ => {}
        }
        if hello.group.is_empty() || hello.group.len() > MAX_NAME_LEN {
            return bad(format!("the group name must be 1 to {MAX_NAME_LEN} bytes"));
        }
        if hello.client_id.len() > MAX_NAME_LEN {
            return bad(format!("the client id must be at most {MAX_NAME_LEN} bytes"));
        }
        if hello.topics.is_empty() {
            return bad("HELLO names no topic; name topics or `*`".to_string());
        }
        let mut seen = HashSet::new();
        for entry in &hello.topics {
            if entry.topic != ALL_TOPICS
                && let Err(reason) = validate_topic_name(&entry.topic)
            {
                return bad(reason);
            }
            if !seen.insert(entry.topic.as_str()) {
                return bad(format!("topic {:?} appears twice in HELLO", entry.topic));
            }
        }
        Ok(())
    }

    /// Adds a cursor for one topic of the HELLO and records its WELCOME entry. A RESET to send after
    /// WELCOME goes into `refreshes`; a refusal (offset beyond the end) into `errors` instead of a cursor.
    fn open_topic(
        &mut self,
        entry: &TopicStart,
        positions: &mut Vec<TopicPosition>,
        refreshes: &mut Vec<usize>,
        errors: &mut Vec<ErrorFrame>,
    ) {
        let TopicStart { topic, uid: client_uid, epoch: client_epoch, start } = entry;
        let (topic, client_uid, client_epoch, start) = (topic.as_str(), *client_uid, *client_epoch, *start);
        let Some(log) = self.node.store.topic(topic) else {
            let claim = self.node.members.claim(&self.group, topic, self.connection_id, &self.wake);
            self.by_topic.insert(topic.to_string(), self.cursors.len());
            let mut cursor = Cursor::waiting(topic.to_string(), start, claim);
            cursor.client_uid = client_uid;
            cursor.client_epoch = client_epoch;
            self.cursors.push(cursor);
            positions.push(TopicPosition {
                topic: topic.to_string(),
                uid: TopicUid::UNKNOWN,
                log_start: 0,
                end_offset: 0,
                start_at: 0,
            });
            return;
        };
        let begin = if self.node.groups.refresh_pending(&self.group, topic) {
            Begin::Refresh
        } else {
            self.for_role(resolve_start(
                start,
                client_uid,
                client_epoch,
                &log,
                self.node.groups.committed(&self.group, topic),
            ))
        };
        let start_at = match begin {
            Begin::At(offset) if offset > log.readable_offset() => {
                tracing::info!(client = %self.client_id, %topic, client_holds = offset,
                    this_node_holds = log.readable_offset(),
                    "the client holds more of this topic than this node; it waits while this node catches up");
                offset
            }
            Begin::At(offset) => offset,
            Begin::Refresh => log.log_start(),
            Begin::OutOfRange { requested, end_offset } => {
                errors.push(ErrorFrame {
                    code: ErrorCode::OffsetOutOfRange,
                    fatal: false,
                    message: format!(
                        "offset {requested} of {topic:?} is beyond the log end {end_offset}; topic not subscribed"
                    ),
                });
                return;
            }
        };
        positions.push(TopicPosition {
            topic: topic.to_string(),
            uid: log.uid(),
            log_start: log.log_start(),
            end_offset: log.readable_offset(),
            start_at,
        });
        let claim = self.node.members.claim(&self.group, topic, self.connection_id, &self.wake);
        let mut cursor = Cursor::waiting(topic.to_string(), start, claim);
        cursor.attached = Some(crate::cursor::Attached::new(log, &self.wake));
        cursor.next_send = start_at;
        cursor.acked = start_at;
        let index = self.cursors.len();
        self.by_topic.insert(topic.to_string(), index);
        self.cursors.push(cursor);
        if begin == Begin::Refresh {
            refreshes.push(index);
        }
    }
}

/// A server limit lowered to a client's wish, if it has one (0 means none).
fn lower(server: usize, client: u32) -> usize {
    match usize::try_from(client) {
        Ok(0) | Err(_) => server,
        Ok(wish) => server.min(wish),
    }
}

/// Compares secrets without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(constant_time_eq(b"", b""));
    }
}
