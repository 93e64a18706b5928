//! The quarantine: where recovery moves what it cannot account for, instead of deleting it. A topic
//! directory nobody describes, a generation that is neither committed nor a replacement being built, a
//! segment that cannot be part of the log: each is renamed into `{data}/quarantine/{time_ms}-{name}[-{generation}]/`
//! with one warning, so that an operator can look at it and either put it back or delete it. Renaming keeps
//! the bytes on the same file system, so moving costs nothing and cannot fail for lack of space.
//!
//! This module moves files; it does not decide what is unaccountable (`recovery.rs` does). A move that
//! fails is an error: recovery stops rather than delete or silently keep what it meant to move.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::paths::{index_path, quarantine_dir, quarantine_root, segment_path, sync_dir};

/// The quarantine of one recovery: every entry it makes carries the same time.
#[derive(Debug)]
pub(crate) struct Quarantine {
    /// The data directory.
    root: PathBuf,
    /// When recovery started, in ms since the epoch; the first part of every entry's name.
    time_ms: u64,
}

impl Quarantine {
    /// The quarantine of the store at `root`, for a recovery that started at `time_ms`.
    pub(crate) fn new(root: &Path, time_ms: u64) -> Quarantine {
        Quarantine { root: root.to_path_buf(), time_ms }
    }

    /// Moves a whole directory (a topic's, or one generation of it) into the quarantine, under a name not
    /// taken yet; returns where it went.
    pub(crate) fn move_dir(
        &self,
        dir: &Path,
        topic: &str,
        generation: Option<u64>,
        why: &str,
    ) -> Result<PathBuf, Error> {
        let target = self.free_entry(topic, generation)?;
        std::fs::rename(dir, &target).map_err(|source| Error::io("move into the quarantine", dir, source))?;
        sync_parents(dir, &target)?;
        tracing::warn!(
            from = %dir.display(), to = %target.display(),
            "moved a directory recovery cannot account for into the quarantine: {why}"
        );
        Ok(target)
    }

    /// Moves one segment file (and its index file, if any) of generation `generation` of `topic` into the
    /// quarantine entry of that generation; returns the entry.
    pub(crate) fn move_segment(
        &self,
        generation_dir: &Path,
        topic: &str,
        generation: u64,
        base_offset: u64,
        why: &str,
    ) -> Result<PathBuf, Error> {
        let target = quarantine_dir(&self.root, self.time_ms, topic, Some(generation), 0);
        std::fs::create_dir_all(&target)
            .map_err(|source| Error::io("create a quarantine directory", &target, source))?;
        let segment = segment_path(generation_dir, base_offset);
        let moved = segment_path(&target, base_offset);
        std::fs::rename(&segment, &moved)
            .map_err(|source| Error::io("move into the quarantine", &segment, source))?;
        let index = index_path(generation_dir, base_offset);
        match std::fs::rename(&index, index_path(&target, base_offset)) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::io("move into the quarantine", &index, source)),
        }
        sync_dir(&target)?;
        sync_dir(&quarantine_root(&self.root))?;
        sync_dir(generation_dir)?;
        tracing::warn!(
            from = %segment.display(), to = %moved.display(),
            "moved a segment recovery cannot use into the quarantine: {why}"
        );
        Ok(target)
    }

    /// A quarantine entry for `topic` (and `generation`) that does not exist yet; creates the quarantine.
    fn free_entry(&self, topic: &str, generation: Option<u64>) -> Result<PathBuf, Error> {
        let root = quarantine_root(&self.root);
        std::fs::create_dir_all(&root).map_err(|source| Error::io("create the quarantine", &root, source))?;
        let mut attempt = 0;
        loop {
            let target = quarantine_dir(&self.root, self.time_ms, topic, generation, attempt);
            if !target.exists() {
                return Ok(target);
            }
            attempt += 1;
        }
    }
}

/// Makes a rename from `from` to `to` durable: both parent directories are synced.
fn sync_parents(from: &Path, to: &Path) -> Result<(), Error> {
    for dir in [from.parent(), to.parent()].into_iter().flatten() {
        sync_dir(dir)?;
    }
    Ok(())
}
