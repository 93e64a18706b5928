//! A topic's settings: the cleanup policy and the retention limits ROOT gives a topic and every node below
//! applies to its copy. Set explicitly at ROOT (`PUT /api/v1/topics/{topic}`), carried down the tree in
//! SETTINGS frames; a topic without explicit settings keeps each node's own defaults (`delete`, the
//! broker's `--retention-*`).
//!
//! This module owns the values, their words on the API and their bytes in a frame. It does not apply them
//! (storage's retention does) and does not parse sizes or durations with units (`service::units` does).

use std::fmt;
use std::str::FromStr;

/// What may remove a topic's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Cleanup {
    /// Whole old segments are removed by the retention limits (`"delete"`), as for every topic today.
    #[default]
    Delete,
    /// Records are kept until compaction replaces them by newer ones of the same key (`"compact"`);
    /// retention never removes a segment.
    Compact,
    /// Both: compaction, and the retention limits (`"compact,delete"`).
    CompactDelete,
}

impl Cleanup {
    /// Every policy, in wire-byte order.
    pub const ALL: [Cleanup; 3] = [Cleanup::Delete, Cleanup::Compact, Cleanup::CompactDelete];

    /// The word on the API: `delete`, `compact` or `compact,delete`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Cleanup::Delete => "delete",
            Cleanup::Compact => "compact",
            Cleanup::CompactDelete => "compact,delete",
        }
    }

    /// The byte in a SETTINGS frame: 0 delete, 1 compact, 2 compact,delete.
    pub const fn as_u8(self) -> u8 {
        match self {
            Cleanup::Delete => 0,
            Cleanup::Compact => 1,
            Cleanup::CompactDelete => 2,
        }
    }

    /// The policy with this byte, if defined.
    pub fn from_u8(byte: u8) -> Option<Cleanup> {
        Cleanup::ALL.into_iter().find(|cleanup| cleanup.as_u8() == byte)
    }

    /// Whether compaction runs under this policy (`compact` and `compact,delete`).
    pub const fn compacts(self) -> bool {
        !matches!(self, Cleanup::Delete)
    }

    /// Whether the retention limits remove segments under this policy (not for `compact` alone).
    pub const fn deletes(self) -> bool {
        !matches!(self, Cleanup::Compact)
    }
}

impl fmt::Display for Cleanup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses the API word; `"delete,compact"` is accepted for `compact,delete`, and spaces around the comma.
impl FromStr for Cleanup {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut words: Vec<&str> = text.split(',').map(str::trim).collect();
        words.sort_unstable();
        match words.as_slice() {
            ["delete"] => Ok(Cleanup::Delete),
            ["compact"] => Ok(Cleanup::Compact),
            ["compact", "delete"] => Ok(Cleanup::CompactDelete),
            _ => Err(format!("unknown cleanup policy {text:?}; expected delete, compact or compact,delete")),
        }
    }
}

/// A topic's explicit settings. A limit that is `None` is no limit by that measure: explicit settings say
/// everything, so every node applies the same policy whatever its own defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TopicSettings {
    /// What may remove records.
    pub cleanup: Cleanup,
    /// Remove the oldest segments while the log holds more bytes than this (with a deleting policy).
    pub retention_bytes: Option<u64>,
    /// Remove segments whose newest record is older than this (with a deleting policy).
    pub retention_age_ms: Option<u64>,
    /// How long compaction keeps a tombstone after the records it deletes are gone; `None` keeps
    /// tombstones for ever.
    pub tombstone_retention_ms: Option<u64>,
}

/// The bytes of explicit settings in a SETTINGS frame, after the `explicit` byte.
///
/// ```text
/// [cleanup:1][present:1][retention_bytes:8 LE][retention_age_ms:8 LE][tombstone_retention_ms:8 LE]
/// ```
///
/// `cleanup` is [`Cleanup::as_u8`]; `present` has bit 0 for `retention_bytes`, bit 1 for
/// `retention_age_ms`, bit 2 for `tombstone_retention_ms`, other bits zero; an absent limit's field is
/// zero, so that every value has exactly one encoding.
pub const SETTINGS_LEN: usize = 1 + 1 + 3 * 8;

/// The `present` bits of [`SETTINGS_LEN`]'s layout that are defined.
const PRESENT_MASK: u8 = 0b111;

impl TopicSettings {
    /// The three limits in wire order.
    fn limits(&self) -> [Option<u64>; 3] {
        [self.retention_bytes, self.retention_age_ms, self.tombstone_retention_ms]
    }

    /// The [`SETTINGS_LEN`] bytes of these settings.
    pub fn to_bytes(&self) -> [u8; SETTINGS_LEN] {
        let mut bytes = [0u8; SETTINGS_LEN];
        bytes[0] = self.cleanup.as_u8();
        for (index, limit) in self.limits().into_iter().enumerate() {
            if let Some(value) = limit {
                bytes[1] |= 1 << index;
                bytes[2 + 8 * index..10 + 8 * index].copy_from_slice(&value.to_le_bytes());
            }
        }
        bytes
    }

    /// Settings from their [`SETTINGS_LEN`] bytes; the reason if they are not a valid encoding.
    pub fn from_bytes(bytes: &[u8; SETTINGS_LEN]) -> Result<TopicSettings, String> {
        let cleanup =
            Cleanup::from_u8(bytes[0]).ok_or_else(|| format!("unknown cleanup policy {}", bytes[0]))?;
        let present = bytes[1];
        if present & !PRESENT_MASK != 0 {
            return Err(format!("present is {present:#04x}; only bits 0 to 2 are defined"));
        }
        let mut limits = [None; 3];
        for (index, limit) in limits.iter_mut().enumerate() {
            let mut field = [0u8; 8];
            field.copy_from_slice(&bytes[2 + 8 * index..10 + 8 * index]);
            let value = u64::from_le_bytes(field);
            if present & (1 << index) != 0 {
                *limit = Some(value);
            } else if value != 0 {
                return Err(format!("limit {index} is absent but its field is {value}, not 0"));
            }
        }
        let [retention_bytes, retention_age_ms, tombstone_retention_ms] = limits;
        Ok(TopicSettings { cleanup, retention_bytes, retention_age_ms, tombstone_retention_ms })
    }
}

/// A topic's settings as the HTTP APIs show them (the broker's topic JSON, the consumer-app's stats):
/// explicit ones, or the defaults that apply where they are shown, marked `"explicit": false`.
#[cfg(feature = "json")]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SettingsJson {
    /// Whether they were set explicitly at ROOT; `false` means the node's own defaults (`delete` and its
    /// configured retention), shown as they apply there.
    pub explicit: bool,
    /// `delete`, `compact` or `compact,delete`.
    pub cleanup: &'static str,
    /// The byte limit, `null` for none.
    pub retention_bytes: Option<u64>,
    /// The age limit in milliseconds, `null` for none.
    pub retention_age_ms: Option<u64>,
    /// How long compaction keeps tombstones, in milliseconds; `null` for no limit or not set.
    pub tombstone_retention_ms: Option<u64>,
}

#[cfg(feature = "json")]
impl SettingsJson {
    /// Explicit `settings`, or, without them, `delete` with `default_limits` (bytes, age in milliseconds):
    /// the retention that applies by default where they are shown.
    pub fn of(settings: Option<TopicSettings>, default_limits: (Option<u64>, Option<u64>)) -> SettingsJson {
        match settings {
            Some(settings) => SettingsJson {
                explicit: true,
                cleanup: settings.cleanup.as_str(),
                retention_bytes: settings.retention_bytes,
                retention_age_ms: settings.retention_age_ms,
                tombstone_retention_ms: settings.tombstone_retention_ms,
            },
            None => SettingsJson {
                explicit: false,
                cleanup: Cleanup::Delete.as_str(),
                retention_bytes: default_limits.0,
                retention_age_ms: default_limits.1,
                tombstone_retention_ms: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_words() {
        for cleanup in Cleanup::ALL {
            assert_eq!(cleanup.as_str().parse::<Cleanup>().unwrap(), cleanup);
            assert_eq!(Cleanup::from_u8(cleanup.as_u8()), Some(cleanup));
        }
        assert_eq!("delete, compact".parse::<Cleanup>().unwrap(), Cleanup::CompactDelete);
        for bad in ["", "keep", "compact,compact", "delete,", "COMPACT"] {
            assert!(bad.parse::<Cleanup>().is_err(), "{bad:?}");
        }
        assert!(!Cleanup::Compact.deletes() && Cleanup::CompactDelete.deletes() && Cleanup::Delete.deletes());
    }

    #[test]
    fn settings_bytes_round_trip_and_have_one_encoding() {
        let settings = TopicSettings {
            cleanup: Cleanup::CompactDelete,
            retention_bytes: Some(256 << 20),
            retention_age_ms: None,
            tombstone_retention_ms: Some(0),
        };
        let bytes = settings.to_bytes();
        assert_eq!(bytes[..2], [2, 0b101]);
        assert_eq!(TopicSettings::from_bytes(&bytes).unwrap(), settings);
        assert_eq!(
            TopicSettings::from_bytes(&TopicSettings::default().to_bytes()).unwrap(),
            TopicSettings::default()
        );

        let mut bad_cleanup = bytes;
        bad_cleanup[0] = 3;
        assert!(TopicSettings::from_bytes(&bad_cleanup).is_err());
        let mut reserved_bit = bytes;
        reserved_bit[1] |= 0b1000;
        assert!(TopicSettings::from_bytes(&reserved_bit).is_err());
        let mut absent_but_set = bytes;
        absent_but_set[10] = 1;
        assert!(TopicSettings::from_bytes(&absent_but_set).is_err());
    }
}
