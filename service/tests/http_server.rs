//! `serve_http` on a real socket (127.0.0.1, port 0): the connection cap holds (upgraded WebSockets
//! included), a partial request is closed after the header timeout, a body that stops arriving and a
//! response nobody reads are cut after the idle timeout, while a slow handler and a quiet WebSocket are
//! not; handlers see the peer's address; shutdown lets the request in flight finish. Every wait is
//! bounded.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::ws::{Message as ServerMessage, WebSocketUpgrade};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use futures_util::{SinkExt, StreamExt};
use service::{ApiJson, HttpLimits, serve_http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// The longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(20);

/// How long a test waits to see that something does not happen.
const QUIET: Duration = Duration::from_millis(300);

/// A body bigger than any socket buffer.
const BIG_BODY: usize = 64 << 20;

fn routes() -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/peer", get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }))
        .route("/echo", post(|ApiJson(body): ApiJson<serde_json::Value>| async move { body.to_string() }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                "slow"
            }),
        )
        .route("/big", get(|| async { vec![b'x'; BIG_BODY] }))
        .route(
            "/ws",
            get(|upgrade: WebSocketUpgrade| async move { upgrade.on_upgrade(echo).into_response() }),
        )
}

/// Echoes every text message.
async fn echo(mut socket: axum::extract::ws::WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        if let ServerMessage::Text(text) = message
            && socket.send(ServerMessage::Text(text)).await.is_err()
        {
            return;
        }
    }
}

/// A server under test and the means to stop it.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(limits: HttpLimits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_http(listener, routes(), limits, async move {
            let _ = stopped.await;
        }));
        Server { addr, stop: Some(stop), task }
    }

    /// Stops the server and waits (bounded) until it has returned.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, &mut self.task).await.expect("the server stops").unwrap();
    }
}

fn limits(max_connections: usize, header_timeout_ms: u64, idle_timeout_ms: u64) -> HttpLimits {
    HttpLimits {
        max_connections,
        header_timeout: Duration::from_millis(header_timeout_ms),
        idle_timeout: Duration::from_millis(idle_timeout_ms),
    }
}

/// Sends `request` (which asks for `Connection: close`) and reads the whole answer: status and body.
async fn exchange(stream: &mut TcpStream, request: &str) -> (u16, String) {
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = read_to_end(stream).await;
    let status = answer.get(9..12).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    (status, body)
}

/// Reads until the server closes (or resets) the connection, bounded by [`WAIT`].
async fn read_to_end(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await.expect("the server closes");
    String::from_utf8_lossy(&answer).into_owned()
}

fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
}

#[tokio::test]
async fn a_partial_request_is_closed_after_the_header_timeout() {
    let server = Server::start(limits(16, 300, 10_000)).await;
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial.write_all(b"GET /health HTTP/1.1\r\nHost: te").await.unwrap();
    let answer = read_to_end(&mut partial).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    let mut whole = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(exchange(&mut whole, &get_request("/health")).await, (200, "ok".to_string()));
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_one_closes() {
    let server = Server::start(limits(2, 10_000, 10_000)).await;
    let first = TcpStream::connect(server.addr).await.unwrap();
    let _second = TcpStream::connect(server.addr).await.unwrap();
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third.write_all(get_request("/health").as_bytes()).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(QUIET, third.read(&mut byte)).await;
    assert!(early.is_err(), "a third connection was served with a cap of two");
    drop(first);
    let answer = read_to_end(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_refused_and_closed() {
    let server = Server::start(limits(16, 10_000, 300)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n{\"half\":";
    let (status, body) = exchange(&mut stream, request).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_body") && body.contains("stopped arriving"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn a_slow_handler_is_not_idle() {
    let server = Server::start(limits(16, 10_000, 200)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(exchange(&mut stream, &get_request("/slow")).await, (200, "slow".to_string()));
    server.stop().await;
}

#[tokio::test]
async fn a_response_nobody_reads_is_cut_after_the_idle_timeout() {
    let server = Server::start(limits(16, 10_000, 300)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(get_request("/big").as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(WAIT, stream.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // Stop reading until the server has given up, then take what the socket buffers held.
    tokio::time::sleep(QUIET * 4).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await.expect("the server closed");
    assert!(rest.len() < BIG_BODY, "the whole body arrived: the connection was not cut");
    server.stop().await;
}

#[tokio::test]
async fn a_quiet_websocket_outlives_both_timeouts_and_keeps_its_place() {
    let server = Server::start(limits(1, 200, 200)).await;
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr)).await.expect("upgrade");
    tokio::time::sleep(QUIET * 4).await;
    socket.send(Message::text("still here")).await.unwrap();
    let echoed = tokio::time::timeout(WAIT, socket.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed, Message::text("still here"));
    // The WebSocket holds the only place: another connection waits until it closes.
    let mut other = TcpStream::connect(server.addr).await.unwrap();
    other.write_all(get_request("/health").as_bytes()).await.unwrap();
    let mut byte = [0u8; 1];
    assert!(tokio::time::timeout(QUIET, other.read(&mut byte)).await.is_err(), "served past the cap");
    socket.close(None).await.unwrap();
    drop(socket);
    let answer = read_to_end(&mut other).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn handlers_see_the_peer_address() {
    let server = Server::start(limits(16, 10_000, 10_000)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    assert_eq!(exchange(&mut stream, &get_request("/peer")).await, (200, local.to_string()));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish() {
    let server = Server::start(limits(16, 10_000, 10_000)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(get_request("/slow").as_bytes()).await.unwrap();
    // The request is in its handler once the server has read it; give it that moment, then stop.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = server.addr;
    let stopping = tokio::spawn(server.stop());
    let answer = read_to_end(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("slow"), "{answer}");
    tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
}
