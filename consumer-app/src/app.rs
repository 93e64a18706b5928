//! The state the REST API and the sync loop share: the local copy, metrics, the connection status the
//! sync loop keeps (`sync/status.rs`), and the channel REST uses to ask the sync loop for a refresh.
//!
//! This module holds state and answers questions about it; it starts nothing and does no I/O.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::copy::LocalCopy;
use crate::metrics::Metrics;
use crate::sync::SyncCommand;
pub use crate::sync::{RefreshProgress, StatusSnapshot, SyncStatus};

/// Everything a request handler needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The local copy.
    pub copy: Arc<LocalCopy>,
    /// Metrics, also the source of handler counts in stats.
    pub metrics: Arc<Metrics>,
    /// What the sync loop reports.
    pub status: Arc<SyncStatus>,
    /// Requests to the sync loop.
    pub commands: mpsc::Sender<SyncCommand>,
    /// Name of the configured handler.
    pub handler_name: &'static str,
}
