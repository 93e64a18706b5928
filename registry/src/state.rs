//! The state shared by every request: the topology behind one lock, the metrics and the settings, and the way
//! handlers reach the topology without blocking the async runtime.
//!
//! This module owns the settings a library user passes in and how the topology is opened. It does not parse
//! flags (`config`) or handle requests (`api`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use service::HttpLimits;

use crate::db::Db;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::topology::{Timing, Topology};

/// Everything the service needs to start, with the defaults of the `registry` binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The SQLite file holding nodes, assignments and history.
    pub db_path: PathBuf,
    /// A node silent for longer than this is expired.
    pub expiry: Duration,
    /// How often nodes are told to heartbeat.
    pub heartbeat_interval: Duration,
    /// The shared token that register, heartbeat, parent and deregister requests must carry, if any (not
    /// used when `identities` are given).
    pub token: Option<String>,
    /// Each node's own token, level and labels (`--nodes-file`): a request for node X then needs X's token,
    /// and X registers only at its level and labels.
    pub identities: Option<crate::identities::Identities>,
    /// How many history events are kept.
    pub history_limit: u64,
    /// The HTTP listener's connection cap and timeouts.
    pub http: HttpLimits,
}

impl Settings {
    /// The default expiry.
    pub const DEFAULT_EXPIRY: Duration = Duration::from_millis(5_000);
    /// The default heartbeat interval.
    pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(1_000);
    /// The default number of history events kept.
    pub const DEFAULT_HISTORY_LIMIT: u64 = 10_000;
    /// The default HTTP limits: 1024 connections (every broker heartbeats over a kept-alive connection),
    /// 10s for a request's head, 60s of silence in mid-request.
    pub const DEFAULT_HTTP_LIMITS: HttpLimits = HttpLimits {
        max_connections: 1024,
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
    };
    /// The longest pause between expiry sweeps.
    pub const MAX_SWEEP_INTERVAL: Duration = Duration::from_millis(500);

    /// Default settings with the database at `db_path`.
    pub fn new(db_path: impl Into<PathBuf>) -> Settings {
        Settings {
            db_path: db_path.into(),
            expiry: Settings::DEFAULT_EXPIRY,
            heartbeat_interval: Settings::DEFAULT_HEARTBEAT_INTERVAL,
            token: None,
            identities: None,
            history_limit: Settings::DEFAULT_HISTORY_LIMIT,
            http: Settings::DEFAULT_HTTP_LIMITS,
        }
    }

    /// How often to look for expired nodes: every 500 ms, or a fifth of the expiry when that is shorter, so
    /// that a node is expired within a fifth of the expiry time after it is due.
    pub fn sweep_interval(&self) -> Duration {
        (self.expiry / 5).clamp(Duration::from_millis(10), Settings::MAX_SWEEP_INTERVAL)
    }
}

/// The shared state. Cloning shares it.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The parts every clone shares.
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The topology. A plain mutex, because it is only ever locked on a blocking thread and never across an
    /// await.
    topology: Mutex<Topology>,
    /// The metrics.
    metrics: Metrics,
    /// The settings it was opened with.
    settings: Settings,
}

impl AppState {
    /// Opens the database and loads the topology.
    pub fn open(settings: Settings) -> Result<AppState, Error> {
        let db = Db::open(&settings.db_path, settings.history_limit)?;
        let metrics = Metrics::new();
        let timing = Timing { expiry: settings.expiry, heartbeat_interval: settings.heartbeat_interval };
        let topology = Topology::load(db, timing, metrics.clone(), Instant::now())?;
        Ok(AppState { inner: Arc::new(Shared { topology: Mutex::new(topology), metrics, settings }) })
    }

    /// The settings the state was opened with.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Runs `operation` on the topology on a blocking thread, because it may write to SQLite.
    pub async fn run<R, F>(&self, operation: F) -> Result<R, Error>
    where
        F: FnOnce(&mut Topology) -> R + Send + 'static,
        R: Send + 'static,
    {
        let shared = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut topology = shared.topology.lock().map_err(|_| Error::Poisoned)?;
            Ok(operation(&mut topology))
        })
        .await
        .map_err(Error::Worker)?
    }
}
