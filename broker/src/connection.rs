//! The TCP transport of a consumer (or producer) session: a reader task that decodes frames with the
//! protocol codec (checking the length before buffering a payload), a writer task that sends what the
//! session queues (BATCH frames as a header plus the records from the log's memory map in one vectored
//! write, several queued items per system call), and the session in between. This module owns sockets and
//! buffers; what to send, and when, is the session's business.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use protocol::WireError;
use protocol::frame::{Frame, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use crate::node::Node;
use crate::session::{Outbound, Peer, SessionIo, run_session};

/// Frames decoded ahead of the session. Small: a peer that floods us waits in its own socket buffer.
const INBOUND_CAPACITY: usize = 8;

/// Items queued for the writer. With the in-flight window this bounds what one connection holds.
const OUTBOUND_CAPACITY: usize = 16;

/// Most queued items gathered into one vectored write.
const MAX_ITEMS_PER_WRITE: usize = 16;

/// How much the read buffer grows by at a time.
const READ_CHUNK: usize = 16 * 1024;

/// How long the writer may take to drain after the session ended (its last frame is usually an ERROR).
const WRITER_DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Serves one consumer connection until its session ends.
pub async fn serve_connection(socket: TcpStream, peer: SocketAddr, node: Arc<Node>) {
    if let Err(error) = socket.set_nodelay(true) {
        tracing::debug!(%peer, %error, "could not disable Nagle's algorithm");
    }
    let max_frame_len = usize::try_from(node.config.max_frame_bytes).unwrap_or(usize::MAX);
    let (read_half, write_half) = socket.into_split();
    let (inbound_sender, inbound) = mpsc::channel(INBOUND_CAPACITY);
    let (outbound, outbound_receiver) = mpsc::channel(OUTBOUND_CAPACITY);
    let reader = tokio::spawn(read_frames(read_half, max_frame_len, inbound_sender));
    let mut writer = tokio::spawn(write_items(write_half, outbound_receiver));
    run_session(node, SessionIo { inbound, outbound }, Peer { addr: Some(peer), role: Role::Consumer }).await;
    reader.abort();
    // The session dropped its sender, so the writer ends once it has written what is queued.
    if tokio::time::timeout(WRITER_DRAIN_GRACE, &mut writer).await.is_err() {
        writer.abort();
    }
}

/// Reads and decodes frames until the peer closes, the session goes away, or a decode error (which is
/// passed on for the session to report, and ends reading: after a bad frame the stream is out of step).
async fn read_frames(
    mut read_half: OwnedReadHalf,
    max_frame_len: usize,
    inbound: mpsc::Sender<Result<Frame, WireError>>,
) {
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    loop {
        loop {
            match Frame::decode_from(&mut buffer, max_frame_len) {
                Ok(Some(frame)) => {
                    if inbound.send(Ok(frame)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let _ = inbound.send(Err(error)).await;
                    return;
                }
            }
        }
        buffer.reserve(READ_CHUNK);
        match read_half.read_buf(&mut buffer).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "reading from a consumer failed");
                return;
            }
        }
    }
}

/// Writes queued items until the session drops its sender or the socket fails.
async fn write_items(mut write_half: OwnedWriteHalf, mut outbound: mpsc::Receiver<Outbound>) {
    let mut items = Vec::with_capacity(MAX_ITEMS_PER_WRITE);
    let mut frames = Vec::new();
    while outbound.recv_many(&mut items, MAX_ITEMS_PER_WRITE).await > 0 {
        // Control frames are encoded into one buffer; batches contribute their header and records.
        frames.clear();
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(items.len());
        for item in &items {
            if let Outbound::Frame(frame) = item {
                let start = frames.len();
                if let Err(error) = frame.encode(&mut frames) {
                    tracing::error!(%error, frame = frame.name(), "encoding a frame failed; dropping it");
                }
                spans.push((start, frames.len()));
            } else {
                spans.push((0, 0));
            }
        }
        let mut slices = Vec::with_capacity(items.len() * 2);
        for (item, &(start, end)) in items.iter().zip(&spans) {
            match item {
                Outbound::Frame(_) => slices.push(IoSlice::new(&frames[start..end])),
                Outbound::Batch { header, records } => {
                    slices.push(IoSlice::new(header));
                    slices.push(IoSlice::new(records));
                }
            }
        }
        let result = write_all_vectored(&mut write_half, &mut slices).await;
        drop(slices);
        items.clear();
        if let Err(error) = result {
            tracing::debug!(%error, "writing to a consumer failed");
            return;
        }
    }
    let _ = write_half.shutdown().await;
}

/// Writes every slice, looping over partial writes.
async fn write_all_vectored(
    write_half: &mut OwnedWriteHalf,
    mut slices: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    // Empty slices would make a zero-length write look like a closed socket.
    while slices.first().is_some_and(|slice| slice.is_empty()) {
        slices = &mut slices[1..];
    }
    while !slices.is_empty() {
        let written = write_half.write_vectored(slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}
