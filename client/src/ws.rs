//! The WebSocket transport of a [`Link`], as the pipe uses it: one protocol frame per binary message, in
//! both directions. A message that is not exactly one whole frame, or a text message, is undecodable.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use protocol::WireError;
use protocol::frame::{FRAME_HEADER_LEN, Frame};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::{Error, Result};
use crate::link::{INBOUND_CAPACITY, Inbound, LastSeen, Link, OUTGOING_CAPACITY};

/// Room a WebSocket message may take beyond the largest frame, so that a frame slightly over the limit
/// reaches the frame decoder and gets a precise FRAME_TOO_LARGE instead of a bare WebSocket failure.
pub const MESSAGE_SLACK: usize = 64 * 1024;

/// Bytes a WebSocket reads from its socket at a time, on both ends of the pipe. The library zeroes this much
/// before every read, so it is kept small: a one-record frame then costs a 32 KiB fill rather than 128 KiB,
/// and a large batch costs a few more reads, each bringing in as much.
pub const READ_BUFFER: usize = 32 * 1024;

/// A follower only sends small frames (ACK, PING, PONG, SEEK); this caps what waits in its write buffer.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

/// How long the writer may take to send the closing message.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The WebSocket.
type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The largest WebSocket message that can carry a frame of `max_frame_len` payload bytes.
pub fn max_message_len(max_frame_len: usize) -> usize {
    max_frame_len.saturating_add(FRAME_HEADER_LEN + MESSAGE_SLACK)
}

/// Opens a WebSocket to `url` (`ws://host:port/api/v1/pipe`). Frames above `max_frame_len` are refused.
pub async fn connect_ws(url: &str, max_frame_len: usize) -> Result<Link> {
    let max_message = max_message_len(max_frame_len);
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .read_buffer_size(READ_BUFFER);
    let (socket, _response) =
        tokio_tungstenite::connect_async_with_config(url, Some(config), true).await.map_err(|source| {
            Error::WebSocket { context: format!("cannot open {url}"), source: Box::new(source) }
        })?;
    let (sink, stream) = socket.split();
    let last_seen = LastSeen::new();
    let (inbound_sender, inbound) = mpsc::channel(INBOUND_CAPACITY);
    let (outgoing, queued) = mpsc::channel(OUTGOING_CAPACITY);
    let reader = tokio::spawn(read_messages(stream, max_frame_len, inbound_sender, last_seen.clone()));
    let writer = tokio::spawn(write_messages(sink, queued));
    Ok(Link::new(inbound, outgoing, last_seen, reader, writer))
}

/// Reads messages, decoding each into its one frame, until the connection ends or a message does not
/// decode. Every message counts as a sign of life.
async fn read_messages(
    mut stream: SplitStream<Socket>,
    max_frame_len: usize,
    inbound: mpsc::Sender<Inbound>,
    last_seen: LastSeen,
) {
    let ending = loop {
        let Some(message) = stream.next().await else {
            break Inbound::Ended(Error::Closed);
        };
        last_seen.touch();
        let item = match message {
            Ok(Message::Binary(bytes)) => match Frame::decode_exact(bytes, max_frame_len) {
                Ok(frame) => Inbound::Frame(frame),
                Err(error) => break Inbound::Undecodable(error),
            },
            Ok(Message::Text(_)) => {
                break Inbound::Undecodable(WireError::Malformed {
                    frame: "WebSocket message",
                    reason: "a text message; the pipe carries binary messages only".to_string(),
                });
            }
            Ok(Message::Close(_)) => break Inbound::Ended(Error::Closed),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            Err(source) => {
                break Inbound::Ended(Error::WebSocket {
                    context: "reading failed".into(),
                    source: Box::new(source),
                });
            }
        };
        if inbound.send(item).await.is_err() {
            return;
        }
    };
    let _ = inbound.send(ending).await;
}

/// Sends each queued frame as one binary message, then a close message once every sender is gone.
async fn write_messages(mut sink: SplitSink<Socket, Message>, mut queued: mpsc::Receiver<Bytes>) {
    while let Some(bytes) = queued.recv().await {
        if sink.send(Message::Binary(bytes)).await.is_err() {
            return;
        }
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
}
