//! A node's level in the relay tree: ROOT(0) < L2(1) < L3(2) < POS(3) < LOCAL(4). The number is the level byte
//! a pipe child sends in HELLO and a server sends in WELCOME; the name is what operators, the registry's JSON
//! and its SQLite rows use.

use std::fmt;
use std::str::FromStr;

/// A level of the tree. The order is the tree's order: ROOT is the top, LOCAL the bottom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// The cloud node: the only node that accepts new data, assigns offsets and timestamps, and never has a
    /// parent.
    Root,
    /// A region.
    L2,
    /// A store cluster or store server.
    L3,
    /// A till.
    Pos,
    /// An on-device node.
    Local,
}

impl Level {
    /// Every level, top first.
    pub const ALL: [Level; 5] = [Level::Root, Level::L2, Level::L3, Level::Pos, Level::Local];

    /// The level's number on the wire (ROOT 0 ... LOCAL 4).
    pub fn as_u8(self) -> u8 {
        match self {
            Level::Root => 0,
            Level::L2 => 1,
            Level::L3 => 2,
            Level::Pos => 3,
            Level::Local => 4,
        }
    }

    /// The level with this wire number, if any.
    pub fn from_u8(level: u8) -> Option<Level> {
        Level::ALL.get(usize::from(level)).copied()
    }

    /// The level one up, where this level's parents live; `None` for ROOT.
    pub fn parent(self) -> Option<Level> {
        Level::from_u8(self.as_u8().checked_sub(1)?)
    }

    /// The level one down, where this level's children live; `None` for LOCAL.
    pub fn child(self) -> Option<Level> {
        Level::from_u8(self.as_u8() + 1)
    }

    /// The canonical upper-case name (`ROOT`, `L2`, `L3`, `POS`, `LOCAL`).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Root => "ROOT",
            Level::L2 => "L2",
            Level::L3 => "L3",
            Level::Pos => "POS",
            Level::Local => "LOCAL",
        }
    }
}

/// Formats as the canonical upper-case name.
impl fmt::Display for Level {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The error for a level name that is not one of ROOT, L2, L3, POS, LOCAL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown level {0:?}; expected one of ROOT, L2, L3, POS, LOCAL")]
pub struct UnknownLevel(pub String);

impl FromStr for Level {
    type Err = UnknownLevel;

    /// Accepts the canonical names and their lower-case spelling, because configuration files and
    /// environment variables are often written in lower case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .into_iter()
            .find(|level| level.as_str() == text || level.as_str().to_ascii_lowercase() == text)
            .ok_or_else(|| UnknownLevel(text.to_owned()))
    }
}

/// Serializes as the canonical name.
#[cfg(feature = "json")]
impl serde::Serialize for Level {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Deserializes from a canonical or lower-case name.
#[cfg(feature = "json")]
impl<'de> serde::Deserialize<'de> for Level {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_names_and_neighbours() {
        for (number, level) in Level::ALL.into_iter().enumerate() {
            assert_eq!(Level::from_u8(number as u8), Some(level));
            assert_eq!(level.as_u8(), number as u8);
            assert_eq!(level.as_str().parse::<Level>(), Ok(level));
            assert_eq!(level.as_str().to_ascii_lowercase().parse::<Level>(), Ok(level));
        }
        assert!("Root".parse::<Level>().is_err(), "mixed case is refused");
        assert_eq!(Level::from_u8(5), None);
        assert_eq!(Level::Root.parent(), None);
        assert_eq!(Level::Local.child(), None);
        for window in Level::ALL.windows(2) {
            assert_eq!(window[1].parent(), Some(window[0]));
            assert_eq!(window[0].child(), Some(window[1]));
        }
        assert!("L9".parse::<Level>().unwrap_err().to_string().contains("ROOT, L2, L3, POS, LOCAL"));
    }
}
