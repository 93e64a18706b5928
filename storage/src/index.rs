//! The sparse offset index of one segment: where to start scanning for a given offset.
//!
//! The active segment keeps its entries in memory, appended as records are written (and rebuilt by the
//! recovery scan). Sealing writes them to an index file, which is then memory-mapped and binary-searched.
//! An entry is only a hint: a reader checks that the record at the entry's position has the entry's offset
//! and falls back to scanning from the segment start if not, so a stale or damaged index file costs time,
//! never a wrong answer. This module knows nothing of SQLite, of the log or of retention.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use memmap2::Mmap;
use protocol::record::{peek_record_len, peek_record_offset};

use crate::error::Error;

/// The layout of an index file: entries laid end to end, nothing else.
///
/// ```text
/// [relative_offset:4 LE][position:4 LE] [relative_offset:4 LE][position:4 LE] ...
/// ```
///
/// - `relative_offset` is the record's offset minus the segment's base offset.
/// - `position` is the byte position of the record's `len` field in the segment file.
/// - There is one entry for the first record that starts at least `index_interval_bytes` after the
///   previous entry; the segment start is an implicit entry `(0, 0)` and is not stored.
/// - Both fields strictly increase from entry to entry.
pub(crate) const INDEX_ENTRY_LEN: usize = 8;

/// One index entry: the record with this relative offset starts at this position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct IndexEntry {
    /// Offset minus the segment's base offset.
    pub(crate) relative_offset: u32,
    /// Byte position of the record in the segment.
    pub(crate) position: u32,
}

impl IndexEntry {
    /// Encodes the entry as the file stores it.
    fn to_bytes(self) -> [u8; INDEX_ENTRY_LEN] {
        let mut bytes = [0u8; INDEX_ENTRY_LEN];
        bytes[..4].copy_from_slice(&self.relative_offset.to_le_bytes());
        bytes[4..].copy_from_slice(&self.position.to_le_bytes());
        bytes
    }

    /// Decodes an entry from exactly [`INDEX_ENTRY_LEN`] bytes.
    fn from_bytes(bytes: &[u8]) -> IndexEntry {
        let mut relative_offset = [0u8; 4];
        let mut position = [0u8; 4];
        relative_offset.copy_from_slice(&bytes[..4]);
        position.copy_from_slice(&bytes[4..INDEX_ENTRY_LEN]);
        IndexEntry {
            relative_offset: u32::from_le_bytes(relative_offset),
            position: u32::from_le_bytes(position),
        }
    }
}

/// Decides which records get an entry, the same way while appending and while rebuilding.
#[derive(Debug, Clone)]
pub(crate) struct IndexBuilder {
    /// The configured distance between entries.
    interval: u64,
    /// Position of the last entry (the segment start at first).
    last_position: u64,
}

impl IndexBuilder {
    /// A builder for a segment with no entries yet.
    pub(crate) fn new(interval: u32) -> IndexBuilder {
        IndexBuilder { interval: u64::from(interval.max(1)), last_position: 0 }
    }

    /// A builder that continues after the given entries.
    pub(crate) fn after(interval: u32, entries: &[IndexEntry]) -> IndexBuilder {
        let last_position = entries.last().map_or(0, |entry| u64::from(entry.position));
        IndexBuilder { interval: u64::from(interval.max(1)), last_position }
    }

    /// Called for every record in order; returns the entry to add for it, if any.
    pub(crate) fn observe(&mut self, relative_offset: u64, position: usize) -> Option<IndexEntry> {
        let position = position as u64;
        if position < self.last_position + self.interval {
            return None;
        }
        let entry = IndexEntry {
            relative_offset: u32::try_from(relative_offset).ok()?,
            position: u32::try_from(position).ok()?,
        };
        self.last_position = position;
        Some(entry)
    }
}

/// A segment's entries: in memory for the active segment, a mapped file for a sealed one.
#[derive(Debug)]
pub(crate) enum SparseIndex {
    /// Entries kept in memory.
    Memory(Vec<IndexEntry>),
    /// A mapped index file holding at least one entry, already checked by [`load_index_file`].
    File(Mmap),
}

impl SparseIndex {
    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        match self {
            SparseIndex::Memory(entries) => entries.len(),
            SparseIndex::File(map) => map.len() / INDEX_ENTRY_LEN,
        }
    }

    /// The entry at position `i` (which must be below [`SparseIndex::len`]).
    pub(crate) fn get(&self, i: usize) -> IndexEntry {
        match self {
            SparseIndex::Memory(entries) => entries[i],
            SparseIndex::File(map) => {
                IndexEntry::from_bytes(&map[i * INDEX_ENTRY_LEN..(i + 1) * INDEX_ENTRY_LEN])
            }
        }
    }

    /// The last entry whose relative offset is at most `relative_offset`, or the implicit `(0, 0)`.
    pub(crate) fn floor(&self, relative_offset: u64) -> IndexEntry {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let middle = low + (high - low) / 2;
            if u64::from(self.get(middle).relative_offset) <= relative_offset {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        if low == 0 { IndexEntry::default() } else { self.get(low - 1) }
    }

    /// Adds entries to an in-memory index; a mapped file is never changed.
    pub(crate) fn extend(&mut self, new_entries: &[IndexEntry]) {
        if let SparseIndex::Memory(entries) = self {
            entries.extend_from_slice(new_entries);
        }
    }

    /// A copy of every entry, for writing the index file.
    pub(crate) fn to_vec(&self) -> Vec<IndexEntry> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
}

/// Writes `entries` as the index file at `path`, and makes it durable if `durable`.
pub(crate) fn write_index_file(path: &Path, entries: &[IndexEntry], durable: bool) -> Result<(), Error> {
    let mut bytes = Vec::with_capacity(entries.len() * INDEX_ENTRY_LEN);
    for entry in entries {
        bytes.extend_from_slice(&entry.to_bytes());
    }
    let mut file = File::create(path).map_err(|source| Error::io("create index file", path, source))?;
    file.write_all(&bytes).map_err(|source| Error::io("write index file", path, source))?;
    if durable {
        file.sync_data().map_err(|source| Error::io("sync index file", path, source))?;
    }
    Ok(())
}

/// Opens the index file of a sealed segment whose valid bytes are `segment`, and checks it.
///
/// Returns `Ok(None)` if the file is missing, and an error string (for the log) if it is unusable: a
/// length that is not a whole number of entries, entries out of order or beyond the segment, or a last
/// entry that does not point at a record with its offset. Entries in the middle are checked lazily by
/// readers, because checking them here would read the whole segment.
pub(crate) fn load_index_file(
    path: &Path,
    segment: &[u8],
    base_offset: u64,
) -> Result<Option<SparseIndex>, String> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("cannot open: {error}")),
    };
    let len = file.metadata().map_err(|error| format!("cannot stat: {error}"))?.len();
    if len % INDEX_ENTRY_LEN as u64 != 0 {
        return Err(format!("length {len} is not a multiple of {INDEX_ENTRY_LEN}"));
    }
    if len == 0 {
        return Ok(Some(SparseIndex::Memory(Vec::new())));
    }
    // SAFETY: index files are written once, before they are mapped, and never modified afterwards.
    let map = unsafe { Mmap::map(&file) }.map_err(|error| format!("cannot map: {error}"))?;
    let index = SparseIndex::File(map);
    let mut previous = IndexEntry::default();
    for i in 0..index.len() {
        let entry = index.get(i);
        if entry.relative_offset <= previous.relative_offset || entry.position <= previous.position {
            return Err(format!("entry {i} does not follow entry {}", i.saturating_sub(1)));
        }
        if entry.position as usize >= segment.len() {
            return Err(format!("entry {i} points beyond the segment's {} bytes", segment.len()));
        }
        previous = entry;
    }
    let found = peek_record_offset(&segment[previous.position as usize..]);
    if found != Some(base_offset + u64::from(previous.relative_offset)) {
        return Err(format!(
            "last entry points at offset {found:?}, not {}",
            base_offset + u64::from(previous.relative_offset)
        ));
    }
    Ok(Some(index))
}

/// Rebuilds the entries of a segment whose records are already known to be valid.
pub(crate) fn build_index(segment: &[u8], base_offset: u64, interval: u32) -> Vec<IndexEntry> {
    let mut builder = IndexBuilder::new(interval);
    let mut entries = Vec::new();
    let mut position = 0;
    while let Ok(Some(len)) = peek_record_len(&segment[position..]) {
        let Some(offset) = peek_record_offset(&segment[position..]) else { break };
        if position + len > segment.len() {
            break;
        }
        if let Some(entry) = builder.observe(offset.saturating_sub(base_offset), position) {
            entries.push(entry);
        }
        position += len;
    }
    entries
}

#[cfg(test)]
mod tests {
    use protocol::NewRecord;

    use super::*;

    fn segment_of(n: u64, base: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        for offset in base..base + n {
            NewRecord::new(b"key", &[7u8; 100]).encode_to_vec(offset, 1, &mut bytes);
        }
        bytes
    }

    #[test]
    fn builder_spaces_entries() {
        let segment = segment_of(100, 0);
        let record_len = segment.len() / 100;
        let entries = build_index(&segment, 0, 1000);
        assert!(!entries.is_empty());
        let mut previous = 0;
        for entry in &entries {
            assert_eq!(entry.position as usize, entry.relative_offset as usize * record_len);
            assert!(entry.position as usize - previous >= 1000);
            assert!(entry.position as usize - previous < 1000 + record_len);
            previous = entry.position as usize;
        }
    }

    #[test]
    fn floor_finds_the_closest_entry_at_or_below() {
        let entries: Vec<_> =
            (1..=10).map(|i| IndexEntry { relative_offset: i * 10, position: i * 1000 }).collect();
        let index = SparseIndex::Memory(entries);
        assert_eq!(index.floor(0), IndexEntry::default());
        assert_eq!(index.floor(9), IndexEntry::default());
        assert_eq!(index.floor(10).relative_offset, 10);
        assert_eq!(index.floor(55).relative_offset, 50);
        assert_eq!(index.floor(1_000).relative_offset, 100);
    }

    #[test]
    fn file_round_trip_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.index");
        let segment = segment_of(200, 500);
        let entries = build_index(&segment, 500, 4096);
        write_index_file(&path, &entries, true).unwrap();
        let loaded = load_index_file(&path, &segment, 500).unwrap().unwrap();
        assert_eq!(loaded.to_vec(), entries);
        assert_eq!(loaded.floor(150), SparseIndex::Memory(entries.clone()).floor(150));

        // A wrong base offset makes the last entry point at the wrong record.
        assert!(load_index_file(&path, &segment, 0).is_err());
        // A torn file is refused.
        std::fs::write(&path, &std::fs::read(&path).unwrap()[..5]).unwrap();
        assert!(load_index_file(&path, &segment, 500).is_err());
        // Entries out of order are refused.
        let mut swapped = entries.clone();
        swapped.swap(0, 1);
        write_index_file(&path, &swapped, true).unwrap();
        assert!(load_index_file(&path, &segment, 500).is_err());
        // A missing file is not an error.
        assert!(load_index_file(&dir.path().join("none.index"), &segment, 500).unwrap().is_none());
    }
}
