//! The HTTP server of every binary: an axum `Router` served over HTTP/1.1 by hyper, with the limits that
//! `axum::serve` does not set, so that idle or half-sent requests cannot use up a service's file
//! descriptors:
//!
//! - a cap on open connections ([`HttpLimits::max_connections`]): a semaphore permit is taken before each
//!   accept, so connections over the cap wait in the listen backlog; the permit lives inside the socket
//!   and is returned when the socket closes, so a WebSocket upgraded from a request (the broker's pipe)
//!   counts for as long as it is open;
//! - a header-read timeout ([`HttpLimits::header_timeout`], hyper's own): a request's head must arrive
//!   within it, counted from the connection's opening or the end of the previous response, so a silent
//!   or trickling client and an idle kept-alive connection are closed;
//! - an idle timeout ([`HttpLimits::idle_timeout`]): in the middle of a request, a connection on which no
//!   byte moves either way for that long is closed (a body that stops arriving, a response the client
//!   stops reading). Time spent in a handler is not idleness, and a connection upgraded to a WebSocket
//!   leaves this server's watch at the upgrade: the WebSocket's own heartbeats keep it honest;
//! - accept failures (out of file descriptors) waited out with [`crate::accept`]'s backoff.
//!
//! Every request carries axum's `ConnectInfo<SocketAddr>` with the peer's address. [`serve_https`] serves
//! the same over TLS: each connection's handshake (within the header timeout, a plain-text client answered
//! with a 400 that says to use TLS) runs in its own task under the connection cap, and every request also
//! carries the [`PeerIdentity`] of the client certificate. At shutdown the server
//! stops accepting, lets each connection finish its request in flight, and returns once all have closed.
//!
//! This module owns sockets, timeouts and the connection cap; it knows nothing of routes or of what any
//! binary serves, and leaves certificates and handshakes to [`crate::tls`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use http_body::{Frame, SizeHint};
use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::accept::{AcceptBackoff, accept_with_backoff};
use crate::tls::{PeerIdentity, PlainTextReply, accept_tls, peer_node_id};
use crate::units::duration_between;

/// The most any connection cap may be set to.
pub const MAX_CONNECTION_LIMIT: usize = 1_000_000;

/// The shortest and longest header-read timeout a binary accepts.
pub const HEADER_TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(600));

/// The shortest and longest idle timeout a binary accepts.
pub const IDLE_TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(3600));

/// The limits of one HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Most connections open at once, upgraded WebSockets included; more wait in the listen backlog.
    pub max_connections: usize,
    /// How long a request's head may take to arrive, from the connection's opening or the end of the
    /// previous response (so also how long a kept-alive connection may sit unused).
    pub header_timeout: Duration,
    /// Longest silence, no byte read or written, in the middle of a request outside its handler.
    pub idle_timeout: Duration,
}

/// The clap value parser of a connection cap: a whole number from 1 to [`MAX_CONNECTION_LIMIT`].
pub fn parse_connection_limit(text: &str) -> Result<usize, String> {
    let text = text.trim();
    match text.parse::<usize>() {
        Ok(limit) if (1..=MAX_CONNECTION_LIMIT).contains(&limit) => Ok(limit),
        _ => Err(format!("{text:?} is not a number of connections from 1 to {MAX_CONNECTION_LIMIT}")),
    }
}

/// The clap value parser of a header-read timeout, within [`HEADER_TIMEOUT_RANGE`].
pub fn parse_header_timeout(text: &str) -> Result<Duration, String> {
    duration_between(HEADER_TIMEOUT_RANGE.0, HEADER_TIMEOUT_RANGE.1)(text)
}

/// The clap value parser of an idle timeout, within [`IDLE_TIMEOUT_RANGE`].
pub fn parse_idle_timeout(text: &str) -> Result<Duration, String> {
    duration_between(IDLE_TIMEOUT_RANGE.0, IDLE_TIMEOUT_RANGE.1)(text)
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then stops accepting, lets
/// the requests in flight finish and returns once every connection has closed (WebSockets upgraded from
/// a request are the handler's business and are not waited for).
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve(listener, router, limits, None, shutdown).await;
}

/// [`serve_http`] over TLS: each connection's handshake with `acceptor` must finish within the header
/// timeout, a plain-text client is answered `400` with [`crate::tls::PLAIN_TEXT_LINE`], and every request
/// carries the [`PeerIdentity`] of the client's verified certificate (`None` without one).
pub async fn serve_https(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    acceptor: TlsAcceptor,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve(listener, router, limits, Some(acceptor), shutdown).await;
}

/// The accept loop of both: plain HTTP without an acceptor, HTTPS with one.
async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    acceptor: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Each connection task holds a receiver: `true` asks it to finish, and the channel closing tells that
    // every task has ended.
    let (stop, stopping) = watch::channel(false);
    let mut backoff = AcceptBackoff::new("HTTP");
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept_with_backoff(&listener, &mut backoff) => accepted,
        };
        let connection = Connection { peer, router: router.clone(), limits, stopping: stopping.clone() };
        tokio::spawn(connection.start(stream, acceptor.clone(), permit));
    }
    drop(listener);
    stop.send_replace(true);
    drop(stopping);
    stop.closed().await;
}

/// One accepted connection and what serving it needs.
struct Connection {
    /// The peer's address, given to handlers as `ConnectInfo`.
    peer: SocketAddr,
    /// The routes.
    router: Router,
    /// The timeouts.
    limits: HttpLimits,
    /// Turns `true` at shutdown.
    stopping: watch::Receiver<bool>,
}

impl Connection {
    /// Completes the TLS handshake when there is an acceptor, then serves the connection; a failed
    /// handshake only closes it.
    async fn start(self, stream: TcpStream, acceptor: Option<TlsAcceptor>, permit: OwnedSemaphorePermit) {
        // Responses and WebSocket frames (the pipe) go out as soon as they are written: waiting for the
        // peer's TCP acknowledgement (Nagle) would hold a small frame back by a delayed ACK.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(peer = %self.peer, %error, "cannot disable Nagle's algorithm");
        }
        let Some(acceptor) = acceptor else {
            return self.serve(stream, None, permit).await;
        };
        let timeout = self.limits.header_timeout;
        let mut stopping = self.stopping.clone();
        let stream = tokio::select! {
            accepted = accept_tls(stream, &acceptor, PlainTextReply::Http, timeout) => match accepted {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(peer = %self.peer, %error, "TLS connection refused");
                    return;
                }
            },
            _ = stopping.wait_for(|stop| *stop) => return,
        };
        let node_id = match stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()) {
            None => None,
            Some(cert) => match peer_node_id(cert) {
                Ok(node_id) => node_id,
                Err(error) => {
                    tracing::debug!(peer = %self.peer, %error, "cannot read the client certificate's name");
                    None
                }
            },
        };
        self.serve(stream, Some(PeerIdentity(node_id)), permit).await;
    }

    /// Serves requests until the client closes, a timeout closes the connection, the connection is
    /// upgraded (the WebSocket then lives on in its handler's task, with the permit), or shutdown.
    async fn serve<S>(mut self, stream: S, identity: Option<PeerIdentity>, permit: OwnedSemaphorePermit)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(TrackedStream { stream, activity: Arc::clone(&activity), _permit: permit });
        let (peer, idle_timeout) = (self.peer, self.limits.idle_timeout);
        let router = self.router.clone();
        let handler_activity = Arc::clone(&activity);
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let in_handler = Busy::enter(&handler_activity);
            let mut request = request.map(|body| Body::new(IdleBody::new(body, idle_timeout)));
            request.extensions_mut().insert(ConnectInfo(peer));
            if let Some(identity) = &identity {
                request.extensions_mut().insert(identity.clone());
            }
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await;
                drop(in_handler);
                response
            }
        });
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(self.limits.header_timeout);
        let connection = builder.serve_connection(io, service).with_upgrades();
        tokio::pin!(connection);
        let mut finishing = false;
        loop {
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(error) = served {
                        tracing::debug!(%peer, %error, "HTTP connection closed on an error");
                    }
                    return;
                }
                _ = self.stopping.wait_for(|stop| *stop), if !finishing => {
                    connection.as_mut().graceful_shutdown();
                    finishing = true;
                }
                () = activity.idle_for(idle_timeout) => {
                    tracing::debug!(%peer, ?idle_timeout, "closing an HTTP connection silent in mid-request");
                    return;
                }
            }
        }
    }
}

/// When a connection last moved a byte, and whether a handler is running on it.
#[derive(Debug)]
struct Activity {
    /// When the connection was accepted; the origin of `last_ms`.
    opened: Instant,
    /// Milliseconds from `opened` to the last read or write that moved bytes, or the last handler's end.
    last_ms: AtomicU64,
    /// Handlers running (hyper runs one at a time on HTTP/1, but counting costs nothing).
    busy: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity { opened: Instant::now(), last_ms: AtomicU64::new(0), busy: AtomicUsize::new(0) }
    }

    /// Notes that something happened now.
    fn touch(&self) {
        let since_open = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(since_open, Ordering::Relaxed);
    }

    /// Resolves once no byte has moved and no handler has run for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let wait = if self.busy.load(Ordering::Relaxed) > 0 {
                timeout
            } else {
                let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
                let silent = self.opened.elapsed().saturating_sub(last);
                if silent >= timeout {
                    return;
                }
                timeout - silent
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A handler running; dropped when its response is ready (or the request is abandoned).
struct Busy(Arc<Activity>);

impl Busy {
    fn enter(activity: &Arc<Activity>) -> Busy {
        activity.busy.fetch_add(1, Ordering::Relaxed);
        Busy(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The accepted socket, noting every read and write that moves bytes, and holding the connection's
/// permit until it is dropped: by hyper when the connection ends, or by a WebSocket handler after an
/// upgrade.
struct TrackedStream<S> {
    /// The socket, or the TLS stream over it.
    stream: S,
    /// Where reads and writes are noted.
    activity: Arc<Activity>,
    /// The connection's place under the cap.
    _permit: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A request body that fails when its next piece does not arrive within the idle timeout. The handler
/// then answers (through its extractor) that the body could not be read, and the connection closes.
struct IdleBody {
    /// hyper's body.
    inner: Incoming,
    /// The longest wait for the next piece.
    timeout: Duration,
    /// The deadline of the current wait, set while the body is pending.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl IdleBody {
    fn new(inner: Incoming, timeout: Duration) -> IdleBody {
        IdleBody { inner, timeout, deadline: None }
    }
}

impl http_body::Body for IdleBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.deadline = None;
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled { timeout })))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that stopped arriving.
#[derive(Debug)]
struct BodyStalled {
    /// How long nothing arrived.
    timeout: Duration,
}

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body stopped arriving for {}", crate::units::format_duration(self.timeout))
    }
}

impl std::error::Error for BodyStalled {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_within_their_ranges() {
        assert_eq!(parse_connection_limit("200"), Ok(200));
        assert!(parse_connection_limit("0").is_err());
        assert!(parse_connection_limit("1000001").is_err());
        assert!(parse_connection_limit("many").unwrap_err().contains("1 to 1000000"));
        assert_eq!(parse_header_timeout("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_header_timeout("10ms").unwrap_err(), "10ms is not between 100ms and 10m");
        assert_eq!(parse_idle_timeout("60s"), Ok(Duration::from_secs(60)));
        assert!(parse_idle_timeout("2h").is_err());
        assert!(parse_idle_timeout("60").is_err(), "a duration needs a unit");
    }

    #[tokio::test(start_paused = true)]
    async fn idleness_counts_from_the_last_byte_and_never_inside_a_handler() {
        let activity = Arc::new(Activity::new());
        let timeout = Duration::from_secs(60);
        tokio::time::advance(Duration::from_secs(50)).await;
        activity.touch();
        let start = Instant::now();
        activity.idle_for(timeout).await;
        assert_eq!(start.elapsed(), timeout, "idle 60s after the last byte");
        let busy = Busy::enter(&activity);
        let idle = activity.idle_for(timeout);
        tokio::pin!(idle);
        assert!(tokio::time::timeout(Duration::from_secs(600), idle.as_mut()).await.is_err());
        drop(busy);
        let start = Instant::now();
        idle.await;
        assert!(start.elapsed() >= timeout, "idle counts again from the handler's end");
    }
}
