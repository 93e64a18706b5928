//! Recovery when a store opens. The segment files are the truth about records; SQLite is the truth about
//! which topics exist and which generation of each is committed, and each topic's identity file
//! (`identity.rs`) keeps a copy of that beside its segments. This module reconciles the three after a clean
//! close or a crash at any point, and rebuilds SQLite from the files when it is lost. It runs before any log
//! is shared, so it needs no locking.
//!
//! Architecture invariant: recovery never deletes data it cannot account for; it quarantines it
//! (`quarantine.rs`). It deletes only what is garbage by design: a replacement that never committed (the
//! old copy is the truth) and the old copy of one that did, segment files that retention already removed
//! from the metadata, empty segment files, index files (rebuilt from their segments), an unfinished
//! identity file, a compacted or repaired segment never renamed in, and the segments a renamed-in compacted
//! segment replaced; and it cuts the bytes after a segment's valid records, keeping the file.
//!
//! Every mismatch has one outcome, logged with `tracing::warn!`.
//!
//! The metadata database:
//!
//! - `meta.sqlite` missing or empty: a new one is created, and every topic directory is one SQLite does not
//!   describe (below). A write-ahead log left without its database belongs to the lost file and is moved
//!   aside (`meta.orphaned-{time_ms}.sqlite-wal`), never replayed into the new one.
//! - `meta.sqlite` unusable (SQLite does not recognise it or finds it corrupt, its integrity check fails,
//!   or its schema is not this build's): it is renamed, with its `-wal` and `-shm`, to
//!   `meta.corrupt-{time_ms}.sqlite`, never deleted, and a new one is built as above. Any other error opening
//!   it (I/O, permissions) fails the open: the file may be fine.
//!
//! Topic directories:
//!
//! - A topic directory SQLite does not describe, whose identity file is valid, names it, and whose
//!   committed generation directory exists: the topic row is rebuilt from the identity (same uid,
//!   generation and log start) and its segment files are adopted as below. One warning per topic says what
//!   was rebuilt and why.
//! - A topic directory SQLite does not describe that cannot be rebuilt (no identity file, an unusable one,
//!   one naming another topic or a generation that is not there): its replacements being built (below) are
//!   deleted and whatever else it holds is moved into the quarantine.
//! - A topic whose committed generation in SQLite is not there, while its identity file names another
//!   generation that is (a `meta.sqlite` older than the last full refresh, restored from a backup): the
//!   identity wins, the topic row is switched to that generation and rebuilt from its files as above.
//! - Otherwise, an identity file that is missing, unusable, or disagrees with SQLite, for a topic SQLite
//!   describes: SQLite wins and the file is rewritten. (Creation and the commit of a full refresh write the file just
//!   before SQLite, so after a crash between the two it names a complete copy; retention writes it just
//!   after, so its log start may lag, which at worst adopts segment files retention had not yet deleted.)
//! - A stray `topic.json.tmp` (a crash while the identity was written) is deleted: the file it was to
//!   replace, or SQLite, is the truth.
//!
//! Generations of a topic that is kept:
//!
//! - A generation directory other than the committed one that SQLite has segment rows for (a replacement
//!   that never committed) is deleted, and so are segment rows of uncommitted generations.
//! - One numbered below the committed one, while the committed one exists, is the old copy of a replacement
//!   that committed (generation numbers only grow) and is deleted.
//! - Any other generation directory is moved into the quarantine.
//! - A committed generation directory that is missing is recreated, empty, at the end SQLite knows of.
//!
//! Segments of the committed generation (`recovery/topic.rs`):
//!
//! - A segment row without a file is removed.
//! - A `{base}.log.compact` or `{base}.log.repair` file (a rewrite that was never renamed in) is deleted: the
//!   segment it was to replace is still there.
//! - A sealed segment that starts inside the segment before it and ends within it was replaced by that
//!   one (compaction renamed it in, ending exactly where the last segment of its group ended, and stopped
//!   before deleting the rest of the group): it is deleted and its row removed.
//! - A segment file SQLite does not know is adopted if it continues the log (a rebuilt topic adopts every
//!   file this way); one below the log start (left over by retention) is deleted.
//! - A sealed segment whose size or last offset differs from its row, or which has no sealed row, is
//!   rescanned record by record (CRC and offsets rising; a compacted segment skips some); anything after its valid records is cut off, and its
//!   row is rewritten. One without any valid record is quarantined (deleted if the file is empty).
//! - A missing or bad index file is rebuilt from its segment; an index file without a segment is deleted.
//! - The last segment is always the active one: every record's CRC and rising offsets are checked, a
//!   torn or corrupt tail is cut (the file is truncated to the valid prefix, so what follows reads as
//!   zeros), and the file is synced.
//! - Segments must be contiguous: each starts where the one before it ends (inside one, offsets may skip
//!   where compaction removed records). Where a gap between two remains, the segments before it are quarantined: the newest
//!   run is kept because new offsets continue from it, and keeping older data instead would hand out
//!   offsets again. The log start moves to the first segment kept.

mod topic;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use protocol::{now_ms, validate_topic_name};

use crate::config::LogConfig;
use crate::error::Error;
use crate::identity::{IdentityRead, TopicIdentity, read_identity, write_identity};
use crate::log::Log;
use crate::meta::{Meta, TopicRow};
use crate::paths::{
    TopicRootEntry, meta_aside_files, meta_files, meta_path, parse_topic_root_entry, remove_dir_logged,
    remove_file_logged, sync_dir, topic_dir, topic_root, topics_root,
};
use crate::quarantine::Quarantine;

use topic::{TopicContext, recover_topic};

/// The result of recovering a store.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// One log per committed topic, sorted by name.
    pub(crate) logs: Vec<Log>,
    /// The highest generation number seen, committed or not.
    pub(crate) max_generation: u64,
}

/// How `meta.sqlite` was found when the store opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MetaCondition {
    /// It opened and passed its checks.
    Present,
    /// There was no file; a new one was created.
    Missing,
    /// The file was empty; the database was created in it.
    Empty,
    /// The file was unusable and was moved aside; a new one was created.
    MovedAside {
        /// Where the unusable file went.
        to: PathBuf,
        /// What was wrong with it.
        detail: String,
    },
}

impl MetaCondition {
    /// Why a topic had to be rebuilt from its files, for the log line that says so.
    fn rebuild_reason(&self) -> String {
        match self {
            MetaCondition::Present => "meta.sqlite did not describe it".to_string(),
            MetaCondition::Missing => "meta.sqlite was missing".to_string(),
            MetaCondition::Empty => "meta.sqlite was empty".to_string(),
            MetaCondition::MovedAside { to, detail } => {
                format!("meta.sqlite was unusable ({detail}) and was moved to {}", to.display())
            }
        }
    }
}

/// Opens the metadata database of the store at `root`, moving aside a file that cannot be used (and a
/// write-ahead log whose database is gone) and creating a new one in its place.
pub(crate) fn open_meta(root: &Path) -> Result<(Meta, MetaCondition), Error> {
    let path = meta_path(root);
    let now = now_ms();
    let condition = match std::fs::metadata(&path) {
        Ok(metadata) if metadata.len() == 0 => MetaCondition::Empty,
        Ok(_) => MetaCondition::Present,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => MetaCondition::Missing,
        Err(source) => return Err(Error::io("stat metadata database", &path, source)),
    };
    if condition == MetaCondition::Missing && meta_files(root)[1..].iter().any(|file| file.exists()) {
        move_meta_aside(root, "orphaned", now)?;
        tracing::warn!(
            dir = %root.display(),
            "meta.sqlite is missing but its write-ahead log is not; moved the log aside"
        );
    }
    match Meta::open(&path) {
        Ok(meta) => Ok((meta, condition)),
        Err(Error::UnusableMeta { detail, .. }) => {
            let to = move_meta_aside(root, "corrupt", now)?;
            tracing::warn!(
                moved_to = %to.display(), %detail,
                "meta.sqlite is unusable; moved it aside, rebuilding it from the topics' files"
            );
            Ok((Meta::open(&path)?, MetaCondition::MovedAside { to, detail }))
        }
        Err(error) => Err(error),
    }
}

/// Reconciles the store at `root` with its metadata (found as `condition` says) and opens every topic's
/// log.
pub(crate) fn recover(
    root: &Path,
    config: &Arc<LogConfig>,
    meta: &Arc<Meta>,
    condition: &MetaCondition,
) -> Result<Recovered, Error> {
    let mut topics = BTreeMap::new();
    for topic in meta.topics()? {
        // A name becomes a directory name, so one that was not written by this crate must not be used.
        if let Err(reason) = validate_topic_name(&topic.name) {
            return Err(Error::CorruptMeta { path: meta_path(root), detail: reason });
        }
        topics.insert(topic.name.clone(), topic);
    }
    let with_segments = meta.generations_with_segments()?;
    let quarantine = Quarantine::new(root, now_ms());
    let mut max_generation = 0;
    let mut identities = HashMap::new();
    let mut rebuilt = BTreeMap::new();
    for (name, path) in list_dir(&topics_root(root))? {
        if !path.is_dir() {
            tracing::warn!(path = %path.display(), "unexpected file among the topic directories; ignored");
            continue;
        }
        let identity = read_identity(&path)?;
        let row = match topics.get(&name) {
            Some(row) => match newer_generation(root, row, &identity) {
                Some(found) => {
                    let stale = row.generation;
                    let row = found.to_row();
                    meta.commit_replace(&row, Some(stale))?;
                    topics.insert(name.clone(), row.clone());
                    let why = format!(
                        "meta.sqlite named generation {stale}, which is not there, and the identity file \
                         generation {}, which is",
                        row.generation
                    );
                    rebuilt.insert(name.clone(), why);
                    row
                }
                None => row.clone(),
            },
            None => match rebuildable(root, &name, &identity) {
                Ok(found) => {
                    let row = found.to_row();
                    meta.insert_topic(&row)?;
                    topics.insert(name.clone(), row.clone());
                    rebuilt.insert(name.clone(), condition.rebuild_reason());
                    row
                }
                Err(why) => {
                    let highest =
                        dispose_of_unknown_topic(root, &path, &name, &with_segments, &quarantine, &why)?;
                    max_generation = max_generation.max(highest);
                    continue;
                }
            },
        };
        let highest = clean_generations(root, &path, &row, &with_segments, &quarantine)?;
        max_generation = max_generation.max(highest);
        identities.insert(name, identity);
    }
    let removed_rows = meta.delete_uncommitted_segments()?;
    if removed_rows > 0 {
        tracing::warn!(
            rows = removed_rows,
            "removed segment rows of uncommitted generations or deleted topics"
        );
    }

    let context = TopicContext { root, config, meta, quarantine: &quarantine };
    let mut logs = Vec::with_capacity(topics.len());
    for topic in topics.values() {
        max_generation = max_generation.max(topic.generation);
        let reason = rebuilt.get(&topic.name);
        let log = recover_topic(&context, topic, reason.is_some())?;
        let identity = identities.remove(&topic.name).unwrap_or(IdentityRead::Missing);
        keep_identity(root, &log, topic, identity)?;
        if let Some(reason) = reason {
            let (name, uid, start, end) = (log.name(), log.uid(), log.log_start(), log.next_offset());
            tracing::warn!(
                topic = name, %uid, generation = topic.generation, log_start = start, next_offset = end,
                "rebuilt topic {name} (uid {uid}, offsets {start}..{end}) from its files; {reason}"
            );
        }
        logs.push(log);
    }
    Ok(Recovered { logs, max_generation })
}

/// The identity to follow instead of SQLite's row, when SQLite names a committed generation that is not
/// there and the identity file names another that is (a `meta.sqlite` older than the last full refresh,
/// such as one restored from a backup).
fn newer_generation(root: &Path, row: &TopicRow, identity: &IdentityRead) -> Option<TopicIdentity> {
    let IdentityRead::Valid(found) = identity else { return None };
    let usable = found.name == row.name
        && found.generation != row.generation
        && !topic_dir(root, &row.name, row.generation).is_dir()
        && topic_dir(root, &row.name, found.generation).is_dir();
    usable.then(|| found.clone())
}

/// The identity to rebuild an undescribed topic directory from, or why there is none.
fn rebuildable(root: &Path, name: &str, identity: &IdentityRead) -> Result<TopicIdentity, String> {
    let found = match identity {
        IdentityRead::Valid(found) => found,
        IdentityRead::Missing => {
            return Err("meta.sqlite does not describe it and it has no identity file".into());
        }
        IdentityRead::Unusable(reason) => {
            return Err(format!(
                "meta.sqlite does not describe it and its identity file is unusable: {reason}"
            ));
        }
    };
    if let Err(reason) = validate_topic_name(name) {
        return Err(format!("its name is not a topic name: {reason}"));
    }
    if found.name != name {
        return Err(format!("its identity file names topic {:?}", found.name));
    }
    if !topic_dir(root, name, found.generation).is_dir() {
        return Err(format!("its identity file names generation {}, which is not there", found.generation));
    }
    Ok(found.clone())
}

/// Deletes the replacements being built in a topic directory nobody describes, and moves whatever else it
/// holds into the quarantine (or removes it, if nothing is left). Returns the highest generation seen.
fn dispose_of_unknown_topic(
    root: &Path,
    path: &Path,
    name: &str,
    with_segments: &BTreeSet<(String, u64)>,
    quarantine: &Quarantine,
    why: &str,
) -> Result<u64, Error> {
    let mut max_generation = 0;
    let mut unaccounted = false;
    for (entry, entry_path) in list_dir(path)? {
        match parse_topic_root_entry(&entry) {
            Some(TopicRootEntry::Generation(generation)) if entry_path.is_dir() => {
                max_generation = max_generation.max(generation);
                if with_segments.contains(&(name.to_string(), generation)) {
                    tracing::warn!(
                        dir = %entry_path.display(),
                        "replacement of a topic that never committed; deleting it"
                    );
                    remove_dir_logged(&entry_path, "replacement never committed");
                } else {
                    unaccounted = true;
                }
            }
            Some(TopicRootEntry::IdentityTemp) => remove_file_logged(&entry_path, "unfinished identity file"),
            _ => unaccounted = true,
        }
    }
    if unaccounted {
        quarantine.move_dir(path, name, None, why)?;
    } else {
        match std::fs::remove_dir(path) {
            Ok(()) => sync_dir(&topics_root(root))?,
            Err(error) => {
                tracing::warn!(dir = %path.display(), %error, "cannot remove an empty topic directory")
            }
        }
    }
    Ok(max_generation)
}

/// Applies the generation rules to a topic that is kept; returns the highest generation seen.
fn clean_generations(
    root: &Path,
    path: &Path,
    topic: &TopicRow,
    with_segments: &BTreeSet<(String, u64)>,
    quarantine: &Quarantine,
) -> Result<u64, Error> {
    let committed_exists = topic_dir(root, &topic.name, topic.generation).is_dir();
    let mut max_generation = 0;
    for (entry, entry_path) in list_dir(path)? {
        match parse_topic_root_entry(&entry) {
            Some(TopicRootEntry::Identity) => {}
            Some(TopicRootEntry::IdentityTemp) => {
                tracing::warn!(path = %entry_path.display(), "unfinished write of the identity file; deleting it");
                remove_file_logged(&entry_path, "unfinished identity file");
            }
            Some(TopicRootEntry::Generation(generation)) if entry_path.is_dir() => {
                max_generation = max_generation.max(generation);
                if generation == topic.generation {
                    continue;
                }
                if with_segments.contains(&(topic.name.clone(), generation)) {
                    tracing::warn!(dir = %entry_path.display(), "replacement that never committed; deleting it");
                    remove_dir_logged(&entry_path, "replacement never committed");
                } else if generation < topic.generation && committed_exists {
                    tracing::warn!(
                        dir = %entry_path.display(),
                        "old copy superseded by a committed full refresh; deleting it"
                    );
                    remove_dir_logged(&entry_path, "superseded generation");
                } else {
                    let why = "a generation that is neither the committed copy nor a replacement being built";
                    quarantine.move_dir(&entry_path, &topic.name, Some(generation), why)?;
                }
            }
            _ => {
                tracing::warn!(path = %entry_path.display(), "unexpected entry in a topic directory; ignored")
            }
        }
    }
    Ok(max_generation)
}

/// Makes the topic's identity file say what SQLite says, now that its log is recovered.
fn keep_identity(root: &Path, log: &Log, topic: &TopicRow, found: IdentityRead) -> Result<(), Error> {
    let expected = TopicIdentity { log_start: log.log_start(), ..TopicIdentity::of_row(topic) };
    let name = &topic.name;
    match found {
        IdentityRead::Valid(found) if found == expected => return Ok(()),
        IdentityRead::Valid(found)
            if (found.uid, found.generation) != (expected.uid, expected.generation) =>
        {
            tracing::warn!(
                topic = %name, file_uid = %found.uid, file_generation = found.generation,
                uid = %expected.uid, generation = expected.generation,
                "the identity file disagrees with meta.sqlite; meta.sqlite wins, rewriting the file"
            );
        }
        IdentityRead::Valid(_) => tracing::debug!(topic = %name, "updating the identity file's log start"),
        IdentityRead::Missing => tracing::info!(topic = %name, "writing the topic's identity file"),
        IdentityRead::Unusable(reason) => tracing::warn!(
            topic = %name, %reason,
            "the identity file is unusable; rewriting it from meta.sqlite"
        ),
    }
    write_identity(&topic_root(root, name), &expected)
}

/// Renames the metadata database and its companion files (those that exist) to their aside names;
/// returns the database's aside name.
fn move_meta_aside(root: &Path, why: &str, time_ms: u64) -> Result<PathBuf, Error> {
    let aside = meta_aside_files(root, why, time_ms);
    for (from, to) in meta_files(root).iter().zip(&aside) {
        match std::fs::rename(from, to) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::io("move the metadata database aside", from, source)),
        }
    }
    sync_dir(root)?;
    let [database, _, _] = aside;
    Ok(database)
}

/// The entries of a directory as (UTF-8 name, path); names that are not UTF-8 are logged and skipped.
fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::io("list directory", dir, source))?;
    let mut listed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::io("list directory", dir, source))?;
        match entry.file_name().into_string() {
            Ok(name) => listed.push((name, entry.path())),
            Err(name) => tracing::warn!(dir = %dir.display(), ?name, "entry name is not UTF-8; ignored"),
        }
    }
    listed.sort();
    Ok(listed)
}
