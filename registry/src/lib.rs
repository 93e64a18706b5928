//! The relay tree's registry: the HTTP service every broker registers with. It knows each broker's level,
//! labels, addresses and liveness, assigns each one a parent one level up, hands out alternates for failover,
//! serves the whole topology (as JSON and as a page), and keeps a bounded history, all in SQLite so that it
//! survives a restart.
//!
//! Architecture invariant: the registry never stores or relays messages; it only tells brokers where to connect.
//!
//! Entry points: [`router`] builds the HTTP service on an [`AppState`], and [`serve`] runs it on a bound
//! listener (with `service::serve_http`, within the settings' connection cap and timeouts), with the
//! background expiry sweep, until a shutdown future completes.

pub mod api;
pub mod assign;
pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod identities;
pub mod metrics;
pub mod model;
pub mod page;
pub mod registration;
pub mod state;
pub mod topology;
pub mod view;

use std::future::Future;
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower_http::trace::TraceLayer;

pub use error::{ApiError, Error, RequestError};
pub use state::{AppState, Settings};

/// The largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The registry's HTTP routes, with JSON errors for unknown paths and methods, the body limit, request
/// metrics and request tracing.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(api::page))
        .route("/health", get(api::health))
        .route("/ready", get(api::ready))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/nodes", get(api::list_nodes).post(api::register))
        .route("/api/v1/nodes/{id}", get(api::get_node).delete(api::deregister))
        .route("/api/v1/nodes/{id}/heartbeat", post(api::heartbeat))
        .route("/api/v1/nodes/{id}/parent", get(api::parent))
        .route("/api/v1/topology", get(api::topology))
        .route("/api/v1/topology/history", get(api::history))
        .method_not_allowed_fallback(api::method_not_allowed)
        .fallback(api::no_such_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.metrics().clone(), metrics::count_requests))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves the registry on `listener` until `shutdown` completes: stops accepting, lets requests in flight
/// finish, stops the expiry sweep and writes any statistics not yet written.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop_sweep, sweep_stopped) = oneshot::channel();
    let sweeper = tokio::spawn(sweep_until(state.clone(), sweep_stopped));
    service::serve_http(listener, router(state.clone()), state.settings().http, shutdown).await;
    // The sweeper may already have stopped if its channel closed; either way it is finished below.
    let _ = stop_sweep.send(());
    if let Err(error) = sweeper.await {
        tracing::warn!(%error, "the expiry sweep ended abnormally");
    }
    match state.run(|topology| topology.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) | Err(error) => {
            tracing::warn!(%error, "could not write the last heartbeat statistics")
        }
    }
}

/// Expires silent nodes every sweep interval until `stop` fires.
async fn sweep_until(state: AppState, mut stop: oneshot::Receiver<()>) {
    let mut ticks = tokio::time::interval(state.settings().sweep_interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticks.tick() => {}
        }
        match state.run(|topology| topology.sweep(Instant::now())).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) | Err(error) => tracing::warn!(%error, "expiry sweep failed; retrying next tick"),
        }
    }
}
