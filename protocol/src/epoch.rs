//! A topic's epoch history: which records ROOT wrote in which of its lives, so that no copy keeps records
//! ROOT no longer has (as Kafka's leader epochs do).
//!
//! ROOT starts a new epoch every time it starts, at its log end: records it wrote before belong to the old
//! epoch, records it writes from now on to the new one. If ROOT lost a tail (recovery cut a torn or damaged
//! record, a disk lied about a flush, a backup was restored), the offsets of the lost records are given to
//! new records of the new epoch, and the history says where the old epoch ended. A copy holding records of
//! epoch `e` up to offset `n` (exclusive) then compares: if the history says epoch `e` ended before `n`, the
//! copy holds records that are not ROOT's any more, and it is refreshed.
//!
//! ```text
//! history  (0, 0) (1, 1000) (2, 1500)      epoch 0 holds 0..1000, epoch 1 holds 1000..1500, epoch 2 on
//! copy     epoch 1, next 1200              fine: epoch 1 goes on to 1500
//! copy     epoch 1, next 1700              diverged at 1500: records 1500..1700 of epoch 1 are gone at ROOT
//! ```

use std::fmt;

/// The most epochs a history keeps. ROOT adds one per start that follows appended records, so this is
/// far more than a topic sees; the oldest are folded together past it (see [`EpochHistory::begin`]).
pub const MAX_EPOCHS: usize = 1024;

/// The epoch a HELLO names when the client holds no records, or knows no history: nothing to compare.
pub const NO_EPOCH: u32 = u32::MAX;

/// One epoch: its number and the offset of its first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch {
    /// The epoch's number; later epochs have greater numbers.
    pub epoch: u32,
    /// The offset its first record got (or will get).
    pub start_offset: u64,
}

/// A topic's epochs, oldest first: numbers strictly increasing, start offsets never decreasing. Empty
/// means unknown (a copy that has not heard its upstream's history yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EpochHistory(Vec<Epoch>);

impl EpochHistory {
    /// A history from its entries, checked: numbers strictly increasing, start offsets never decreasing,
    /// at most [`MAX_EPOCHS`] entries, none numbered [`NO_EPOCH`].
    pub fn new(entries: Vec<Epoch>) -> Result<EpochHistory, String> {
        if entries.len() > MAX_EPOCHS {
            return Err(format!("{} epochs; at most {MAX_EPOCHS}", entries.len()));
        }
        if entries.iter().any(|entry| entry.epoch == NO_EPOCH) {
            return Err(format!("epoch {NO_EPOCH} is reserved"));
        }
        for pair in entries.windows(2) {
            if pair[1].epoch <= pair[0].epoch || pair[1].start_offset < pair[0].start_offset {
                return Err(format!(
                    "epoch {} at {} does not follow epoch {} at {}",
                    pair[1].epoch, pair[1].start_offset, pair[0].epoch, pair[0].start_offset
                ));
            }
        }
        Ok(EpochHistory(entries))
    }

    /// The history of a new topic: epoch 0 from `start_offset`.
    pub fn first(start_offset: u64) -> EpochHistory {
        EpochHistory(vec![Epoch { epoch: 0, start_offset }])
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[Epoch] {
        &self.0
    }

    /// Whether the history is unknown.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The newest epoch.
    pub fn last(&self) -> Option<Epoch> {
        self.0.last().copied()
    }

    /// The history with a new epoch starting at `start_offset` (ROOT's log end when it starts). An epoch
    /// that holds no records (it starts where the new one does) is replaced rather than kept: the answer of
    /// [`EpochHistory::end_of`] is the same either way. Past [`MAX_EPOCHS`], the two oldest epochs are
    /// folded into one (the newer number from the older start): every epoch older than those kept then ends
    /// at the first start kept, so a very old copy may be refreshed where it need not be, never the other
    /// way.
    pub fn begin(&self, start_offset: u64) -> EpochHistory {
        let mut entries = self.0.clone();
        let epoch = entries.last().map_or(0, |last| last.epoch + 1);
        let start_offset = entries.last().map_or(start_offset, |last| start_offset.max(last.start_offset));
        if entries.last().is_some_and(|last| last.start_offset == start_offset) {
            entries.pop();
        }
        entries.push(Epoch { epoch, start_offset });
        while entries.len() > MAX_EPOCHS {
            entries[1].start_offset = entries[0].start_offset;
            entries.remove(0);
        }
        EpochHistory(entries)
    }

    /// The epoch of the record at `offset`: the newest epoch starting at or below it.
    pub fn epoch_of(&self, offset: u64) -> Option<u32> {
        self.0.iter().rev().find(|entry| entry.start_offset <= offset).map(|entry| entry.epoch)
    }

    /// Where epoch `epoch` ended: the start of the first newer epoch, or `None` if none is newer (it is the
    /// current epoch, or newer than anything this history knows). An epoch older than every one kept ended
    /// at the first start kept, or earlier.
    pub fn end_of(&self, epoch: u32) -> Option<u64> {
        self.0.iter().find(|entry| entry.epoch > epoch).map(|entry| entry.start_offset)
    }

    /// Whether a copy whose last record belongs to `epoch` and whose next offset is `next_offset` holds
    /// records this history does not: then the offset where they part. [`NO_EPOCH`] never diverges.
    pub fn divergence(&self, epoch: u32, next_offset: u64) -> Option<u64> {
        if epoch == NO_EPOCH {
            return None;
        }
        self.end_of(epoch).filter(|&end| next_offset > end)
    }

    /// What a copy holding this history and records below `next_offset` (from `log_start`) names in its
    /// HELLO: the epoch of its last record, or [`NO_EPOCH`] if it holds none or knows no history.
    pub fn claim(&self, log_start: u64, next_offset: u64) -> u32 {
        if next_offset <= log_start || next_offset == 0 {
            return NO_EPOCH;
        }
        self.epoch_of(next_offset - 1).unwrap_or(NO_EPOCH)
    }
}

impl fmt::Display for EpochHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<String> =
            self.0.iter().map(|entry| format!("{}@{}", entry.epoch, entry.start_offset)).collect();
        write!(f, "[{}]", entries.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(entries: &[(u32, u64)]) -> EpochHistory {
        EpochHistory::new(
            entries.iter().map(|&(epoch, start_offset)| Epoch { epoch, start_offset }).collect(),
        )
        .unwrap()
    }

    #[test]
    fn divergence_is_where_the_copys_epoch_ended() {
        let h = history(&[(0, 0), (1, 1000), (2, 1500)]);
        assert_eq!(h.divergence(1, 1200), None);
        assert_eq!(h.divergence(1, 1500), None);
        assert_eq!(h.divergence(1, 1700), Some(1500));
        assert_eq!(h.divergence(0, 1001), Some(1000));
        assert_eq!(h.divergence(2, 9000), None, "the current epoch goes on");
        assert_eq!(h.divergence(7, 9000), None, "a newer epoch than known: nothing to judge");
        assert_eq!(h.divergence(NO_EPOCH, 9000), None);
    }

    #[test]
    fn beginning_an_epoch_replaces_an_empty_one() {
        let h = EpochHistory::first(0).begin(100);
        assert_eq!(h, history(&[(0, 0), (1, 100)]));
        let restarted_idle = h.begin(100);
        assert_eq!(restarted_idle, history(&[(0, 0), (2, 100)]));
        // A copy that held records of epoch 1 past 100 (lost at ROOT) still diverges at 100.
        assert_eq!(restarted_idle.divergence(1, 150), Some(100));
        assert_eq!(EpochHistory::default().begin(40), history(&[(0, 40)]));
        assert_eq!(EpochHistory::first(0).begin(0), history(&[(1, 0)]));
    }

    #[test]
    fn claims_name_the_epoch_of_the_last_record() {
        let h = history(&[(0, 0), (1, 1000)]);
        assert_eq!(h.claim(0, 1000), 0);
        assert_eq!(h.claim(0, 1001), 1);
        assert_eq!(h.claim(500, 500), NO_EPOCH);
        assert_eq!(EpochHistory::default().claim(0, 10), NO_EPOCH);
    }

    #[test]
    fn bad_histories_are_refused() {
        let entry = |epoch, start_offset| Epoch { epoch, start_offset };
        assert!(EpochHistory::new(vec![entry(1, 0), entry(1, 5)]).is_err());
        assert!(EpochHistory::new(vec![entry(0, 10), entry(1, 5)]).is_err());
        assert!(EpochHistory::new(vec![entry(NO_EPOCH, 0)]).is_err());
        assert!(
            EpochHistory::new((0..=MAX_EPOCHS as u32).map(|n| entry(n, u64::from(n))).collect()).is_err()
        );
    }

    #[test]
    fn the_oldest_epochs_fold_past_the_limit() {
        let mut h = EpochHistory::first(0);
        for n in 1..=(MAX_EPOCHS as u64 + 5) {
            h = h.begin(n * 10);
        }
        assert_eq!(h.entries().len(), MAX_EPOCHS);
        assert_eq!(h.entries()[0], Epoch { epoch: 6, start_offset: 0 });
        // A fold only makes an old epoch end earlier: refreshed where it need not be, never kept wrongly.
        assert_eq!(h.divergence(0, 5), Some(0));
        assert_eq!(h.divergence(3, 35), Some(0));
        assert_eq!(h.divergence(6, 65), None);
        let last = h.last().unwrap();
        assert_eq!(h.divergence(last.epoch, u64::MAX), None);
    }
}
