//! The TCP consumer server: accepts every connection, serves up to `--max-connections` at once (one
//! connection task each, holding a permit of a semaphore), and refuses the rest straight away with a fatal
//! ERROR frame saying the broker is full, so that a client over the limit learns why at once instead of
//! waiting unanswered in the listen backlog, and retries later. Refusing is bounded as well: at most
//! [`REFUSALS_AT_ONCE`] refused connections wait (up to [`REFUSAL_LINGER`]) for their client to read the
//! ERROR and close, so that the close is a clean end of stream rather than a reset; past that, a refused
//! connection gets the frame by one non-blocking write and is closed at once. Accept failures (out of file
//! descriptors) are waited out with `service::accept`'s backoff. On shutdown it stops accepting and waits,
//! bounded, for the sessions to say SHUTTING_DOWN and close.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use protocol::frame::{ErrorCode, ErrorFrame, Frame};
use service::accept::{AcceptBackoff, accept_with_backoff};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::connection::serve_connection;
use crate::node::Node;

/// How long shutdown waits for open connections to close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Most refused connections waiting at once for their client to read the ERROR and close.
const REFUSALS_AT_ONCE: usize = 64;

/// The longest a refused connection is kept open for its client to read the ERROR.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// Most bytes read and thrown away from a refused client (its HELLO) before closing.
const REFUSAL_DRAIN_BYTES: usize = 64 * 1024;

/// Serves consumers on `listener` until `shutdown` resolves, then waits (bounded) for open sessions to
/// finish. Sessions watch the node's own shutdown signal and close themselves with SHUTTING_DOWN.
pub async fn serve_consumers(listener: TcpListener, node: Arc<Node>, shutdown: impl Future<Output = ()>) {
    let max_connections = node.config.max_connections;
    let permits = Arc::new(Semaphore::new(max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let refusal = refusal_frame(max_connections);
    let mut backoff = AcceptBackoff::new("consumers");
    // Connections refused since the last one served: one warning starts an episode, one line ends it.
    let mut refused_in_a_row: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept_with_backoff(&listener, &mut backoff) => accepted,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            if refused_in_a_row == 0 {
                tracing::warn!(
                    max_connections,
                    %peer,
                    "refusing consumer connections: --max-connections are being served"
                );
            }
            refused_in_a_row += 1;
            node.metrics.connections_refused.inc();
            refuse(socket, peer, &refusal, &refusals);
            continue;
        };
        if refused_in_a_row > 0 {
            tracing::info!(refused = refused_in_a_row, "serving consumer connections again");
            refused_in_a_row = 0;
        }
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            serve_connection(socket, peer, node).await;
            drop(permit);
        });
    }
    drop(listener);
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, permits.acquire_many(all)).await.is_err() {
        tracing::warn!("some consumer connections did not close in time");
    }
}

/// The encoded ERROR frame every refused connection gets.
fn refusal_frame(max_connections: usize) -> Bytes {
    let frame = Frame::Error(ErrorFrame {
        code: ErrorCode::TooManyConnections,
        fatal: true,
        message: format!(
            "too many connections: this broker serves at most {max_connections} consumer connections at \
             once; try again later"
        ),
    });
    let mut encoded = Vec::new();
    match frame.encode(&mut encoded) {
        Ok(()) => Bytes::from(encoded),
        Err(error) => {
            // A short fixed message always encodes; if it ever did not, refused clients are closed unanswered.
            tracing::error!(%error, "cannot encode the refusal frame");
            Bytes::new()
        }
    }
}

/// Refuses one connection: in a task that lingers for the client while fewer than
/// [`REFUSALS_AT_ONCE`] do, else with a non-blocking write and an immediate close.
fn refuse(socket: TcpStream, peer: SocketAddr, refusal: &Bytes, refusals: &Arc<Semaphore>) {
    let Ok(lingering) = Arc::clone(refusals).try_acquire_owned() else {
        // One non-blocking write on the plain socket (the runtime may not have seen it writable yet, so
        // its own try_write could give up without trying). A fresh socket's send buffer is empty, so the
        // frame nearly always fits whole.
        let written = socket.into_std().and_then(|mut socket| std::io::Write::write(&mut socket, refusal));
        if let Err(error) = written {
            tracing::debug!(%peer, %error, "could not tell a refused consumer why");
        }
        return;
    };
    let refusal = refusal.clone();
    tokio::spawn(async move {
        if let Ok(Err(error)) = tokio::time::timeout(REFUSAL_LINGER, say_refused(socket, &refusal)).await {
            tracing::debug!(%peer, %error, "could not tell a refused consumer why");
        }
        drop(lingering);
    });
}

/// Writes the ERROR, ends the stream, and reads (bounded) what the client sent until it closes, so that
/// our close does not reset the connection before the client has read the frame.
async fn say_refused(mut socket: TcpStream, refusal: &[u8]) -> io::Result<()> {
    socket.write_all(refusal).await?;
    socket.shutdown().await?;
    let mut discarded = 0;
    let mut buffer = [0u8; 4096];
    while discarded < REFUSAL_DRAIN_BYTES {
        let n = socket.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        discarded += n;
    }
    Ok(())
}
