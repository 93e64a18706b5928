//! A topic's identity: its name and the uid ROOT gave it when it was created.
//!
//! Two copies of a topic with the same name but different uids hold different histories (ROOT was rebuilt,
//! or the topic recreated); nothing may mix them.

use std::fmt;
use std::str::FromStr;

/// The longest topic name accepted.
pub const MAX_TOPIC_NAME_LEN: usize = 200;

/// The name that, in a subscription, stands for every topic, present and future.
pub const ALL_TOPICS: &str = "*";

/// A topic's uid: 128 random bits chosen at ROOT. Zero means "not known", as in a first subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TopicUid(pub u128);

impl TopicUid {
    /// The uid that stands for "no copy yet".
    pub const UNKNOWN: TopicUid = TopicUid(0);

    /// Whether this is [`TopicUid::UNKNOWN`].
    pub fn is_unknown(&self) -> bool {
        self.0 == 0
    }

    /// The uid as 16 little-endian bytes, as frames carry it.
    pub fn to_le_bytes(self) -> [u8; 16] {
        self.0.to_le_bytes()
    }

    /// The uid from 16 little-endian bytes.
    pub fn from_le_bytes(bytes: [u8; 16]) -> Self {
        TopicUid(u128::from_le_bytes(bytes))
    }
}

/// Formats as 32 lowercase hex digits, the form used in JSON and on disk.
impl fmt::Display for TopicUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Parses the 32-hex-digit form written by `Display`.
impl FromStr for TopicUid {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 {
            return Err(format!("topic uid must be 32 hex digits, got {} characters", s.len()));
        }
        u128::from_str_radix(s, 16).map(TopicUid).map_err(|_| format!("topic uid {s:?} is not hex"))
    }
}

/// Checks a topic name: 1 to 200 characters from `A-Z a-z 0-9 . _ -`, not `.` or `..`.
///
/// The same rule holds everywhere (HTTP, frames, storage), because the name becomes a directory name.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".to_string());
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(format!("topic name is {} bytes long; the maximum is {MAX_TOPIC_NAME_LEN}", name.len()));
    }
    if name == "." || name == ".." {
        return Err(format!("topic name {name:?} is reserved"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("topic name {name:?} contains {bad:?}; allowed are A-Z a-z 0-9 . _ -"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_text_round_trip() {
        let uid = TopicUid(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(uid.to_string(), "0123456789abcdef0011223344556677");
        assert_eq!(uid.to_string().parse::<TopicUid>().unwrap(), uid);
        assert!("xyz".parse::<TopicUid>().is_err());
        assert_eq!(TopicUid::from_le_bytes(uid.to_le_bytes()), uid);
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("prices.eu-west_1").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(201), "*"] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
