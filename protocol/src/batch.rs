//! A BATCH whose records have been proven: every record's length, CRC and fields checked, offsets rising
//! within the range the frame states, from its `first_offset` to its `last_offset` (the last record's
//! offset). A compacted range has gaps: the sender vouches that it holds no record at an offset the batch
//! skips. A [`CheckedBatch`] can only be built by that one
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
    /// The first offset the batch covers: its first record's, or below it where the range starts with a gap.
    first_offset: u64,
    /// Offset of the last record: the last offset the batch covers.
    last_offset: u64,
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
    /// Checks every record of `batch` (length, CRC, fields) and that their offsets rise from `first_offset`
    /// (or above: a gap the sender vouches for) and end exactly at `last_offset`. This is the one pass over
    /// the record bytes a receiver pays.
    pub fn check(batch: Batch) -> Result<CheckedBatch, WireError> {
        let Batch { topic, first_offset, last_offset, end_offset, records } = batch;
        let checked = check_records(first_offset, &records)?;
        if checked.last_offset != last_offset {
            return Err(WireError::BatchEnd { claimed: last_offset, actual: checked.last_offset });
        }
        Ok(CheckedBatch {
            topic,
            first_offset,
            last_offset,
            end_offset,
            last_timestamp_ms: checked.last_timestamp_ms,
            records,
            record_lens: checked.record_lens,
        })
    }

    /// Checks records that did not come in a BATCH frame (an HTTP fetch, a test): the first record's offset
    /// starts the run, and the sender's log end is taken to be just past the last record.
    pub fn from_records(topic: impl Into<String>, records: Bytes) -> Result<CheckedBatch, WireError> {
        let CheckedRun { first_offset, last_offset, record_lens, last_timestamp_ms } = check_run(&records)?;
        Ok(CheckedBatch {
            topic: topic.into(),
            first_offset,
            last_offset,
            end_offset: last_offset + 1,
            last_timestamp_ms,
            records,
            record_lens,
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The first offset the batch covers (its first record's, unless the range starts with a gap).
    pub fn first_offset(&self) -> u64 {
        self.first_offset
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> u64 {
        self.last_offset
    }

    /// One past the last record: where the next batch's range starts.
    pub fn next_offset(&self) -> u64 {
        self.last_offset + 1
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
        skip_below(&self.records, &self.record_lens, from)
    }

    /// The records, without checking them again.
    pub fn iter(&self) -> CheckedRecords<'_> {
        CheckedRecords { rest: &self.records, lens: self.record_lens.iter() }
    }
}

/// The records of proven `bytes` (of the sizes `lens`) from offset `from` on: the ones below it dropped,
/// found by reading each skipped record's offset field (offsets rise, possibly with gaps).
pub fn skip_below<'a>(bytes: &'a [u8], lens: &'a [u32], from: u64) -> (&'a [u8], &'a [u32]) {
    let mut skipped = 0usize;
    let mut skip = 0usize;
    for len in lens {
        match peek_record_offset(&bytes[skipped..]) {
            Some(offset) if offset < from => {
                skipped += *len as usize;
                skip += 1;
            }
            _ => break,
        }
    }
    (&bytes[skipped..], &lens[skip..])
}

/// What one pass over records laid end to end proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedRun {
    /// Offset of the first record.
    pub first_offset: u64,
    /// Offset of the last record.
    pub last_offset: u64,
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
    let checked = check_records(first_offset, records)?;
    Ok(CheckedRun {
        first_offset,
        last_offset: checked.last_offset,
        record_lens: checked.record_lens,
        last_timestamp_ms: checked.last_timestamp_ms,
    })
}

/// What [`check_records`] proved.
#[derive(Debug)]
pub(crate) struct Checked {
    /// The size of each record, in order.
    pub(crate) record_lens: Vec<u32>,
    /// Offset of the last record.
    pub(crate) last_offset: u64,
    /// The last record's timestamp.
    pub(crate) last_timestamp_ms: u64,
}

/// The one pass: every record's length, CRC and fields, and offsets rising from `first_offset` on (a gap
/// between two records is a range compaction emptied). Answers each record's size and the last record's
/// offset and timestamp.
pub(crate) fn check_records(first_offset: u64, records: &[u8]) -> Result<Checked, WireError> {
    let mut record_lens = Vec::with_capacity(records.len() / 256 + 1);
    let mut rest = records;
    let mut expected = first_offset;
    let mut last_timestamp_ms = 0;
    while !rest.is_empty() {
        let Some((view, len)) = RecordView::decode(rest)? else {
            return Err(WireError::TruncatedBatch { remaining: rest.len() });
        };
        if view.offset() < expected {
            return Err(WireError::OffsetBackwards { expected, found: view.offset() });
        }
        last_timestamp_ms = view.timestamp_ms();
        record_lens.push(len as u32);
        expected = view.offset() + 1;
        rest = &rest[len..];
    }
    if record_lens.is_empty() {
        return Err(WireError::EmptyBatch);
    }
    Ok(Checked { record_lens, last_offset: expected - 1, last_timestamp_ms })
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
    fn a_compacted_range_has_gaps_the_batch_vouches_for() {
        let mut records = Vec::new();
        for offset in [12u64, 15, 16, 20] {
            NewRecord::new(b"key", b"v").encode_to_vec(offset, 5, &mut records);
        }
        let gappy = Batch {
            topic: "t".to_string(),
            first_offset: 10,
            last_offset: 20,
            end_offset: 30,
            records: Bytes::from(records.clone()),
        };
        let checked = CheckedBatch::check(gappy.clone()).unwrap();
        assert_eq!((checked.first_offset(), checked.next_offset(), checked.n_records()), (10, 21, 4));
        assert_eq!(checked.from_offset(13).1.len(), 3);
        assert_eq!(checked.from_offset(16).1.len(), 2);
        assert_eq!(checked.from_offset(21).1.len(), 0);
        let mut short = gappy.clone();
        short.last_offset = 22;
        assert!(matches!(CheckedBatch::check(short), Err(WireError::BatchEnd { claimed: 22, actual: 20 })));
        let mut backwards = Vec::new();
        for offset in [12u64, 11] {
            NewRecord::new(b"key", b"v").encode_to_vec(offset, 5, &mut backwards);
        }
        let backwards = Batch { records: Bytes::from(backwards), last_offset: 11, ..gappy };
        assert!(matches!(
            CheckedBatch::check(backwards),
            Err(WireError::OffsetBackwards { expected: 13, found: 11 })
        ));
    }

    #[test]
    fn every_flaw_is_refused() {
        let mut flipped = batch(10, 3);
        let mut bytes = flipped.records.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        flipped.records = Bytes::from(bytes);
        assert!(matches!(CheckedBatch::check(flipped), Err(WireError::RecordCrc { offset: 12, .. })));

        let mut above_first = batch(10, 3);
        above_first.first_offset = 11;
        assert!(matches!(
            CheckedBatch::check(above_first),
            Err(WireError::OffsetBackwards { expected: 11, found: 10 })
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
