//! The TCP transport of a [`Link`]: a reader task decoding frames from a growing buffer (a BATCH's records
//! stay in that buffer, never copied) and a writer task writing whole frames in order.

use bytes::{Bytes, BytesMut};
use protocol::frame::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::link::{INBOUND_CAPACITY, Inbound, LastSeen, Link, OUTGOING_CAPACITY};

/// How much the read buffer grows by at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Connects to a broker's consumer port. Frames above `max_frame_len` are refused by the reader.
pub async fn connect_tcp(addr: impl ToSocketAddrs, max_frame_len: usize) -> Result<Link> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (reader, writer) = stream.into_split();
    let last_seen = LastSeen::new();
    let (inbound_sender, inbound) = mpsc::channel(INBOUND_CAPACITY);
    let (outgoing, queued) = mpsc::channel(OUTGOING_CAPACITY);
    let reader = tokio::spawn(read_frames(reader, max_frame_len, inbound_sender, last_seen.clone()));
    let writer = tokio::spawn(write_frames(writer, queued));
    Ok(Link::new(inbound, outgoing, last_seen, reader, writer))
}

/// Reads and decodes frames until the connection ends or sends bytes that do not decode.
async fn read_frames(
    mut half: OwnedReadHalf,
    max_frame_len: usize,
    inbound: mpsc::Sender<Inbound>,
    last_seen: LastSeen,
) {
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    let ending = loop {
        match Frame::decode_from(&mut buffer, max_frame_len) {
            Ok(Some(frame)) => {
                if inbound.send(Inbound::Frame(frame)).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(None) => {}
            Err(error) => break Inbound::Undecodable(error),
        }
        buffer.reserve(READ_CHUNK);
        match half.read_buf(&mut buffer).await {
            Ok(0) => break Inbound::Ended(Error::Closed),
            Ok(_) => last_seen.touch(),
            Err(error) => break Inbound::Ended(Error::Io(error)),
        }
    };
    let _ = inbound.send(ending).await;
}

/// Writes whole frames in the order they were queued, then shuts the writing half down once every sender is
/// gone. A write error ends the task; the reader then sees the connection close.
async fn write_frames(mut half: OwnedWriteHalf, mut queued: mpsc::Receiver<Bytes>) {
    while let Some(bytes) = queued.recv().await {
        if half.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = half.shutdown().await;
}
