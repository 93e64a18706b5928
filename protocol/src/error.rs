//! The one error type of the codec. Every variant names what was wrong with the bytes, so a broker can
//! pass it to the peer that sent them in an ERROR frame; [`WireError::error_code`] says which code to use.
//! This module owns the error values and their codes, not the decisions about what to do with them.

use thiserror::Error;

use crate::frame::ErrorCode;

/// Why bytes could not be decoded, or a value could not be encoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A record's `len` field is zero: in a segment file this marks the end of the written data.
    #[error("record length is zero")]
    ZeroLength,
    /// A record's length is smaller than its fixed header.
    #[error("record of {len} bytes is shorter than the record header")]
    RecordTooShort {
        /// Total record length claimed by the `len` field.
        len: usize,
    },
    /// A record is larger than the largest one accepted.
    #[error("record of {len} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// Total record length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A record's stored CRC does not match its bytes.
    #[error("record at offset {offset} has CRC {stored:#010x} but its bytes give {actual:#010x}")]
    RecordCrc {
        /// The offset field as read (it may itself be corrupt).
        offset: u64,
        /// The CRC stored in the record.
        stored: u32,
        /// The CRC computed over the bytes.
        actual: u32,
    },
    /// A record's key and header lengths do not fit inside it.
    #[error("record at offset {offset} has key and header lengths that overrun the record")]
    RecordFields {
        /// The record's offset.
        offset: u64,
    },
    /// Attribute bits that are reserved are set.
    #[error("record attributes {attributes:#04x} use reserved bits")]
    ReservedAttributes {
        /// The attribute byte.
        attributes: u8,
    },
    /// A key longer than 65,535 bytes.
    #[error("key of {len} bytes exceeds the maximum of 65535 bytes")]
    KeyTooLong {
        /// Key length.
        len: usize,
    },
    /// Encoded headers longer than 65,535 bytes, or one name or value that long.
    #[error("headers of {len} bytes exceed the maximum of 65535 bytes")]
    HeadersTooLong {
        /// The offending length.
        len: usize,
    },
    /// Header bytes that do not parse as `[name_len][name][value_len][value]` entries.
    #[error("record headers are malformed")]
    MalformedHeaders,
    /// A batch ends in the middle of a record.
    #[error("batch ends inside a record ({remaining} bytes left over)")]
    TruncatedBatch {
        /// Bytes left after the last whole record.
        remaining: usize,
    },
    /// A batch holds no records.
    #[error("batch holds no records")]
    EmptyBatch,
    /// A batch's offsets do not continue where they should.
    #[error("expected offset {expected} but found {found}")]
    OffsetGap {
        /// The offset that should have come next.
        expected: u64,
        /// The offset found.
        found: u64,
    },
    /// A record's offset is below the batch's first offset or not above the record before it.
    #[error("expected offset {expected} or above but found {found}")]
    OffsetBackwards {
        /// The lowest offset the record could have.
        expected: u64,
        /// The offset found.
        found: u64,
    },
    /// A BATCH frame names a last offset its records do not end at.
    #[error("the batch says it ends at offset {claimed}, but its records end at {actual}")]
    BatchEnd {
        /// The `last_offset` the frame states.
        claimed: u64,
        /// The offset of the last record it carries.
        actual: u64,
    },

    /// A record in the producer layout (a PUBLISH frame, a raw HTTP publish) that does not parse or breaks
    /// a limit; `index` counts records from zero.
    #[error("record {index}: {source}")]
    ProducerRecord {
        /// Which record of the batch.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: Box<WireError>,
    },
    /// A producer record that breaks a rule of its layout: length fields that contradict each other or the
    /// batch around it, a tombstone with a value.
    #[error("{reason}")]
    RecordLayout {
        /// What is wrong, in words fit to send to the peer.
        reason: String,
    },

    /// A frame's `len` field is above the decoder's maximum, or an encoder was given a frame larger than
    /// any decoder accepts.
    #[error("frame payload of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Payload length claimed by the `len` field (or produced by the encoder).
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// A frame's stored CRC does not match its type byte and payload.
    #[error("frame CRC is {stored:#010x} but its type byte and payload give {actual:#010x}")]
    FrameCrc {
        /// The CRC stored in the frame header.
        stored: u32,
        /// The CRC computed over the type byte and payload.
        actual: u32,
    },
    /// A frame type byte that the protocol does not define.
    #[error("unknown frame type {frame_type:#04x}")]
    UnknownFrameType {
        /// The type byte as received.
        frame_type: u8,
    },
    /// A frame's payload ends inside one of its fields.
    #[error("{frame} payload ends inside field `{field}`")]
    FrameTruncated {
        /// The frame type's name, such as `HELLO`.
        frame: &'static str,
        /// The field that could not be read whole.
        field: &'static str,
    },
    /// A `str16` field whose bytes are not UTF-8.
    #[error("{frame} field `{field}` is not valid UTF-8")]
    BadUtf8 {
        /// The frame type's name.
        frame: &'static str,
        /// The field holding the bad bytes.
        field: &'static str,
    },
    /// A frame's payload has bytes after its last field.
    #[error("{frame} payload has {n_bytes} bytes left over after its last field")]
    TrailingBytes {
        /// The frame type's name.
        frame: &'static str,
        /// How many bytes were left.
        n_bytes: usize,
    },
    /// A start position whose `kind` byte is not one of the five defined.
    #[error("{frame} has unknown start position kind {kind}; the known kinds are 0 to 4")]
    UnknownStartKind {
        /// The frame type's name (`HELLO` or `SEEK`).
        frame: &'static str,
        /// The kind byte as received.
        kind: u8,
    },
    /// A HELLO whose `role` byte is not consumer (0), pipe (1) or producer (2).
    #[error("HELLO has unknown role {role}; the known roles are 0 (consumer), 1 (pipe) and 2 (producer)")]
    UnknownRole {
        /// The role byte as received.
        role: u8,
    },
    /// A frame whose fields parse but contradict the protocol, such as a BATCH whose `first_offset` is
    /// greater than its `last_offset`.
    #[error("{frame} is malformed: {reason}")]
    Malformed {
        /// The frame type's name.
        frame: &'static str,
        /// What is wrong, in words fit to send to the peer.
        reason: String,
    },
    /// A string too long for a `str16` field; raised by the encoder, which never truncates.
    #[error("{frame} field `{field}` is {len} bytes long; the maximum is 65535")]
    StringTooLong {
        /// The frame type's name.
        frame: &'static str,
        /// The field.
        field: &'static str,
        /// The string's length in bytes.
        len: usize,
    },
    /// More topics than a frame's `u16` count can carry; raised by the encoder.
    #[error("{frame} lists {n_topics} topics; the maximum is 65535")]
    TooManyTopics {
        /// The frame type's name.
        frame: &'static str,
        /// How many topics were given.
        n_topics: usize,
    },
    /// A JSON record sets two value fields where at most one is allowed.
    #[error("{first} and {second} are mutually exclusive")]
    ExclusiveValueFields {
        /// The first field set.
        first: &'static str,
        /// The second field set.
        second: &'static str,
    },
    /// A JSON field that should hold base64 does not.
    #[error("{field} is not valid base64: {reason}")]
    BadBase64 {
        /// The field.
        field: &'static str,
        /// The decoder's explanation.
        reason: String,
    },
    /// A JSON record marked as a tombstone that also carries a value.
    #[error("a tombstone carries no value; drop value, value_text and value_base64")]
    TombstoneWithValue,
    /// A JSON record marked as a tombstone without a key: a tombstone deletes a key, so it needs one.
    #[error("a tombstone needs a key")]
    TombstoneWithoutKey,
}

impl WireError {
    /// The code under which to report this error to the peer in an ERROR frame.
    ///
    /// Frame-level faults map to their own codes. Every error that checking a stored record can raise is
    /// `BAD_RECORDS`, because such records only arrive inside a BATCH; a producer record that fails its
    /// check makes its PUBLISH malformed (`MALFORMED_FRAME`). Errors that only building
    /// a record can raise (a key or headers too long, bad JSON input) are `BAD_REQUEST`, and the encoder's
    /// limits on frames this side built are `INTERNAL`: they mean a bug here, not a fault of the peer.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            WireError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            WireError::FrameCrc { .. } => ErrorCode::BadCrc,
            WireError::UnknownFrameType { .. } => ErrorCode::UnknownFrameType,
            WireError::FrameTruncated { .. }
            | WireError::BadUtf8 { .. }
            | WireError::TrailingBytes { .. }
            | WireError::UnknownStartKind { .. }
            | WireError::UnknownRole { .. }
            | WireError::Malformed { .. }
            | WireError::ProducerRecord { .. }
            | WireError::RecordLayout { .. } => ErrorCode::MalformedFrame,
            WireError::ZeroLength
            | WireError::RecordTooShort { .. }
            | WireError::RecordTooLarge { .. }
            | WireError::RecordCrc { .. }
            | WireError::RecordFields { .. }
            | WireError::ReservedAttributes { .. }
            | WireError::MalformedHeaders
            | WireError::TruncatedBatch { .. }
            | WireError::EmptyBatch
            | WireError::OffsetGap { .. }
            | WireError::OffsetBackwards { .. }
            | WireError::BatchEnd { .. } => ErrorCode::BadRecords,
            WireError::KeyTooLong { .. }
            | WireError::HeadersTooLong { .. }
            | WireError::ExclusiveValueFields { .. }
            | WireError::BadBase64 { .. }
            | WireError::TombstoneWithValue
            | WireError::TombstoneWithoutKey => ErrorCode::BadRequest,
            WireError::StringTooLong { .. } | WireError::TooManyTopics { .. } => ErrorCode::Internal,
        }
    }
}
