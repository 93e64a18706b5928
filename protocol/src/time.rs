//! The wall clock, in the milliseconds since the Unix epoch that records, frames and metadata carry. The one
//! definition every crate uses, so ROOT's timestamps, latency figures and history rows agree on what "now"
//! means. Reading the clock is not I/O; nothing here waits.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; zero if the clock is set before 1970.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}
