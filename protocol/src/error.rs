//! The one error type of the codec. Every variant names what was wrong with the bytes, so a broker can
//! pass it to the peer that sent them in an ERROR frame.

use thiserror::Error;

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
}
