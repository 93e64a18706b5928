//! Appending to a log: new records at ROOT (offsets and a timestamp assigned here), verbatim record bytes
//! at a relay (proven once by `protocol::CheckedBatch`, duplicates dropped, gaps refused), and rolling to a
//! new segment by size or age. Every append applies the flush policy before it returns and answers how far
//! the log is durable, so no caller decides durability on its own. This module does not read, flush on a
//! timer or remove segments.
//!
//! A run of records goes into one segment: if it does not fit in the active segment's remaining space, the
//! segment is sealed first, so a record never straddles two segments. If a roll in the middle of a long
//! append fails, the records before it stay appended (a valid, contiguous prefix) and the error is
//! returned. Every check that can refuse a batch (record validity, CRC, continuity, size) runs before
//! anything is written.

use std::sync::atomic::Ordering;

use protocol::record::{peek_record_offset, peek_record_timestamp};
use protocol::{CheckedBatch, NewRecord, WireError, check_run, skip_below};

use crate::config::FlushPolicy;
use crate::error::Error;
use crate::log::{AppendOutcome, Log, Writer};
use crate::meta::SegmentRow;
use crate::paths::{remove_file_logged, sync_dir};
use crate::writer::SegmentWriter;
use protocol::now_ms;

/// The largest encode buffer a log keeps between appends; a bigger one (a batch of several MiB) is freed
/// after its append.
const MAX_KEPT_ENCODE_BUFFER: usize = 4 << 20;

/// Runs of proven records at least this large are written straight from the caller's buffer; smaller ones
/// are gathered in the log's buffer so that many small batches cost one write.
const DIRECT_WRITE_BYTES: usize = 256 * 1024;

/// Records proven earlier, laid end to end: the bytes, the size of each record and the range they cover
/// (offsets rise through it, with gaps where the sender's copy was compacted).
#[derive(Debug, Clone, Copy)]
struct Proven<'a> {
    /// The first offset the records cover (the first record's, or below it).
    first_offset: u64,
    /// One past the last record.
    next_offset: u64,
    /// The records.
    bytes: &'a [u8],
    /// The size of each record.
    lens: &'a [u32],
}

/// Proven records gathered for one write.
#[derive(Debug, Default)]
struct Gathered {
    /// The records' bytes.
    bytes: Vec<u8>,
    /// Their sizes.
    lens: Vec<u32>,
    /// The timestamp of the last one.
    last_timestamp_ms: u64,
}

impl Log {
    /// Appends new records (ROOT): they get the next offsets and one timestamp, the wall clock in
    /// milliseconds but never less than the last timestamp in the log. Returns once the records are as
    /// durable as the flush policy promises (see [`AppendOutcome::durable_offset`]).
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
        let mut lens = Vec::new();
        while start < records.len() {
            let (end, bytes) = group_end(records.len(), start, segment_bytes, |i| records[i].encoded_len());
            // Only grown, never cleared: every byte of `..bytes` is overwritten by the encoding below.
            if buffer.len() < bytes {
                buffer.resize(bytes, 0);
            }
            let group = &mut buffer[..bytes];
            let mut at = 0;
            lens.clear();
            for (i, record) in records[start..end].iter().enumerate() {
                let len =
                    record.encode_into(first_offset + (start + i) as u64, timestamp_ms, &mut group[at..]);
                lens.push(len as u32);
                at += len;
            }
            result = self.write_group(&mut writer, group, &lens, timestamp_ms, now);
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
        let durable_offset = self.finish_append(first_offset, next_offset, true)?;
        result?;
        Ok(AppendOutcome {
            first_offset,
            next_offset,
            durable_offset,
            n_appended: next_offset - first_offset,
            n_duplicates: 0,
            timestamp_ms,
        })
    }

    /// Appends batches proven by [`CheckedBatch::check`] exactly as received (a relay copying its parent's
    /// bytes), without reading them again. The batches must follow one another; records below the log's
    /// next offset are dropped as duplicates, and a batch starting above it is refused with
    /// [`Error::OffsetGap`]. Returns once the records are as durable as the flush policy promises.
    pub fn append_checked(&self, batches: &[CheckedBatch]) -> Result<AppendOutcome, Error> {
        self.append_proven(&proven(batches), true)
    }

    /// [`Log::append_checked`] without the flush: the records are written (and readable at once if
    /// [`crate::LogConfig::readable_before_durable`]), and `durable_offset` says what was durable already.
    /// The caller makes them durable with [`Log::flush`] when it likes, so that a relay can append the
    /// next batches while an earlier flush runs and acknowledge upward as flushes complete.
    pub fn append_checked_unflushed(&self, batches: &[CheckedBatch]) -> Result<AppendOutcome, Error> {
        self.append_proven(&proven(batches), false)
    }

    /// Appends records exactly as given, checking every record's length, CRC and fields and that offsets
    /// run contiguously through the batch; for bytes that did not arrive as a [`CheckedBatch`]. Duplicates
    /// and gaps as in [`Log::append_checked`]. On error nothing is written.
    pub fn append_records(&self, batch: &[u8]) -> Result<AppendOutcome, Error> {
        if batch.is_empty() {
            return self.append_proven(&[], true);
        }
        let run = check_run(batch).map_err(|source| self.bad_batch(source))?;
        self.append_proven(
            &[Proven {
                first_offset: run.first_offset,
                next_offset: run.last_offset + 1,
                bytes: batch,
                lens: &run.record_lens,
            }],
            true,
        )
    }

    /// The one relay append: drops duplicates, refuses gaps nobody vouched for (a part starting above the
    /// log's next offset or above where the part before it ended) and oversized records before writing
    /// anything, gathers small runs into one write and writes large ones straight from the caller's bytes.
    /// The log's next offset moves to the end of each part's range.
    fn append_proven(&self, parts: &[Proven<'_>], flush: bool) -> Result<AppendOutcome, Error> {
        let segment_bytes = self.config.segment_bytes;
        let mut expected = parts.first().map(|part| part.first_offset);
        for part in parts {
            if Some(part.first_offset) != expected {
                let expected = expected.unwrap_or(part.first_offset);
                return Err(self.bad_batch(WireError::OffsetGap { expected, found: part.first_offset }));
            }
            if let Some(len) = part.lens.iter().find(|len| u64::from(**len) > segment_bytes) {
                return Err(self.too_large(*len as usize));
            }
            expected = Some(part.next_offset);
        }
        let now = now_ms();
        let mut writer = self.lock_writer();
        self.check_open(&writer)?;
        let first_offset = writer.next_offset;
        if let Some(first) = parts.first()
            && first.first_offset > first_offset
        {
            return Err(Error::OffsetGap {
                topic: self.name.clone(),
                expected: first_offset,
                found: first.first_offset,
            });
        }
        let mut n_duplicates = 0;
        let mut n_appended = 0;
        let mut gathered =
            Gathered { bytes: std::mem::take(&mut writer.encode_buffer), ..Gathered::default() };
        gathered.bytes.clear();
        let mut result = Ok(());
        'parts: for part in parts {
            // Records of this part the log already holds.
            let (rest, rest_lens) = skip_below(part.bytes, part.lens, writer.next_offset);
            let mut position = part.bytes.len() - rest.len();
            let skip = part.lens.len() - rest_lens.len();
            n_duplicates += skip as u64;
            n_appended += rest_lens.len() as u64;
            let mut start = skip;
            while start < part.lens.len() {
                let (end, bytes) =
                    group_end(part.lens.len(), start, segment_bytes, |i| part.lens[i] as usize);
                let run = &part.bytes[position..position + bytes];
                let lens = &part.lens[start..end];
                let last_timestamp_ms =
                    peek_record_timestamp(&run[bytes - part.lens[end - 1] as usize..]).unwrap_or(0);
                let fits = (gathered.bytes.len() + bytes) as u64 <= segment_bytes
                    && gathered.bytes.len() + bytes <= writer.active.remaining();
                if !gathered.lens.is_empty() && !fits {
                    result = self.write_gathered(&mut writer, &mut gathered, now);
                    if result.is_err() {
                        break 'parts;
                    }
                }
                if gathered.lens.is_empty() && bytes >= DIRECT_WRITE_BYTES {
                    result = self.write_group(&mut writer, run, lens, last_timestamp_ms, now);
                    if result.is_err() {
                        break 'parts;
                    }
                } else {
                    gathered.bytes.extend_from_slice(run);
                    gathered.lens.extend_from_slice(lens);
                    gathered.last_timestamp_ms = last_timestamp_ms;
                }
                position += bytes;
                start = end;
            }
        }
        if result.is_ok() && !gathered.lens.is_empty() {
            result = self.write_gathered(&mut writer, &mut gathered, now);
        }
        if gathered.bytes.capacity() <= MAX_KEPT_ENCODE_BUFFER {
            writer.encode_buffer = gathered.bytes;
        }
        let next_offset = writer.next_offset;
        let timestamp_ms = writer.last_timestamp_ms;
        drop(writer);
        let durable_offset = self.finish_append(first_offset, next_offset, flush)?;
        result?;
        Ok(AppendOutcome {
            first_offset,
            next_offset,
            durable_offset,
            n_appended,
            n_duplicates,
            timestamp_ms,
        })
    }

    /// Writes the gathered records and empties the gathering buffer.
    fn write_gathered(&self, writer: &mut Writer, gathered: &mut Gathered, now: u64) -> Result<(), Error> {
        let result =
            self.write_group(writer, &gathered.bytes, &gathered.lens, gathered.last_timestamp_ms, now);
        gathered.bytes.clear();
        gathered.lens.clear();
        result
    }

    /// Writes one group of records that fits in a segment: rolls first if needed, then writes `bytes`
    /// (whole records of the sizes `lens`, the last with `last_timestamp_ms`) with one write and publishes
    /// them.
    fn write_group(
        &self,
        writer: &mut Writer,
        bytes: &[u8],
        lens: &[u32],
        last_timestamp_ms: u64,
        now: u64,
    ) -> Result<(), Error> {
        if self.needs_roll(writer, bytes.len(), now) {
            self.roll(writer, now)?;
        }
        writer.active.append(bytes, lens, last_timestamp_ms)?;
        // Offsets rise through the records, with gaps in a compacted range: the last one says where the
        // log goes on.
        let last_len = lens.last().map_or(0, |len| *len as usize);
        writer.next_offset = match peek_record_offset(&bytes[bytes.len() - last_len..]) {
            Some(last) if !lens.is_empty() => last + 1,
            _ => writer.next_offset + lens.len() as u64,
        };
        writer.last_timestamp_ms = writer.last_timestamp_ms.max(last_timestamp_ms);
        self.next_offset.store(writer.next_offset, Ordering::Release);
        Ok(())
    }

    /// Whether writing `bytes` now seals the active segment first: it is full, or older than
    /// `segment_max_age`.
    fn needs_roll(&self, writer: &Writer, bytes: usize, now: u64) -> bool {
        let max_age_ms = self.config.segment_max_age.as_millis() as u64;
        let too_old = writer.active.position() > 0
            && now.saturating_sub(writer.active.segment().created_ms()) >= max_age_ms;
        writer.active.remaining() < bytes || too_old
    }

    /// Whether an unflushed append of `bytes` would only write into the active segment: no new file, no
    /// sync, one positional write into the page cache (and, now and then, an allocation). Such an append
    /// is cheap enough for an async task to make itself rather than hand to a blocking thread.
    pub fn appends_in_place(&self, bytes: usize) -> bool {
        let writer = self.lock_writer();
        !writer.closed && !self.needs_roll(&writer, bytes, now_ms())
    }

    /// After the writer lock is released, the one place an append's durability is decided. Records are made
    /// readable at once unless readers see only durable records ([`FlushPolicy::Always`] without
    /// [`crate::LogConfig::readable_before_durable`]: then the flush publishes them). With `flush` they are
    /// then flushed unless the policy is [`FlushPolicy::Never`] (concurrent appenders share the flush), so
    /// the append returns durable; without it (a caller that flushes later) they are not. Answers the
    /// offset below which records are as durable as the policy promises, which is what the caller may
    /// acknowledge.
    fn finish_append(&self, first_offset: u64, next_offset: u64, flush: bool) -> Result<u64, Error> {
        if next_offset > first_offset {
            if !self.config.readers_see_only_durable() {
                self.publish_readable(next_offset);
            }
            if flush && self.config.flush != FlushPolicy::Never {
                self.flush_to(next_offset)?;
            }
        }
        Ok(match self.config.flush {
            FlushPolicy::Never => next_offset,
            FlushPolicy::Always | FlushPolicy::Interval(_) => self.durable_offset().min(next_offset),
        })
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

/// The parts of proven batches, as the relay append takes them.
fn proven(batches: &[CheckedBatch]) -> Vec<Proven<'_>> {
    batches
        .iter()
        .map(|batch| Proven {
            first_offset: batch.first_offset(),
            next_offset: batch.next_offset(),
            bytes: batch.records(),
            lens: batch.record_lens(),
        })
        .collect()
}
