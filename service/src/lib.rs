//! The plumbing every relay binary (`broker`, `registry`, `consumer-app`) shares, so that each behaves the
//! same way at its edges: how it logs, what stops it, how it serves HTTP within its connection limits and
//! timeouts (`http_server`), how its accept loops wait out a lack of file descriptors (`accept`), how it
//! raises its open-files limit (`open_files`), how a container checks it, how its HTTP errors and
//! malformed requests are answered ([`ApiError`], [`ApiJson`], [`ApiBytes`], [`ApiQuery`], [`ApiPath`]),
//! how its sizes and durations are written (`units`), how a bad command line is refused (`cli`), and how
//! its listeners and outbound connections speak TLS (`tls`).
//!
//! Architecture invariant: nothing here knows what a broker, a registry or a consumer is.

pub mod accept;
pub mod api_error;
pub mod cli;
pub mod extract;
pub mod healthcheck;
pub mod http_server;
pub mod open_files;
pub mod tls;
pub mod units;

pub use api_error::ApiError;
pub use extract::{ApiBytes, ApiJson, ApiPath, ApiQuery};
pub use http_server::{HttpLimits, serve_http, serve_https};
pub use open_files::raise_open_files_limit;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Sets up `tracing` logs on stderr: text, or one JSON object a line when `json` is set, filtered by
/// `RUST_LOG` (default `info`). Colours only on a terminal, so log files and collectors get plain text.
///
/// A log line that cannot be written (stderr closed, a full pipe's reader gone) is dropped silently:
/// tracing's own report of that failure would be printed to the same broken stderr, and printing to a
/// broken stderr panics, which would turn a lost log line into a crashed service.
pub fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on the first SIGINT or SIGTERM, logging which one arrived. If a signal cannot be listened for
/// (which only happens when the process is out of resources), the other one still works.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}
