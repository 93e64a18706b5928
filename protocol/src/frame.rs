//! The frame codec spoken on consumer connections and inside the pipe's WebSocket messages: the frame
//! layout, the frame types and their payloads, start positions and error codes.
//!
//! This module turns frames into bytes and bytes into frames, checking everything a single frame can be
//! checked for (length limit, CRC, field layout, UTF-8, trailing bytes). It does not own the records a
//! BATCH carries (see [`crate::record`]; their CRCs are checked by [`crate::check_batch`]) and it does not
//! know which frame may follow which: the conversation belongs to the broker and its clients.

mod crc;
mod decode;
mod encode;
mod error;
mod publish;

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::epoch::EpochHistory;
use crate::error::WireError;
use crate::settings::TopicSettings;
use crate::topic::TopicUid;

pub use encode::encode_batch_header;
pub use error::{ErrorCode, ErrorFrame};
pub use publish::{Publish, PublishAck};

/// The frame header. All integers are little-endian.
///
/// ```text
/// byte 0          4        5          9
///      [len:4 LE ][type:1 ][crc:4 LE ][payload: len bytes]
/// ```
///
/// - `len` is the payload length only; a frame occupies `FRAME_HEADER_LEN + len` bytes.
/// - `crc` is CRC-32 (IEEE) over the type byte followed by the payload; in a BATCH, each record is covered
///   only by its `[len][crc]` prefix, since the record's own CRC covers the rest (see `frame/crc.rs`).
pub const FRAME_HEADER_LEN: usize = 9;

/// The payload limit a decoder uses unless configured otherwise (8 MiB).
pub const DEFAULT_MAX_FRAME_LEN: usize = 8 * 1024 * 1024;

/// The largest payload limit any decoder may use (64 MiB). A larger `max_len` given to a decoder is lowered
/// to this, and the encoder refuses to build a frame above it, since no peer would accept it.
pub const MAX_FRAME_LEN_LIMIT: usize = 64 * 1024 * 1024;

/// The protocol version this codec speaks, sent in HELLO and WELCOME.
pub const PROTOCOL_VERSION: u16 = 5;

/// The `level` a consumer puts in its HELLO; pipe children send their tree level (ROOT 0 to LOCAL 4).
pub const LEVEL_CONSUMER: u8 = 255;

/// The longest string a `str16` field (`[len:2 LE][UTF-8 bytes]`) can carry.
pub const MAX_STR16_LEN: usize = u16::MAX as usize;

/// The type byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Client to server: who the client is and where each topic should start.
    Hello = 0x01,
    /// Server to client: the answer to HELLO, with where each topic stands.
    Welcome = 0x02,
    /// Server to client: records of one topic, verbatim.
    Batch = 0x03,
    /// Client to server: every record below an offset is durable at the client.
    Ack = 0x04,
    /// Client to server: restart delivery of a topic at a new position.
    Seek = 0x05,
    /// Server to client: a full refresh of a topic starts.
    Reset = 0x06,
    /// Server to client: a full refresh of a topic is complete.
    Ready = 0x07,
    /// Either way: a heartbeat.
    Ping = 0x08,
    /// Either way: the answer to a PING, echoing it.
    Pong = 0x09,
    /// Either way: an error code and message.
    Error = 0x0A,
    /// Server to client: a topic that appeared after WELCOME.
    Topic = 0x0B,
    /// Server to client: the answer to SEEK, saying where delivery of the topic now starts.
    Position = 0x0C,
    /// Server to client: a topic's epoch history, before its first BATCH and whenever it changes.
    Epochs = 0x0D,
    /// Client to server: new records for ROOT to store (the producer role).
    Publish = 0x0E,
    /// Server to client: the records of one PUBLISH are stored and durable.
    PublishAck = 0x0F,
    /// Server to client: a topic's settings, before its first BATCH, after a RESET and whenever they change.
    Settings = 0x10,
}

impl FrameType {
    /// Every frame type, in type-byte order.
    pub const ALL: [FrameType; 16] = [
        FrameType::Hello,
        FrameType::Welcome,
        FrameType::Batch,
        FrameType::Ack,
        FrameType::Seek,
        FrameType::Reset,
        FrameType::Ready,
        FrameType::Ping,
        FrameType::Pong,
        FrameType::Error,
        FrameType::Topic,
        FrameType::Position,
        FrameType::Epochs,
        FrameType::Publish,
        FrameType::PublishAck,
        FrameType::Settings,
    ];

    /// The type byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The frame type with this type byte, if the protocol defines one.
    pub fn from_u8(byte: u8) -> Option<FrameType> {
        FrameType::ALL.into_iter().find(|frame_type| frame_type.as_u8() == byte)
    }

    /// The name the protocol specification uses, such as `HELLO`, for logs and error messages.
    pub const fn name(self) -> &'static str {
        match self {
            FrameType::Hello => "HELLO",
            FrameType::Welcome => "WELCOME",
            FrameType::Batch => "BATCH",
            FrameType::Ack => "ACK",
            FrameType::Seek => "SEEK",
            FrameType::Reset => "RESET",
            FrameType::Ready => "READY",
            FrameType::Ping => "PING",
            FrameType::Pong => "PONG",
            FrameType::Error => "ERROR",
            FrameType::Topic => "TOPIC",
            FrameType::Position => "POSITION",
            FrameType::Epochs => "EPOCHS",
            FrameType::Publish => "PUBLISH",
            FrameType::PublishAck => "PUBLISH_ACK",
            FrameType::Settings => "SETTINGS",
        }
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who opens a connection: a consumer, a child broker opening its pipe, or a producer publishing to ROOT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Role {
    /// A consumer such as the consumer-app (role byte 0).
    Consumer = 0,
    /// A child broker's pipe (role byte 1).
    Pipe = 1,
    /// A producer sending PUBLISH frames to ROOT's consumer port (role byte 2).
    Producer = 2,
}

impl Role {
    /// The role byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The role's name in logs, metrics and connection lists: `consumer`, `pipe` or `producer`.
    pub const fn name(self) -> &'static str {
        match self {
            Role::Consumer => "consumer",
            Role::Pipe => "pipe",
            Role::Producer => "producer",
        }
    }

    /// The role with this byte, if defined.
    pub fn from_u8(byte: u8) -> Option<Role> {
        match byte {
            0 => Some(Role::Consumer),
            1 => Some(Role::Pipe),
            2 => Some(Role::Producer),
            _ => None,
        }
    }
}

/// Where delivery of a topic starts, as HELLO and SEEK carry it.
///
/// ```text
/// [kind:1][offset:8 LE]
/// ```
///
/// `kind` is 0 COMMITTED, 1 EARLIEST, 2 LATEST, 3 OFFSET, 4 FULL_REFRESH; `offset` is zero unless `kind` is
/// OFFSET, and the decoder refuses a non-zero one so that every start position has exactly one encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StartPosition {
    /// The group's committed offset; the log start if the group has none.
    Committed,
    /// The log start.
    Earliest,
    /// The log end: only records stored from now on.
    Latest,
    /// Exactly this offset, the next one wanted.
    Offset(u64),
    /// RESET, the whole topic from the log start, then READY.
    FullRefresh,
}

/// The encoded size of a [`StartPosition`].
pub const START_POSITION_LEN: usize = 9;

impl StartPosition {
    /// The `kind` byte.
    pub const fn kind(self) -> u8 {
        match self {
            StartPosition::Committed => 0,
            StartPosition::Earliest => 1,
            StartPosition::Latest => 2,
            StartPosition::Offset(_) => 3,
            StartPosition::FullRefresh => 4,
        }
    }

    /// The `offset` field: the offset for OFFSET, zero for every other kind.
    pub const fn offset_field(self) -> u64 {
        match self {
            StartPosition::Offset(offset) => offset,
            _ => 0,
        }
    }
}

/// One topic of a HELLO: `[topic:str16][uid:16][epoch:4][start]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStart {
    /// The topic name, or `*` for every topic, present and future.
    pub topic: String,
    /// The uid of the copy the client holds; [`TopicUid::UNKNOWN`] if none.
    pub uid: TopicUid,
    /// The epoch of the last record the client holds ([`crate::epoch::EpochHistory::claim`]), or
    /// [`crate::epoch::NO_EPOCH`] if it holds none or keeps no copy. With an OFFSET start, the server
    /// refreshes a copy whose epoch ended before that offset.
    pub epoch: u32,
    /// Where delivery should start.
    pub start: StartPosition,
}

/// HELLO (0x01), the first frame a client sends.
///
/// ```text
/// [version:2][role:1][level:1][client_id:str16][group:str16][token:str16][max_in_flight:2]
/// [batch_max_records:4][batch_max_bytes:4][n:2]
/// then n x [topic:str16][uid:16][epoch:4][start]
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version the client speaks ([`PROTOCOL_VERSION`]).
    pub version: u16,
    /// Consumer, pipe child or producer.
    pub role: Role,
    /// The client's tree level for a pipe child, [`LEVEL_CONSUMER`] for a consumer or a producer.
    pub level: u8,
    /// Names the consumer or child node.
    pub client_id: String,
    /// The consumer group; a pipe child's group is its node id; a producer's is not used.
    pub group: String,
    /// Empty unless the server requires a token.
    pub token: String,
    /// How many unacknowledged BATCH frames the client accepts (a producer: how many PUBLISH frames it
    /// sends ahead of their PUBLISH_ACKs); 0 leaves it to the server.
    pub max_in_flight: u16,
    /// The most records the client wants in one BATCH; 0 leaves it to the server (which may lower it).
    pub batch_max_records: u32,
    /// The most record bytes the client wants in one BATCH (a single larger record still comes alone); 0
    /// leaves it to the server (which may lower it).
    pub batch_max_bytes: u32,
    /// The topics wanted and where each starts; none for a producer.
    pub topics: Vec<TopicStart>,
}

/// One topic of a WELCOME: `[topic:str16][uid:16][log_start:8][end_offset:8][start_at:8]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPosition {
    /// The topic name.
    pub topic: String,
    /// The server's uid for the topic.
    pub uid: TopicUid,
    /// The first offset the server still holds.
    pub log_start: u64,
    /// The offset the next stored record will get.
    pub end_offset: u64,
    /// Where delivery of this topic begins.
    pub start_at: u64,
}

/// WELCOME (0x02), the server's answer to HELLO.
///
/// ```text
/// [version:2][node_id:str16][level:1][heartbeat_ms:4][n:2]
/// then n x [topic:str16][uid:16][log_start:8][end_offset:8][start_at:8]
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The protocol version the server speaks.
    pub version: u16,
    /// The server's node id.
    pub node_id: String,
    /// The server's tree level.
    pub level: u8,
    /// How often each side sends PING; a peer silent for three intervals is dropped.
    pub heartbeat_ms: u32,
    /// Where each subscribed topic stands.
    pub topics: Vec<TopicPosition>,
}

/// BATCH (0x03): records of one topic, verbatim as stored.
///
/// ```text
/// [topic:str16][first_offset:8][last_offset:8][end_offset:8][records...]
/// ```
///
/// The records run to the end of the payload. `[first_offset, last_offset]` is the range the batch covers:
/// `last_offset` is its last record's offset, and its records' offsets rise through the range, with gaps
/// where compaction removed records (the sender vouches that it holds nothing there). The decoder checks
/// `first_offset <= last_offset` and that records are present, not the records themselves: the receiver
/// runs [`crate::CheckedBatch::check`] on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The topic.
    pub topic: String,
    /// The first offset the batch covers: its first record's, or below it where the range starts with a gap.
    pub first_offset: u64,
    /// Offset of the last record.
    pub last_offset: u64,
    /// The server's log end when it sent the batch, so the client can compute its lag.
    pub end_offset: u64,
    /// The records laid end to end, offsets rising from `first_offset` to `last_offset`.
    pub records: Bytes,
}

/// ACK (0x04): every record below `next_offset` is durable at the client. `[topic:str16][next_offset:8]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The topic.
    pub topic: String,
    /// One past the last durable record.
    pub next_offset: u64,
}

/// SEEK (0x05): restart delivery of a topic. `[topic:str16][start]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seek {
    /// The topic.
    pub topic: String,
    /// The new position.
    pub start: StartPosition,
}

/// RESET (0x06): a full refresh of a topic starts. `[topic:str16][uid:16][log_start:8][end_offset:8]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reset {
    /// The topic.
    pub topic: String,
    /// The uid of the copy being sent.
    pub uid: TopicUid,
    /// The offset the refresh starts from.
    pub log_start: u64,
    /// The server's log end when the refresh started.
    pub end_offset: u64,
}

/// READY (0x07): the full refresh of a topic is complete. `[topic:str16][uid:16][end_offset:8]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// The topic.
    pub topic: String,
    /// The uid of the copy sent.
    pub uid: TopicUid,
    /// One past the last record of the refreshed copy.
    pub end_offset: u64,
}

/// PING (0x08) and PONG (0x09) payload: `[nonce:8][timestamp_ms:8]`. A PONG echoes its PING's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    /// Chosen by the sender of the PING to match the PONG.
    pub nonce: u64,
    /// The PING sender's clock, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// TOPIC (0x0B): a topic, subscribed to through `*`, that appeared after WELCOME.
/// `[topic:str16][uid:16][log_start:8][end_offset:8]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicAnnounce {
    /// The topic.
    pub topic: String,
    /// Its uid.
    pub uid: TopicUid,
    /// The first offset the server holds.
    pub log_start: u64,
    /// The offset the next stored record will get.
    pub end_offset: u64,
}

/// EPOCHS (0x0D): a topic's epoch history as the server holds it.
/// `[topic:str16][uid:16][n:2]` then n x `[epoch:4][start_offset:8]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epochs {
    /// The topic.
    pub topic: String,
    /// The uid of the copy the history belongs to.
    pub uid: TopicUid,
    /// The history, oldest epoch first (checked when decoded).
    pub history: EpochHistory,
}

/// SETTINGS (0x10): a topic's settings as the server holds them.
///
/// ```text
/// [topic:str16][uid:16][explicit:1]
/// then, if explicit is 1: [cleanup:1][present:1][retention_bytes:8][retention_age_ms:8][tombstone_retention_ms:8]
/// ```
///
/// `explicit` is 0 (the topic has no explicit settings: each node applies its own defaults; nothing follows)
/// or 1 (the settings follow, laid out as [`crate::settings::SETTINGS_LEN`] describes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The topic.
    pub topic: String,
    /// The uid of the copy the settings belong to.
    pub uid: TopicUid,
    /// The explicit settings, or `None` for each node's defaults.
    pub settings: Option<TopicSettings>,
}

/// One frame of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// HELLO (0x01).
    Hello(Hello),
    /// WELCOME (0x02).
    Welcome(Welcome),
    /// BATCH (0x03).
    Batch(Batch),
    /// ACK (0x04).
    Ack(Ack),
    /// SEEK (0x05).
    Seek(Seek),
    /// RESET (0x06).
    Reset(Reset),
    /// READY (0x07).
    Ready(Ready),
    /// PING (0x08).
    Ping(Ping),
    /// PONG (0x09), echoing a PING.
    Pong(Ping),
    /// ERROR (0x0A).
    Error(ErrorFrame),
    /// TOPIC (0x0B).
    Topic(TopicAnnounce),
    /// Server to client: the answer to SEEK. Every BATCH of the topic received before it belongs to the old
    /// position and is to be discarded; the next one starts at `start_at`.
    Position(TopicPosition),
    /// EPOCHS (0x0D).
    Epochs(Epochs),
    /// PUBLISH (0x0E).
    Publish(Publish),
    /// PUBLISH_ACK (0x0F).
    PublishAck(PublishAck),
    /// SETTINGS (0x10).
    Settings(Settings),
}

impl Frame {
    /// Decodes one frame from the start of `buf`.
    ///
    /// Returns `Ok(None)` if `buf` holds less than a whole frame, and the frame with the number of bytes it
    /// took otherwise. The `len` field is checked against `max_len` (lowered to [`MAX_FRAME_LEN_LIMIT`])
    /// as soon as its four bytes are present, before waiting for the payload; then the CRC, then the type
    /// byte, then the payload. The records of a BATCH or a PUBLISH are copied out of `buf`; use
    /// [`Frame::decode_from`] to avoid the copy.
    pub fn decode(buf: &[u8], max_len: usize) -> Result<Option<(Frame, usize)>, WireError> {
        decode::decode(buf, max_len)
    }

    /// Decodes one frame from the start of `buf` and advances `buf` past it.
    ///
    /// The checks are those of [`Frame::decode`]. The records of a BATCH or a PUBLISH share `buf`'s
    /// allocation instead of being copied. On `Ok(None)` and on every error `buf` is left as it was; every decode error is fatal
    /// to the connection, so the caller reports it and closes rather than skipping ahead.
    pub fn decode_from(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, WireError> {
        decode::decode_from(buf, max_len)
    }

    /// Decodes a buffer that must hold exactly one whole frame, as a pipe WebSocket message does: one that
    /// ends inside a frame or holds bytes after it is malformed. A BATCH's records share `message`.
    pub fn decode_exact(message: Bytes, max_len: usize) -> Result<Frame, WireError> {
        let mut buffer = BytesMut::from(message);
        match Frame::decode_from(&mut buffer, max_len)? {
            Some(frame) if buffer.is_empty() => Ok(frame),
            Some(_) => Err(WireError::Malformed {
                frame: "WebSocket message",
                reason: format!(
                    "{} bytes follow the frame; a message carries exactly one frame",
                    buffer.len()
                ),
            }),
            None => Err(WireError::Malformed {
                frame: "WebSocket message",
                reason: "the message ends inside a frame; a message carries exactly one whole frame"
                    .to_string(),
            }),
        }
    }

    /// The whole encoded frame as one buffer, for a transport that sends one frame per message.
    pub fn to_bytes(&self) -> Result<Bytes, WireError> {
        let mut buffer = Vec::new();
        self.encode(&mut buffer)?;
        Ok(Bytes::from(buffer))
    }

    /// Appends the whole encoded frame, header included, to `dst`.
    ///
    /// Fails, leaving `dst` as it was, if a string is longer than [`MAX_STR16_LEN`] bytes
    /// ([`WireError::StringTooLong`]), a HELLO or WELCOME lists more than 65,535 topics
    /// ([`WireError::TooManyTopics`]) or the payload exceeds [`MAX_FRAME_LEN_LIMIT`]
    /// ([`WireError::FrameTooLarge`]). Encoding never truncates: a shortened topic or client id would
    /// name something else.
    pub fn encode(&self, dst: &mut Vec<u8>) -> Result<(), WireError> {
        encode::encode(self, dst)
    }

    /// The frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Hello(_) => FrameType::Hello,
            Frame::Welcome(_) => FrameType::Welcome,
            Frame::Batch(_) => FrameType::Batch,
            Frame::Ack(_) => FrameType::Ack,
            Frame::Seek(_) => FrameType::Seek,
            Frame::Reset(_) => FrameType::Reset,
            Frame::Ready(_) => FrameType::Ready,
            Frame::Ping(_) => FrameType::Ping,
            Frame::Pong(_) => FrameType::Pong,
            Frame::Error(_) => FrameType::Error,
            Frame::Topic(_) => FrameType::Topic,
            Frame::Position(_) => FrameType::Position,
            Frame::Epochs(_) => FrameType::Epochs,
            Frame::Publish(_) => FrameType::Publish,
            Frame::PublishAck(_) => FrameType::PublishAck,
            Frame::Settings(_) => FrameType::Settings,
        }
    }

    /// The frame type's name, such as `BATCH`, for logs.
    pub fn name(&self) -> &'static str {
        self.frame_type().name()
    }
}
