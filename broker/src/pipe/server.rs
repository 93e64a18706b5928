//! The parent side of the pipe: `GET /api/v1/pipe` upgrades to a WebSocket and runs the ordinary delivery
//! session with `Role::Pipe` over it, one frame per binary message. The session checks HELLO (a child must
//! be exactly one level down and present the token if one is configured), streams records verbatim from
//! the segments and takes the child's ACKs, which give the per-child lag. This module owns the WebSocket
//! transport only: message limits, the write buffer cap, and moving frames between the socket and the
//! session's bounded channels.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::Extensions;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use protocol::WireError;
use protocol::frame::{Frame, Role};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::node::Node;
use crate::session::{Outbound, Peer, SessionIo, run_session};

/// Frames decoded ahead of the session.
const INBOUND_CAPACITY: usize = 8;

/// Items queued for the writer; with the in-flight window this bounds what one child holds.
const OUTBOUND_CAPACITY: usize = 16;

/// Most queued items written before one flush.
const MAX_ITEMS_PER_FLUSH: usize = 16;

/// Bytes the WebSocket gathers before writing to the socket.
const WRITE_BUFFER: usize = 128 * 1024;

/// How long the writer may take to drain after the session ended.
const WRITER_DRAIN_GRACE: Duration = Duration::from_secs(2);

/// `GET /api/v1/pipe`: upgrades to the pipe. A request that is not a WebSocket upgrade gets a JSON error.
pub async fn endpoint(
    State(node): State<Arc<Node>>,
    extensions: Extensions,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return ApiError::new(
                rejection.status(),
                "not_websocket",
                format!(
                    "GET /api/v1/pipe is the WebSocket endpoint of child brokers: {}",
                    rejection.body_text()
                ),
            )
            .into_response();
        }
    };
    let peer = extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0);
    let max_frame_len = usize::try_from(node.config.max_frame_bytes).unwrap_or(usize::MAX);
    let max_message = client::ws::max_message_len(max_frame_len);
    upgrade
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .write_buffer_size(WRITE_BUFFER)
        .read_buffer_size(client::ws::READ_BUFFER)
        // A child that stops reading fills this, then the session's bounded queue, then the window: the
        // session's slow-consumer timeout ends it. Never more than one message beyond the buffer.
        .max_write_buffer_size(WRITE_BUFFER + 2 * max_message)
        .on_failed_upgrade(|error| tracing::debug!(%error, "a pipe upgrade failed"))
        .on_upgrade(move |socket| serve_pipe(socket, peer, node, max_frame_len))
}

/// Runs one child's session over its WebSocket until the session ends.
async fn serve_pipe(socket: WebSocket, peer: Option<SocketAddr>, node: Arc<Node>, max_frame_len: usize) {
    let (sink, stream) = socket.split();
    let (inbound_sender, inbound) = mpsc::channel(INBOUND_CAPACITY);
    let (outbound, outbound_receiver) = mpsc::channel(OUTBOUND_CAPACITY);
    let reader = tokio::spawn(read_messages(stream, max_frame_len, inbound_sender));
    let mut writer = tokio::spawn(write_items(sink, outbound_receiver));
    run_session(node, SessionIo { inbound, outbound }, Peer { addr: peer, role: Role::Pipe }).await;
    reader.abort();
    // The session dropped its sender, so the writer ends once it has written what is queued.
    if tokio::time::timeout(WRITER_DRAIN_GRACE, &mut writer).await.is_err() {
        writer.abort();
    }
}

/// Decodes each binary message into its one frame until the child closes, the session goes away, or a
/// message fails to decode (passed on for the session to report; reading then stops).
async fn read_messages(
    mut stream: SplitStream<WebSocket>,
    max_frame_len: usize,
    inbound: mpsc::Sender<Result<Frame, WireError>>,
) {
    while let Some(message) = stream.next().await {
        let decoded = match message {
            Ok(Message::Binary(bytes)) => Frame::decode_exact(bytes, max_frame_len),
            Ok(Message::Text(_)) => Err(WireError::Malformed {
                frame: "WebSocket message",
                reason: "a text message; the pipe carries binary messages only".to_string(),
            }),
            // The WebSocket layer answers pings itself.
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Close(_)) => return,
            Err(error) => {
                tracing::debug!(%error, "reading from a pipe child failed");
                return;
            }
        };
        let failed = decoded.is_err();
        if inbound.send(decoded).await.is_err() || failed {
            return;
        }
    }
}

/// Writes queued items, several per flush, until the session drops its sender or the socket fails.
async fn write_items(mut sink: SplitSink<WebSocket, Message>, mut outbound: mpsc::Receiver<Outbound>) {
    let mut items = Vec::with_capacity(MAX_ITEMS_PER_FLUSH);
    while outbound.recv_many(&mut items, MAX_ITEMS_PER_FLUSH).await > 0 {
        for item in items.drain(..) {
            let Some(message) = message_of(item) else {
                continue;
            };
            if let Err(error) = sink.feed(message).await {
                tracing::debug!(%error, "writing to a pipe child failed");
                return;
            }
        }
        if let Err(error) = sink.flush().await {
            tracing::debug!(%error, "writing to a pipe child failed");
            return;
        }
    }
    let _ = sink.send(Message::Close(None)).await;
}

/// One queued item as one binary message. A BATCH is its header and the records from the segment, copied
/// once into the message (a WebSocket message is one buffer).
fn message_of(item: Outbound) -> Option<Message> {
    match item {
        Outbound::Frame(frame) => match frame.to_bytes() {
            Ok(bytes) => Some(Message::Binary(bytes)),
            Err(error) => {
                tracing::error!(%error, frame = frame.name(), "encoding a frame failed; dropping it");
                None
            }
        },
        Outbound::Batch { header, records } => {
            let mut message = BytesMut::with_capacity(header.len() + records.len());
            message.extend_from_slice(&header);
            message.extend_from_slice(&records);
            Some(Message::Binary(Bytes::from(message)))
        }
    }
}
