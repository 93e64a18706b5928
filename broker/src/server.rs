//! Starting and stopping a broker: bind the listeners, open the node, run the HTTP API (with the pipe
//! endpoint, served by `service::serve_http` within `--max-http-connections` and the HTTP timeouts), the
//! consumer server, the pipe client (below ROOT), registration (with a registry) and the
//! timers (group commits, storage flushes, retention), and on shutdown stop accepting, let sessions send
//! SHUTTING_DOWN, stop the pipe client, deregister, then flush group offsets and storage and close.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use storage::FlushPolicy;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::consumers::serve_consumers;
use crate::error::Error;
use crate::node::Node;

/// How often the background scrub checks its share (`--scrub-rate` bytes) of sealed segments.
const SCRUB_PERIOD: Duration = Duration::from_secs(1);

/// How long the HTTP server may take to finish open requests at shutdown.
const HTTP_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the pipe client and registration may take to stop at shutdown.
const TREE_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A broker with its listeners bound, ready to run.
#[derive(Debug)]
pub struct Broker {
    /// The shared state.
    node: Arc<Node>,
    /// The HTTP API listener.
    http_listener: TcpListener,
    /// The TCP consumer listener.
    consumer_listener: TcpListener,
}

impl Broker {
    /// Opens the data directory and binds both listeners (port 0 picks a free port).
    pub async fn bind(config: Config) -> Result<Broker, Error> {
        let http_addr = config.http_addr;
        let consumer_addr = config.consumer_addr;
        let node = tokio::task::spawn_blocking(move || Node::open(config)).await??;
        let http_listener = TcpListener::bind(http_addr).await.map_err(|source| Error::Bind {
            what: "HTTP",
            addr: http_addr,
            source,
        })?;
        let consumer_listener = TcpListener::bind(consumer_addr).await.map_err(|source| Error::Bind {
            what: "consumers",
            addr: consumer_addr,
            source,
        })?;
        Ok(Broker { node: Arc::new(node), http_listener, consumer_listener })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.http_listener.local_addr()?)
    }

    /// The bound consumer address.
    pub fn consumer_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.consumer_listener.local_addr()?)
    }

    /// The shared state, for embedding and tests.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Serves until `shutdown` resolves (or the node's own shutdown signal fires), then stops gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let Broker { node, http_listener, consumer_listener } = self;
        let http_addr = http_listener.local_addr()?;
        let consumer_addr = consumer_listener.local_addr()?;
        tracing::info!(
            node_id = %node.config.node_id,
            level = node.config.level.as_str(),
            %http_addr,
            %consumer_addr,
            data_dir = %node.config.data_dir.display(),
            "broker started"
        );
        let timers = start_timers(&node);
        let http =
            {
                let signal = node.shutdown.clone();
                let router = crate::http::router(Arc::clone(&node));
                let limits = node.config.http_limits();
                tokio::spawn(service::serve_http(http_listener, router, limits, async move {
                    signal.wait().await
                }))
            };
        let mut tree_tasks = vec![
            tokio::spawn(crate::pipe::run_pipe_client(Arc::clone(&node))),
            tokio::spawn(crate::repair::run_repairs(Arc::clone(&node))),
        ];
        if let Some(registry) = node.registry.clone() {
            let (advertised_http, advertised_tcp) = advertised(&node, http_addr, consumer_addr);
            tracing::info!(registry = %registry.base_url(), %advertised_http, %advertised_tcp, "registering");
            tree_tasks.push(tokio::spawn(crate::registration::run_registration(
                Arc::clone(&node),
                registry,
                advertised_http,
                advertised_tcp,
            )));
        }
        let consumers =
            {
                let signal = node.shutdown.clone();
                tokio::spawn(serve_consumers(consumer_listener, Arc::clone(&node), async move {
                    signal.wait().await
                }))
            };
        tokio::select! {
            () = shutdown => tracing::info!("shutting down"),
            () = node.shutdown.wait() => tracing::info!("shutting down"),
        }
        node.shutdown.trigger();
        for task in tree_tasks {
            if tokio::time::timeout(TREE_STOP_TIMEOUT, task).await.is_err() {
                tracing::warn!("the pipe client or registration did not stop in time");
            }
        }
        if let Err(error) = consumers.await {
            tracing::error!(%error, "the consumer server failed");
        }
        match tokio::time::timeout(HTTP_DRAIN_TIMEOUT, http).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "the HTTP server task failed"),
            Err(_) => tracing::warn!("HTTP requests still open at shutdown were dropped"),
        }
        for timer in timers {
            timer.abort();
        }
        let closing = Arc::clone(&node);
        tokio::task::spawn_blocking(move || close(&closing)).await??;
        tracing::info!("broker stopped");
        Ok(())
    }
}

/// The addresses this node advertises: the configured ones, else the bound ones. A bound unspecified
/// address (0.0.0.0) is no use to others, so it is advertised with a warning.
fn advertised(node: &Node, http_addr: SocketAddr, consumer_addr: SocketAddr) -> (String, String) {
    let config = &node.config;
    for (flag, configured, bound) in [
        ("--advertise-http", &config.advertise_http, http_addr),
        ("--advertise-tcp", &config.advertise_tcp, consumer_addr),
    ] {
        if configured.is_none() && bound.ip().is_unspecified() {
            tracing::warn!(%bound, "advertising an unspecified address; set {flag} to one others can reach");
        }
    }
    (
        config.advertise_http.clone().unwrap_or_else(|| http_addr.to_string()),
        config.advertise_tcp.clone().unwrap_or_else(|| consumer_addr.to_string()),
    )
}

/// Opens the node, binds, and serves until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
    Broker::bind(config).await?.run(shutdown).await
}

/// Writes the last group offsets and storage state. Blocking.
fn close(node: &Node) -> Result<(), Error> {
    let written = node.groups.flush()?;
    // The store itself closes when the last handle to it is dropped; flushing is what must not be skipped.
    node.store.flush_all()?;
    tracing::info!(group_offsets_written = written, "flushed group offsets and storage");
    Ok(())
}

/// Starts the periodic tasks; each runs its blocking work on a blocking thread.
fn start_timers(node: &Arc<Node>) -> Vec<JoinHandle<()>> {
    let mut timers = Vec::new();
    let groups = Arc::clone(&node.groups);
    timers.push(every(node.config.group_commit_interval, move || {
        if let Err(error) = groups.flush() {
            tracing::error!(%error, "writing group offsets failed; retrying at the next interval");
        }
    }));
    if let FlushPolicy::Interval(period) = node.store.config().flush {
        let store = Arc::clone(&node.store);
        timers.push(every(period, move || {
            if let Err(error) = store.flush_all() {
                tracing::error!(%error, "flushing storage failed");
            }
        }));
    }
    if node.config.scrub_rate > 0 {
        let store = Arc::clone(&node.store);
        let budget = node.config.scrub_rate;
        timers.push(every(SCRUB_PERIOD, move || {
            store.scrub(budget);
        }));
    }
    let store = Arc::clone(&node.store);
    timers.push(every(node.config.retention_check_interval, move || {
        if let Err(error) = store.enforce_retention() {
            tracing::error!(%error, "enforcing retention failed");
        }
    }));
    let compacting = Arc::clone(node);
    timers.push(every(node.config.compaction_interval, move || {
        // A failing topic is logged by storage; the others were compacted and are counted.
        let report = compacting.store.compact_paced(compacting.config.compaction_rate);
        if let Ok(report) = report {
            compacting.metrics.record_compaction(&report);
        }
    }));
    timers
}

/// Runs `work` on a blocking thread every `period`, one run at a time.
fn every(period: Duration, work: impl Fn() + Send + Sync + 'static) -> JoinHandle<()> {
    let work = Arc::new(work);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let work = Arc::clone(&work);
            if tokio::task::spawn_blocking(move || work()).await.is_err() {
                tracing::error!("a periodic task panicked");
            }
        }
    })
}
