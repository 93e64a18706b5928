//! The settings of a store and of every log in it: segment size and age, preallocation, index density,
//! flush policy and retention. This module owns the defaults and their validation; it does not read
//! flags or environment variables (the binaries do that).

use std::time::Duration;

use crate::error::Error;

/// The smallest segment accepted: one page, so that a segment always holds a few small records.
pub const MIN_SEGMENT_BYTES: u64 = 4096;

/// The largest segment accepted. Positions in the sparse index are 32-bit, so a segment must stay below
/// 4 GiB.
pub const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;

/// When appended records are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// An append returns only after its bytes are on disk. Concurrent appenders share one flush (group
    /// commit). Readers see only durable records, so nothing shown to a child or consumer can be lost in a
    /// crash.
    #[default]
    Always,
    /// An append returns after writing; the owner calls [`crate::Log::flush`] or
    /// [`crate::Store::flush_all`] every interval, which is what the duration records. Readers see written
    /// records.
    Interval(Duration),
    /// Nothing is flushed unless asked: for benchmarks only. A store opened with it logs a warning.
    Never,
}

/// Settings shared by every log of a [`crate::Store`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The size at which the active segment is sealed and a new one started (default 1 GiB). Each active
    /// segment maps this much address space; disk space is allocated in `preallocate_chunk_bytes` steps.
    pub segment_bytes: u64,
    /// The age at which a non-empty active segment is sealed at the next append (default 7 days).
    pub segment_max_age: Duration,
    /// How much disk space is allocated at a time as the active segment grows (default 32 MiB).
    pub preallocate_chunk_bytes: u64,
    /// Bytes of records between two entries of the sparse index (default 4 KiB).
    pub index_interval_bytes: u32,
    /// When appended records become durable (default [`FlushPolicy::Always`]).
    pub flush: FlushPolicy,
    /// Keep at most about this many bytes per topic, removing whole sealed segments (default: no limit).
    pub retention_bytes: Option<u64>,
    /// Remove sealed segments whose newest record is older than this (default: no limit).
    pub retention_age: Option<Duration>,
    /// Whether readers see a record as soon as it is written rather than once it is durable (default
    /// false). A relaying node's copy is ROOT's, so a tail it loses in a crash is fetched again, the same
    /// bytes at the same offsets, and it may relay before its own flush; ROOT, where offsets are born,
    /// must not show a record it could lose and then give to another.
    pub readable_before_durable: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_max_age: Duration::from_secs(7 * 24 * 3600),
            preallocate_chunk_bytes: 32 * 1024 * 1024,
            index_interval_bytes: 4096,
            flush: FlushPolicy::Always,
            retention_bytes: None,
            retention_age: None,
            readable_before_durable: false,
        }
    }
}

impl LogConfig {
    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<(), Error> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(Error::BadConfig {
                reason: format!(
                    "segment_bytes is {}; it must be between {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES}",
                    self.segment_bytes
                ),
            });
        }
        if self.preallocate_chunk_bytes == 0 {
            return Err(Error::BadConfig { reason: "preallocate_chunk_bytes must not be zero".to_string() });
        }
        if self.index_interval_bytes == 0 {
            return Err(Error::BadConfig { reason: "index_interval_bytes must not be zero".to_string() });
        }
        if self.segment_max_age.is_zero() {
            return Err(Error::BadConfig { reason: "segment_max_age must not be zero".to_string() });
        }
        if let FlushPolicy::Interval(interval) = self.flush
            && interval.is_zero()
        {
            return Err(Error::BadConfig { reason: "the flush interval must not be zero".to_string() });
        }
        Ok(())
    }

    /// Whether readers must wait for a flush before they see a record.
    pub(crate) fn readers_see_only_durable(&self) -> bool {
        self.flush == FlushPolicy::Always && !self.readable_before_durable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = LogConfig::default();
        config.validate().unwrap();
        assert_eq!(config.flush, FlushPolicy::Always);
        assert!(config.readers_see_only_durable());
    }

    #[test]
    fn bad_settings_are_refused() {
        let tiny = LogConfig { segment_bytes: 100, ..LogConfig::default() };
        assert!(matches!(tiny.validate(), Err(Error::BadConfig { .. })));
        let huge = LogConfig { segment_bytes: 8 << 30, ..LogConfig::default() };
        assert!(matches!(huge.validate(), Err(Error::BadConfig { .. })));
        let no_chunk = LogConfig { preallocate_chunk_bytes: 0, ..LogConfig::default() };
        assert!(matches!(no_chunk.validate(), Err(Error::BadConfig { .. })));
        let no_interval = LogConfig { index_interval_bytes: 0, ..LogConfig::default() };
        assert!(matches!(no_interval.validate(), Err(Error::BadConfig { .. })));
        let zero_flush = LogConfig { flush: FlushPolicy::Interval(Duration::ZERO), ..LogConfig::default() };
        assert!(matches!(zero_flush.validate(), Err(Error::BadConfig { .. })));
    }
}
