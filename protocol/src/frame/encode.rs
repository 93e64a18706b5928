//! Frames to bytes. Every encoder appends to a caller's `Vec<u8>` and, on failure, leaves it as it was.
//! The encoder refuses what its decoder would refuse (an over-long string, a BATCH or PUBLISH without
//! records, offsets out of order), so a frame that leaves this side always decodes on the other.

use super::crc::{frame_crc, payload_crc};
use super::{FRAME_HEADER_LEN, Frame, FrameType, MAX_FRAME_LEN_LIMIT, MAX_STR16_LEN, StartPosition};
use crate::error::WireError;
use crate::topic::TopicUid;

/// Writes into `dst` the frame header and BATCH fields such that `dst ++ records` is one complete BATCH
/// frame, so a server can send records straight from a segment's memory map with a vectored write.
///
/// Only the `[len][crc]` prefix of each record is read, to compute the frame CRC (see `frame/crc.rs`);
/// the records are never copied or hashed whole. Fails, leaving `dst` as it was, if `topic` is
/// longer than [`MAX_STR16_LEN`] bytes, the payload would exceed [`MAX_FRAME_LEN_LIMIT`], `records` is
/// empty or `first_offset > last_offset` (the last two are what the decoder refuses as malformed).
pub fn encode_batch_header(
    topic: &str,
    first_offset: u64,
    last_offset: u64,
    end_offset: u64,
    records: &[u8],
    dst: &mut Vec<u8>,
) -> Result<(), WireError> {
    check_batch_fields(first_offset, last_offset, records)?;
    check_str16(FrameType::Batch.name(), "topic", topic)?;
    let payload_len = 2 + topic.len() + 3 * 8 + records.len();
    if payload_len > MAX_FRAME_LEN_LIMIT {
        return Err(WireError::FrameTooLarge { len: payload_len, max: MAX_FRAME_LEN_LIMIT });
    }
    let start = dst.len();
    dst.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    put_str16(dst, topic);
    dst.extend_from_slice(&first_offset.to_le_bytes());
    dst.extend_from_slice(&last_offset.to_le_bytes());
    dst.extend_from_slice(&end_offset.to_le_bytes());
    let crc = frame_crc(FrameType::Batch.as_u8(), &dst[start + FRAME_HEADER_LEN..], records);
    put_header(dst, start, payload_len, FrameType::Batch, crc);
    Ok(())
}

/// Implements [`Frame::encode`].
pub(super) fn encode(frame: &Frame, dst: &mut Vec<u8>) -> Result<(), WireError> {
    let start = dst.len();
    let result = encode_at(frame, start, dst);
    if result.is_err() {
        dst.truncate(start);
    }
    result
}

/// Appends the frame, payload first and then the header over it; on error the caller truncates `dst`.
fn encode_at(frame: &Frame, start: usize, dst: &mut Vec<u8>) -> Result<(), WireError> {
    let frame_type = frame.frame_type();
    dst.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    let mut writer = Writer { frame: frame_type.name(), dst };
    match frame {
        Frame::Hello(hello) => {
            writer.u16(hello.version);
            writer.u8(hello.role.as_u8());
            writer.u8(hello.level);
            writer.str16("client_id", &hello.client_id)?;
            writer.str16("group", &hello.group)?;
            writer.str16("token", &hello.token)?;
            writer.u16(hello.max_in_flight);
            writer.u32(hello.batch_max_records);
            writer.u32(hello.batch_max_bytes);
            writer.count(hello.topics.len())?;
            for topic in &hello.topics {
                writer.str16("topic", &topic.topic)?;
                writer.uid(topic.uid);
                writer.u32(topic.epoch);
                writer.start(topic.start);
            }
        }
        Frame::Welcome(welcome) => {
            writer.u16(welcome.version);
            writer.str16("node_id", &welcome.node_id)?;
            writer.u8(welcome.level);
            writer.u32(welcome.heartbeat_ms);
            writer.count(welcome.topics.len())?;
            for topic in &welcome.topics {
                writer.str16("topic", &topic.topic)?;
                writer.uid(topic.uid);
                writer.u64(topic.log_start);
                writer.u64(topic.end_offset);
                writer.u64(topic.start_at);
            }
        }
        Frame::Ack(ack) => {
            writer.str16("topic", &ack.topic)?;
            writer.u64(ack.next_offset);
        }
        Frame::Seek(seek) => {
            writer.str16("topic", &seek.topic)?;
            writer.start(seek.start);
        }
        Frame::Reset(reset) => {
            writer.str16("topic", &reset.topic)?;
            writer.uid(reset.uid);
            writer.u64(reset.log_start);
            writer.u64(reset.end_offset);
        }
        Frame::Ready(ready) => {
            writer.str16("topic", &ready.topic)?;
            writer.uid(ready.uid);
            writer.u64(ready.end_offset);
        }
        Frame::Ping(ping) | Frame::Pong(ping) => {
            writer.u64(ping.nonce);
            writer.u64(ping.timestamp_ms);
        }
        Frame::Error(error) => {
            writer.u16(error.code.code());
            writer.u8(u8::from(error.fatal));
            writer.str16("message", &error.message)?;
        }
        Frame::Topic(topic) => {
            writer.str16("topic", &topic.topic)?;
            writer.uid(topic.uid);
            writer.u64(topic.log_start);
            writer.u64(topic.end_offset);
        }
        Frame::Position(position) => {
            writer.str16("topic", &position.topic)?;
            writer.uid(position.uid);
            writer.u64(position.log_start);
            writer.u64(position.end_offset);
            writer.u64(position.start_at);
        }
        Frame::Epochs(epochs) => {
            writer.str16("topic", &epochs.topic)?;
            writer.uid(epochs.uid);
            // A history holds at most MAX_EPOCHS entries, well within the u16 count.
            writer.count(epochs.history.entries().len())?;
            for entry in epochs.history.entries() {
                writer.u32(entry.epoch);
                writer.u64(entry.start_offset);
            }
        }
        Frame::Publish(publish) => {
            // The records were proven when they were built, so only their number can be wrong.
            let n = u32::try_from(publish.records.len()).ok().filter(|n| *n > 0).ok_or_else(|| {
                WireError::Malformed {
                    frame: writer.frame,
                    reason: format!("it carries {} records; at least one is needed", publish.records.len()),
                }
            })?;
            writer.str16("topic", &publish.topic)?;
            writer.u64(publish.sequence);
            writer.u32(n);
            writer.dst.extend_from_slice(publish.records.as_bytes());
        }
        Frame::PublishAck(ack) => {
            check_offsets(writer.frame, ack.first_offset, ack.last_offset)?;
            writer.str16("topic", &ack.topic)?;
            writer.u64(ack.sequence);
            writer.u64(ack.first_offset);
            writer.u64(ack.last_offset);
        }
        Frame::Settings(settings) => {
            writer.str16("topic", &settings.topic)?;
            writer.uid(settings.uid);
            match &settings.settings {
                None => writer.u8(0),
                Some(explicit) => {
                    writer.u8(1);
                    writer.dst.extend_from_slice(&explicit.to_bytes());
                }
            }
        }
        Frame::Batch(batch) => {
            check_batch_fields(batch.first_offset, batch.last_offset, &batch.records)?;
            writer.str16("topic", &batch.topic)?;
            writer.u64(batch.first_offset);
            writer.u64(batch.last_offset);
            writer.u64(batch.end_offset);
            writer.dst.extend_from_slice(&batch.records);
        }
    }
    let payload_len = dst.len() - start - FRAME_HEADER_LEN;
    if payload_len > MAX_FRAME_LEN_LIMIT {
        return Err(WireError::FrameTooLarge { len: payload_len, max: MAX_FRAME_LEN_LIMIT });
    }
    let crc = payload_crc(frame_type.as_u8(), &dst[start + FRAME_HEADER_LEN..]);
    put_header(dst, start, payload_len, frame_type, crc);
    Ok(())
}

/// Fills in the header reserved at `dst[start..start + FRAME_HEADER_LEN]`. `payload_len` has been checked
/// against [`MAX_FRAME_LEN_LIMIT`], so it fits the `u32` field.
fn put_header(dst: &mut [u8], start: usize, payload_len: usize, frame_type: FrameType, crc: u32) {
    dst[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    dst[start + 4] = frame_type.as_u8();
    dst[start + 5..start + FRAME_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// Refuses the BATCH fields the decoder would refuse.
fn check_batch_fields(first_offset: u64, last_offset: u64, records: &[u8]) -> Result<(), WireError> {
    let frame = FrameType::Batch.name();
    check_offsets(frame, first_offset, last_offset)?;
    if records.is_empty() {
        return Err(WireError::Malformed { frame, reason: "it carries no records".to_string() });
    }
    Ok(())
}

/// Refuses a first offset above the last, which the decoders of BATCH and PUBLISH_ACK refuse.
fn check_offsets(frame: &'static str, first_offset: u64, last_offset: u64) -> Result<(), WireError> {
    if first_offset > last_offset {
        return Err(WireError::Malformed {
            frame,
            reason: format!("first_offset {first_offset} is greater than last_offset {last_offset}"),
        });
    }
    Ok(())
}

fn check_str16(frame: &'static str, field: &'static str, value: &str) -> Result<(), WireError> {
    if value.len() > MAX_STR16_LEN {
        return Err(WireError::StringTooLong { frame, field, len: value.len() });
    }
    Ok(())
}

/// Writes a string already checked by [`check_str16`].
fn put_str16(dst: &mut Vec<u8>, value: &str) {
    dst.extend_from_slice(&(value.len() as u16).to_le_bytes());
    dst.extend_from_slice(value.as_bytes());
}

/// Appends payload fields, naming the frame in the errors of the fields that can fail.
struct Writer<'a> {
    /// The frame type's name, for errors.
    frame: &'static str,
    /// The frame being built.
    dst: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn u8(&mut self, value: u8) {
        self.dst.push(value);
    }

    fn u16(&mut self, value: u16) {
        self.dst.extend_from_slice(&value.to_le_bytes());
    }

    fn u32(&mut self, value: u32) {
        self.dst.extend_from_slice(&value.to_le_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.dst.extend_from_slice(&value.to_le_bytes());
    }

    fn uid(&mut self, uid: TopicUid) {
        self.dst.extend_from_slice(&uid.to_le_bytes());
    }

    fn start(&mut self, start: StartPosition) {
        self.u8(start.kind());
        self.u64(start.offset_field());
    }

    fn str16(&mut self, field: &'static str, value: &str) -> Result<(), WireError> {
        check_str16(self.frame, field, value)?;
        put_str16(self.dst, value);
        Ok(())
    }

    /// Writes the `n` field of a topic list.
    fn count(&mut self, n_topics: usize) -> Result<(), WireError> {
        let n =
            u16::try_from(n_topics).map_err(|_| WireError::TooManyTopics { frame: self.frame, n_topics })?;
        self.u16(n);
        Ok(())
    }
}
