//! The `compact` scenario's workload: which record is published in which order, the value of each update,
//! its encoded sizes, and the model of each key's latest record that the copy is checked against.

use std::collections::BTreeMap;

use protocol::record::RECORD_HEADER_LEN;

use crate::config::CompactArgs;

/// The records the scenario publishes, in three phases: `first` updates over every key, one tombstone for
/// each of the first `deleted` keys, then the rest of the updates over the live keys only (see
/// [`Workload::record`] for the order). Keys have one width, so every update has one encoded size.
#[derive(Debug, Clone, Copy)]
pub(super) struct Workload {
    /// Updates.
    pub(super) updates: u64,
    /// Updates of the first phase, over every key.
    pub(super) first: u64,
    /// Distinct keys.
    pub(super) keys: u64,
    /// Keys deleted at the end.
    pub(super) deleted: u64,
    /// Value size of an update.
    pub(super) value_bytes: usize,
    /// Digits in a key's number.
    pub(super) key_digits: usize,
}

impl Workload {
    pub(super) fn new(args: &CompactArgs) -> Workload {
        let deleted = ((args.keys as f64 * args.delete_share).round() as u64).min(args.keys);
        let key_digits = (args.keys.saturating_sub(1).max(1).ilog10() as usize + 1).max(8);
        let first = if deleted == args.keys { args.updates } else { (args.updates / 2).max(args.keys) };
        Workload {
            updates: args.updates,
            first,
            keys: args.keys,
            deleted,
            value_bytes: args.value_bytes,
            key_digits,
        }
    }

    /// Every record published: the updates, then the tombstones.
    pub(super) fn total(&self) -> u64 {
        self.updates + self.deleted
    }

    /// The key of key number `n`.
    pub(super) fn key(&self, n: u64) -> String {
        format!("key-{n:0width$}", width = self.key_digits)
    }

    /// The three phases, as ranges of record numbers; each is published once the one before is stored.
    pub(super) fn phases(&self) -> [std::ops::Range<u64>; 3] {
        let tombstones_end = self.first + self.deleted;
        [0..self.first, self.first..tombstones_end, tombstones_end..self.total()]
    }

    /// Record `i` of [`Workload::total`]: its key and whether it is a tombstone. Each update phase gives
    /// every one of its keys a value in order first, then picks keys at random (seeded by `i`, so a run is
    /// repeatable): the keys' latest records are then scattered over the end of the log among superseded
    /// ones, as with real traffic, and compaction must rewrite those segments rather than find them whole.
    pub(super) fn record(&self, i: u64) -> (String, bool) {
        let pick = |j: u64, n: u64| if j < n { j } else { mix(i) % n };
        if i < self.first {
            (self.key(pick(i, self.keys)), false)
        } else if i < self.first + self.deleted {
            (self.key(i - self.first), true)
        } else {
            let live = pick(i - self.first - self.deleted, self.live_keys());
            (self.key(self.deleted + live), false)
        }
    }

    /// Encoded size of an update (no headers).
    pub(super) fn update_len(&self) -> u64 {
        (RECORD_HEADER_LEN + 4 + self.key_digits + self.value_bytes) as u64
    }

    /// Encoded size of a tombstone.
    pub(super) fn tombstone_len(&self) -> u64 {
        (RECORD_HEADER_LEN + 4 + self.key_digits) as u64
    }

    /// Bytes of every record published.
    pub(super) fn published_bytes(&self) -> u64 {
        self.updates * self.update_len() + self.deleted * self.tombstone_len()
    }

    /// Keys whose latest record is a value.
    pub(super) fn live_keys(&self) -> u64 {
        self.keys - self.deleted
    }

    /// The value of update `i`: its number, then filler up to the value size, so that a copy's value says
    /// which update it is.
    pub(super) fn value(&self, i: u64) -> Vec<u8> {
        let mut value = format!("{i}:").into_bytes();
        value.resize(self.value_bytes.max(value.len()), b'x');
        value.truncate(self.value_bytes.max(1));
        value
    }

    /// Each key's latest record by offset (producers publish side by side, so the numbers of records do
    /// not follow their offsets): the number of its last update, or `None` if a tombstone deleted it.
    pub(super) fn latest(&self, placed: &[Placed]) -> BTreeMap<String, Option<u64>> {
        let mut by_offset: Vec<&Placed> = placed.iter().collect();
        by_offset.sort_by_key(|placed| placed.first_offset);
        let mut latest = BTreeMap::new();
        for placed in by_offset {
            for i in placed.first_number..placed.first_number + placed.n {
                let (key, tombstone) = self.record(i);
                latest.insert(key, (!tombstone).then_some(i));
            }
        }
        latest
    }

    /// Bytes of the live keys' latest records: what a copy of the compacted topic must at least move.
    pub(super) fn live_bytes(&self) -> u64 {
        self.live_keys() * self.update_len()
    }
}

/// Where a PUBLISH frame's records were stored: `n` records numbered from `first_number`, at offsets from
/// `first_offset`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Placed {
    /// The workload's number of the first record.
    pub(super) first_number: u64,
    /// Records in the frame.
    pub(super) n: u64,
    /// The offset ROOT gave the first.
    pub(super) first_offset: u64,
}

/// SplitMix64: a well-mixed 64-bit number from `n`.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::NewRecord;
    use std::time::Duration;

    #[test]
    fn the_workload_counts_its_bytes() {
        let args = CompactArgs {
            updates: 1000,
            keys: 100,
            value_bytes: 10,
            delete_share: 0.1,
            segment_bytes: 1 << 20,
            compaction_interval: Duration::from_secs(1),
            batch: 100,
            producers: 2,
            live: false,
        };
        let workload = Workload::new(&args);
        assert_eq!(workload.deleted, 10);
        assert_eq!(workload.total(), 1010);
        assert_eq!(workload.phases(), [0..500, 500..510, 510..1010]);
        assert_eq!(workload.record(0), ("key-00000000".to_string(), false));
        assert_eq!(workload.record(99), ("key-00000099".to_string(), false));
        assert_eq!(workload.record(500), ("key-00000000".to_string(), true));
        assert_eq!(workload.record(509), ("key-00000009".to_string(), true));
        assert_eq!(workload.record(510), ("key-00000010".to_string(), false));
        assert_eq!(workload.record(599), ("key-00000099".to_string(), false));
        // Every live key's latest record is an update, every deleted key's a tombstone.
        let mut latest = std::collections::HashMap::new();
        for i in 0..workload.total() {
            let (key, tombstone) = workload.record(i);
            latest.insert(key, tombstone);
        }
        assert_eq!(latest.len(), 100);
        assert_eq!(latest.values().filter(|tombstone| **tombstone).count(), 10);
        for n in 0..10 {
            assert_eq!(latest.get(&workload.key(n)), Some(&true), "key {n} ends deleted");
        }
        // After the first round the keys are not in order.
        let later: Vec<String> = (100..110).map(|i| workload.record(i).0).collect();
        assert!(later.windows(2).any(|pair| pair[0] >= pair[1]), "{later:?}");
        assert_eq!(workload.record(123), workload.record(123), "repeatable");
        let update = NewRecord::new(b"key-00000000", &[0; 10]);
        assert_eq!(workload.update_len(), update.encoded_len() as u64);
        assert_eq!(workload.tombstone_len(), NewRecord::new(b"key-00000000", b"").encoded_len() as u64);
        assert_eq!(workload.live_bytes(), 90 * workload.update_len());
        assert_eq!(workload.published_bytes(), 1000 * workload.update_len() + 10 * workload.tombstone_len());
    }
}
