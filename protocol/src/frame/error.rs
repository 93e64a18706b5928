//! The ERROR frame and its codes: the table the specification gives (`docs/PROTOCOL.md`), each code's wire
//! value, name and default fatality. Unknown codes from newer peers are carried, not refused.

use std::fmt;

use crate::error::WireError;

/// ERROR (0x0A): `[code:2][fatal:1][message:str16]`. A fatal error closes the connection after the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// What kind of error.
    pub code: ErrorCode,
    /// Whether the sender closes the connection after this frame (encoded as 0 or 1).
    pub fatal: bool,
    /// Human-readable detail, at most [`super::MAX_STR16_LEN`] bytes.
    pub message: String,
}

impl ErrorFrame {
    /// The ERROR frame reporting a decode or check failure to the peer: its code, the fatality the
    /// protocol gives that code, and the error's own message.
    pub fn from_wire_error(error: &WireError) -> ErrorFrame {
        let code = error.error_code();
        ErrorFrame { code, fatal: code.is_fatal_by_default(), message: error.to_string() }
    }
}

/// The code of an ERROR frame.
///
/// Codes this codec does not know (sent by a newer peer) decode as [`ErrorCode::Other`] rather than as a
/// malformed frame, so the message still reaches the log. [`ErrorCode::code`] and [`ErrorCode::from_code`]
/// convert to and from the wire value; `Other` is only ever built for codes outside the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: a payload that does not parse, bad UTF-8, trailing bytes.
    MalformedFrame,
    /// 2: frame CRC mismatch.
    BadCrc,
    /// 3: length over the maximum.
    FrameTooLarge,
    /// 4: a type byte not in the table.
    UnknownFrameType,
    /// 5: a frame not allowed now (data before HELLO, a second HELLO, a server frame from a client).
    ProtocolViolation,
    /// 6: a topic the server does not have; not fatal, the rest of the HELLO stands.
    UnknownTopic,
    /// 7: a missing or wrong token.
    Unauthorized,
    /// 8: a well-formed request that cannot be honoured (impossible level, bad version, bad topic name).
    BadRequest,
    /// 9: the client stopped reading or acking for longer than the server allows.
    SlowConsumer,
    /// 10: the server is stopping; reconnect later.
    ShuttingDown,
    /// 11: a server fault; details in the server's log.
    Internal,
    /// 12: a SEEK or start offset beyond the log end; not fatal.
    OffsetOutOfRange,
    /// 13: a BATCH whose records fail their CRC or break offset continuity.
    BadRecords,
    /// 14: a newer connection of the same group (or the same pipe child) took over this one's topics.
    Superseded,
    /// 15: the server serves as many connections as it allows; try again later.
    TooManyConnections,
    /// A code this codec does not know, carried as received.
    Other(u16),
}

impl ErrorCode {
    /// The wire value.
    pub const fn code(self) -> u16 {
        match self {
            ErrorCode::MalformedFrame => 1,
            ErrorCode::BadCrc => 2,
            ErrorCode::FrameTooLarge => 3,
            ErrorCode::UnknownFrameType => 4,
            ErrorCode::ProtocolViolation => 5,
            ErrorCode::UnknownTopic => 6,
            ErrorCode::Unauthorized => 7,
            ErrorCode::BadRequest => 8,
            ErrorCode::SlowConsumer => 9,
            ErrorCode::ShuttingDown => 10,
            ErrorCode::Internal => 11,
            ErrorCode::OffsetOutOfRange => 12,
            ErrorCode::BadRecords => 13,
            ErrorCode::Superseded => 14,
            ErrorCode::TooManyConnections => 15,
            ErrorCode::Other(code) => code,
        }
    }

    /// The code for a wire value; values outside the table become [`ErrorCode::Other`].
    pub const fn from_code(code: u16) -> ErrorCode {
        match code {
            1 => ErrorCode::MalformedFrame,
            2 => ErrorCode::BadCrc,
            3 => ErrorCode::FrameTooLarge,
            4 => ErrorCode::UnknownFrameType,
            5 => ErrorCode::ProtocolViolation,
            6 => ErrorCode::UnknownTopic,
            7 => ErrorCode::Unauthorized,
            8 => ErrorCode::BadRequest,
            9 => ErrorCode::SlowConsumer,
            10 => ErrorCode::ShuttingDown,
            11 => ErrorCode::Internal,
            12 => ErrorCode::OffsetOutOfRange,
            13 => ErrorCode::BadRecords,
            14 => ErrorCode::Superseded,
            15 => ErrorCode::TooManyConnections,
            other => ErrorCode::Other(other),
        }
    }

    /// The name the protocol specification uses, such as `BAD_CRC`; `UNKNOWN` for [`ErrorCode::Other`].
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::MalformedFrame => "MALFORMED_FRAME",
            ErrorCode::BadCrc => "BAD_CRC",
            ErrorCode::FrameTooLarge => "FRAME_TOO_LARGE",
            ErrorCode::UnknownFrameType => "UNKNOWN_FRAME_TYPE",
            ErrorCode::ProtocolViolation => "PROTOCOL_VIOLATION",
            ErrorCode::UnknownTopic => "UNKNOWN_TOPIC",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::SlowConsumer => "SLOW_CONSUMER",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::OffsetOutOfRange => "OFFSET_OUT_OF_RANGE",
            ErrorCode::BadRecords => "BAD_RECORDS",
            ErrorCode::Superseded => "SUPERSEDED",
            ErrorCode::TooManyConnections => "TOO_MANY_CONNECTIONS",
            ErrorCode::Other(_) => "UNKNOWN",
        }
    }

    /// Whether the specification's table makes this code fatal. Only UNKNOWN_TOPIC and
    /// OFFSET_OUT_OF_RANGE are not; an unknown code counts as fatal, the safe reading.
    pub const fn is_fatal_by_default(self) -> bool {
        !matches!(self, ErrorCode::UnknownTopic | ErrorCode::OffsetOutOfRange)
    }
}

/// Formats as `NAME (code)`, such as `BAD_CRC (2)`.
impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}
