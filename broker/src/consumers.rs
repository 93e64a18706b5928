//! The TCP consumer server: accepts connections up to `--max-connections` (a semaphore taken before each
//! accept, so extra clients wait in the listen backlog rather than costing memory) and runs one
//! connection task each. On shutdown it stops accepting and waits, bounded, for the sessions to say
//! SHUTTING_DOWN and close.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::connection::serve_connection;
use crate::node::Node;

/// How long to pause after a failed accept (for example, out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long shutdown waits for open connections to close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves consumers on `listener` until `shutdown` resolves, then waits (bounded) for open sessions to
/// finish. Sessions watch the node's own shutdown signal and close themselves with SHUTTING_DOWN.
pub async fn serve_consumers(listener: TcpListener, node: Arc<Node>, shutdown: impl Future<Output = ()>) {
    let max_connections = node.config.max_connections;
    let permits = Arc::new(Semaphore::new(max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, peer)) => {
                let node = Arc::clone(&node);
                tokio::spawn(async move {
                    serve_connection(socket, peer, node).await;
                    drop(permit);
                });
            }
            Err(error) => {
                tracing::warn!(%error, "accepting a consumer connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener);
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, permits.acquire_many(all)).await.is_err() {
        tracing::warn!("some consumer connections did not close in time");
    }
}
