//! A BATCH whose records have been proven: every record's length, CRC and fields checked, offsets contiguous
//! from the frame's `first_offset` to its `last_offset`. A [`CheckedBatch`] can only be built by that one
//! pass ([`CheckedBatch::check`]), so whoever holds one (storage appending it, a consumer indexing its keys)
//! can walk its records without hashing them again.

use bytes::Bytes;

use crate::error::WireError;
use crate::frame::Batch;
use crate::record::{RecordView, peek_record_offset};

/// A batch of records checked once, on arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedBatch {
    /// The topic.
    topic: String,
    /// Offset of the first record.
    first_offset: u64,
    /// The sender's log end when it sent the batch.
    end_offset: u64,
    /// ROOT's timestamp of the last record.
    last_timestamp_ms: u64,
    /// The records laid end to end.
    records: Bytes,
    /// The size of each record, in order: where one ends and the next starts, without reading them.
    record_lens: Vec<u32>,
}

impl CheckedBatch {
    /// Checks every record of `batch` (length, CRC, fields) and that their offsets run from `first_offset`
    /// to `last_offset` without a gap. This is the one pass over the record bytes a receiver pays.
    pub fn check(batch: Batch) -> Result<CheckedBatch, WireError> {
        let Batch { topic, first_offset, last_offset, end_offset, records } = batch;
        let (record_lens, last_timestamp_ms) = check_records(first_offset, &records)?;
        let actual = first_offset + record_lens.len() as u64 - 1;
        if actual != last_offset {
            return Err(WireError::BatchEnd { claimed: last_offset, actual });
        }
        Ok(CheckedBatch { topic, first_offset, end_offset, last_timestamp_ms, records, record_lens })
    }

    /// Checks records that did not come in a BATCH frame (an HTTP fetch, a test): the first record's offset
    /// starts the run, and the sender's log end is taken to be just past the last record.
    pub fn from_records(topic: impl Into<String>, records: Bytes) -> Result<CheckedBatch, WireError> {
        let CheckedRun { first_offset, record_lens, last_timestamp_ms } = check_run(&records)?;
        let end_offset = first_offset + record_lens.len() as u64;
        Ok(CheckedBatch {
            topic: topic.into(),
            first_offset,
            end_offset,
            last_timestamp_ms,
            records,
            record_lens,
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Offset of the first record.
    pub fn first_offset(&self) -> u64 {
        self.first_offset
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> u64 {
        self.first_offset + self.record_lens.len() as u64 - 1
    }

    /// One past the last record.
    pub fn next_offset(&self) -> u64 {
        self.first_offset + self.record_lens.len() as u64
    }

    /// The sender's log end when it sent the batch.
    pub fn end_offset(&self) -> u64 {
        self.end_offset
    }

    /// ROOT's timestamp of the last record.
    pub fn last_timestamp_ms(&self) -> u64 {
        self.last_timestamp_ms
    }

    /// The number of records.
    pub fn n_records(&self) -> u64 {
        self.record_lens.len() as u64
    }

    /// The records laid end to end, exactly as received.
    pub fn records(&self) -> &Bytes {
        &self.records
    }

    /// The size of each record, in order.
    pub fn record_lens(&self) -> &[u32] {
        &self.record_lens
    }

    /// The records from offset `from` on (all of them if `from` is below the first), as bytes and sizes;
    /// what is left of the batch once a receiver drops the records it already holds.
    pub fn from_offset(&self, from: u64) -> (&[u8], &[u32]) {
        let skip = from.saturating_sub(self.first_offset).min(self.n_records()) as usize;
        let skipped: usize = self.record_lens[..skip].iter().map(|len| *len as usize).sum();
        (&self.records[skipped..], &self.record_lens[skip..])
    }

    /// The records, without checking them again.
    pub fn iter(&self) -> CheckedRecords<'_> {
        CheckedRecords { rest: &self.records, lens: self.record_lens.iter() }
    }
}

/// What one pass over records laid end to end proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedRun {
    /// Offset of the first record.
    pub first_offset: u64,
    /// The size of each record, in order.
    pub record_lens: Vec<u32>,
    /// ROOT's timestamp of the last record.
    pub last_timestamp_ms: u64,
}

/// Checks records laid end to end that did not come in a BATCH frame (the first record's offset starts the
/// run): the same one pass as [`CheckedBatch::check`], for a caller that keeps the bytes itself.
pub fn check_run(records: &[u8]) -> Result<CheckedRun, WireError> {
    let first_offset = match peek_record_offset(records) {
        Some(offset) => offset,
        None if records.is_empty() => return Err(WireError::EmptyBatch),
        None => return Err(WireError::TruncatedBatch { remaining: records.len() }),
    };
    let (record_lens, last_timestamp_ms) = check_records(first_offset, records)?;
    Ok(CheckedRun { first_offset, record_lens, last_timestamp_ms })
}

/// The one pass: every record's length, CRC and fields, and offsets running on from `first_offset`. Answers
/// each record's size and the last record's timestamp.
pub(crate) fn check_records(first_offset: u64, records: &[u8]) -> Result<(Vec<u32>, u64), WireError> {
    let mut record_lens = Vec::with_capacity(records.len() / 256 + 1);
    let mut rest = records;
    let mut expected = first_offset;
    let mut last_timestamp_ms = 0;
    while !rest.is_empty() {
        let Some((view, len)) = RecordView::decode(rest)? else {
            return Err(WireError::TruncatedBatch { remaining: rest.len() });
        };
        if view.offset() != expected {
            return Err(WireError::OffsetGap { expected, found: view.offset() });
        }
        last_timestamp_ms = view.timestamp_ms();
        record_lens.push(len as u32);
        expected += 1;
        rest = &rest[len..];
    }
    if record_lens.is_empty() {
        return Err(WireError::EmptyBatch);
    }
    Ok((record_lens, last_timestamp_ms))
}

/// The records of a [`CheckedBatch`], in order; nothing is checked again.
#[derive(Debug, Clone)]
pub struct CheckedRecords<'a> {
    /// The bytes not yet yielded.
    rest: &'a [u8],
    /// The sizes of the records not yet yielded.
    lens: std::slice::Iter<'a, u32>,
}

impl<'a> Iterator for CheckedRecords<'a> {
    type Item = RecordView<'a>;

    fn next(&mut self) -> Option<RecordView<'a>> {
        let len = *self.lens.next()? as usize;
        let (record, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(RecordView::trusted(record))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.lens.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::NewRecord;

    fn batch(first: u64, n: u64) -> Batch {
        let mut records = Vec::new();
        for offset in first..first + n {
            NewRecord::new(b"key", format!("value {offset}").as_bytes()).encode_to_vec(
                offset,
                5,
                &mut records,
            );
        }
        Batch {
            topic: "t".to_string(),
            first_offset: first,
            last_offset: first + n - 1,
            end_offset: first + n,
            records: Bytes::from(records),
        }
    }

    #[test]
    fn a_sound_batch_is_checked_once_and_walked_by_its_sizes() {
        let checked = CheckedBatch::check(batch(10, 3)).unwrap();
        assert_eq!((checked.first_offset(), checked.last_offset(), checked.n_records()), (10, 12, 3));
        let offsets: Vec<u64> = checked.iter().map(|record| record.offset()).collect();
        assert_eq!(offsets, [10, 11, 12]);
        let (rest, lens) = checked.from_offset(12);
        assert_eq!(lens.len(), 1);
        assert_eq!(RecordView::decode(rest).unwrap().unwrap().0.value(), b"value 12");
        assert_eq!(checked.from_offset(99).1.len(), 0);
        assert_eq!(checked.from_offset(0).1.len(), 3);
    }

    #[test]
    fn every_flaw_is_refused() {
        let mut flipped = batch(10, 3);
        let mut bytes = flipped.records.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        flipped.records = Bytes::from(bytes);
        assert!(matches!(CheckedBatch::check(flipped), Err(WireError::RecordCrc { offset: 12, .. })));

        let mut wrong_first = batch(10, 3);
        wrong_first.first_offset = 9;
        assert!(matches!(
            CheckedBatch::check(wrong_first),
            Err(WireError::OffsetGap { expected: 9, found: 10 })
        ));

        let mut wrong_last = batch(10, 3);
        wrong_last.last_offset = 13;
        assert!(matches!(
            CheckedBatch::check(wrong_last),
            Err(WireError::BatchEnd { claimed: 13, actual: 12 })
        ));

        let mut truncated = batch(10, 3);
        truncated.records = truncated.records.slice(..truncated.records.len() - 1);
        assert!(matches!(CheckedBatch::check(truncated), Err(WireError::TruncatedBatch { .. })));

        let mut empty = batch(10, 1);
        empty.records = Bytes::new();
        assert!(matches!(CheckedBatch::check(empty), Err(WireError::EmptyBatch)));
    }
}
