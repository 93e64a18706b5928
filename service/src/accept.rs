//! Accepting connections without spinning. When `accept` fails because the process is out of something
//! (file descriptors: EMFILE, ENFILE; memory), retrying at once fails again at once and burns a core while
//! the listen backlog fills. An accept loop here waits instead: 10ms after the first failure, doubling to
//! 1s, and logs one warning when such an episode starts and one line when accepting works again, never a
//! line per failure. A failure that belongs to a single connection (reset or aborted before it was
//! accepted) is skipped at once.
//!
//! The wait is for a local resource, so unlike the reconnect backoff of `client` (which spreads many
//! clients' retries to a remote peer with jitter) it has no jitter and restarts at the first success.
//!
//! This module owns that arithmetic and those log lines; the loops that accept (the HTTP server in
//! `http_server.rs`, the broker's consumer server) call [`accept_with_backoff`]. It knows nothing of what
//! is served.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The wait after the first failed accept of an episode.
pub const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// The longest wait between two failed accepts.
pub const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The state of one listener's accept loop: how many accepts in a row have failed, and since when.
#[derive(Debug)]
pub struct AcceptBackoff {
    /// Names the listener in log lines (`HTTP`, `consumers`).
    listener: &'static str,
    /// Failed accepts since the last success; 0 outside an episode.
    failures: u32,
    /// When the current episode began.
    episode_start: Option<Instant>,
}

impl AcceptBackoff {
    /// A loop with no failure yet; `listener` names it in log lines.
    pub fn new(listener: &'static str) -> AcceptBackoff {
        AcceptBackoff { listener, failures: 0, episode_start: None }
    }

    /// Records a failed accept and returns how long to wait before the next one: zero for a failure that
    /// belongs to one connection, else [`accept_backoff`] of the failures so far. The first failure of an
    /// episode logs a warning.
    pub fn failed(&mut self, error: &io::Error) -> Duration {
        if is_connection_error(error) {
            tracing::debug!(listener = self.listener, %error, "a connection ended before it was accepted");
            return Duration::ZERO;
        }
        if self.failures == 0 {
            tracing::warn!(
                listener = self.listener,
                %error,
                "accepting connections fails; retrying with a growing pause (10ms to 1s) until it works again"
            );
            self.episode_start = Some(Instant::now());
        }
        let wait = accept_backoff(self.failures);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    /// Records an accepted connection: ends an episode, if one was running, with one line.
    pub fn accepted(&mut self) {
        if self.failures > 0 {
            let lasted = self.episode_start.map(|start| start.elapsed()).unwrap_or_default();
            tracing::info!(
                listener = self.listener,
                failed_accepts = self.failures,
                ?lasted,
                "accepting connections again"
            );
        }
        self.failures = 0;
        self.episode_start = None;
    }

    /// Failed accepts since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// The wait after `failures` failed accepts in a row (0 for the first): 10ms, 20ms, 40ms... up to 1s.
pub fn accept_backoff(failures: u32) -> Duration {
    // 2^7 * 10ms is past the ceiling already; capping the shift keeps the multiplication in range.
    let factor = 1u32 << failures.min(16);
    FIRST_ACCEPT_BACKOFF.saturating_mul(factor).min(MAX_ACCEPT_BACKOFF)
}

/// Whether an accept error concerns one connection only (the peer gave up before it was accepted), so the
/// next accept can follow at once.
pub fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
    )
}

/// Accepts the next connection on `listener`, waiting out failures with `backoff`. Dropping the future
/// (at shutdown) loses no connection: a connection is only taken from the backlog when it is returned.
pub async fn accept_with_backoff(
    listener: &TcpListener,
    backoff: &mut AcceptBackoff,
) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => {
                backoff.accepted();
                return accepted;
            }
            Err(error) => {
                let wait = backoff.failed(&error);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out_of_files() -> io::Error {
        io::Error::from_raw_os_error(libc::EMFILE)
    }

    #[test]
    fn the_wait_doubles_from_10ms_to_1s() {
        let waits: Vec<u64> = (0..10).map(|n| accept_backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert_eq!(accept_backoff(u32::MAX), MAX_ACCEPT_BACKOFF);
    }

    #[test]
    fn an_episode_grows_and_a_success_ends_it() {
        let mut backoff = AcceptBackoff::new("test");
        assert_eq!(backoff.failed(&out_of_files()), Duration::from_millis(10));
        assert_eq!(backoff.failed(&io::Error::from_raw_os_error(libc::ENFILE)), Duration::from_millis(20));
        assert_eq!(backoff.failed(&out_of_files()), Duration::from_millis(40));
        assert_eq!(backoff.failures(), 3);
        backoff.accepted();
        assert_eq!(backoff.failures(), 0);
        assert_eq!(backoff.failed(&out_of_files()), Duration::from_millis(10));
    }

    #[test]
    fn a_failure_of_one_connection_costs_no_wait() {
        let mut backoff = AcceptBackoff::new("test");
        let reset = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(backoff.failed(&reset), Duration::ZERO);
        assert_eq!(backoff.failures(), 0);
        assert!(!is_connection_error(&out_of_files()));
    }
}
