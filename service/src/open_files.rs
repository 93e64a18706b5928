//! The process's open-files limit (RLIMIT_NOFILE). Every socket is a file descriptor, and the soft limit
//! most systems start a process with (1024) is below what the connection limits of a busy service allow,
//! while the hard limit is usually far higher. Every binary raises its soft limit to the hard limit at
//! start, and says so in a warning when the limit it gets is still below what its connection limits
//! could use.
//!
//! This module owns that system call and its log lines; each binary says how many connections it may
//! hold open.

use std::io;

/// Files a service keeps open besides its connections (logs, SQLite, segment files, the runtime), kept
/// free when the connection limits are compared with the open-files limit.
pub const RESERVED_FILES: u64 = 256;

/// Raises the soft open-files limit to the hard limit and returns the soft limit in effect afterwards
/// (`None` if it cannot be read). A failure is a warning, never fatal: the service runs with the limit it
/// has, and its accept loops back off when the limit is reached. When `max_connections` (the sum of the
/// caller's connection limits) plus [`RESERVED_FILES`] exceeds the limit, a warning says so; the new limit
/// itself is logged at debug.
pub fn raise_open_files_limit(max_connections: u64) -> Option<u64> {
    let limit = match raise_to_hard_limit() {
        Ok(Raised { before, after }) => {
            if after == before {
                tracing::debug!(limit = after, "the open-files limit is already at its hard limit");
            } else {
                tracing::debug!(before, limit = after, "raised the open-files limit to its hard limit");
            }
            after
        }
        Err(Problem::Read(error)) => {
            tracing::warn!(%error, "cannot read the open-files limit (RLIMIT_NOFILE); leaving it as it is");
            return None;
        }
        Err(Problem::Raise { soft, hard, error }) => {
            tracing::warn!(%error, limit = soft, hard, "cannot raise the open-files limit; keeping it");
            soft
        }
    };
    let wanted = max_connections.saturating_add(RESERVED_FILES);
    if wanted > limit {
        tracing::warn!(
            limit,
            connection_limits = max_connections,
            "the open-files limit is below what the connection limits allow; past it new connections wait \
             until others close (raise the limit, e.g. `ulimit -n` or LimitNOFILE=, or lower the connection \
             limits)"
        );
    }
    Some(limit)
}

/// The soft limit before and after raising it.
struct Raised {
    /// The soft limit the process started with.
    before: u64,
    /// The soft limit now.
    after: u64,
}

/// Why the limit could not be raised.
enum Problem {
    /// getrlimit failed.
    Read(io::Error),
    /// setrlimit failed; the limits stay as read.
    Raise {
        /// The soft limit, unchanged.
        soft: u64,
        /// The hard limit.
        hard: u64,
        /// What setrlimit said.
        error: io::Error,
    },
}

/// getrlimit, then setrlimit with the soft limit set to the hard one.
fn raise_to_hard_limit() -> Result<Raised, Problem> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given, which lives on this stack frame.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(Problem::Read(io::Error::last_os_error()));
    }
    let (soft, hard) = (to_u64(limit.rlim_cur), to_u64(limit.rlim_max));
    if limit.rlim_cur >= limit.rlim_max {
        return Ok(Raised { before: soft, after: soft });
    }
    let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(Problem::Raise { soft, hard, error: io::Error::last_os_error() });
    }
    Ok(Raised { before: soft, after: hard })
}

/// `rlim_t` is `u64` on Linux but not on every platform.
#[allow(clippy::useless_conversion)]
fn to_u64(value: libc::rlim_t) -> u64 {
    u64::from(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let limit = raise_open_files_limit(0).expect("the limit can be read");
        let mut now = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: as in `raise_to_hard_limit`.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
        assert_eq!(limit, to_u64(now.rlim_cur));
        // An infinite hard limit cannot be a soft limit for open files; the soft one then stays.
        if now.rlim_max != libc::RLIM_INFINITY {
            assert_eq!(now.rlim_cur, now.rlim_max);
        }
        // A second call finds nothing to do and says the same.
        assert_eq!(raise_open_files_limit(0), Some(limit));
    }
}
