//! Appending to a log: new records at ROOT (offsets and a timestamp assigned here), verbatim record bytes
//! at a relay (checked, duplicates dropped, gaps refused), and rolling to a new segment by size or age.
//! This module does not read, flush on a timer or remove segments.
//!
//! A batch goes into one segment: if it does not fit in the active segment's remaining space, the segment
//! is sealed first, so a record never straddles two segments. Only a batch larger than a whole segment is
//! split across segments; if a roll in the middle of such a batch fails, the records before it stay
//! appended (a valid, contiguous prefix) and the error is returned. Every check that can refuse a batch
//! (record validity, CRC, continuity, size) runs before anything is written.

use std::sync::atomic::Ordering;

use protocol::record::RecordIter;
use protocol::{NewRecord, WireError};

use crate::config::FlushPolicy;
use crate::error::Error;
use crate::log::{AppendOutcome, Log, Writer};
use crate::meta::SegmentRow;
use crate::paths::{remove_file_logged, sync_dir};
use crate::time::now_ms;
use crate::writer::SegmentWriter;

/// The largest encode buffer a log keeps between ROOT appends; a bigger one (a batch of several MiB) is
/// freed after its append.
const MAX_KEPT_ENCODE_BUFFER: usize = 4 << 20;

/// One checked record of a relay batch.
#[derive(Debug, Clone, Copy)]
struct CheckedRecord {
    /// Its size in bytes.
    len: usize,
    /// Its timestamp.
    timestamp_ms: u64,
}

impl Log {
    /// Appends new records (ROOT): they get the next offsets and one timestamp, the wall clock in
    /// milliseconds but never less than the last timestamp in the log. Returns once the records are durable
    /// with [`crate::FlushPolicy::Always`], once they are written otherwise.
    pub fn append(&self, records: &[NewRecord<'_>]) -> Result<AppendOutcome, Error> {
        let segment_bytes = self.config.segment_bytes;
        for (index, record) in records.iter().enumerate() {
            record.validate().map_err(|source| Error::BadRecord {
                topic: self.name.clone(),
                index,
                source,
            })?;
            if record.encoded_len() as u64 > segment_bytes {
                return Err(self.too_large(record.encoded_len()));
            }
        }
        let now = now_ms();
        let mut writer = self.lock_writer();
        self.check_open(&writer)?;
        let first_offset = writer.next_offset;
        let timestamp_ms = now.max(writer.last_timestamp_ms);
        let mut result = Ok(());
        let mut start = 0;
        // The buffer is taken out of the writer so the segment writer can be borrowed beside it.
        let mut buffer = std::mem::take(&mut writer.encode_buffer);
        while start < records.len() {
            let (end, bytes) = group_end(records.len(), start, segment_bytes, |i| records[i].encoded_len());
            // Only grown, never cleared: every byte of `..bytes` is overwritten by the encoding below.
            if buffer.len() < bytes {
                buffer.resize(bytes, 0);
            }
            let group = &mut buffer[..bytes];
            let mut at = 0;
            for (i, record) in records[start..end].iter().enumerate() {
                at += record.encode_into(first_offset + (start + i) as u64, timestamp_ms, &mut group[at..]);
            }
            result = self.write_group(&mut writer, group, (end - start) as u64, timestamp_ms, now);
            if result.is_err() {
                break;
            }
            start = end;
        }
        // A batch as big as a segment should not pin that much memory for the life of the log.
        if buffer.capacity() <= MAX_KEPT_ENCODE_BUFFER {
            writer.encode_buffer = buffer;
        }
        let next_offset = writer.next_offset;
        drop(writer);
        self.finish_append(first_offset, next_offset)?;
        result?;
        Ok(AppendOutcome {
            first_offset,
            next_offset,
            n_appended: next_offset - first_offset,
            n_duplicates: 0,
            timestamp_ms,
        })
    }

    /// Appends records exactly as given (a relay copying its parent's bytes). Every record's length, CRC
    /// and fields are checked, and offsets must run contiguously through the batch. Records below the
    /// log's next offset are dropped as duplicates; a batch starting above it is refused with
    /// [`Error::OffsetGap`]. On error nothing is written.
    pub fn append_records(&self, batch: &[u8]) -> Result<AppendOutcome, Error> {
        let segment_bytes = self.config.segment_bytes;
        let mut checked = Vec::new();
        let mut first_batch_offset = None;
        for record in RecordIter::new(batch) {
            let record = record.map_err(|source| self.bad_batch(source))?;
            let expected =
                first_batch_offset.map_or(record.offset(), |first: u64| first + checked.len() as u64);
            if record.offset() != expected {
                return Err(self.bad_batch(WireError::OffsetGap { expected, found: record.offset() }));
            }
            first_batch_offset.get_or_insert(record.offset());
            let len = record.as_bytes().len();
            if len as u64 > segment_bytes {
                return Err(self.too_large(len));
            }
            checked.push(CheckedRecord { len, timestamp_ms: record.timestamp_ms() });
        }
        let now = now_ms();
        let mut writer = self.lock_writer();
        self.check_open(&writer)?;
        let first_offset = writer.next_offset;
        let Some(batch_first) = first_batch_offset else {
            return Ok(AppendOutcome {
                first_offset,
                next_offset: first_offset,
                n_appended: 0,
                n_duplicates: 0,
                timestamp_ms: writer.last_timestamp_ms,
            });
        };
        if batch_first > first_offset {
            return Err(Error::OffsetGap {
                topic: self.name.clone(),
                expected: first_offset,
                found: batch_first,
            });
        }
        let n_duplicates = (first_offset - batch_first).min(checked.len() as u64);
        let mut position: usize = checked[..n_duplicates as usize].iter().map(|record| record.len).sum();
        let mut result = Ok(());
        let mut start = n_duplicates as usize;
        while start < checked.len() {
            let (end, bytes) = group_end(checked.len(), start, segment_bytes, |i| checked[i].len);
            let timestamp_ms = checked[end - 1].timestamp_ms;
            let source = &batch[position..position + bytes];
            result = self.write_group(&mut writer, source, (end - start) as u64, timestamp_ms, now);
            if result.is_err() {
                break;
            }
            position += bytes;
            start = end;
        }
        let next_offset = writer.next_offset;
        let timestamp_ms = writer.last_timestamp_ms;
        drop(writer);
        self.finish_append(first_offset, next_offset)?;
        result?;
        Ok(AppendOutcome {
            first_offset,
            next_offset,
            n_appended: next_offset - first_offset,
            n_duplicates,
            timestamp_ms,
        })
    }

    /// Writes one group of records that fits in a segment: rolls first if needed, then writes `bytes`
    /// (`n_records` whole records, the last with `last_timestamp_ms`) with one write and publishes them.
    fn write_group(
        &self,
        writer: &mut Writer,
        bytes: &[u8],
        n_records: u64,
        last_timestamp_ms: u64,
        now: u64,
    ) -> Result<(), Error> {
        let max_age_ms = self.config.segment_max_age.as_millis() as u64;
        let too_old = writer.active.position() > 0
            && now.saturating_sub(writer.active.segment().created_ms()) >= max_age_ms;
        if writer.active.remaining() < bytes.len() || too_old {
            self.roll(writer, now)?;
        }
        writer.active.append(bytes, n_records, last_timestamp_ms)?;
        writer.next_offset += n_records;
        writer.last_timestamp_ms = writer.last_timestamp_ms.max(last_timestamp_ms);
        self.next_offset.store(writer.next_offset, Ordering::Release);
        Ok(())
    }

    /// After the writer lock is released: makes appended records readable, waiting for them to be durable
    /// first with [`crate::FlushPolicy::Always`].
    fn finish_append(&self, first_offset: u64, next_offset: u64) -> Result<(), Error> {
        if next_offset == first_offset {
            return Ok(());
        }
        if self.config.readers_see_only_durable() {
            self.flush_to(next_offset)
        } else {
            self.publish_readable(next_offset);
            Ok(())
        }
    }

    /// Seals the active segment and starts a new one at the next offset. The new file is created first,
    /// so a full disk leaves the log as it was. Sealing syncs the old segment unless the policy is
    /// [`FlushPolicy::Never`], where only an explicit flush does. Metadata is recorded last; if that fails
    /// the data is still safe and recovery reconciles the database with the files on the next open.
    pub(crate) fn roll(&self, writer: &mut Writer, now: u64) -> Result<(), Error> {
        let base_offset = writer.next_offset;
        let new_writer = SegmentWriter::create(&self.dir, base_offset, now, &self.config)?;
        let new_path = new_writer.segment().path().to_path_buf();
        let durable = self.config.flush != FlushPolicy::Never;
        let sealed = if durable { sync_dir(&self.dir) } else { Ok(()) };
        if let Err(error) = sealed.and_then(|()| writer.active.seal(now, durable)) {
            drop(new_writer);
            remove_file_logged(&new_path, "roll failed");
            return Err(error);
        }
        let old = std::mem::replace(&mut writer.active, new_writer);
        let old_segment = old.segment();
        let state = old_segment.state();
        let sealed_row = SegmentRow {
            base_offset: old_segment.base_offset(),
            last_offset: (state.end_offset > old_segment.base_offset()).then(|| state.end_offset - 1),
            size_bytes: state.written as u64,
            sealed: true,
            created_ms: old_segment.created_ms(),
            sealed_ms: state.sealed_ms,
            last_timestamp_ms: Some(state.last_timestamp_ms),
        };
        self.segments
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(std::sync::Arc::clone(writer.active.segment()));
        if durable {
            // Sealing synced the old segment whole.
            self.mark_durable(state.end_offset);
        }
        let rows = [sealed_row, SegmentRow::active(base_offset, now)];
        if let Err(error) = self.meta.upsert_segments(&self.name, self.generation, &rows) {
            tracing::error!(
                topic = %self.name, %error,
                "cannot record a roll; it is reconciled on the next open"
            );
        }
        Ok(())
    }

    /// Refuses writes to a replaced or deleted log.
    fn check_open(&self, writer: &Writer) -> Result<(), Error> {
        if writer.closed { Err(Error::Closed { topic: self.name.clone() }) } else { Ok(()) }
    }

    /// The error for a record bigger than a segment.
    fn too_large(&self, len: usize) -> Error {
        Error::RecordTooLarge { topic: self.name.clone(), len, segment_bytes: self.config.segment_bytes }
    }

    /// The error for a batch that fails its checks.
    fn bad_batch(&self, source: WireError) -> Error {
        Error::BadBatch { topic: self.name.clone(), source }
    }
}

/// The end (exclusive) and byte size of the longest run of records from `start` that fits in one segment;
/// at least one record, since each was checked to fit on its own.
fn group_end(n: usize, start: usize, segment_bytes: u64, len_of: impl Fn(usize) -> usize) -> (usize, usize) {
    let mut end = start;
    let mut bytes = 0usize;
    while end < n && (bytes + len_of(end)) as u64 <= segment_bytes {
        bytes += len_of(end);
        end += 1;
    }
    (end, bytes)
}
