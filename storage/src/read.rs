//! Reading a log: whole raw records from an exact offset, as a zero-copy slice of the segment mapping.
//! This module does not wait for records (callers use [`crate::Log::wake_on_change`]) and never writes.

use bytes::Bytes;
use protocol::record::{RecordIter, peek_record_len, peek_record_offset, peek_record_timestamp};

use crate::error::Error;
use crate::log::Log;

/// Records read from a log: the exact stored bytes of `n_records` contiguous records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadChunk {
    /// The records, laid end to end as stored. The bytes share the segment's mapping and stay valid even
    /// if retention or a replacement deletes the segment file.
    pub records: Bytes,
    /// Offset of the first record (the offset asked for).
    pub first_offset: u64,
    /// The offset after the last record: where the next read continues.
    pub next_offset: u64,
    /// Number of records.
    pub n_records: u64,
    /// Timestamp of the last record (zero if there is none).
    pub last_timestamp_ms: u64,
}

impl ReadChunk {
    /// A chunk with no records, at `offset`.
    fn empty(offset: u64) -> ReadChunk {
        ReadChunk {
            records: Bytes::new(),
            first_offset: offset,
            next_offset: offset,
            n_records: 0,
            last_timestamp_ms: 0,
        }
    }

    /// Whether the chunk holds no record.
    pub fn is_empty(&self) -> bool {
        self.n_records == 0
    }

    /// Iterates over the records.
    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter::new(&self.records)
    }
}

impl Log {
    /// Reads whole records starting exactly at offset `from`: at most `max_records`, and no more than
    /// `max_bytes` unless the first record alone is larger (so a reader always makes progress). A read
    /// may stop early at a segment boundary. Only readable records are returned (see
    /// [`Log::readable_offset`]): from the readable offset up to the log end the chunk is empty.
    ///
    /// Errors: [`Error::OffsetBelowLogStart`] below the log start, [`Error::OffsetBeyondEnd`] above the
    /// log end.
    pub fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<ReadChunk, Error> {
        let log_start = self.log_start();
        if from < log_start {
            return Err(Error::OffsetBelowLogStart { requested: from, log_start });
        }
        let readable = self.readable_offset();
        if from >= readable {
            let next_offset = self.next_offset();
            if from > next_offset {
                return Err(Error::OffsetBeyondEnd { requested: from, next_offset });
            }
            return Ok(ReadChunk::empty(from));
        }
        if max_records == 0 {
            return Ok(ReadChunk::empty(from));
        }
        let segment = {
            let segments = self.segments.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            let after = segments.partition_point(|segment| segment.base_offset() <= from);
            if after == 0 {
                return Err(Error::OffsetBelowLogStart { requested: from, log_start: self.log_start() });
            }
            std::sync::Arc::clone(&segments[after - 1])
        };
        let bytes = segment.published();
        let corrupt = |detail: String| Error::CorruptSegment { path: segment.path().to_path_buf(), detail };
        // A damaged segment serves the records before its first bad one, and nothing from there on.
        let damaged_at = segment.damaged_at().unwrap_or(u64::MAX);
        if from >= damaged_at {
            return Err(Error::Damaged { topic: self.name.clone(), offset: damaged_at });
        }
        let readable = readable.min(damaged_at);

        let mut position = segment.scan_start(from);
        loop {
            let rest = &bytes[position..];
            match (peek_record_offset(rest), peek_record_len(rest)) {
                (Some(offset), _) if offset == from => break,
                (Some(offset), Ok(Some(len))) if offset < from && len <= rest.len() => position += len,
                (found, _) => {
                    // A length or offset field on the way is damaged: find and mark the first bad record.
                    if let Some(offset) = self.verify(segment.base_offset(), from + 1) {
                        return Err(Error::Damaged { topic: self.name.clone(), offset });
                    }
                    return Err(corrupt(format!(
                        "offset {from} not found at byte {position} (found {found:?})"
                    )));
                }
            }
        }

        let start = position;
        let mut offset = from;
        let mut last_start = position;
        while ((offset - from) as usize) < max_records && offset < readable {
            let rest = &bytes[position..];
            let Ok(Some(len)) = peek_record_len(rest) else { break };
            if len > rest.len() || (offset > from && position + len - start > max_bytes) {
                break;
            }
            last_start = position;
            position += len;
            offset += 1;
        }
        if offset == from {
            return Err(corrupt(format!("readable offset {from} has no whole record at byte {start}")));
        }
        // The records were proven before they were appended; a read steps over them by their lengths and
        // hashes nothing.
        let last_timestamp_ms = peek_record_timestamp(&bytes[last_start..position])
            .ok_or_else(|| corrupt(format!("record at byte {last_start} is cut short")))?;
        Ok(ReadChunk {
            records: segment.slice(start, position),
            first_offset: from,
            next_offset: offset,
            n_records: offset - from,
            last_timestamp_ms,
        })
    }
}
