//! A topic's identity kept beside its segments, so that losing `meta.sqlite` never loses what the segment
//! files alone cannot say: which topic they belong to, its uid, which generation directory is the committed
//! copy and where the log starts. Recovery rebuilds a topic's SQLite rows from this file and the segment
//! files; while SQLite describes the topic, SQLite wins and this file is rewritten to match it.
//!
//! One small JSON file per topic, `topics/{name}/topic.json` (`paths.rs` owns the name), replaced
//! atomically: written to `topic.json.tmp`, synced, renamed over the old file, and the directory synced.
//! A crash leaves either the old file or the new one, plus perhaps a stray temporary file that recovery
//! removes. This module reads and writes the file; it knows nothing of SQLite or of segments, and it does
//! not decide when the identity changes (`store.rs` and `recovery.rs` do).
//!
//! ```text
//! {
//!   "version": 1,                                  layout version; see IDENTITY_VERSION
//!   "name": "prices",                              the topic's name (its directory's name)
//!   "uid": "0123456789abcdef0011223344556677",     the topic's uid, 32 hex digits
//!   "generation": 3,                               the generation directory of the committed copy
//!   "log_start": 1000,                             the first offset stored
//!   "created_ms": 1700000000000,                   when this copy was created
//!   "epochs": [                                    the epoch history, oldest first (absent: unknown)
//!     { "epoch": 0, "start_offset": 0 },
//!     { "epoch": 1, "start_offset": 1200 }
//!   ],
//!   "settings": {                                  explicit settings (absent: the store's defaults)
//!     "cleanup": "compact,delete",                 delete, compact or compact,delete
//!     "retention_bytes": 268435456,                each limit absent: no limit by that measure
//!     "retention_age_ms": 604800000,
//!     "tombstone_retention_ms": 86400000
//!   },
//!   "delete_horizon": 52000                        compaction may have dropped deletes below this
//! }                                                (absent: zero)
//! ```
//!
//! Compatibility: a field added later (the epoch history was, the topic settings and the delete horizon) gets `#[serde(default)]`, so a
//! file written before it still reads, and fields this build does not know are ignored, so a file written by
//! a newer build still reads. `version` changes only when a file cannot be read correctly by ignoring what
//! is unknown; a build refuses a file whose version is greater than its own.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use protocol::{Cleanup, Epoch, EpochHistory, TopicSettings, TopicUid};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::meta::TopicRow;
use crate::paths::{identity_path, identity_temp_path, sync_dir};

/// The layout version this build writes and the greatest it reads.
pub(crate) const IDENTITY_VERSION: u32 = 1;

/// What the identity file of a topic says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicIdentity {
    /// The topic's name.
    pub(crate) name: String,
    /// The topic's uid.
    pub(crate) uid: TopicUid,
    /// The generation directory holding the committed copy.
    pub(crate) generation: u64,
    /// The first offset stored (it may lag behind retention by one crash; it is never ahead of it).
    pub(crate) log_start: u64,
    /// When the committed copy was created.
    pub(crate) created_ms: u64,
    /// The epoch history (empty if unknown).
    pub(crate) epochs: EpochHistory,
    /// The explicit settings; `None` for the store's defaults.
    pub(crate) settings: Option<TopicSettings>,
    /// The delete horizon (zero if compaction never dropped a tombstone).
    pub(crate) delete_horizon: u64,
}

impl TopicIdentity {
    /// The identity of a topic as SQLite records it.
    pub(crate) fn of_row(row: &TopicRow) -> TopicIdentity {
        TopicIdentity {
            name: row.name.clone(),
            uid: row.uid,
            generation: row.generation,
            log_start: row.log_start,
            created_ms: row.created_ms,
            epochs: row.epochs.clone(),
            settings: row.settings,
            delete_horizon: row.delete_horizon,
        }
    }

    /// The topic row to record in SQLite when rebuilding it from this file.
    pub(crate) fn to_row(&self) -> TopicRow {
        TopicRow {
            name: self.name.clone(),
            uid: self.uid,
            generation: self.generation,
            log_start: self.log_start,
            created_ms: self.created_ms,
            epochs: self.epochs.clone(),
            settings: self.settings,
            delete_horizon: self.delete_horizon,
        }
    }
}

/// What reading a topic's identity file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdentityRead {
    /// There is no identity file.
    Missing,
    /// The file holds this identity.
    Valid(TopicIdentity),
    /// The file exists but cannot be used, for this reason.
    Unusable(String),
}

/// The file's layout, as serde sees it.
#[derive(Debug, Serialize, Deserialize)]
struct IdentityFile {
    /// See [`IDENTITY_VERSION`].
    version: u32,
    /// See [`TopicIdentity::name`].
    name: String,
    /// See [`TopicIdentity::uid`], as `TopicUid`'s 32 hex digits.
    uid: String,
    /// See [`TopicIdentity::generation`].
    generation: u64,
    /// See [`TopicIdentity::log_start`].
    log_start: u64,
    /// See [`TopicIdentity::created_ms`].
    created_ms: u64,
    /// See [`TopicIdentity::epochs`]; absent in files written before epochs existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    epochs: Vec<EpochEntry>,
    /// See [`TopicIdentity::settings`]; absent in files written before settings existed, and for a topic
    /// without explicit settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    settings: Option<SettingsEntry>,
    /// See [`TopicIdentity::delete_horizon`]; absent while it is zero.
    #[serde(default, skip_serializing_if = "is_zero")]
    delete_horizon: u64,
    // Fields added later go here, each with `#[serde(default)]`, so that files written before them still
    // read.
}

/// A topic's explicit settings in the file.
#[derive(Debug, Serialize, Deserialize)]
struct SettingsEntry {
    /// The cleanup policy's API word (`Cleanup::as_str`).
    cleanup: String,
    /// See [`TopicSettings::retention_bytes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retention_bytes: Option<u64>,
    /// See [`TopicSettings::retention_age_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retention_age_ms: Option<u64>,
    /// See [`TopicSettings::tombstone_retention_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tombstone_retention_ms: Option<u64>,
}

/// One epoch in the file.
#[derive(Debug, Serialize, Deserialize)]
struct EpochEntry {
    /// See [`Epoch::epoch`].
    epoch: u32,
    /// See [`Epoch::start_offset`].
    start_offset: u64,
}

/// Reads the identity file in `topic_root`. Only an I/O error other than "not found" is an error; a file
/// that cannot be parsed is [`IdentityRead::Unusable`].
pub(crate) fn read_identity(topic_root: &Path) -> Result<IdentityRead, Error> {
    let path = identity_path(topic_root);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(IdentityRead::Missing),
        Err(source) => return Err(Error::io("read topic identity file", &path, source)),
    };
    Ok(match decode(&bytes) {
        Ok(identity) => IdentityRead::Valid(identity),
        Err(reason) => IdentityRead::Unusable(reason),
    })
}

/// Replaces the identity file in `topic_root` (which must exist) atomically and durably.
pub(crate) fn write_identity(topic_root: &Path, identity: &TopicIdentity) -> Result<(), Error> {
    let temp = identity_temp_path(topic_root);
    let path = identity_path(topic_root);
    let bytes = encode(identity)
        .map_err(|source| Error::io("encode topic identity file", &temp, std::io::Error::other(source)))?;
    let mut file =
        File::create(&temp).map_err(|source| Error::io("create topic identity file", &temp, source))?;
    file.write_all(&bytes).map_err(|source| Error::io("write topic identity file", &temp, source))?;
    file.sync_all().map_err(|source| Error::io("sync topic identity file", &temp, source))?;
    drop(file);
    std::fs::rename(&temp, &path).map_err(|source| Error::io("rename topic identity file", &path, source))?;
    sync_dir(topic_root)
}

/// Removes the identity file in `topic_root` durably (a missing file is not an error).
pub(crate) fn remove_identity(topic_root: &Path) -> Result<(), Error> {
    let path = identity_path(topic_root);
    match std::fs::remove_file(&path) {
        Ok(()) => sync_dir(topic_root),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::io("remove topic identity file", &path, source)),
    }
}

/// The file's bytes for an identity: pretty JSON, one field per line, for people reading it.
fn encode(identity: &TopicIdentity) -> Result<Vec<u8>, serde_json::Error> {
    let file = IdentityFile {
        version: IDENTITY_VERSION,
        name: identity.name.clone(),
        uid: identity.uid.to_string(),
        generation: identity.generation,
        log_start: identity.log_start,
        created_ms: identity.created_ms,
        epochs: identity
            .epochs
            .entries()
            .iter()
            .map(|entry| EpochEntry { epoch: entry.epoch, start_offset: entry.start_offset })
            .collect(),
        settings: identity.settings.map(|settings| SettingsEntry {
            cleanup: settings.cleanup.as_str().to_string(),
            retention_bytes: settings.retention_bytes,
            retention_age_ms: settings.retention_age_ms,
            tombstone_retention_ms: settings.tombstone_retention_ms,
        }),
        delete_horizon: identity.delete_horizon,
    };
    let mut bytes = serde_json::to_vec_pretty(&file)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Parses and checks the file's bytes.
fn decode(bytes: &[u8]) -> Result<TopicIdentity, String> {
    let file: IdentityFile =
        serde_json::from_slice(bytes).map_err(|error| format!("not an identity file: {error}"))?;
    if file.version == 0 || file.version > IDENTITY_VERSION {
        return Err(format!(
            "layout version {} is not one this build reads (1 to {IDENTITY_VERSION})",
            file.version
        ));
    }
    let uid = file.uid.parse::<TopicUid>()?;
    if uid.is_unknown() {
        return Err("the uid is the unknown uid".to_string());
    }
    let epochs =
        file.epochs.iter().map(|entry| Epoch { epoch: entry.epoch, start_offset: entry.start_offset });
    let epochs = EpochHistory::new(epochs.collect()).map_err(|reason| format!("epoch history: {reason}"))?;
    let settings = match file.settings {
        None => None,
        Some(entry) => Some(TopicSettings {
            cleanup: entry.cleanup.parse::<Cleanup>().map_err(|reason| format!("settings: {reason}"))?,
            retention_bytes: entry.retention_bytes,
            retention_age_ms: entry.retention_age_ms,
            tombstone_retention_ms: entry.tombstone_retention_ms,
        }),
    };
    Ok(TopicIdentity {
        name: file.name,
        uid,
        generation: file.generation,
        log_start: file.log_start,
        created_ms: file.created_ms,
        epochs,
        settings,
        delete_horizon: file.delete_horizon,
    })
}

/// Whether a field is zero, so that it is left out of the file.
fn is_zero(value: &u64) -> bool {
    *value == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> TopicIdentity {
        TopicIdentity {
            name: "prices".to_string(),
            uid: TopicUid(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            generation: 3,
            log_start: 1000,
            created_ms: 1_700_000_000_000,
            epochs: EpochHistory::first(0).begin(1200),
            settings: None,
            delete_horizon: 0,
        }
    }

    #[test]
    fn the_layout_is_stable() {
        let text = String::from_utf8(encode(&identity()).unwrap()).unwrap();
        let expected = r#"{
  "version": 1,
  "name": "prices",
  "uid": "0123456789abcdef0011223344556677",
  "generation": 3,
  "log_start": 1000,
  "created_ms": 1700000000000,
  "epochs": [
    {
      "epoch": 0,
      "start_offset": 0
    },
    {
      "epoch": 1,
      "start_offset": 1200
    }
  ]
}
"#;
        assert_eq!(text, expected);
        assert_eq!(decode(text.as_bytes()).unwrap(), identity());
    }

    #[test]
    fn files_from_before_epochs_read_with_an_unknown_history() {
        let older = r#"{"version": 1, "name": "prices", "uid": "0123456789abcdef0011223344556677",
            "generation": 3, "log_start": 1000, "created_ms": 1700000000000}"#;
        assert_eq!(
            decode(older.as_bytes()).unwrap(),
            TopicIdentity { epochs: EpochHistory::default(), ..identity() }
        );
    }

    #[test]
    fn later_fields_are_ignored_and_missing_optional_ones_default() {
        let newer = r#"{"version": 1, "name": "prices", "uid": "0123456789abcdef0011223344556677",
            "generation": 3, "log_start": 1000, "created_ms": 1700000000000,
            "epochs": [{"epoch": 0, "start_offset": 0}, {"epoch": 1, "start_offset": 1200, "term": 4}],
            "settings": {"cleanup": "compact", "compaction_lag_ms": 5}, "owner": "ops"}"#;
        let compact = TopicSettings { cleanup: Cleanup::Compact, ..TopicSettings::default() };
        assert_eq!(
            decode(newer.as_bytes()).unwrap(),
            TopicIdentity { settings: Some(compact), ..identity() }
        );
    }

    #[test]
    fn settings_round_trip_and_a_bad_policy_is_unusable() {
        let settings = TopicSettings {
            cleanup: Cleanup::CompactDelete,
            retention_bytes: Some(1 << 28),
            retention_age_ms: None,
            tombstone_retention_ms: Some(86_400_000),
        };
        let with_settings = TopicIdentity { settings: Some(settings), ..identity() };
        let text = String::from_utf8(encode(&with_settings).unwrap()).unwrap();
        assert!(text.contains("\"cleanup\": \"compact,delete\""), "{text}");
        assert!(!text.contains("retention_age_ms"), "an absent limit is left out: {text}");
        assert_eq!(decode(text.as_bytes()).unwrap(), with_settings);
        assert!(decode(text.replace("compact,delete", "shred").as_bytes()).is_err());
    }

    #[test]
    fn bad_files_are_unusable_not_errors() {
        let good = String::from_utf8(encode(&identity()).unwrap()).unwrap();
        let cases = [
            String::new(),
            "garbage".to_string(),
            good[..good.len() / 2].to_string(),
            good.replace("\"version\": 1", "\"version\": 2"),
            good.replace("\"version\": 1", "\"version\": 0"),
            good.replace("0123456789abcdef", "0123456789abcdeX"),
            good.replace("0123456789abcdef0011223344556677", &"0".repeat(32)),
            good.replace("\"generation\": 3,", ""),
            good.replace("\"start_offset\": 1200", "\"start_offset\": 0")
                .replace("\"epoch\": 1", "\"epoch\": 0"),
        ];
        for case in cases {
            assert!(decode(case.as_bytes()).is_err(), "{case}");
        }
    }

    #[test]
    fn write_read_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_identity(dir.path()).unwrap(), IdentityRead::Missing);
        write_identity(dir.path(), &identity()).unwrap();
        assert_eq!(read_identity(dir.path()).unwrap(), IdentityRead::Valid(identity()));
        assert!(!identity_temp_path(dir.path()).exists());
        let changed = TopicIdentity { log_start: 2000, ..identity() };
        write_identity(dir.path(), &changed).unwrap();
        assert_eq!(read_identity(dir.path()).unwrap(), IdentityRead::Valid(changed));
        std::fs::write(identity_path(dir.path()), b"{").unwrap();
        assert!(matches!(read_identity(dir.path()).unwrap(), IdentityRead::Unusable(_)));
        remove_identity(dir.path()).unwrap();
        remove_identity(dir.path()).unwrap();
        assert_eq!(read_identity(dir.path()).unwrap(), IdentityRead::Missing);
    }
}
