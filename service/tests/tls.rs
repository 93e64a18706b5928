//! `serve_https` and the TLS helpers on real sockets (127.0.0.1, port 0), with certificates from
//! `tls::generate`: a client trusting the CA is served, one trusting another CA is refused, client
//! certificates are required or optional and name the peer, a plain-text client is told to use TLS, an
//! expired certificate is refused, a WebSocket upgrades over TLS, and a TLS client names a plain-text
//! server. Every wait is bounded.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::extract::Extension;
use axum::extract::ws::{Message as ServerMessage, WebSocket, WebSocketUpgrade};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::ServerName;
use service::tls::{self, ClientAuth, PeerIdentity, TlsSettings};
use service::{HttpLimits, serve_https};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_tungstenite::tungstenite::Message;

/// The longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(20);

fn routes() -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ws", get(|upgrade: WebSocketUpgrade| async move { upgrade.on_upgrade(echo_once) }))
        .route(
        "/whoami",
        get(
            |Extension(PeerIdentity(node_id)): Extension<PeerIdentity>| async move { format!("{node_id:?}") },
        ),
    )
}

/// Echoes one text message.
async fn echo_once(mut socket: WebSocket) {
    if let Some(Ok(ServerMessage::Text(text))) = socket.recv().await {
        let _ = socket.send(ServerMessage::Text(text)).await;
    }
}

/// A running HTTPS server.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(settings: &TlsSettings) -> Server {
        let acceptor = TlsAcceptor::from(tls::server_config(settings).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let limits = HttpLimits {
            max_connections: 16,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
        };
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve_https(listener, routes(), limits, acceptor, shutdown));
        Server { addr, stop: Some(stop), task }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, &mut self.task).await.expect("the server stops").unwrap();
    }
}

/// `GET path` over TLS with the client side of `settings`: the status and body, or the error as text.
async fn get_tls(addr: SocketAddr, settings: &TlsSettings, path: &str) -> Result<(u16, String), String> {
    let connector = TlsConnector::from(tls::client_config(settings).map_err(|error| error.to_string())?);
    let request = async {
        let stream = TcpStream::connect(addr).await.map_err(|error| error.to_string())?;
        let server_name = ServerName::try_from("localhost").unwrap();
        let mut stream = tls::connect_tls(stream, &connector, server_name, WAIT)
            .await
            .map_err(|error| error.to_string())?;
        let head = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.map_err(|error| error.to_string())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.map_err(|error| error.to_string())?;
        parse_response(&response)
    };
    tokio::time::timeout(WAIT, request).await.expect("the request ends")
}

/// The status and body of a whole HTTP/1.1 response.
fn parse_response(response: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP response: {text:?}"))?;
    let status =
        head.split(' ').nth(1).and_then(|code| code.parse().ok()).ok_or(format!("bad head: {head}"))?;
    Ok((status, body.to_owned()))
}

/// A CA and certificates for `server` and `node-a` in one directory, and another CA in another.
struct Certs {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    server: tls::LocalCerts,
    node_a: tls::LocalCerts,
    other: tls::LocalCerts,
}

fn certs() -> Certs {
    let (dir, other_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = tls::generate(dir.path(), "server").unwrap();
    let node_a = tls::generate(dir.path(), "node-a").unwrap();
    let other = tls::generate(other_dir.path(), "stranger").unwrap();
    Certs { _dirs: (dir, other_dir), server, node_a, other }
}

/// Client settings trusting `ca`, without a certificate of their own.
fn trusting(ca: &Path) -> TlsSettings {
    TlsSettings { ca: Some(ca.to_path_buf()), ..TlsSettings::default() }
}

#[tokio::test]
async fn a_client_trusting_the_ca_is_served_and_one_trusting_another_is_refused() {
    let certs = certs();
    let server = Server::start(&certs.server.settings(ClientAuth::Off)).await;
    let served = get_tls(server.addr, &trusting(&certs.server.ca_cert), "/health").await;
    assert_eq!(served, Ok((200, "ok".to_owned())));
    let refused = get_tls(server.addr, &trusting(&certs.other.ca_cert), "/health").await.unwrap_err();
    assert!(refused.contains("invalid peer certificate"), "{refused}");
    server.stop().await;
}

#[tokio::test]
async fn required_client_certificates_name_the_peer() {
    let certs = certs();
    let server = Server::start(&certs.server.settings(ClientAuth::Required)).await;
    let anonymous = get_tls(server.addr, &trusting(&certs.server.ca_cert), "/whoami").await;
    let anonymous = anonymous.unwrap_err();
    assert!(
        anonymous.contains("CertificateRequired"),
        "a client without a certificate is refused: {anonymous}"
    );
    let stranger = get_tls(
        server.addr,
        &certs.other.settings(ClientAuth::Off).with_ca(&certs.server.ca_cert),
        "/whoami",
    )
    .await;
    let stranger = stranger.unwrap_err();
    assert!(stranger.contains("UnknownCA"), "a certificate of another CA is refused: {stranger}");
    let node_a = get_tls(server.addr, &certs.node_a.settings(ClientAuth::Off), "/whoami").await;
    assert_eq!(node_a, Ok((200, "Some(\"node-a\")".to_owned())));
    server.stop().await;
}

#[tokio::test]
async fn a_websocket_upgrades_over_tls() {
    let certs = certs();
    let server = Server::start(&certs.server.settings(ClientAuth::Off)).await;
    let connector = TlsConnector::from(tls::client_config(&trusting(&certs.server.ca_cert)).unwrap());
    let exchange = async {
        let stream = TcpStream::connect(server.addr).await.unwrap();
        let server_name = ServerName::try_from("localhost").unwrap();
        let stream = tls::connect_tls(stream, &connector, server_name, WAIT).await.unwrap();
        let (mut socket, _) = tokio_tungstenite::client_async("wss://localhost/ws", stream).await.unwrap();
        socket.send(Message::text("over TLS")).await.unwrap();
        socket.next().await.unwrap().unwrap()
    };
    let echoed = tokio::time::timeout(WAIT, exchange).await.expect("the echo arrives");
    assert_eq!(echoed, Message::text("over TLS"));
    server.stop().await;
}

#[tokio::test]
async fn optional_client_certificates_serve_anonymous_clients_without_an_identity() {
    let certs = certs();
    let server = Server::start(&certs.server.settings(ClientAuth::Optional)).await;
    let anonymous = get_tls(server.addr, &trusting(&certs.server.ca_cert), "/whoami").await;
    assert_eq!(anonymous, Ok((200, "None".to_owned())));
    let node_a = get_tls(server.addr, &certs.node_a.settings(ClientAuth::Off), "/whoami").await;
    assert_eq!(node_a, Ok((200, "Some(\"node-a\")".to_owned())));
    server.stop().await;
}

#[tokio::test]
async fn a_plain_text_client_is_told_to_use_tls() {
    let certs = certs();
    let server = Server::start(&certs.server.settings(ClientAuth::Off)).await;
    let exchange = async {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(WAIT, exchange).await.expect("the server answers and closes");
    let (status, body) = parse_response(&response).unwrap();
    assert_eq!((status, body.trim_end()), (400, tls::PLAIN_TEXT_LINE));
    assert_eq!(tls::PLAIN_TEXT_LINE, "this port speaks TLS; connect with https:// or wss://");
    assert_eq!(
        get_tls(server.addr, &trusting(&certs.server.ca_cert), "/health").await,
        Ok((200, "ok".to_owned()))
    );
    server.stop().await;
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name.push(DnType::CommonName, "test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &Issuer::new(ca_params, ca_key)).unwrap();
    let settings = TlsSettings {
        cert: Some(dir.path().join("expired.pem")),
        key: Some(dir.path().join("expired.key")),
        ca: Some(dir.path().join("ca.pem")),
        client_auth: ClientAuth::Off,
    };
    std::fs::write(settings.cert.as_ref().unwrap(), cert.pem()).unwrap();
    std::fs::write(settings.key.as_ref().unwrap(), key.serialize_pem()).unwrap();
    std::fs::write(settings.ca.as_ref().unwrap(), ca_cert.pem()).unwrap();
    let server = Server::start(&settings).await;
    let refused =
        get_tls(server.addr, &trusting(settings.ca.as_ref().unwrap()), "/health").await.unwrap_err();
    assert!(refused.contains("expired"), "{refused}");
    server.stop().await;
}

#[tokio::test]
async fn a_tls_client_names_a_plain_text_server() {
    let certs = certs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let plain_server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; 16];
        let _ = stream.read(&mut hello).await.unwrap();
        stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        let _ = stream.read(&mut hello).await;
    });
    let error = get_tls(addr, &trusting(&certs.server.ca_cert), "/health").await.unwrap_err();
    assert_eq!(error, format!("the server at {addr} does not speak TLS (plain text?)"));
    plain_server.abort();
}

/// Settings with their CA replaced.
trait WithCa {
    fn with_ca(self, ca: &Path) -> Self;
}

impl WithCa for TlsSettings {
    fn with_ca(self, ca: &Path) -> TlsSettings {
        TlsSettings { ca: Some(ca.to_path_buf()), ..self }
    }
}
