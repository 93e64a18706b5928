//! The frame checksum. Every frame's CRC covers its type byte and payload, except that a BATCH's CRC covers
//! each record only through the record's own `[len][crc]` prefix: the record's CRC already covers the rest
//! of its bytes, and the receiver checks it once when it builds a [`crate::CheckedBatch`]. So a relay hashes
//! a record's bytes once per hop (on arrival) instead of three times (frame in, record check, frame out).
//!
//! ```text
//! BATCH payload:  [topic:str16][first_offset:8][last_offset:8][end_offset:8][record 0][record 1]...
//! covered:        [------------------------- all of it -----------------][len|crc ][len|crc ]...
//! ```
//!
//! Where the records stop parsing (a length field that runs past the payload or is out of range), the
//! rest of the payload is covered whole, so any change to a length field changes the CRC.

use crate::record::{LEN_FIELD_LEN, peek_record_len};

use super::FrameType;

/// The bytes of a record a BATCH frame's CRC covers: its `len` and `crc` fields.
const RECORD_PREFIX_LEN: usize = LEN_FIELD_LEN + 4;

/// The CRC of a frame of `frame_type` whose payload is `head` followed by `records`. For every type but
/// BATCH, `records` is empty or simply continues the payload; for BATCH, `head` ends where the records start.
pub(super) fn frame_crc(frame_type: u8, head: &[u8], records: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[frame_type]);
    hasher.update(head);
    if frame_type == FrameType::Batch.as_u8() {
        update_with_prefixes(&mut hasher, records);
    } else {
        hasher.update(records);
    }
    hasher.finalize()
}

/// The CRC of a whole received payload: for a BATCH, the records start after the topic and three offsets.
pub(super) fn payload_crc(frame_type: u8, payload: &[u8]) -> u32 {
    if frame_type == FrameType::Batch.as_u8()
        && let Some(topic_len) = payload.first_chunk::<2>().map(|len| u16::from_le_bytes(*len) as usize)
    {
        let records_at = (2 + topic_len + 24).min(payload.len());
        let (head, records) = payload.split_at(records_at);
        return frame_crc(frame_type, head, records);
    }
    frame_crc(frame_type, payload, &[])
}

/// Hashes each record's prefix, or the rest of the bytes from the first record that does not parse.
fn update_with_prefixes(hasher: &mut crc32fast::Hasher, records: &[u8]) {
    let mut at = 0;
    while at < records.len() {
        let rest = &records[at..];
        match peek_record_len(rest) {
            Ok(Some(total)) if total <= rest.len() && total >= RECORD_PREFIX_LEN => {
                hasher.update(&rest[..RECORD_PREFIX_LEN]);
                at += total;
            }
            _ => {
                hasher.update(rest);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::NewRecord;

    fn records() -> Vec<u8> {
        let mut out = Vec::new();
        NewRecord::new(b"k", b"value one").encode_to_vec(0, 1, &mut out);
        NewRecord::new(b"k", b"value two").encode_to_vec(1, 1, &mut out);
        out
    }

    #[test]
    fn batch_crc_covers_prefixes_not_bodies() {
        let batch = FrameType::Batch.as_u8();
        let clean = records();
        let base = frame_crc(batch, b"head", &clean);
        let first_len = peek_record_len(&clean).unwrap().unwrap();
        for at in 0..clean.len() {
            let mut flipped = clean.clone();
            flipped[at] ^= 0x01;
            let in_prefix =
                at < RECORD_PREFIX_LEN || (first_len..first_len + RECORD_PREFIX_LEN).contains(&at);
            assert_eq!(frame_crc(batch, b"head", &flipped) != base, in_prefix, "flip at {at}");
        }
        assert_ne!(frame_crc(batch, b"heaD", &clean), base);
    }

    #[test]
    fn unparsable_records_are_covered_whole() {
        let batch = FrameType::Batch.as_u8();
        let garbage = b"not records at all".to_vec();
        let base = frame_crc(batch, b"", &garbage);
        let mut flipped = garbage.clone();
        flipped[12] ^= 1;
        assert_ne!(frame_crc(batch, b"", &flipped), base);
    }

    #[test]
    fn other_frames_cover_every_byte() {
        let ack = FrameType::Ack.as_u8();
        assert_eq!(frame_crc(ack, b"ab", b"cd"), frame_crc(ack, b"abcd", b""));
        assert_eq!(payload_crc(ack, b"abcd"), frame_crc(ack, b"abcd", b""));
    }
}
