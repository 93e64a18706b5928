//! The write side of the active segment: creating its file, growing its disk allocation in chunks with
//! `posix_fallocate`, writing records into the file, publishing them, and sealing. There is exactly one
//! `SegmentWriter` per active segment, owned by its log's writer lock. Knows nothing of SQLite.
//!
//! Why `pwrite` rather than stores into the mapping: the first store into each page of a mapping faults,
//! and the kernel zero-fills the page before the copy; for a relay that was most of its CPU. One positional
//! write per batch copies straight into the page cache instead, and the shared mapping (kept for readers
//! only, and mapped read-only) sees the same pages. Ordering: the bytes are written, then the new length is
//! published with `Release`, and readers only look below the published length.
//!
//! Why fallocate: allocating the blocks before writing turns a full disk into an ordinary `Error::NoSpace`
//! before any byte is written (a write that still meets a full disk fails with ENOSPC, which maps to the
//! same error). The whole `segment_bytes` range is mapped up front (address space is cheap) but disk
//! space is allocated `preallocate_chunk_bytes` at a time, and a sealed segment is truncated to its records.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use memmap2::MmapOptions;
use protocol::record::peek_record_offset;

use crate::config::LogConfig;
use crate::error::Error;
use crate::index::{IndexBuilder, IndexEntry, SparseIndex, load_index_file, write_index_file};
use crate::paths::segment_path;
use crate::scan::{ScanOutcome, Tail, scan_records};
use crate::segment::Segment;
use crate::space::allocate;

/// The single writer of an active segment.
#[derive(Debug)]
pub(crate) struct SegmentWriter {
    /// The segment being written.
    segment: Arc<Segment>,
    /// The open segment file, for writes, allocation and truncation (the segment holds a handle too, for
    /// fdatasync).
    file: Arc<File>,
    /// Bytes written and published.
    position: usize,
    /// Bytes of the file allocated on disk; writes stay below this.
    allocated: u64,
    /// Length of the mapping; the segment never grows beyond it.
    capacity: usize,
    /// Allocation step.
    chunk: u64,
    /// Places sparse index entries.
    builder: IndexBuilder,
    /// The offset the next record will get.
    end_offset: u64,
}

impl SegmentWriter {
    /// Creates an empty segment file starting at `base_offset` in `dir` and allocates its first chunk.
    /// On error no file is left behind.
    pub(crate) fn create(
        dir: &Path,
        base_offset: u64,
        created_ms: u64,
        config: &LogConfig,
    ) -> Result<SegmentWriter, Error> {
        let path = segment_path(dir, base_offset);
        // A file with this name can only be an empty leftover of a roll that failed, so it is replaced.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|source| Error::io("create segment file", &path, source))?;
        let result = Self::from_file(&path, file, base_offset, created_ms, config, 0, None, Vec::new())
            .and_then(|mut writer| {
                writer.ensure_allocated(config.preallocate_chunk_bytes.min(config.segment_bytes))?;
                Ok(writer)
            });
        if result.is_err() {
            crate::paths::remove_file_logged(&path, "segment creation failed");
        }
        result
    }

    /// Reopens the last segment of a log after a restart or crash: scans every record, cuts a torn or
    /// corrupt tail (the file is truncated to its valid records, so anything after them reads as zeros),
    /// and makes the result durable.
    pub(crate) fn resume(
        path: &Path,
        base_offset: u64,
        created_ms: u64,
        config: &LogConfig,
    ) -> Result<(SegmentWriter, ScanOutcome), Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::io("open segment file", path, source))?;
        let len = file.metadata().map_err(|source| Error::io("stat segment file", path, source))?.len();
        let capacity = config.segment_bytes.max(len);
        let map = MmapOptions::new()
            .len(capacity as usize)
            .map_raw(&file)
            .map_err(|source| Error::io("map segment file", path, source))?;
        // SAFETY: only the file's `len` bytes are read, and nothing else writes the file while it opens.
        let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), len as usize) };
        let outcome = scan_records(bytes, base_offset, config.index_interval_bytes);
        drop(map);
        if outcome.problem.is_some() {
            file.set_len(outcome.valid_len as u64)
                .map_err(|source| Error::io("truncate segment tail", path, source))?;
        }
        // Records left by a process that crashed may still be only in the page cache.
        file.sync_data().map_err(|source| Error::io("sync segment", path, source))?;
        let tail = (outcome.next_offset > base_offset).then(|| Tail {
            last_offset: outcome.next_offset - 1,
            last_timestamp_ms: outcome.last_timestamp_ms,
        });
        let writer = Self::from_file(
            path,
            file,
            base_offset,
            created_ms,
            config,
            outcome.valid_len,
            tail,
            outcome.entries.clone(),
        )?;
        Ok((writer, outcome))
    }

    /// Maps `file` for writing with `written` valid bytes already in it.
    #[allow(clippy::too_many_arguments)]
    fn from_file(
        path: &Path,
        file: File,
        base_offset: u64,
        created_ms: u64,
        config: &LogConfig,
        written: usize,
        tail: Option<Tail>,
        entries: Vec<IndexEntry>,
    ) -> Result<SegmentWriter, Error> {
        let capacity = (config.segment_bytes as usize).max(written);
        let map = MmapOptions::new()
            .len(capacity)
            .map_raw_read_only(&file)
            .map_err(|source| Error::io("map segment file", path, source))?;
        let builder = IndexBuilder::after(config.index_interval_bytes, &entries);
        let file = Arc::new(file);
        let segment =
            Segment::new(path, base_offset, map, written, tail, created_ms, SparseIndex::Memory(entries));
        segment.set_sync_file(Arc::clone(&file));
        Ok(SegmentWriter {
            segment: Arc::new(segment),
            file,
            position: written,
            allocated: written as u64,
            capacity,
            chunk: config.preallocate_chunk_bytes.max(1),
            builder,
            end_offset: tail.map_or(base_offset, |tail| tail.last_offset + 1),
        })
    }

    /// The segment being written.
    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    /// Bytes written so far.
    pub(crate) fn position(&self) -> usize {
        self.position
    }

    /// Bytes that can still be written before the segment is full.
    pub(crate) fn remaining(&self) -> usize {
        self.capacity - self.position
    }

    /// Writes `bytes`, whole records of the sizes `record_lens` (the last with `last_timestamp_ms`), after the
    /// published ones with one positional write, then publishes them. Disk space is allocated first; on
    /// error (such as [`Error::NoSpace`]) nothing is published and the segment is unchanged for readers.
    pub(crate) fn append(
        &mut self,
        bytes: &[u8],
        record_lens: &[u32],
        last_timestamp_ms: u64,
    ) -> Result<(), Error> {
        let n = bytes.len();
        if n > self.remaining() {
            return Err(Error::io(
                "append to segment",
                self.segment.path(),
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "the segment is full"),
            ));
        }
        self.ensure_allocated((self.position + n) as u64)?;
        let start = self.position;
        // A failed or partial write leaves bytes above the published length only; readers never look there
        // and the next append overwrites them (a crash leaves them as a torn tail that recovery cuts).
        self.file
            .write_all_at(bytes, start as u64)
            .map_err(|source| Error::io("write segment", self.segment.path(), source))?;
        let base_offset = self.segment.base_offset();
        let mut entries: Vec<IndexEntry> = Vec::new();
        let mut at = 0;
        let mut last_offset = self.end_offset.saturating_sub(1);
        // The sizes were learnt when the records were checked or encoded; only each record's offset field
        // is read again (offsets rise, with gaps in a compacted range).
        for len in record_lens {
            last_offset = peek_record_offset(&bytes[at..]).unwrap_or(last_offset + 1);
            if let Some(entry) = self.builder.observe(last_offset - base_offset, start + at) {
                entries.push(entry);
            }
            at += *len as usize;
        }
        if !entries.is_empty() {
            self.segment.extend_index(&entries);
        }
        self.position += n;
        if !record_lens.is_empty() {
            self.end_offset = last_offset + 1;
        }
        // The write above returned, so the bytes are in the page cache the mapping shares; publishing the
        // length with `Release` after it is what lets readers borrow them.
        self.segment.publish(self.position, self.end_offset, last_timestamp_ms);
        Ok(())
    }

    /// Seals the segment: truncates the file to its records and writes its index file (a failure to write
    /// the index is only logged, as the index is rebuilt when missing). With `durable`, the records, the
    /// new length and the index are synced first; without it (the benchmark-only policy) a later flush
    /// syncs them. On error the segment stays active and usable.
    pub(crate) fn seal(&mut self, sealed_ms: u64, durable: bool) -> Result<(), Error> {
        let path = self.segment.path().to_path_buf();
        // From here on the allocation may be gone, so the next write (if sealing fails) allocates again.
        self.allocated = self.allocated.min(self.position as u64);
        self.file
            .set_len(self.position as u64)
            .map_err(|source| Error::io("truncate sealed segment", &path, source))?;
        if durable {
            // One fdatasync covers the records written with pwrite and the new length.
            self.file.sync_data().map_err(|source| Error::io("sync sealed segment", &path, source))?;
        }
        let index_file = self.segment.index_path().to_path_buf();
        let entries = self.segment.index_entries();
        match write_index_file(&index_file, &entries, durable) {
            Ok(()) => {
                match load_index_file(&index_file, self.segment.published(), self.segment.base_offset()) {
                    Ok(Some(index)) => self.segment.replace_index(index),
                    Ok(None) => {
                        tracing::warn!(path = %index_file.display(), "index file vanished after writing")
                    }
                    Err(problem) => {
                        tracing::warn!(path = %index_file.display(), %problem, "index file unusable")
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot write the index file; it is rebuilt on the next open")
            }
        }
        self.segment.mark_sealed(sealed_ms);
        if durable {
            // Synced above; a sealed segment keeps no descriptor open.
            self.segment.release_sync_file();
        }
        Ok(())
    }

    /// Makes sure the file has disk blocks up to `end`, allocating a whole chunk at a time when possible
    /// and exactly what is needed when a chunk does not fit.
    fn ensure_allocated(&mut self, end: u64) -> Result<(), Error> {
        if end <= self.allocated {
            return Ok(());
        }
        let chunked = end.div_ceil(self.chunk).saturating_mul(self.chunk).min(self.capacity as u64).max(end);
        match self.fallocate(chunked) {
            Err(error) if error.is_no_space() && chunked > end => self.fallocate(end),
            other => other,
        }
    }

    /// Allocates blocks from the current allocation up to `end`.
    fn fallocate(&mut self, end: u64) -> Result<(), Error> {
        let start = self.allocated;
        allocate(&self.file, self.segment.path(), start, end - start)?;
        self.allocated = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use protocol::NewRecord;
    use protocol::record::RecordView;

    use super::*;

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 64 * 1024,
            preallocate_chunk_bytes: 8192,
            index_interval_bytes: 512,
            ..LogConfig::default()
        }
    }

    fn write(writer: &mut SegmentWriter, offsets: std::ops::Range<u64>) {
        let record = NewRecord::new(b"key", &[3u8; 90]);
        let mut bytes = vec![0u8; record.encoded_len() * (offsets.end - offsets.start) as usize];
        let mut at = 0;
        for offset in offsets.clone() {
            at += record.encode_into(offset, offset + 1000, &mut bytes[at..]);
        }
        let lens = vec![record.encoded_len() as u32; (offsets.end - offsets.start) as usize];
        writer.append(&bytes, &lens, offsets.end - 1 + 1000).unwrap();
    }

    #[test]
    fn write_publish_seal_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SegmentWriter::create(dir.path(), 10, 1, &config()).unwrap();
        assert_eq!(std::fs::metadata(writer.segment().path()).unwrap().len(), 8192);
        write(&mut writer, 10..110);
        let segment = Arc::clone(writer.segment());
        let state = segment.state();
        assert_eq!((state.end_offset, state.last_timestamp_ms, state.sealed_ms), (110, 1109, None));
        assert!(std::fs::metadata(segment.path()).unwrap().len() >= state.written as u64);
        let first = RecordView::decode(segment.published()).unwrap().unwrap().0;
        assert_eq!(first.offset(), 10);
        let start = segment.scan_start(90);
        let at = RecordView::decode(&segment.published()[start..]).unwrap().unwrap().0;
        assert!(at.offset() <= 90 && at.offset() > 10, "index used: {}", at.offset());

        writer.seal(5, true).unwrap();
        assert!(segment.state().sealed_ms.is_some());
        assert_eq!(std::fs::metadata(segment.path()).unwrap().len(), state.written as u64);
        let reopened =
            crate::segment::open_sealed(segment.path(), 10, Some(109), 1, 5, 512).unwrap().segment.unwrap();
        assert_eq!(reopened.published(), segment.published());
        assert_eq!(reopened.scan_start(90), start);
    }

    #[test]
    fn resume_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SegmentWriter::create(dir.path(), 0, 1, &config()).unwrap();
        write(&mut writer, 0..20);
        let path = writer.segment().path().to_path_buf();
        let written = writer.position();
        // A half-written record after the valid ones.
        let mut torn = vec![0xABu8; 50];
        torn[..4].copy_from_slice(&100u32.to_le_bytes());
        writer.file.write_all_at(&torn, written as u64).unwrap();
        drop(writer);
        let (writer, outcome) = SegmentWriter::resume(&path, 0, 1, &config()).unwrap();
        assert_eq!((outcome.valid_len, outcome.next_offset), (written, 20));
        assert!(outcome.problem.is_some());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), written as u64);
        assert_eq!(writer.segment().state().end_offset, 20);
    }

    #[test]
    fn append_refuses_more_than_the_segment_and_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SegmentWriter::create(dir.path(), 0, 1, &config()).unwrap();
        assert!(writer.append(&vec![0u8; 64 * 1024 + 1], &[64 * 1024 + 1], 1).is_err());
        assert_eq!((writer.position(), writer.segment().state().written), (0, 0));
        write(&mut writer, 0..10);
        assert_eq!(writer.segment().state().end_offset, 10);
    }

    #[test]
    fn bytes_written_to_the_file_are_seen_through_the_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SegmentWriter::create(dir.path(), 0, 1, &config()).unwrap();
        // Far enough to cross the first allocation chunk, so fresh blocks are written too.
        for batch in 0..20 {
            write(&mut writer, batch * 10..batch * 10 + 10);
            let published = writer.segment().published();
            assert_eq!(published.len(), writer.position());
            let offsets: Vec<u64> =
                protocol::record::RecordIter::new(published).map(|record| record.unwrap().offset()).collect();
            assert_eq!(offsets, (0..batch * 10 + 10).collect::<Vec<_>>());
        }
    }
}
