//! One segment file, memory-mapped, as readers see it: its published bytes, its sparse index, its
//! metadata, zero-copy slices of it, and opening a sealed segment found on disk. Writing is in
//! `writer.rs`. This module knows nothing of SQLite, of topics or of retention.
//!
//! A segment file holds records laid end to end from byte 0, exactly as `protocol::record` encodes them,
//! followed (while the segment is active) by preallocated zero bytes; a zero `len` field marks the end of
//! the records. Sealing truncates the file to its records.
//!
//! Concurrency: the bytes below `written` are complete records that are never modified again, so readers
//! may borrow them freely while the single writer fills the bytes above. The writer writes into the file
//! (never through the mapping, which is read-only); a shared mapping sees the page cache those writes fill.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};
use protocol::record::peek_record_offset;

use crate::error::Error;
use crate::index::{IndexEntry, SparseIndex, build_index, load_index_file, write_index_file};
use crate::paths::index_path;
use crate::scan::{Tail, scan_records, walk_to_end};

/// A segment: shared by the log, its readers and (while active) its writer.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Offset of the first record (also the next offset while the segment is empty).
    base_offset: u64,
    /// The segment file.
    path: PathBuf,
    /// The segment's index file (written at seal).
    index_path: PathBuf,
    /// The mapping; shared with every `Bytes` handed out, so those stay valid after the file is deleted.
    map: Arc<MmapRaw>,
    /// Bytes of whole records published to readers. Only grows; stored with `Release` after the bytes.
    written: AtomicUsize,
    /// The offset after the last published record.
    end_offset: AtomicU64,
    /// Timestamp of the last published record (zero while empty).
    last_timestamp_ms: AtomicU64,
    /// When the segment was created, in ms since the epoch.
    created_ms: u64,
    /// When the segment was sealed, in ms since the epoch; zero while active.
    sealed_ms: AtomicU64,
    /// The sparse index.
    index: RwLock<SparseIndex>,
    /// The open file, while the segment may hold bytes not yet synced; the flusher uses it outside the
    /// writer lock. Released once a sealed segment is synced, so sealed segments hold no descriptor.
    sync_file: Mutex<Option<Arc<File>>>,
    /// The first offset whose record failed its CRC, or `u64::MAX` while none did. Reads stop before it.
    damaged_at: AtomicU64,
}

/// What a reader needs to know about a segment's state, read in one go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentState {
    /// Bytes of published records.
    pub(crate) written: usize,
    /// The offset after the last published record.
    pub(crate) end_offset: u64,
    /// Timestamp of the last published record.
    pub(crate) last_timestamp_ms: u64,
    /// When it was sealed, if it is.
    pub(crate) sealed_ms: Option<u64>,
}

impl Segment {
    /// Wraps a mapping whose first `written` bytes are valid records ending before `end_offset`.
    pub(crate) fn new(
        path: &Path,
        base_offset: u64,
        map: MmapRaw,
        written: usize,
        tail: Option<Tail>,
        created_ms: u64,
        index: SparseIndex,
    ) -> Segment {
        let dir = path.parent().unwrap_or(Path::new("."));
        Segment {
            base_offset,
            path: path.to_path_buf(),
            index_path: index_path(dir, base_offset),
            map: Arc::new(map),
            written: AtomicUsize::new(written),
            end_offset: AtomicU64::new(tail.map_or(base_offset, |tail| tail.last_offset + 1)),
            last_timestamp_ms: AtomicU64::new(tail.map_or(0, |tail| tail.last_timestamp_ms)),
            created_ms,
            sealed_ms: AtomicU64::new(0),
            index: RwLock::new(index),
            sync_file: Mutex::new(None),
            damaged_at: AtomicU64::new(u64::MAX),
        }
    }

    /// The first damaged offset, if a check found one.
    pub(crate) fn damaged_at(&self) -> Option<u64> {
        let at = self.damaged_at.load(Ordering::Acquire);
        (at != u64::MAX).then_some(at)
    }

    /// Records that the record at `offset` failed its CRC; `true` if that is news.
    pub(crate) fn mark_damaged(&self, offset: u64) -> bool {
        self.damaged_at.fetch_min(offset, Ordering::AcqRel) > offset
    }

    /// Checks every published record from byte `position` (the first record at or above offset `offset`) up
    /// to `end_offset` (length, CRC, fields, offsets rising; a compacted segment has gaps): the one full
    /// pass over a stored segment. Marks the segment damaged at the first record that fails (the offset
    /// after the last good one) and returns that offset.
    pub(crate) fn verify_from(&self, mut position: usize, mut offset: u64, end_offset: u64) -> Option<u64> {
        let bytes = self.published();
        while offset < end_offset && position < bytes.len() {
            match protocol::RecordView::decode(&bytes[position..]) {
                Ok(Some((view, len))) if view.offset() >= offset => {
                    position += len;
                    offset = view.offset() + 1;
                }
                _ => {
                    self.mark_damaged(offset);
                    return Some(offset);
                }
            }
        }
        None
    }

    /// Offset of the first record.
    pub(crate) fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// The segment file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The index file.
    pub(crate) fn index_path(&self) -> &Path {
        &self.index_path
    }

    /// When the segment was created.
    pub(crate) fn created_ms(&self) -> u64 {
        self.created_ms
    }

    /// The published state. `written` is loaded first with `Acquire`, so the other fields are at least as
    /// new as the bytes.
    pub(crate) fn state(&self) -> SegmentState {
        let written = self.written.load(Ordering::Acquire);
        let sealed_ms = self.sealed_ms.load(Ordering::Acquire);
        SegmentState {
            written,
            end_offset: self.end_offset.load(Ordering::Acquire),
            last_timestamp_ms: self.last_timestamp_ms.load(Ordering::Acquire),
            sealed_ms: (sealed_ms != 0).then_some(sealed_ms),
        }
    }

    /// The published bytes: whole records, never modified again.
    pub(crate) fn published(&self) -> &[u8] {
        let written = self.written.load(Ordering::Acquire);
        // SAFETY: the mapping is at least `written` bytes long and lives as long as `self`; bytes below
        // `written` were fully written before `written` was stored (Release/Acquire) and are never written
        // again, so no mutable access overlaps this shared slice.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), written) }
    }

    /// A zero-copy slice of published bytes that keeps the mapping alive on its own.
    pub(crate) fn slice(&self, start: usize, end: usize) -> Bytes {
        let written = self.written.load(Ordering::Acquire);
        let end = end.min(written);
        let start = start.min(end);
        Bytes::from_owner(MappedSlice { map: Arc::clone(&self.map), start, len: end - start })
    }

    /// Where to start scanning for the record with `offset`: the closest index entry at or below it,
    /// checked against the record it points at; the segment start if the entry is wrong.
    pub(crate) fn scan_start(&self, offset: u64) -> usize {
        let relative_offset = offset.saturating_sub(self.base_offset);
        let entry = match self.index.read() {
            Ok(index) => index.floor(relative_offset),
            Err(poisoned) => poisoned.into_inner().floor(relative_offset),
        };
        if entry.position == 0 {
            return 0;
        }
        let expected = self.base_offset + u64::from(entry.relative_offset);
        let published = self.published();
        match published.get(entry.position as usize..).and_then(peek_record_offset) {
            Some(found) if found == expected => entry.position as usize,
            found => {
                tracing::warn!(
                    path = %self.index_path.display(), expected, ?found,
                    "index entry does not match its record; scanning from the segment start"
                );
                0
            }
        }
    }

    /// Gives the segment the file handle [`Segment::sync_data`] uses (the active segment's writer does).
    pub(crate) fn set_sync_file(&self, file: Arc<File>) {
        *self.sync_file.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(file);
    }

    /// Drops the file handle once a sealed segment is durable.
    pub(crate) fn release_sync_file(&self) {
        self.sync_file.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
    }

    /// Makes every byte written to the segment file durable with one fdatasync (which also syncs the file
    /// size and block allocation the data needs). The records are written with `pwrite`, so syncing the
    /// file, not the mapping, is what reaches them. Without a handle the file is opened by path; a file
    /// already removed (by retention) needs no sync.
    pub(crate) fn sync_data(&self) -> Result<(), Error> {
        let held = self.sync_file.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let file = match held {
            Some(file) => file,
            None => match File::open(&self.path) {
                Ok(file) => Arc::new(file),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(source) => return Err(Error::io("open segment to sync", &self.path, source)),
            },
        };
        file.sync_data().map_err(|source| Error::io("sync segment", &self.path, source))
    }

    /// Adds index entries (active segment only).
    pub(crate) fn extend_index(&self, entries: &[IndexEntry]) {
        match self.index.write() {
            Ok(mut index) => index.extend(entries),
            Err(poisoned) => poisoned.into_inner().extend(entries),
        }
    }

    /// A copy of the index entries.
    pub(crate) fn index_entries(&self) -> Vec<IndexEntry> {
        match self.index.read() {
            Ok(index) => index.to_vec(),
            Err(poisoned) => poisoned.into_inner().to_vec(),
        }
    }

    /// Swaps in another index (the mapped file after sealing).
    pub(crate) fn replace_index(&self, index: SparseIndex) {
        match self.index.write() {
            Ok(mut current) => *current = index,
            Err(poisoned) => *poisoned.into_inner() = index,
        }
    }

    /// Publishes `written` bytes ending before `end_offset`. Called by the single writer after the bytes
    /// are in place.
    pub(crate) fn publish(&self, written: usize, end_offset: u64, last_timestamp_ms: u64) {
        self.end_offset.store(end_offset, Ordering::Release);
        self.last_timestamp_ms.store(last_timestamp_ms, Ordering::Release);
        self.written.store(written, Ordering::Release);
    }

    /// Marks the segment sealed.
    pub(crate) fn mark_sealed(&self, sealed_ms: u64) {
        self.sealed_ms.store(sealed_ms.max(1), Ordering::Release);
    }
}

/// Owner of a `Bytes` pointing into a segment mapping.
struct MappedSlice {
    /// Keeps the mapping alive.
    map: Arc<MmapRaw>,
    /// First byte.
    start: usize,
    /// Number of bytes.
    len: usize,
}

impl AsRef<[u8]> for MappedSlice {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: built only by `Segment::slice` from published bytes, which are inside the mapping and
        // never modified again; `self.map` keeps the mapping alive.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(self.start), self.len) }
    }
}

/// A sealed segment opened from disk.
#[derive(Debug)]
pub(crate) struct OpenedSealed {
    /// The segment, or `None` if the file holds no valid record.
    pub(crate) segment: Option<Arc<Segment>>,
    /// Why the file could not be trusted as recorded and was scanned, if it was.
    pub(crate) rescanned: Option<String>,
    /// Bytes cut off the end of the file because they were not valid records.
    pub(crate) truncated_bytes: u64,
}

/// Opens a sealed segment file. If `expected_last` is the last offset the metadata recorded (with a
/// matching size), the file is trusted: only its index and last record are checked. Otherwise, or if that
/// check fails, every record is scanned and anything after the valid records is cut off.
pub(crate) fn open_sealed(
    path: &Path,
    base_offset: u64,
    expected_last: Option<u64>,
    created_ms: u64,
    sealed_ms: u64,
    index_interval_bytes: u32,
) -> Result<OpenedSealed, Error> {
    let file = File::open(path).map_err(|source| Error::io("open segment file", path, source))?;
    let len = file.metadata().map_err(|source| Error::io("stat segment file", path, source))?.len() as usize;
    if len == 0 {
        return Ok(OpenedSealed { segment: None, rescanned: None, truncated_bytes: 0 });
    }
    let map = MmapOptions::new()
        .len(len)
        .map_raw_read_only(&file)
        .map_err(|source| Error::io("map segment file", path, source))?;
    // SAFETY: the file is `len` bytes long and no writer exists for a sealed segment.
    let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), len) };
    let dir = path.parent().unwrap_or(Path::new("."));
    let index_file = index_path(dir, base_offset);

    let loaded = match load_index_file(&index_file, bytes, base_offset) {
        Ok(index) => index,
        Err(problem) => {
            tracing::warn!(path = %index_file.display(), %problem, "bad index file; rebuilding it");
            None
        }
    };
    let loaded_ok = loaded.is_some();
    if let (Some(expected_last), Some(index)) = (expected_last, loaded) {
        let last_entry = if index.len() == 0 { IndexEntry::default() } else { index.get(index.len() - 1) };
        let from = base_offset + u64::from(last_entry.relative_offset);
        if let Some(tail) = walk_to_end(bytes, last_entry.position as usize, from)
            && tail.last_offset == expected_last
        {
            let segment = Segment::new(path, base_offset, map, len, Some(tail), created_ms, index);
            segment.mark_sealed(sealed_ms);
            return Ok(OpenedSealed {
                segment: Some(Arc::new(segment)),
                rescanned: None,
                truncated_bytes: 0,
            });
        }
    }

    let outcome = scan_records(bytes, base_offset, index_interval_bytes);
    let rescanned = Some(match (&outcome.problem, expected_last) {
        (Some(problem), _) => problem.clone(),
        (None, Some(_)) if !loaded_ok => "its index file is missing or bad".to_string(),
        (None, Some(_)) => "its last record does not match the metadata".to_string(),
        (None, None) => "the metadata does not record it as sealed with this size".to_string(),
    });
    if outcome.valid_len == 0 {
        return Ok(OpenedSealed { segment: None, rescanned, truncated_bytes: len as u64 });
    }
    let truncated_bytes = (len - outcome.valid_len) as u64;
    drop(map);
    if truncated_bytes > 0 {
        let writable = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|source| Error::io("open segment file", path, source))?;
        writable
            .set_len(outcome.valid_len as u64)
            .map_err(|source| Error::io("truncate segment", path, source))?;
        writable.sync_data().map_err(|source| Error::io("sync segment", path, source))?;
    }
    let map = MmapOptions::new()
        .len(outcome.valid_len)
        .map_raw_read_only(&file)
        .map_err(|source| Error::io("map segment file", path, source))?;
    // SAFETY: as above; the file now holds exactly the valid records.
    let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), outcome.valid_len) };
    let entries = build_index(bytes, base_offset, index_interval_bytes);
    let index = match write_index_file(&index_file, &entries, true) {
        Ok(()) => load_index_file(&index_file, bytes, base_offset).ok().flatten(),
        Err(error) => {
            tracing::warn!(%error, "cannot write the rebuilt index file; keeping it in memory");
            None
        }
    }
    .unwrap_or(SparseIndex::Memory(entries));
    let tail = Tail { last_offset: outcome.next_offset - 1, last_timestamp_ms: outcome.last_timestamp_ms };
    let segment = Segment::new(path, base_offset, map, outcome.valid_len, Some(tail), created_ms, index);
    segment.mark_sealed(sealed_ms);
    Ok(OpenedSealed { segment: Some(Arc::new(segment)), rescanned, truncated_bytes })
}
