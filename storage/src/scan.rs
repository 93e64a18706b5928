//! Checking the records of a segment's bytes: the full scan that recovery runs on a segment it cannot
//! trust (every record's CRC and the continuity of offsets), and the short walk that finds the last record
//! of a sealed segment it does trust. Pure functions over byte slices; no I/O.

use protocol::WireError;
use protocol::record::RecordView;

use crate::index::{IndexBuilder, IndexEntry};

/// What a full scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanOutcome {
    /// Bytes of whole, valid, contiguous records from the start.
    pub(crate) valid_len: usize,
    /// The offset after the last valid record (the base offset if there is none).
    pub(crate) next_offset: u64,
    /// Timestamp of the last valid record (zero if there is none).
    pub(crate) last_timestamp_ms: u64,
    /// The sparse index entries of the valid records.
    pub(crate) entries: Vec<IndexEntry>,
    /// Why the scan stopped before the end of the bytes, if it found something other than zeros there.
    pub(crate) problem: Option<String>,
}

/// Scans `bytes` from the start: every record must decode with a good CRC and carry an offset above the
/// record before it, starting at or above `base_offset` (a compacted range skips offsets). The scan stops at the first zero length field (the end of the written data in
/// a preallocated file), at a record cut short, or at the first bad record.
pub(crate) fn scan_records(bytes: &[u8], base_offset: u64, index_interval_bytes: u32) -> ScanOutcome {
    let mut builder = IndexBuilder::new(index_interval_bytes);
    let mut entries = Vec::new();
    let mut position = 0;
    let mut expected = base_offset;
    let mut last_timestamp_ms = 0;
    let mut problem = None;
    while position < bytes.len() {
        let rest = &bytes[position..];
        match RecordView::decode(rest) {
            Ok(Some((view, len))) => {
                if view.offset() < expected {
                    problem = Some(format!(
                        "record at byte {position} has offset {} where {expected} or above was expected",
                        view.offset()
                    ));
                    break;
                }
                if let Some(entry) = builder.observe(view.offset() - base_offset, position) {
                    entries.push(entry);
                }
                last_timestamp_ms = view.timestamp_ms();
                position += len;
                expected = view.offset() + 1;
            }
            Ok(None) => {
                problem = Some(format!("record at byte {position} is cut short ({} bytes left)", rest.len()));
                break;
            }
            Err(WireError::ZeroLength) => {
                if let Some(at) = rest.iter().position(|&byte| byte != 0) {
                    problem = Some(format!(
                        "non-zero bytes at byte {} after the end of the records",
                        position + at
                    ));
                }
                break;
            }
            Err(error) => {
                problem = Some(format!("record at byte {position} is bad: {error}"));
                break;
            }
        }
    }
    ScanOutcome { valid_len: position, next_offset: expected, last_timestamp_ms, entries, problem }
}

/// The last record of a sealed segment found by walking from a known record to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tail {
    /// Offset of the last record.
    pub(crate) last_offset: u64,
    /// Timestamp of the last record.
    pub(crate) last_timestamp_ms: u64,
}

/// Walks from the record at `position`, which must have offset `offset`, to the end of `bytes`, checking
/// each record. Returns `None` unless the walk ends exactly at the end of `bytes` with rising offsets.
pub(crate) fn walk_to_end(bytes: &[u8], position: usize, offset: u64) -> Option<Tail> {
    let mut position = position;
    let mut expected = offset;
    let mut tail = None;
    while position < bytes.len() {
        let (view, len) = RecordView::decode(&bytes[position..]).ok()??;
        let first = tail.is_none();
        if (first && view.offset() != offset) || view.offset() < expected {
            return None;
        }
        tail = Some(Tail { last_offset: view.offset(), last_timestamp_ms: view.timestamp_ms() });
        position += len;
        expected = view.offset() + 1;
    }
    tail
}

#[cfg(test)]
mod tests {
    use protocol::NewRecord;

    use super::*;

    fn records(base: u64, n: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        for offset in base..base + n {
            NewRecord::new(b"k", &[1u8; 50]).encode_to_vec(offset, offset * 10, &mut bytes);
        }
        bytes
    }

    #[test]
    fn clean_segment_with_zero_tail() {
        let mut bytes = records(100, 20);
        let len = bytes.len();
        bytes.resize(len + 4096, 0);
        let outcome = scan_records(&bytes, 100, 256);
        assert_eq!((outcome.valid_len, outcome.next_offset, outcome.last_timestamp_ms), (len, 120, 1190));
        assert_eq!(outcome.problem, None);
        assert!(!outcome.entries.is_empty());
        assert_eq!(
            walk_to_end(&bytes[..len], 0, 100),
            Some(Tail { last_offset: 119, last_timestamp_ms: 1190 })
        );
    }

    #[test]
    fn torn_and_corrupt_tails_are_cut() {
        let bytes = records(0, 10);
        let record_len = bytes.len() / 10;
        let cut = &bytes[..bytes.len() - 3];
        let outcome = scan_records(cut, 0, 4096);
        assert_eq!((outcome.valid_len, outcome.next_offset), (9 * record_len, 9));
        assert!(outcome.problem.is_some());

        let mut corrupt = bytes.clone();
        corrupt[5 * record_len + 40] ^= 1;
        let outcome = scan_records(&corrupt, 0, 4096);
        assert_eq!((outcome.valid_len, outcome.next_offset), (5 * record_len, 5));
        assert!(outcome.problem.is_some());
        assert_eq!(walk_to_end(&corrupt, 0, 0), None);
    }

    #[test]
    fn offsets_must_rise() {
        // A compacted range skips offsets: accepted.
        let mut bytes = records(0, 3);
        bytes.extend(records(5, 2));
        let outcome = scan_records(&bytes, 0, 4096);
        assert_eq!((outcome.next_offset, outcome.problem), (7, None));
        assert_eq!(walk_to_end(&bytes, 0, 0).unwrap().last_offset, 6);
        assert_eq!(scan_records(&records(7, 1), 0, 4096).next_offset, 8);
        // An offset that does not rise is not.
        let mut bytes = records(0, 3);
        bytes.extend(records(2, 2));
        let outcome = scan_records(&bytes, 0, 4096);
        assert_eq!(outcome.next_offset, 3);
        assert!(outcome.problem.unwrap().contains("offset 2"));
        assert_eq!(scan_records(&records(7, 1), 8, 4096).next_offset, 8);
    }
}
