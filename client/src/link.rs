//! One connection to a broker, whatever carries it: frames arrive decoded on a bounded queue filled by a
//! reader task, and leave whole through a bounded queue drained by a writer task. TCP (`tcp.rs`) and the
//! pipe's WebSocket (`ws.rs`) only differ in how those two tasks move bytes; the consumer and the follower
//! work on a [`Link`] and never see the transport.
//!
//! Every frame is encoded whole before it is queued, so dropping a send future never leaves half a frame on
//! the wire, and every queue is bounded: a peer that stops reading fills the write queue and a send then
//! waits (the caller bounds that wait), a peer that sends faster than we handle fills the read queue and TCP
//! pushes back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::WireError;
use protocol::frame::Frame;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// Frames decoded ahead of the application. Small: a peer that sends faster than we store is paced by TCP
/// and by its in-flight window.
pub(crate) const INBOUND_CAPACITY: usize = 16;

/// Encoded frames waiting for the writer task.
pub(crate) const OUTGOING_CAPACITY: usize = 64;

/// What the reader task passes on.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A decoded frame.
    Frame(Frame),
    /// Bytes that did not decode; reading stopped.
    Undecodable(WireError),
    /// The connection ended or failed; reading stopped.
    Ended(Error),
}

/// When the peer was last heard from: every byte or message read counts, so a peer whose frames wait in
/// our queue is alive even while we are busy.
#[derive(Debug, Clone)]
pub(crate) struct LastSeen {
    /// The moment the link was made.
    origin: Instant,
    /// Milliseconds after `origin` of the last read.
    at_ms: Arc<AtomicU64>,
}

impl LastSeen {
    /// Now, as the first sign of life.
    pub(crate) fn new() -> LastSeen {
        LastSeen { origin: Instant::now(), at_ms: Arc::new(AtomicU64::new(0)) }
    }

    /// Something was read just now.
    pub(crate) fn touch(&self) {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.at_ms.store(now, Ordering::Release);
    }

    /// How long ago the peer was last heard from.
    pub(crate) fn silent_for(&self) -> Duration {
        let at = Duration::from_millis(self.at_ms.load(Ordering::Acquire));
        self.origin.elapsed().saturating_sub(at)
    }
}

/// A connection to a broker.
#[derive(Debug)]
pub struct Link {
    /// Decoded frames from the reader task.
    inbound: mpsc::Receiver<Inbound>,
    /// Whole encoded frames for the writer task.
    outgoing: mpsc::Sender<Bytes>,
    /// When the reader last read anything.
    last_seen: LastSeen,
    /// The reader task, stopped when the link is dropped.
    reader: JoinHandle<()>,
    /// The writer task; it writes what is queued, then closes its half once every sender is gone.
    writer: Option<JoinHandle<()>>,
}

impl Link {
    /// A link over the two tasks a transport started.
    pub(crate) fn new(
        inbound: mpsc::Receiver<Inbound>,
        outgoing: mpsc::Sender<Bytes>,
        last_seen: LastSeen,
        reader: JoinHandle<()>,
        writer: JoinHandle<()>,
    ) -> Link {
        Link { inbound, outgoing, last_seen, reader, writer: Some(writer) }
    }

    /// The next frame, waiting for it. Fails once the connection ended or sent bytes that do not decode.
    pub(crate) async fn recv(&mut self) -> Result<Frame> {
        match self.inbound.recv().await {
            Some(item) => unpack(item),
            None => Err(Error::Closed),
        }
    }

    /// The next frame if one is already decoded, without waiting.
    pub(crate) fn try_recv(&mut self) -> Result<Option<Frame>> {
        match self.inbound.try_recv() {
            Ok(item) => unpack(item).map(Some),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(Error::Closed),
        }
    }

    /// How long the peer has been silent.
    pub(crate) fn silent_for(&self) -> Duration {
        self.last_seen.silent_for()
    }

    /// The silence limit, the one rule for it: the peer counts as gone once nothing was read for `limit`,
    /// unless frames already received wait to be taken (then only this side is slow). Answers how long it
    /// was silent when it is gone.
    pub(crate) fn gone_silent(&self, limit: Duration) -> Option<Duration> {
        let silent = self.last_seen.silent_for();
        (silent >= limit && self.inbound.is_empty()).then_some(silent)
    }

    /// Queues a frame, encoded whole. Cancel-safe: the frame is queued whole or not at all.
    pub(crate) async fn send(&self, frame: &Frame) -> Result<()> {
        let bytes = frame.to_bytes()?;
        self.outgoing.send(bytes).await.map_err(|_| Error::Closed)
    }

    /// A second handle on the write queue, for a task that sends on its own (PINGs).
    pub(crate) fn sender(&self) -> mpsc::Sender<Bytes> {
        self.outgoing.clone()
    }

    /// Closes politely: frames already queued are written, then our side of the connection is closed. Waits
    /// at most `grace` for the writer.
    pub(crate) async fn close(mut self, grace: Duration) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.outgoing, closed));
        if let Some(writer) = self.writer.take() {
            let _ = tokio::time::timeout(grace, writer).await;
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // The writer is left to write what is queued (an ACK just sent, say) and then close its half, which
        // it does once every sender is gone.
        self.reader.abort();
    }
}

/// A queued item as the caller sees it.
fn unpack(item: Inbound) -> Result<Frame> {
    match item {
        Inbound::Frame(frame) => Ok(frame),
        Inbound::Undecodable(error) => Err(Error::Wire(error)),
        Inbound::Ended(error) => Err(error),
    }
}
