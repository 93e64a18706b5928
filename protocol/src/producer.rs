//! The producer record layout: a record as a producer sends it to ROOT (in a PUBLISH frame, or as the body
//! of a raw HTTP publish), before ROOT gives it an offset, a timestamp and a CRC. It is the stored layout
//! (`crate::record`) without those three fields, so ROOT turns it into a stored record by copying the
//! producer's bytes behind a header it writes, and nobody pays JSON or base64.
//!
//! This module owns the layout, its one check ([`ProducerRecords::check`], which proves every record on
//! arrival so that nothing later parses it again) and its encoder. It does not know frames (PUBLISH is in
//! `frame.rs`) or how records are stored.

use bytes::Bytes;

use crate::error::WireError;
use crate::record::{ATTR_TOMBSTONE, NewRecord, check_headers};

/// The layout of one producer record. All integers are little-endian.
///
/// ```text
/// byte 0        4         5            7                9
///      [len:4  ][attrs:1 ][key_len:2  ][headers_len:2  ][key][headers][value]
/// ```
///
/// - `len` counts every byte after the `len` field itself, so a producer record occupies `4 + len` bytes
///   and `len` is at least 5.
/// - `attrs`, `key` and `headers` are exactly as in a stored record (`crate::record`): bit 0 tombstone,
///   bits 1-2 compression (0 = none), other bits reserved and zero; headers are
///   `[name_len:2][name][value_len:2][value]` entries filling `headers_len` bytes.
/// - `value` is the rest of the record: `len - 5 - key_len - headers_len` bytes.
/// - A tombstone (attribute bit 0) deletes its key: it has a key and no value, as over JSON.
/// - Once stored, the record is [`PRODUCER_TO_STORED_LEN`] bytes longer (CRC, offset, timestamp), and the
///   stored record must fit in `crate::record::MAX_RECORD_LEN`.
///
/// Records are laid end to end with nothing between them.
pub const PRODUCER_RECORD_HEADER_LEN: usize = 9;

/// How many bytes a record grows by when stored: the `crc`, `offset` and `timestamp_ms` fields.
pub const PRODUCER_TO_STORED_LEN: usize = 4 + 8 + 8;

/// Position of the `attrs` field.
const ATTRS_AT: usize = 4;
/// Position of the `key_len` field.
const KEY_LEN_AT: usize = 5;
/// Position of the `headers_len` field.
const HEADERS_LEN_AT: usize = 7;

/// Records in the producer layout, laid end to end, every one of them proven: its layout parses, its
/// attributes use no reserved bit, its headers parse, a tombstone has a key and no value and, once stored,
/// it fits the record size limit. Only
/// [`ProducerRecords::check`] and [`ProducerRecords::encode`] build one, so whoever holds one (storage's
/// ROOT append, through [`ProducerRecords::iter`]) reads the records without checking them again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecords {
    /// The records.
    bytes: Bytes,
    /// How many records `bytes` holds.
    n_records: u32,
}

impl ProducerRecords {
    /// Proves `bytes` as producer records laid end to end. An empty `bytes` holds no records; whether that
    /// is acceptable is the caller's decision. The error names the first bad record by its index.
    pub fn check(bytes: Bytes) -> Result<ProducerRecords, WireError> {
        let n_records = count_records(&bytes)?;
        Ok(ProducerRecords { bytes, n_records })
    }

    /// Encodes `records` in the producer layout, refusing what [`ProducerRecords::check`] would refuse
    /// (a key or headers too long, reserved attribute bits, malformed headers, a tombstone without a key or
    /// with a value, a record over the limit).
    pub fn encode(records: &[NewRecord<'_>]) -> Result<ProducerRecords, WireError> {
        let n_records = u32::try_from(records.len()).map_err(|_| WireError::RecordLayout {
            reason: format!("{} records; at most {} fit in one batch", records.len(), u32::MAX),
        })?;
        let size: usize = records.iter().map(|record| PRODUCER_RECORD_HEADER_LEN + payload_len(record)).sum();
        let mut bytes = Vec::with_capacity(size);
        for (index, record) in records.iter().enumerate() {
            encode_record(record, &mut bytes).map_err(|source| bad_record(index, source))?;
        }
        Ok(ProducerRecords { bytes: Bytes::from(bytes), n_records })
    }

    /// Records proven by [`count_records`] (the frame decoder checks them where they lie in its buffer,
    /// and then shares the bytes), without checking them again.
    pub(crate) fn trusted(bytes: Bytes, n_records: u32) -> ProducerRecords {
        ProducerRecords { bytes, n_records }
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.n_records as usize
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.n_records == 0
    }

    /// The records in the producer layout, as sent.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// How many bytes the records take once stored.
    pub fn stored_len(&self) -> u64 {
        self.bytes.len() as u64 + self.n_records as u64 * PRODUCER_TO_STORED_LEN as u64
    }

    /// The records, borrowed, ready for a ROOT append.
    pub fn iter(&self) -> ProducerRecordIter<'_> {
        ProducerRecordIter { rest: &self.bytes }
    }
}

/// Iterates over proven producer records as [`NewRecord`]s borrowing their bytes.
#[derive(Debug, Clone)]
pub struct ProducerRecordIter<'a> {
    /// The records not yet yielded.
    rest: &'a [u8],
}

impl<'a> Iterator for ProducerRecordIter<'a> {
    type Item = NewRecord<'a>;

    fn next(&mut self) -> Option<NewRecord<'a>> {
        // The bytes were proven, so `parse` cannot fail here; if it did, the iteration would simply end.
        let (record, total) = parse(self.rest).ok()??;
        self.rest = &self.rest[total..];
        Some(record)
    }
}

/// Appends one record in the producer layout to `out`, after checking it as
/// [`ProducerRecords::check`] would. On error `out` is left as it was.
pub fn encode_record(record: &NewRecord<'_>, out: &mut Vec<u8>) -> Result<(), WireError> {
    check_record(record)?;
    // `validate` bounded the record by `MAX_RECORD_LEN`, so its length fits in 32 bits.
    let len = (PRODUCER_RECORD_HEADER_LEN - 4 + payload_len(record)) as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.push(record.attributes);
    // `validate` checked that both lengths fit in 16 bits.
    out.extend_from_slice(&(record.key.len() as u16).to_le_bytes());
    out.extend_from_slice(&(record.headers.len() as u16).to_le_bytes());
    out.extend_from_slice(record.key);
    out.extend_from_slice(record.headers);
    out.extend_from_slice(record.value);
    Ok(())
}

/// Proves producer records laid end to end and counts them; the one check of the layout.
pub(crate) fn count_records(mut bytes: &[u8]) -> Result<u32, WireError> {
    let mut n_records: u32 = 0;
    while !bytes.is_empty() {
        let index = n_records as usize;
        let (record, total) = match parse(bytes) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => {
                let source = WireError::TruncatedBatch { remaining: bytes.len() };
                return Err(bad_record(index, source));
            }
            Err(source) => return Err(bad_record(index, source)),
        };
        check_record(&record).map_err(|source| bad_record(index, source))?;
        n_records = n_records.checked_add(1).ok_or_else(|| WireError::RecordLayout {
            reason: format!("more than {} records in one batch", u32::MAX),
        })?;
        bytes = &bytes[total..];
    }
    Ok(n_records)
}

/// The rules beyond the layout: the limits a stored record must keep, headers that parse, and a tombstone
/// that names a key and carries no value.
fn check_record(record: &NewRecord<'_>) -> Result<(), WireError> {
    record.validate()?;
    check_headers(record.headers)?;
    if record.attributes & ATTR_TOMBSTONE != 0 {
        if record.key.is_empty() {
            return Err(WireError::TombstoneWithoutKey);
        }
        if !record.value.is_empty() {
            return Err(WireError::RecordLayout {
                reason: format!("a tombstone carries no value; this one has {} bytes", record.value.len()),
            });
        }
    }
    Ok(())
}

/// Splits the first record off `buf`: `Ok(None)` if `buf` ends inside it, an error if its length fields
/// contradict each other. Checks the layout only; limits and headers are [`count_records`]'s business.
fn parse(buf: &[u8]) -> Result<Option<(NewRecord<'_>, usize)>, WireError> {
    let Some(len_bytes) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(*len_bytes) as usize;
    if len < PRODUCER_RECORD_HEADER_LEN - 4 {
        return Err(WireError::RecordLayout {
            reason: format!("len is {len}; a record's len is at least {}", PRODUCER_RECORD_HEADER_LEN - 4),
        });
    }
    // A record too large to store is refused before waiting for, or reading, the rest of it.
    let stored = len + 4 + PRODUCER_TO_STORED_LEN;
    if stored > crate::record::MAX_RECORD_LEN {
        return Err(WireError::RecordTooLarge { len: stored, max: crate::record::MAX_RECORD_LEN });
    }
    let total = 4 + len;
    let Some(record) = buf.get(..total) else {
        return Ok(None);
    };
    let attributes = record[ATTRS_AT];
    let key_len = u16::from_le_bytes([record[KEY_LEN_AT], record[KEY_LEN_AT + 1]]) as usize;
    let headers_len = u16::from_le_bytes([record[HEADERS_LEN_AT], record[HEADERS_LEN_AT + 1]]) as usize;
    let key_end = PRODUCER_RECORD_HEADER_LEN + key_len;
    let headers_end = key_end + headers_len;
    if headers_end > total {
        return Err(WireError::RecordLayout {
            reason: format!(
                "key_len {key_len} and headers_len {headers_len} run past the end of a record of {total} bytes"
            ),
        });
    }
    let parsed = NewRecord {
        key: &record[PRODUCER_RECORD_HEADER_LEN..key_end],
        headers: &record[key_end..headers_end],
        value: &record[headers_end..],
        attributes,
    };
    Ok(Some((parsed, total)))
}

/// The bytes of a record after its producer header: key, headers and value.
fn payload_len(record: &NewRecord<'_>) -> usize {
    record.key.len() + record.headers.len() + record.value.len()
}

/// Names the record a problem was found in.
fn bad_record(index: usize, source: WireError) -> WireError {
    WireError::ProducerRecord { index, source: Box::new(source) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{MAX_RECORD_LEN, encode_headers};

    #[test]
    fn golden_bytes() {
        let headers = encode_headers([("h", &b"v"[..])]).unwrap();
        let record = NewRecord { key: b"k", headers: &headers, value: b"val", attributes: 0b0000_0010 };
        let records = ProducerRecords::encode(&[record]).unwrap();
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            15, 0, 0, 0,                    // len: 5 + 1 + 6 + 3
            2,                              // attrs: compression codec 1
            1, 0,                           // key_len
            6, 0,                           // headers_len
            b'k',                           // key
            1, 0, b'h', 1, 0, b'v',         // headers
            b'v', b'a', b'l',               // value
        ];
        assert_eq!(records.as_bytes().as_ref(), &expected[..]);
        assert_eq!(records.len(), 1);
        assert_eq!(records.stored_len(), 19 + 20);
        let again = ProducerRecords::check(Bytes::from(expected)).unwrap();
        assert_eq!(again, records);
        assert_eq!(again.iter().collect::<Vec<_>>(), vec![record]);
        // Stored, the record is exactly its stored encoding's length.
        assert_eq!(record.encoded_len() as u64, again.stored_len());
    }

    #[test]
    fn round_trip_of_several_records() {
        let records =
            [NewRecord::new(b"a", b"1"), NewRecord::new(b"", b""), NewRecord::new(b"key", &[7; 300])];
        let encoded = ProducerRecords::encode(&records).unwrap();
        let checked = ProducerRecords::check(encoded.as_bytes().clone()).unwrap();
        assert_eq!(checked.len(), 3);
        assert_eq!(checked.iter().collect::<Vec<_>>(), records);
        assert!(ProducerRecords::check(Bytes::new()).unwrap().is_empty());
    }

    fn error_of(bytes: &[u8]) -> WireError {
        ProducerRecords::check(Bytes::copy_from_slice(bytes)).unwrap_err()
    }

    #[test]
    fn bad_records_are_named_by_index() {
        let good = ProducerRecords::encode(&[NewRecord::new(b"k", b"v")]).unwrap().as_bytes().to_vec();
        // Every truncation of the second record is refused, naming it.
        let mut two = good.clone();
        two.extend_from_slice(&good);
        for cut in good.len() + 1..two.len() {
            let error = error_of(&two[..cut]);
            assert!(matches!(error, WireError::ProducerRecord { index: 1, .. }), "cut at {cut}: {error}");
        }
        let mut short = good.clone();
        short[0] = 4;
        assert_eq!(error_of(&short).to_string(), "record 0: len is 4; a record's len is at least 5");
        let mut overrun = good.clone();
        overrun[5] = 9;
        assert!(error_of(&overrun).to_string().contains("run past the end"), "{}", error_of(&overrun));
        let mut reserved = good.clone();
        reserved[4] = 0x80;
        assert_eq!(error_of(&reserved).to_string(), "record 0: record attributes 0x80 use reserved bits");
        let mut bad_headers =
            ProducerRecords::encode(&[NewRecord::new(b"", b"")]).unwrap().as_bytes().to_vec();
        bad_headers[0] = 7;
        bad_headers[7] = 2;
        bad_headers.extend_from_slice(&[5, 0]);
        assert_eq!(error_of(&bad_headers).to_string(), "record 0: record headers are malformed");
        let huge = ((MAX_RECORD_LEN) as u32).to_le_bytes();
        assert!(matches!(
            error_of(&huge),
            WireError::ProducerRecord { index: 0, source } if matches!(*source, WireError::RecordTooLarge { .. })
        ));
    }

    #[test]
    fn a_tombstone_has_a_key_and_no_value() {
        let tombstone = NewRecord { attributes: ATTR_TOMBSTONE, ..NewRecord::new(b"k", b"") };
        let records = ProducerRecords::encode(&[tombstone]).unwrap();
        assert_eq!(ProducerRecords::check(records.as_bytes().clone()).unwrap().len(), 1);
        let keyless = NewRecord { key: b"", ..tombstone };
        assert_eq!(encode_record(&keyless, &mut Vec::new()), Err(WireError::TombstoneWithoutKey));
        let with_value = NewRecord { value: b"v", ..tombstone };
        assert!(encode_record(&with_value, &mut Vec::new()).is_err());
        // The same rules hold for bytes built elsewhere.
        let mut bytes = ProducerRecords::encode(&[NewRecord::new(b"k", b"v")]).unwrap().as_bytes().to_vec();
        bytes[4] = ATTR_TOMBSTONE;
        let error = ProducerRecords::check(Bytes::from(bytes)).unwrap_err();
        assert_eq!(error.to_string(), "record 0: a tombstone carries no value; this one has 1 bytes");
    }

    #[test]
    fn encoding_refuses_what_checking_refuses() {
        let mut out = vec![0xAA];
        let reserved = NewRecord { attributes: 0x80, ..NewRecord::new(b"", b"") };
        assert!(encode_record(&reserved, &mut out).is_err());
        let headers = [1u8, 0];
        let bad_headers = NewRecord { headers: &headers, ..NewRecord::new(b"", b"") };
        assert!(encode_record(&bad_headers, &mut out).is_err());
        assert_eq!(out, [0xAA], "a refused record leaves the buffer alone");
        assert!(matches!(
            ProducerRecords::encode(&[NewRecord::new(b"", b""), reserved]),
            Err(WireError::ProducerRecord { index: 1, .. })
        ));
        // The largest record that fits once stored is accepted; one byte more is not.
        let value = vec![0u8; MAX_RECORD_LEN - crate::record::RECORD_HEADER_LEN];
        let largest = ProducerRecords::encode(&[NewRecord::new(b"", &value)]).unwrap();
        assert_eq!(largest.stored_len(), MAX_RECORD_LEN as u64);
        assert!(ProducerRecords::check(largest.as_bytes().clone()).is_ok());
        let value = vec![0u8; MAX_RECORD_LEN - crate::record::RECORD_HEADER_LEN + 1];
        assert!(ProducerRecords::encode(&[NewRecord::new(b"", &value)]).is_err());
    }
}
