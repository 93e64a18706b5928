//! Handshakes on both ends, with the diagnosis of the usual mistake, plain text on one side and TLS on the
//! other: a listener answers a plain-text client with one line it can read ([`accept_tls`]), and a client
//! names a plain-text server as such ([`connect_tls`], [`diagnose_connect_error`]). Knows nothing of what
//! flows over the connection once it is up.

use std::io;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use super::TlsError;

/// A sensible bound on a handshake, for callers that have no timeout of their own.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a plain-text client on a TLS port is told, in the body of the HTTP answer or as the raw line.
pub const PLAIN_TEXT_LINE: &str = "this port speaks TLS; connect with https:// or wss://";

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// How long a plain-text client's leftover request is read (and dropped) after it is answered, so that
/// closing with unread bytes does not reset the connection before the client has read the answer.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// The most leftover bytes read from a plain-text client.
const DRAIN_LIMIT: usize = 64 << 10;

/// How a plain-text client on a TLS port is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainTextReply {
    /// An HTTP/1.1 400 response whose body is [`PLAIN_TEXT_LINE`]: for HTTP and WebSocket ports.
    Http,
    /// [`PLAIN_TEXT_LINE`] and a newline, raw: for ports of a binary protocol.
    Line,
}

impl PlainTextReply {
    /// The bytes written.
    fn bytes(self) -> Vec<u8> {
        match self {
            PlainTextReply::Http => format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{PLAIN_TEXT_LINE}\n",
                PLAIN_TEXT_LINE.len() + 1
            )
            .into_bytes(),
            PlainTextReply::Line => format!("{PLAIN_TEXT_LINE}\n").into_bytes(),
        }
    }
}

/// Completes the server side of a handshake on an accepted socket within `timeout`. A client whose first
/// byte is not a TLS handshake record is answered per `reply` and refused with
/// [`TlsError::PlainTextClient`].
pub async fn accept_tls(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
    reply: PlainTextReply,
    timeout: Duration,
) -> Result<server::TlsStream<TcpStream>, TlsError> {
    let peer = stream.peer_addr().map_or_else(|_| "a client".to_owned(), |addr| addr.to_string());
    let timed_out = || TlsError::HandshakeTimeout { peer: peer.clone(), timeout };
    let handshake = async {
        let mut first = [0u8; 1];
        let peeked = stream.peek(&mut first).await;
        match peeked {
            Ok(0) => {
                let source = io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the handshake");
                return Err(TlsError::Handshake { peer: peer.clone(), source });
            }
            Ok(_) if first[0] != TLS_HANDSHAKE_RECORD => return Err(answer_plain_text(stream, reply).await),
            Ok(_) => {}
            Err(source) => return Err(TlsError::Handshake { peer: peer.clone(), source }),
        }
        acceptor.accept(stream).await.map_err(|source| TlsError::Handshake { peer: peer.clone(), source })
    };
    tokio::time::timeout(timeout, handshake).await.map_err(|_elapsed| timed_out())?
}

/// Completes the client side of a handshake on a connected socket within `timeout`, verifying the
/// server's certificate for `server_name`; a server answering in plain text is named as such.
pub async fn connect_tls(
    stream: TcpStream,
    connector: &TlsConnector,
    server_name: ServerName<'static>,
    timeout: Duration,
) -> Result<client::TlsStream<TcpStream>, TlsError> {
    let addr = stream.peer_addr().map_or_else(|_| server_name.to_str().into_owned(), |addr| addr.to_string());
    match tokio::time::timeout(timeout, connector.connect(server_name, stream)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => Err(diagnose_connect_error(&addr, error)),
        Err(_elapsed) => Err(TlsError::HandshakeTimeout { peer: addr, timeout }),
    }
}

/// Turns the error a TLS client got from the server at `addr` into a [`TlsError`]: what rustls calls a
/// corrupt message (a first byte that is no TLS record type, as `H` of `HTTP/1.1` is) becomes
/// [`TlsError::ServerNotTls`], "the server at ADDR does not speak TLS (plain text?)".
pub fn diagnose_connect_error(addr: &str, error: io::Error) -> TlsError {
    let plain_text = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|inner| matches!(inner, rustls::Error::InvalidMessage(_)));
    if plain_text {
        TlsError::ServerNotTls { addr: addr.to_owned(), source: error }
    } else {
        TlsError::Handshake { peer: addr.to_owned(), source: error }
    }
}

/// Answers a plain-text client, drops what it sent, and closes; returns the error the caller reports.
async fn answer_plain_text(mut stream: TcpStream, reply: PlainTextReply) -> TlsError {
    let peer = match stream.peer_addr() {
        Ok(peer) => peer,
        Err(source) => return TlsError::Handshake { peer: "a client".to_owned(), source },
    };
    if let Err(source) = stream.write_all(&reply.bytes()).await {
        return TlsError::Handshake { peer: peer.to_string(), source };
    }
    // Errors below only mean the client is already gone; the answer was written either way.
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buffer = vec![0u8; 4096];
        let mut drained = 0;
        while drained < DRAIN_LIMIT {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => drained += read,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
    TlsError::PlainTextClient { peer }
}
