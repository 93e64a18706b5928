//! The client's one error type. Every variant keeps its source, so a caller can tell a refused HELLO from a
//! dropped connection from a broker that went silent.

use std::sync::Arc;
use std::time::Duration;

use protocol::WireError;
use protocol::frame::ErrorFrame;

/// Why a consumer or producer connection failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting, reading or writing failed.
    #[error("connection I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The broker sent bytes that are not a valid frame.
    #[error("the broker sent an invalid frame: {0}")]
    Wire(#[from] WireError),
    /// The broker answered HELLO with an ERROR frame.
    #[error("the broker refused the connection: {} ({:?})", .0.message, .0.code)]
    Refused(ErrorFrame),
    /// The broker ended the connection with a fatal ERROR frame after the handshake (a producer's
    /// malformed PUBLISH, say).
    #[error("the broker ended the connection: {} ({:?})", .0.message, .0.code)]
    Rejected(ErrorFrame),
    /// A producer's connection ended (for the reason given) before this publish was acknowledged, or
    /// before it could be sent; a publish sent and not acknowledged may or may not be stored.
    #[error("the producer's connection is lost: {0}")]
    Lost(#[source] Arc<Error>),
    /// The broker sent a frame that is not allowed at this point.
    #[error("protocol violation by the broker: {0}")]
    Protocol(String),
    /// The broker closed the connection.
    #[error("the broker closed the connection")]
    Closed,
    /// Nothing arrived from the broker for three heartbeat intervals.
    #[error("the broker has been silent for {0:?}")]
    Silent(Duration),
    /// The WebSocket failed (opening it, or reading from it).
    #[error("WebSocket: {context}: {source}")]
    WebSocket {
        /// What was being done.
        context: String,
        /// What failed.
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    /// Connecting took too long.
    #[error("connecting took longer than {0:?}")]
    ConnectTimeout(Duration),
    /// The peer did not take a frame within the time allowed (it stopped reading).
    #[error("the peer did not take a frame within {0:?}")]
    SendTimeout(Duration),
    /// Connecting or the HELLO/WELCOME exchange took too long.
    #[error("no WELCOME from the broker within {0:?}")]
    HandshakeTimeout(Duration),
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
