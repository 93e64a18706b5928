//! The record: one message exactly as it sits in a segment file, crosses the pipe and reaches a consumer.
//!
//! A batch of records is nothing more than records laid end to end, so a relay moves a byte range from
//! its parent's segment into its own without decoding or re-encoding anything but the fixed header it
//! checks. This module owns the layout, encoding into a caller's buffer, and checked decoding. It does
//! no I/O and allocates only in the `Vec`-based convenience encoder.

use crate::error::WireError;

/// The layout of one record. All integers are little-endian.
///
/// ```text
/// byte 0        4        8            16               24       25           27               29
///      [len:4  ][crc:4  ][offset:8    ][timestamp_ms:8  ][attrs:1][key_len:2   ][headers_len:2  ][key][headers][value]
/// ```
///
/// - `len` counts every byte after the `len` field itself, so a record occupies `4 + len` bytes. A `len`
///   of zero never occurs in a record; in a preallocated segment file it marks the end of the written data.
/// - `crc` is CRC-32 (IEEE, as computed by `crc32fast`) over every byte after the `crc` field.
/// - `offset` is assigned by ROOT and never changes; `timestamp_ms` is ROOT's wall clock in milliseconds
///   since the Unix epoch.
/// - `attrs` bit 0 marks a tombstone (a deleted key); bits 1..=2 name a compression codec (0 = none, the
///   only one defined so far); the other bits are reserved and must be zero.
/// - `headers` is a sequence of `[name_len:2][name][value_len:2][value]` entries filling `headers_len` bytes.
pub const RECORD_HEADER_LEN: usize = 29;

/// Size of the `len` field that starts every record.
pub const LEN_FIELD_LEN: usize = 4;

/// Position of the `crc` field.
const CRC_AT: usize = 4;
/// Position of the `offset` field; the CRC covers everything from here on.
const OFFSET_AT: usize = 8;
/// Position of the `timestamp_ms` field.
const TIMESTAMP_AT: usize = 16;
/// Position of the `attrs` field.
const ATTRS_AT: usize = 24;
/// Position of the `key_len` field.
const KEY_LEN_AT: usize = 25;
/// Position of the `headers_len` field.
const HEADERS_LEN_AT: usize = 27;

/// The largest record, header included, that any part of the system accepts (16 MiB).
pub const MAX_RECORD_LEN: usize = 16 * 1024 * 1024;

/// Attribute bit: the record is a tombstone for its key.
pub const ATTR_TOMBSTONE: u8 = 0b0000_0001;
/// Attribute bits that name the compression codec of the value.
pub const ATTR_COMPRESSION_MASK: u8 = 0b0000_0110;
/// Attribute bits that are not defined yet and must be zero.
pub const ATTR_RESERVED_MASK: u8 = !(ATTR_TOMBSTONE | ATTR_COMPRESSION_MASK);

/// The parts of a record that its producer chooses; offset and timestamp are assigned on append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewRecord<'a> {
    /// Key bytes; may be empty. At most `u16::MAX` bytes.
    pub key: &'a [u8],
    /// Headers already encoded with [`encode_headers`]; may be empty. At most `u16::MAX` bytes.
    pub headers: &'a [u8],
    /// Value bytes; may be empty.
    pub value: &'a [u8],
    /// Attribute bits (see [`ATTR_TOMBSTONE`]).
    pub attributes: u8,
}

impl<'a> NewRecord<'a> {
    /// A record with a key and a value, no headers and no attributes.
    pub fn new(key: &'a [u8], value: &'a [u8]) -> Self {
        NewRecord { key, headers: &[], value, attributes: 0 }
    }

    /// The number of bytes this record takes once encoded.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_LEN + self.key.len() + self.headers.len() + self.value.len()
    }

    /// Checks the limits that encoding relies on, so that an append can refuse a record before writing it.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.key.len() > u16::MAX as usize {
            return Err(WireError::KeyTooLong { len: self.key.len() });
        }
        if self.headers.len() > u16::MAX as usize {
            return Err(WireError::HeadersTooLong { len: self.headers.len() });
        }
        if self.attributes & ATTR_RESERVED_MASK != 0 {
            return Err(WireError::ReservedAttributes { attributes: self.attributes });
        }
        let len = self.encoded_len();
        if len > MAX_RECORD_LEN {
            return Err(WireError::RecordTooLarge { len, max: MAX_RECORD_LEN });
        }
        Ok(())
    }

    /// Writes the record with the given offset and timestamp at the start of `dst` and returns the number of
    /// bytes written. `dst` must be at least [`NewRecord::encoded_len`] long and the record must have passed
    /// [`NewRecord::validate`]; both are the caller's contract, checked here only by debug assertions and
    /// slice bounds.
    pub fn encode_into(&self, offset: u64, timestamp_ms: u64, dst: &mut [u8]) -> usize {
        debug_assert!(self.validate().is_ok());
        let total = self.encoded_len();
        let dst = &mut dst[..total];
        dst[..LEN_FIELD_LEN].copy_from_slice(&((total - LEN_FIELD_LEN) as u32).to_le_bytes());
        dst[OFFSET_AT..TIMESTAMP_AT].copy_from_slice(&offset.to_le_bytes());
        dst[TIMESTAMP_AT..ATTRS_AT].copy_from_slice(&timestamp_ms.to_le_bytes());
        dst[ATTRS_AT] = self.attributes;
        dst[KEY_LEN_AT..HEADERS_LEN_AT].copy_from_slice(&(self.key.len() as u16).to_le_bytes());
        dst[HEADERS_LEN_AT..RECORD_HEADER_LEN].copy_from_slice(&(self.headers.len() as u16).to_le_bytes());
        let key_end = RECORD_HEADER_LEN + self.key.len();
        let headers_end = key_end + self.headers.len();
        dst[RECORD_HEADER_LEN..key_end].copy_from_slice(self.key);
        dst[key_end..headers_end].copy_from_slice(self.headers);
        dst[headers_end..].copy_from_slice(self.value);
        let crc = crc32fast::hash(&dst[OFFSET_AT..]);
        dst[CRC_AT..OFFSET_AT].copy_from_slice(&crc.to_le_bytes());
        total
    }

    /// Appends the encoded record to `out`; a convenience for tests and tools.
    pub fn encode_to_vec(&self, offset: u64, timestamp_ms: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + self.encoded_len(), 0);
        self.encode_into(offset, timestamp_ms, &mut out[start..]);
    }
}

/// A checked, borrowed view of one encoded record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The whole record, `len` field included.
    bytes: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// Decodes the record at the start of `buf`, checking its length and CRC.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a record (or is empty), and `Ok(Some((view, n)))` with
    /// the record's total size `n` otherwise. A `len` field of zero is [`WireError::ZeroLength`], which a
    /// segment scan treats as the end of the written data.
    pub fn decode(buf: &'a [u8]) -> Result<Option<(RecordView<'a>, usize)>, WireError> {
        let Some(total) = peek_record_len(buf)? else {
            return Ok(None);
        };
        if buf.len() < total {
            return Ok(None);
        }
        let bytes = &buf[..total];
        let stored = read_u32(bytes, CRC_AT);
        let actual = crc32fast::hash(&bytes[OFFSET_AT..]);
        if stored != actual {
            return Err(WireError::RecordCrc { offset: read_u64(bytes, OFFSET_AT), stored, actual });
        }
        let view = RecordView { bytes };
        let key_len = read_u16(bytes, KEY_LEN_AT) as usize;
        let headers_len = read_u16(bytes, HEADERS_LEN_AT) as usize;
        if RECORD_HEADER_LEN + key_len + headers_len > total {
            return Err(WireError::RecordFields { offset: view.offset() });
        }
        if view.attributes() & ATTR_RESERVED_MASK != 0 {
            return Err(WireError::ReservedAttributes { attributes: view.attributes() });
        }
        Ok(Some((view, total)))
    }

    /// A view of a record proven earlier (by [`crate::CheckedBatch::check`], or by storage when it was
    /// written or checked), without checking it again.
    /// `bytes` must be exactly one record that passed [`RecordView::decode`]; anything else gives wrong
    /// field values or a panic on slicing, never unsafety.
    pub fn trusted(bytes: &'a [u8]) -> RecordView<'a> {
        RecordView { bytes }
    }

    /// The whole record as stored, `len` field included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The record's offset, assigned by ROOT.
    pub fn offset(&self) -> u64 {
        read_u64(self.bytes, OFFSET_AT)
    }

    /// ROOT's timestamp for the record, in milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> u64 {
        read_u64(self.bytes, TIMESTAMP_AT)
    }

    /// The attribute bits.
    pub fn attributes(&self) -> u8 {
        self.bytes[ATTRS_AT]
    }

    /// Whether the record is a tombstone for its key.
    pub fn is_tombstone(&self) -> bool {
        self.attributes() & ATTR_TOMBSTONE != 0
    }

    /// The key bytes (possibly empty).
    pub fn key(&self) -> &'a [u8] {
        let key_len = read_u16(self.bytes, KEY_LEN_AT) as usize;
        &self.bytes[RECORD_HEADER_LEN..RECORD_HEADER_LEN + key_len]
    }

    /// The encoded headers; iterate them with [`HeaderIter`].
    pub fn headers(&self) -> HeaderIter<'a> {
        let key_end = RECORD_HEADER_LEN + read_u16(self.bytes, KEY_LEN_AT) as usize;
        let headers_len = read_u16(self.bytes, HEADERS_LEN_AT) as usize;
        HeaderIter { rest: &self.bytes[key_end..key_end + headers_len] }
    }

    /// The value bytes (possibly empty).
    pub fn value(&self) -> &'a [u8] {
        let key_len = read_u16(self.bytes, KEY_LEN_AT) as usize;
        let headers_len = read_u16(self.bytes, HEADERS_LEN_AT) as usize;
        &self.bytes[RECORD_HEADER_LEN + key_len + headers_len..]
    }
}

/// Reads the total size (`4 + len`) of the record starting `buf` without checking its CRC.
///
/// Returns `Ok(None)` if fewer than four bytes are present. Used by scans that only need to step from
/// record to record, such as building a sparse index.
pub fn peek_record_len(buf: &[u8]) -> Result<Option<usize>, WireError> {
    if buf.len() < LEN_FIELD_LEN {
        return Ok(None);
    }
    let len = read_u32(buf, 0) as usize;
    if len == 0 {
        return Err(WireError::ZeroLength);
    }
    let total = len + LEN_FIELD_LEN;
    if total < RECORD_HEADER_LEN {
        return Err(WireError::RecordTooShort { len: total });
    }
    if total > MAX_RECORD_LEN {
        return Err(WireError::RecordTooLarge { len: total, max: MAX_RECORD_LEN });
    }
    Ok(Some(total))
}

/// Reads the offset of the record starting `buf`, if its fixed header is present. Does not check the CRC.
pub fn peek_record_offset(buf: &[u8]) -> Option<u64> {
    (buf.len() >= RECORD_HEADER_LEN).then(|| read_u64(buf, OFFSET_AT))
}

/// Reads the timestamp of the record starting `buf`, if its fixed header is present. Does not check the CRC.
pub fn peek_record_timestamp(buf: &[u8]) -> Option<u64> {
    (buf.len() >= RECORD_HEADER_LEN).then(|| read_u64(buf, TIMESTAMP_AT))
}

/// Iterates over the records of a batch (records laid end to end), checking each one.
///
/// A batch that ends in the middle of a record yields [`WireError::TruncatedBatch`] as its last item.
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    /// The bytes not yet yielded.
    rest: &'a [u8],
    /// Set after an error so the iterator ends.
    failed: bool,
}

impl<'a> RecordIter<'a> {
    /// Iterates over `batch`.
    pub fn new(batch: &'a [u8]) -> Self {
        RecordIter { rest: batch, failed: false }
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordView<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match RecordView::decode(self.rest) {
            Ok(Some((view, n))) => {
                self.rest = &self.rest[n..];
                Some(Ok(view))
            }
            Ok(None) => {
                self.failed = true;
                Some(Err(WireError::TruncatedBatch { remaining: self.rest.len() }))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

/// What a checked batch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSummary {
    /// Number of records.
    pub n_records: u64,
    /// Offset of the first record.
    pub first_offset: u64,
    /// Offset of the last record.
    pub last_offset: u64,
    /// Timestamp of the last record.
    pub last_timestamp_ms: u64,
}

/// Checks every record of a non-empty batch (length, CRC, fields) and that offsets rise from
/// `expected_first` on (gaps allowed: a compacted range). This is what a relay runs on bytes from its
/// parent before appending them verbatim.
pub fn check_batch(batch: &[u8], expected_first: u64) -> Result<BatchSummary, WireError> {
    let checked = crate::batch::check_records(expected_first, batch)?;
    Ok(BatchSummary {
        n_records: checked.record_lens.len() as u64,
        first_offset: peek_record_offset(batch).unwrap_or(expected_first),
        last_offset: checked.last_offset,
        last_timestamp_ms: checked.last_timestamp_ms,
    })
}

/// Encodes headers as `[name_len:2][name][value_len:2][value]` entries for [`NewRecord::headers`].
pub fn encode_headers<'h>(
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    for (name, value) in headers {
        if name.len() > u16::MAX as usize || value.len() > u16::MAX as usize {
            return Err(WireError::HeadersTooLong { len: name.len().max(value.len()) });
        }
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
    }
    if out.len() > u16::MAX as usize {
        return Err(WireError::HeadersTooLong { len: out.len() });
    }
    Ok(out)
}

/// Checks that header bytes parse as `[name_len:2][name][value_len:2][value]` entries filling them exactly.
pub(crate) fn check_headers(headers: &[u8]) -> Result<(), WireError> {
    HeaderIter { rest: headers }.try_for_each(|entry| entry.map(|_| ()))
}

/// Iterates over a record's headers as `(name, value)` pairs. Malformed header bytes (which a record's CRC
/// makes possible only if its producer wrote them so) end the iteration with an error item.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    /// The header bytes not yet yielded.
    rest: &'a [u8],
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let parsed = split_len16(self.rest).and_then(|(name, rest)| {
            let (value, rest) = split_len16(rest)?;
            Some((name, value, rest))
        });
        match parsed {
            Some((name, value, rest)) => {
                self.rest = rest;
                Some(Ok((name, value)))
            }
            None => {
                self.rest = &[];
                Some(Err(WireError::MalformedHeaders))
            }
        }
    }
}

/// Splits a `[len:2][bytes]` field off the front of `buf`.
fn split_len16(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u16::from_le_bytes(buf.get(..2)?.try_into().ok()?) as usize;
    let field = buf.get(2..2 + len)?;
    Some((field, &buf[2 + len..]))
}

fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([buf[at], buf[at + 1]])
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let headers = encode_headers([("source", &b"test"[..])]).unwrap();
        let record = NewRecord { key: b"AAPL", headers: &headers, value: b"{\"price\":1}", attributes: 0 };
        let mut out = Vec::new();
        record.encode_to_vec(7, 1_700_000_000_000, &mut out);
        out
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let (view, n) = RecordView::decode(&bytes).unwrap().unwrap();
        assert_eq!(n, bytes.len());
        assert_eq!(view.offset(), 7);
        assert_eq!(view.timestamp_ms(), 1_700_000_000_000);
        assert_eq!(view.key(), b"AAPL");
        assert_eq!(view.value(), b"{\"price\":1}");
        let headers: Vec<_> = view.headers().collect::<Result<_, _>>().unwrap();
        assert_eq!(headers, vec![(&b"source"[..], &b"test"[..])]);
        assert!(!view.is_tombstone());
    }

    #[test]
    fn golden_bytes() {
        let mut out = Vec::new();
        NewRecord::new(b"k", b"v").encode_to_vec(1, 2, &mut out);
        let mut expected = vec![
            27, 0, 0, 0, // len = 31 - 4
            0, 0, 0, 0, // crc, filled in below
            1, 0, 0, 0, 0, 0, 0, 0, // offset
            2, 0, 0, 0, 0, 0, 0, 0, // timestamp_ms
            0, // attrs
            1, 0, // key_len
            0, 0, // headers_len
            b'k', b'v',
        ];
        let crc = crc32fast::hash(&expected[8..]).to_le_bytes();
        expected[4..8].copy_from_slice(&crc);
        assert_eq!(out, expected);
    }

    #[test]
    fn every_truncation_is_partial() {
        let bytes = sample();
        for n in 0..bytes.len() {
            assert_eq!(RecordView::decode(&bytes[..n]).unwrap(), None, "prefix of {n} bytes");
        }
    }

    #[test]
    fn corruption_is_detected() {
        let clean = sample();
        for at in 4..clean.len() {
            let mut bytes = clean.clone();
            bytes[at] ^= 0x40;
            assert!(RecordView::decode(&bytes).is_err(), "flip at byte {at}");
        }
    }

    #[test]
    fn batch_checks_offsets() {
        let mut batch = Vec::new();
        for offset in 10..15 {
            NewRecord::new(b"", b"x").encode_to_vec(offset, 0, &mut batch);
        }
        let summary = check_batch(&batch, 10).unwrap();
        assert_eq!((summary.n_records, summary.first_offset, summary.last_offset), (5, 10, 14));
        assert!(matches!(
            check_batch(&batch, 11),
            Err(WireError::OffsetBackwards { expected: 11, found: 10 })
        ));
        assert_eq!(check_batch(&batch, 9).unwrap().first_offset, 10);
        assert!(matches!(check_batch(&batch[..batch.len() - 1], 10), Err(WireError::TruncatedBatch { .. })));
        assert!(matches!(check_batch(&[], 10), Err(WireError::EmptyBatch)));
    }

    #[test]
    fn limits_are_refused() {
        let key = vec![0u8; 70_000];
        assert!(matches!(NewRecord::new(&key, b"").validate(), Err(WireError::KeyTooLong { .. })));
        let value = vec![0u8; MAX_RECORD_LEN];
        assert!(matches!(NewRecord::new(b"", &value).validate(), Err(WireError::RecordTooLarge { .. })));
        let mut zero = vec![0u8; 40];
        assert!(matches!(RecordView::decode(&zero), Err(WireError::ZeroLength)));
        zero[0] = 3;
        assert!(matches!(RecordView::decode(&zero), Err(WireError::RecordTooShort { .. })));
    }
}
