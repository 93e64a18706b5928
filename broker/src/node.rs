//! The state one broker shares between its servers and background tasks: configuration, the store, group
//! offsets, group membership, metrics, its place in the tree (parent candidates, the registry client, the
//! pipe's state) and the shutdown signal. This module owns their construction and the shutdown signal;
//! each part's behaviour lives in its own module.

use std::sync::Arc;
use std::time::Instant;

use storage::{FlushPolicy, LogConfig, Store};
use tokio::sync::watch;

use crate::config::{Config, FlushMode};
use crate::error::Error;
use crate::groups::GroupOffsets;
use crate::members::Members;
use crate::metrics::Metrics;
use crate::pipe::PipeState;
use crate::registration::{Placement, RegistryClient};

/// The shared state of one broker.
#[derive(Debug)]
pub struct Node {
    /// The validated configuration.
    pub config: Config,
    /// The topic logs.
    pub store: Arc<Store>,
    /// Committed group offsets and pending refreshes.
    pub groups: Arc<GroupOffsets>,
    /// Who delivers which (group, topic), and the live connections.
    pub members: Members,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Fires once when the broker starts stopping.
    pub shutdown: Shutdown,
    /// The parent candidates this node knows (fixed, from the registry, or cached on disk).
    pub placement: Placement,
    /// The registry client, when `--registry-url` is set.
    pub registry: Option<RegistryClient>,
    /// The state of the pipe to the parent.
    pub pipe: PipeState,
    /// When the broker started, for uptime.
    pub started: Instant,
}

/// ROOT begins a new epoch of every topic at its log end before it serves anyone: records it held before
/// this start, and perhaps lost, are told apart from the records it writes from now on (`protocol::epoch`).
fn begin_epochs(store: &Store) -> Result<(), Error> {
    for log in store.topics() {
        let epochs = store.begin_epoch(&log)?;
        tracing::debug!(topic = %log.name(), %epochs, "new epoch");
    }
    Ok(())
}

impl Node {
    /// Validates the configuration, creates the data directory and opens the store and the group
    /// offsets. Blocking (it opens files): call it before serving, or from a blocking thread.
    pub fn open(config: Config) -> Result<Node, Error> {
        config.validate().map_err(Error::Config)?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| Error::DataDir { path: config.data_dir.clone(), source })?;
        let store = Store::open(&config.data_dir, log_config(&config))?;
        if config.level == crate::config::Level::Root {
            begin_epochs(&store)?;
        }
        let groups = GroupOffsets::open(&config.data_dir)?;
        let registry = match &config.registry_url {
            Some(url) => Some(RegistryClient::new(url, &config.registry_token, &config.node_id)?),
            None => None,
        };
        let placement = Placement::open(&config);
        let pipe = PipeState::new(config.level == crate::config::Level::Root);
        Ok(Node {
            config,
            store: Arc::new(store),
            groups: Arc::new(groups),
            members: Members::new(),
            metrics: Metrics::new(),
            shutdown: Shutdown::new(),
            placement,
            registry,
            pipe,
            started: Instant::now(),
        })
    }

    /// Whether this node is ROOT, the only one that accepts new data.
    pub fn is_root(&self) -> bool {
        self.config.level == crate::config::Level::Root
    }

    /// Whether this node serves its copy: ROOT always; a child once its pipe streams, or while it holds
    /// a copy of at least one topic from before (a cached copy, served while the parent is unreachable).
    pub fn is_serving(&self) -> bool {
        self.is_root() || self.pipe.is_streaming() || !self.store.topics().is_empty()
    }
}

/// The storage settings from the broker configuration: the one place the broker's `--flush` words become
/// storage's [`FlushPolicy`], which decides durability from then on (storage also warns about `never`).
pub fn log_config(config: &Config) -> LogConfig {
    let flush = match config.flush {
        FlushMode::Always => FlushPolicy::Always,
        FlushMode::Interval => FlushPolicy::Interval(config.flush_interval),
        FlushMode::Never => FlushPolicy::Never,
    };
    LogConfig {
        segment_bytes: config.segment_bytes,
        segment_max_age: config.segment_max_age,
        flush,
        retention_bytes: (config.retention_bytes > 0).then_some(config.retention_bytes),
        retention_age: (!config.retention_age.is_zero()).then_some(config.retention_age),
        // Below ROOT a copy relays as soon as it has written a record; it acknowledges upward only what is
        // durable, and a tail it loses in a crash is fetched again, the same records at the same offsets.
        readable_before_durable: config.level != crate::config::Level::Root,
        ..LogConfig::default()
    }
}

/// A one-way signal that the broker is stopping; cheap to clone and to wait on from any task.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// `true` once triggered.
    sender: Arc<watch::Sender<bool>>,
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Shutdown {
        Shutdown { sender: Arc::new(watch::Sender::new(false)) }
    }

    /// Starts the shutdown; later calls do nothing.
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// Whether the shutdown has started.
    pub fn is_triggered(&self) -> bool {
        *self.sender.borrow()
    }

    /// Resolves once the shutdown has started.
    pub async fn wait(&self) {
        let mut receiver = self.sender.subscribe();
        // The sender lives in `self`, so the only outcome is the value turning true.
        let _ = receiver.wait_for(|stopping| *stopping).await;
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}
