//! The consumer-app binary: reads the configuration, opens the local copy, and wires the handler queue,
//! the broker sync loop and the REST API together until SIGINT or SIGTERM. Everything else is in the library.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use consumer_app::app::{AppState, SyncStatus};
use consumer_app::config::{Command, Config, HandlerKind};
use consumer_app::copy::LocalCopy;
use consumer_app::handler::{
    Dispatcher, HandlerQueue, LogHandler, MessageHandler, StoreHandler, WebhookHandler,
};
use consumer_app::metrics::Metrics;
use consumer_app::sync::{SyncLoop, SyncSettings};
use service::healthcheck;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// How long the handler may take to finish queued records at shutdown; what is left is handed to it
/// again at the next start.
const HANDLER_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let config: Config = service::cli::parse_or_exit();
    if let Err(message) = config.validate() {
        service::cli::exit_invalid::<Config>(message);
    }
    if let Some(Command::Healthcheck { url }) = &config.command {
        let url = url.clone().unwrap_or_else(|| healthcheck::default_url(config.listen));
        return match healthcheck::probe(&url, healthcheck::PROBE_TIMEOUT) {
            Ok(_) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("unhealthy: {error}");
                ExitCode::FAILURE
            }
        };
    }
    service::init_logging(config.log_json);
    service::raise_open_files_limit(u64::try_from(config.max_http_connections).unwrap_or(u64::MAX));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let log_config = config.log_config();
    let copy = tokio::task::spawn_blocking(move || LocalCopy::open(&data_dir, log_config))
        .await?
        .with_context(|| format!("cannot open the local copy in {}", config.data_dir.display()))?;
    let copy = Arc::new(copy);
    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(SyncStatus::default());
    // A copy that was complete once serves at start, even while the broker is out of reach.
    if copy.db().ready_once()? {
        status.set_ready();
    }

    let handler: Arc<dyn MessageHandler> = match config.handler {
        HandlerKind::Store => Arc::new(StoreHandler),
        HandlerKind::Log => Arc::new(LogHandler),
        HandlerKind::Webhook => {
            let url = config.webhook_url.clone().unwrap_or_default();
            Arc::new(WebhookHandler::new(url, config.webhook_timeout)?)
        }
    };
    let handler_name = handler.name();
    let handler_wants_records = handler.wants_records();
    let dispatcher = Dispatcher::new(handler, config.retry_policy(), copy.db().clone(), metrics.clone());
    let queue_capacity = usize::from(config.max_in_flight) * 2 + 16;
    let (queue, handler_task) = HandlerQueue::start(dispatcher, copy.db().clone(), queue_capacity);

    let (commands_tx, commands_rx) = mpsc::channel(64);
    let state = AppState {
        copy: copy.clone(),
        metrics: metrics.clone(),
        status: status.clone(),
        commands: commands_tx,
        handler_name,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let listen = listener.local_addr()?;
    tracing::info!(%listen, handler = handler_name, broker = %config.broker, "REST API listening");

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let http = tokio::spawn(consumer_app::http::serve(
        listener,
        state,
        config.http_limits(),
        stopped(shutdown_rx.clone()),
    ));
    let settings = SyncSettings {
        broker: config.broker.clone(),
        client_id: config.consumer_id.clone(),
        group: config.group().to_string(),
        topics: config.topics.clone(),
        token: config.token.clone(),
        max_in_flight: config.max_in_flight,
        heartbeat: config.heartbeat,
        // Validated to at most 64M, so it fits.
        max_frame_len: usize::try_from(config.max_frame_bytes).unwrap_or(usize::MAX),
        reconnect_backoff: config.reconnect_backoff,
        reconnect_max_backoff: config.reconnect_max_backoff,
    };
    let compaction = tokio::spawn(compact_every(
        copy.clone(),
        metrics.clone(),
        config.compaction_interval,
        config.compaction_rate,
    ));
    let sync = SyncLoop { copy, queue, handler_wants_records, metrics, status, settings };
    let sync = tokio::spawn(sync.run(commands_rx, stopped(shutdown_rx)));

    service::shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    sync.await.context("the sync loop failed")?;
    // The sync loop held the only sender, so the handler task ends once its queue is empty.
    if tokio::time::timeout(HANDLER_DRAIN_TIMEOUT, handler_task).await.is_err() {
        tracing::warn!("the handler did not finish in time; the rest is handed to it at the next start");
    }
    compaction.abort();
    http.await.context("the REST server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Compacts the copy's topics whose cleanup policy compacts, every `interval`, at most `rate` bytes a
/// second, one pass at a time on a blocking thread. A pass stopped by shutdown leaves the old segments.
async fn compact_every(copy: Arc<LocalCopy>, metrics: Arc<Metrics>, interval: Duration, rate: u64) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let copy = copy.clone();
        // A failing topic is logged by storage; the others were compacted and are counted.
        if let Ok(Ok(report)) = tokio::task::spawn_blocking(move || copy.compact(rate)).await {
            metrics.record_compaction(&report);
        }
    }
}

/// Completes when the shutdown flag is raised (or its sender is gone).
async fn stopped(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}
