//! Bytes to frames: the header checks (length limit, completeness, CRC, type) and one payload parser per
//! frame type. Knows nothing of encoding, and nothing of the records inside a BATCH beyond where they are;
//! the producer records inside a PUBLISH are proven by [`crate::producer`]'s one check.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::crc::payload_crc;
use super::{
    Ack, Batch, Epochs, ErrorCode, ErrorFrame, FRAME_HEADER_LEN, Frame, FrameType, Hello,
    MAX_FRAME_LEN_LIMIT, Ping, Publish, PublishAck, Ready, Reset, Role, START_POSITION_LEN, Seek, Settings,
    StartPosition, TopicAnnounce, TopicPosition, TopicStart, Welcome,
};
use crate::epoch::{Epoch, EpochHistory};
use crate::error::WireError;
use crate::producer::{ProducerRecords, count_records};
use crate::settings::{SETTINGS_LEN, TopicSettings};
use crate::topic::TopicUid;

/// The smallest encoding of one HELLO topic entry (an empty name), used to bound preallocation.
const HELLO_TOPIC_MIN_LEN: usize = 2 + 16 + 4 + START_POSITION_LEN;
/// The smallest encoding of one WELCOME topic entry (an empty name), used to bound preallocation.
const WELCOME_TOPIC_MIN_LEN: usize = 2 + 16 + 8 + 8 + 8;
/// The bytes of one EPOCHS entry.
const EPOCH_LEN: usize = 4 + 8;

/// Implements [`Frame::decode`].
pub(super) fn decode(buf: &[u8], max_len: usize) -> Result<Option<(Frame, usize)>, WireError> {
    let Some((frame_type, total)) = check_frame(buf, max_len)? else {
        return Ok(None);
    };
    let payload = &buf[FRAME_HEADER_LEN..total];
    let frame = decode_payload(frame_type, payload, |range| Bytes::copy_from_slice(&payload[range]))?;
    Ok(Some((frame, total)))
}

/// Implements [`Frame::decode_from`].
pub(super) fn decode_from(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, WireError> {
    let Some((frame_type, total)) = check_frame(buf, max_len)? else {
        return Ok(None);
    };
    // The payload is parsed while still borrowed from `buf`, so that a malformed frame leaves `buf`
    // untouched; only then is the frame split off and the records sliced out of the frozen bytes.
    let mut records_range = None;
    let mut frame = decode_payload(frame_type, &buf[FRAME_HEADER_LEN..total], |range| {
        records_range = Some(range);
        Bytes::new()
    })?;
    let frame_bytes = buf.split_to(total).freeze();
    if let Some(range) = records_range {
        let records = frame_bytes.slice(FRAME_HEADER_LEN + range.start..FRAME_HEADER_LEN + range.end);
        match &mut frame {
            Frame::Batch(batch) => batch.records = records,
            Frame::Publish(publish) => {
                publish.records = ProducerRecords::trusted(records, publish.records.len() as u32);
            }
            _ => {}
        }
    }
    Ok(Some(frame))
}

/// Checks the header of the frame at the start of `buf` and, once the whole frame is present, its CRC and
/// type. Returns the type and the frame's total size, or `None` if more bytes are needed.
fn check_frame(buf: &[u8], max_len: usize) -> Result<Option<(FrameType, usize)>, WireError> {
    let Some(len_bytes) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(*len_bytes) as usize;
    let max = max_len.min(MAX_FRAME_LEN_LIMIT);
    if len > max {
        return Err(WireError::FrameTooLarge { len, max });
    }
    let total = FRAME_HEADER_LEN + len;
    let Some(frame) = buf.get(..total) else {
        return Ok(None);
    };
    let type_byte = frame[4];
    let stored = u32::from_le_bytes([frame[5], frame[6], frame[7], frame[8]]);
    let actual = payload_crc(type_byte, &frame[FRAME_HEADER_LEN..]);
    if stored != actual {
        return Err(WireError::FrameCrc { stored, actual });
    }
    let frame_type =
        FrameType::from_u8(type_byte).ok_or(WireError::UnknownFrameType { frame_type: type_byte })?;
    Ok(Some((frame_type, total)))
}

/// Parses a checked payload. `records` turns the range of the records of a BATCH or a PUBLISH within
/// `payload` into the `Bytes` the frame holds, so each caller chooses between copying and sharing.
fn decode_payload(
    frame_type: FrameType,
    payload: &[u8],
    records: impl FnOnce(Range<usize>) -> Bytes,
) -> Result<Frame, WireError> {
    let mut reader = Reader { frame: frame_type.name(), buf: payload, at: 0 };
    let frame = match frame_type {
        FrameType::Hello => Frame::Hello(read_hello(&mut reader)?),
        FrameType::Welcome => Frame::Welcome(read_welcome(&mut reader)?),
        FrameType::Batch => Frame::Batch(read_batch(&mut reader, records)?),
        FrameType::Ack => {
            Frame::Ack(Ack { topic: reader.str16("topic")?, next_offset: reader.u64("next_offset")? })
        }
        FrameType::Seek => Frame::Seek(Seek { topic: reader.str16("topic")?, start: reader.start()? }),
        FrameType::Reset => Frame::Reset(Reset {
            topic: reader.str16("topic")?,
            uid: reader.uid()?,
            log_start: reader.u64("log_start")?,
            end_offset: reader.u64("end_offset")?,
        }),
        FrameType::Ready => Frame::Ready(Ready {
            topic: reader.str16("topic")?,
            uid: reader.uid()?,
            end_offset: reader.u64("end_offset")?,
        }),
        FrameType::Ping => Frame::Ping(read_ping(&mut reader)?),
        FrameType::Pong => Frame::Pong(read_ping(&mut reader)?),
        FrameType::Error => Frame::Error(read_error(&mut reader)?),
        FrameType::Topic => Frame::Topic(TopicAnnounce {
            topic: reader.str16("topic")?,
            uid: reader.uid()?,
            log_start: reader.u64("log_start")?,
            end_offset: reader.u64("end_offset")?,
        }),
        FrameType::Position => Frame::Position(read_topic_position(&mut reader)?),
        FrameType::Epochs => Frame::Epochs(read_epochs(&mut reader)?),
        FrameType::Publish => Frame::Publish(read_publish(&mut reader, records)?),
        FrameType::PublishAck => Frame::PublishAck(read_publish_ack(&mut reader)?),
        FrameType::Settings => Frame::Settings(read_settings(&mut reader)?),
    };
    reader.finish()?;
    Ok(frame)
}

fn read_hello(reader: &mut Reader<'_>) -> Result<Hello, WireError> {
    let version = reader.u16("version")?;
    let role_byte = reader.u8("role")?;
    let role = Role::from_u8(role_byte).ok_or(WireError::UnknownRole { role: role_byte })?;
    let level = reader.u8("level")?;
    let client_id = reader.str16("client_id")?;
    let group = reader.str16("group")?;
    let token = reader.str16("token")?;
    let max_in_flight = reader.u16("max_in_flight")?;
    let batch_max_records = reader.u32("batch_max_records")?;
    let batch_max_bytes = reader.u32("batch_max_bytes")?;
    let n_topics = reader.u16("n")? as usize;
    let mut topics = Vec::with_capacity(n_topics.min(reader.remaining() / HELLO_TOPIC_MIN_LEN));
    for _ in 0..n_topics {
        topics.push(TopicStart {
            topic: reader.str16("topic")?,
            uid: reader.uid()?,
            epoch: reader.u32("epoch")?,
            start: reader.start()?,
        });
    }
    Ok(Hello {
        version,
        role,
        level,
        client_id,
        group,
        token,
        max_in_flight,
        batch_max_records,
        batch_max_bytes,
        topics,
    })
}

fn read_welcome(reader: &mut Reader<'_>) -> Result<Welcome, WireError> {
    let version = reader.u16("version")?;
    let node_id = reader.str16("node_id")?;
    let level = reader.u8("level")?;
    let heartbeat_ms = reader.u32("heartbeat_ms")?;
    let n_topics = reader.u16("n")? as usize;
    let mut topics = Vec::with_capacity(n_topics.min(reader.remaining() / WELCOME_TOPIC_MIN_LEN));
    for _ in 0..n_topics {
        topics.push(read_topic_position(reader)?);
    }
    Ok(Welcome { version, node_id, level, heartbeat_ms, topics })
}

fn read_epochs(reader: &mut Reader<'_>) -> Result<Epochs, WireError> {
    let topic = reader.str16("topic")?;
    let uid = reader.uid()?;
    let n_epochs = reader.u16("n")? as usize;
    let mut entries = Vec::with_capacity(n_epochs.min(reader.remaining() / EPOCH_LEN));
    for _ in 0..n_epochs {
        entries.push(Epoch { epoch: reader.u32("epoch")?, start_offset: reader.u64("start_offset")? });
    }
    let history = EpochHistory::new(entries).map_err(|reason| WireError::Malformed {
        frame: reader.frame,
        reason: format!("epoch history: {reason}"),
    })?;
    Ok(Epochs { topic, uid, history })
}

fn read_settings(reader: &mut Reader<'_>) -> Result<Settings, WireError> {
    let topic = reader.str16("topic")?;
    let uid = reader.uid()?;
    let settings = match reader.u8("explicit")? {
        0 => None,
        1 => {
            let bytes = reader.array::<SETTINGS_LEN>("settings")?;
            let settings = TopicSettings::from_bytes(&bytes).map_err(|reason| WireError::Malformed {
                frame: reader.frame,
                reason: format!("settings: {reason}"),
            })?;
            Some(settings)
        }
        other => {
            return Err(WireError::Malformed {
                frame: reader.frame,
                reason: format!("explicit is {other}; it must be 0 or 1"),
            });
        }
    };
    Ok(Settings { topic, uid, settings })
}

/// One WELCOME entry, which is also the whole payload of POSITION.
fn read_topic_position(reader: &mut Reader<'_>) -> Result<TopicPosition, WireError> {
    Ok(TopicPosition {
        topic: reader.str16("topic")?,
        uid: reader.uid()?,
        log_start: reader.u64("log_start")?,
        end_offset: reader.u64("end_offset")?,
        start_at: reader.u64("start_at")?,
    })
}

fn read_batch(
    reader: &mut Reader<'_>,
    records: impl FnOnce(Range<usize>) -> Bytes,
) -> Result<Batch, WireError> {
    let topic = reader.str16("topic")?;
    let first_offset = reader.u64("first_offset")?;
    let last_offset = reader.u64("last_offset")?;
    let end_offset = reader.u64("end_offset")?;
    if first_offset > last_offset {
        return Err(WireError::Malformed {
            frame: "BATCH",
            reason: format!("first_offset {first_offset} is greater than last_offset {last_offset}"),
        });
    }
    let range = reader.rest();
    if range.is_empty() {
        // The header promises last_offset - first_offset + 1 records, at least one.
        return Err(WireError::Malformed { frame: "BATCH", reason: "it carries no records".to_string() });
    }
    Ok(Batch { topic, first_offset, last_offset, end_offset, records: records(range) })
}

/// PUBLISH: the records are proven here, where they lie, before the frame exists. The `Bytes` the frame
/// gets from `records` may be empty until the caller slices the real ones in; the count travels with it.
fn read_publish(
    reader: &mut Reader<'_>,
    records: impl FnOnce(Range<usize>) -> Bytes,
) -> Result<Publish, WireError> {
    let topic = reader.str16("topic")?;
    let sequence = reader.u64("sequence")?;
    let n = reader.u32("n")?;
    let range = reader.rest();
    let malformed = |reason: String| WireError::Malformed { frame: "PUBLISH", reason };
    if n == 0 {
        return Err(malformed("n is 0; a PUBLISH carries at least one record".to_string()));
    }
    let found = count_records(&reader.buf[range.clone()])?;
    if found != n {
        return Err(malformed(format!("n is {n} but the payload holds {found} records")));
    }
    Ok(Publish { topic, sequence, records: ProducerRecords::trusted(records(range), n) })
}

fn read_publish_ack(reader: &mut Reader<'_>) -> Result<PublishAck, WireError> {
    let topic = reader.str16("topic")?;
    let sequence = reader.u64("sequence")?;
    let first_offset = reader.u64("first_offset")?;
    let last_offset = reader.u64("last_offset")?;
    if first_offset > last_offset {
        return Err(WireError::Malformed {
            frame: "PUBLISH_ACK",
            reason: format!("first_offset {first_offset} is greater than last_offset {last_offset}"),
        });
    }
    Ok(PublishAck { topic, sequence, first_offset, last_offset })
}

fn read_ping(reader: &mut Reader<'_>) -> Result<Ping, WireError> {
    Ok(Ping { nonce: reader.u64("nonce")?, timestamp_ms: reader.u64("timestamp_ms")? })
}

fn read_error(reader: &mut Reader<'_>) -> Result<ErrorFrame, WireError> {
    let code = ErrorCode::from_code(reader.u16("code")?);
    let fatal = match reader.u8("fatal")? {
        0 => false,
        1 => true,
        other => {
            return Err(WireError::Malformed {
                frame: "ERROR",
                reason: format!("fatal is {other}; it must be 0 or 1"),
            });
        }
    };
    Ok(ErrorFrame { code, fatal, message: reader.str16("message")? })
}

/// A cursor over one payload that names the frame and field in every error it returns.
struct Reader<'a> {
    /// The frame type's name, for errors.
    frame: &'static str,
    /// The whole payload.
    buf: &'a [u8],
    /// How many bytes have been read.
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        let bytes = self
            .buf
            .get(self.at..self.at + n)
            .ok_or(WireError::FrameTruncated { frame: self.frame, field })?;
        self.at += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let mut bytes = [0u8; N];
        bytes.copy_from_slice(self.take(N, field)?);
        Ok(bytes)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        self.array(field).map(u16::from_le_bytes)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        self.array(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        self.array(field).map(u64::from_le_bytes)
    }

    fn uid(&mut self) -> Result<TopicUid, WireError> {
        self.array("uid").map(TopicUid::from_le_bytes)
    }

    fn str16(&mut self, field: &'static str) -> Result<String, WireError> {
        let len = self.u16(field)? as usize;
        let bytes = self.take(len, field)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_string()),
            Err(_) => Err(WireError::BadUtf8 { frame: self.frame, field }),
        }
    }

    fn start(&mut self) -> Result<StartPosition, WireError> {
        let kind = self.u8("start")?;
        if kind > 4 {
            return Err(WireError::UnknownStartKind { frame: self.frame, kind });
        }
        let offset = self.u64("start")?;
        let start = match kind {
            0 => StartPosition::Committed,
            1 => StartPosition::Earliest,
            2 => StartPosition::Latest,
            3 => StartPosition::Offset(offset),
            _ => StartPosition::FullRefresh,
        };
        if start.offset_field() != offset {
            return Err(WireError::Malformed {
                frame: self.frame,
                reason: format!("start position of kind {kind} has offset {offset}; it must be 0"),
            });
        }
        Ok(start)
    }

    /// Takes every byte left and returns its range within the payload.
    fn rest(&mut self) -> Range<usize> {
        let range = self.at..self.buf.len();
        self.at = self.buf.len();
        range
    }

    fn finish(self) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            n_bytes => Err(WireError::TrailingBytes { frame: self.frame, n_bytes }),
        }
    }
}
