//! Reading a log: whole raw records from an offset on, as a zero-copy slice of the segment mapping. In a
//! compacted range offsets have gaps; a read from an offset nobody holds starts at the next record.
//! This module does not wait for records (callers use [`crate::Log::wake_on_change`]) and never writes.

use std::sync::Arc;

use bytes::Bytes;
use protocol::record::{RecordIter, peek_record_len, peek_record_offset, peek_record_timestamp};

use crate::error::Error;
use crate::log::Log;
use crate::segment::Segment;

/// Records read from a log: the exact stored bytes of `n_records` records, which cover every offset from
/// `first_offset` to `next_offset` (offsets rise; a compacted range skips some, and the log holds nothing
/// at those).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadChunk {
    /// The records, laid end to end as stored. The bytes share the segment's mapping and stay valid even
    /// if retention or a replacement deletes the segment file.
    pub records: Bytes,
    /// The offset asked for: the first offset the chunk covers (its first record's, or below it).
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
    /// Reads whole records from offset `from` on (the first record is the first at or above it: compaction
    /// leaves gaps): at most `max_records`, and no more than
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
        // The segment holding the first record at or above `from`: a compacted segment may hold nothing
        // from there to its end, and the next one then starts the chunk.
        let Some(mut segment) = self.segment_after(from, false) else {
            return Err(Error::OffsetBelowLogStart { requested: from, log_start: self.log_start() });
        };
        let (segment, mut position) = loop {
            let bytes = segment.published();
            let corrupt =
                |detail: String| Error::CorruptSegment { path: segment.path().to_path_buf(), detail };
            let damaged_at = segment.damaged_at().unwrap_or(u64::MAX);
            if from >= damaged_at {
                return Err(Error::Damaged { topic: self.name.clone(), offset: damaged_at });
            }
            let mut position = segment.scan_start(from);
            let found = loop {
                let rest = &bytes[position..];
                if rest.is_empty() {
                    break false;
                }
                match (peek_record_offset(rest), peek_record_len(rest)) {
                    (Some(offset), _) if offset >= from => break true,
                    (Some(_), Ok(Some(len))) if len <= rest.len() => position += len,
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
            };
            if found {
                break (segment, position);
            }
            match self.segment_after(segment.base_offset(), true) {
                Some(next) => segment = next,
                None => return Ok(ReadChunk::empty(from)),
            }
        };
        let bytes = segment.published();
        let corrupt = |detail: String| Error::CorruptSegment { path: segment.path().to_path_buf(), detail };
        let readable = readable.min(segment.damaged_at().unwrap_or(u64::MAX));
        let segment = &segment;

        let start = position;
        let mut n_records = 0u64;
        let mut next_offset = from;
        let mut last_start = position;
        while (n_records as usize) < max_records {
            let rest = &bytes[position..];
            let (Ok(Some(len)), Some(offset)) = (peek_record_len(rest), peek_record_offset(rest)) else {
                break;
            };
            if offset >= readable || len > rest.len() || (n_records > 0 && position + len - start > max_bytes)
            {
                break;
            }
            last_start = position;
            position += len;
            n_records += 1;
            next_offset = offset + 1;
        }
        if n_records == 0 {
            if peek_record_offset(&bytes[start..]).is_some_and(|offset| offset >= readable) {
                // The next record is not readable yet.
                return Ok(ReadChunk::empty(from));
            }
            return Err(corrupt(format!("readable offset {from} has no whole record at byte {start}")));
        }
        // The records were proven before they were appended; a read steps over them by their lengths and
        // hashes nothing.
        let last_timestamp_ms = peek_record_timestamp(&bytes[last_start..position])
            .ok_or_else(|| corrupt(format!("record at byte {last_start} is cut short")))?;
        Ok(ReadChunk {
            records: segment.slice(start, position),
            first_offset: from,
            next_offset,
            n_records,
            last_timestamp_ms,
        })
    }

    /// The segment holding `offset` (the last one based at or below it), or with `strictly_after` the
    /// segment after the one based at `offset`. Holds the segment list's lock only to clone an `Arc`.
    fn segment_after(&self, offset: u64, strictly_after: bool) -> Option<Arc<Segment>> {
        let segments = self.segments.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        if strictly_after {
            let index = segments.partition_point(|segment| segment.base_offset() <= offset);
            return segments.get(index).cloned();
        }
        let index = segments.partition_point(|segment| segment.base_offset() <= offset);
        index.checked_sub(1).map(|index| Arc::clone(&segments[index]))
    }
}
