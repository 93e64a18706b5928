//! The handler queue: stored batches wait here for the handler, in order, while the sync loop goes on
//! reading from the broker (and so keeps answering its heartbeats). When the handler is done with a batch,
//! the batch's ack offset is posted on a board the sync loop collects from, so a batch is acknowledged only
//! after its records went through the handler.
//!
//! The queue is bounded; the broker's in-flight window bounds it too, since a batch that is not acked
//! holds a slot of that window. Acks are cumulative, so the board keeps only the latest per topic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use super::Dispatcher;
use crate::db::Db;

/// A stored batch waiting for the handler.
#[derive(Debug, Clone)]
pub struct HandlerItem {
    /// The broker connection the batch came on; acks of an older connection are dropped. Zero for records
    /// replayed from the local copy at start, which are never acked.
    pub epoch: u64,
    /// Topic of the records.
    pub topic: Arc<str>,
    /// The records, laid end to end.
    pub records: Bytes,
    /// Records below this offset are skipped (already handled, or duplicates).
    pub from_offset: u64,
    /// The offset to acknowledge once the batch is handled.
    pub ack_to: u64,
    /// The handled position to store once the batch is handled; `None` for a refresh's batches, which
    /// belong to a copy that is not live yet.
    pub handled_to: Option<u64>,
}

/// The sending side of the queue and the board of finished acks.
#[derive(Debug, Clone)]
pub struct HandlerQueue {
    /// Batches for the handler task.
    sender: mpsc::Sender<HandlerItem>,
    /// Finished acks and the count of batches not yet handled.
    board: Arc<AckBoard>,
}

/// Room for one batch in the queue, from [`HandlerQueue::reserve`].
#[derive(Debug)]
pub struct QueueSlot<'q> {
    /// The reserved place.
    permit: mpsc::Permit<'q, HandlerItem>,
    /// The board counting outstanding batches.
    board: &'q AckBoard,
}

impl QueueSlot<'_> {
    /// Queues the batch in the reserved place.
    pub fn push(self, item: HandlerItem) {
        self.board.outstanding.fetch_add(1, Ordering::SeqCst);
        self.permit.send(item);
    }
}

/// What the handler task posts back.
#[derive(Debug, Default)]
struct AckBoard {
    /// Latest finished `(epoch, ack_to)` per topic.
    done: Mutex<HashMap<Arc<str>, (u64, u64)>>,
    /// Wakes the sync loop when `done` changes.
    changed: Notify,
    /// Batches pushed and not yet handled.
    outstanding: AtomicUsize,
}

impl HandlerQueue {
    /// Starts the handler task with room for `capacity` batches.
    pub fn start(dispatcher: Dispatcher, db: Arc<Db>, capacity: usize) -> (HandlerQueue, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let board = Arc::new(AckBoard::default());
        let task = tokio::spawn(run(dispatcher, db, receiver, board.clone()));
        (HandlerQueue { sender, board }, task)
    }

    /// Queues a batch; waits while the queue is full. Fails only if the handler task has stopped.
    pub async fn push(&self, item: HandlerItem) -> Result<(), crate::error::Error> {
        self.board.outstanding.fetch_add(1, Ordering::SeqCst);
        if self.sender.send(item).await.is_err() {
            self.board.outstanding.fetch_sub(1, Ordering::SeqCst);
            return Err(crate::error::Error::Unexpected {
                topic: String::new(),
                what: "a batch after the handler task stopped".to_string(),
            });
        }
        Ok(())
    }

    /// Waits for room in the queue without queueing anything yet; cancel-safe, so it can wait beside other
    /// work. Fails only if the handler task has stopped.
    pub async fn reserve(&self) -> Result<QueueSlot<'_>, crate::error::Error> {
        match self.sender.reserve().await {
            Ok(permit) => Ok(QueueSlot { permit, board: &self.board }),
            Err(_) => Err(crate::error::Error::Unexpected {
                topic: String::new(),
                what: "a batch after the handler task stopped".to_string(),
            }),
        }
    }

    /// Takes the finished acks of connection `epoch` (those of other connections are discarded).
    pub fn take_done(&self, epoch: u64) -> Vec<(Arc<str>, u64)> {
        let mut done = self.board.done.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        done.drain()
            .filter(|(_, (item_epoch, _))| *item_epoch == epoch)
            .map(|(topic, (_, ack))| (topic, ack))
            .collect()
    }

    /// Waits until the handler task posts something. A post made while nobody waited is kept, so a caller
    /// that looks at the board and then waits misses nothing.
    pub async fn changed(&self) {
        self.board.changed.notified().await;
    }

    /// Batches queued and not yet handled.
    pub fn outstanding(&self) -> usize {
        self.board.outstanding.load(Ordering::SeqCst)
    }
}

/// The handler task: batches one after the other, then the handled position, then the ack on the board.
async fn run(
    dispatcher: Dispatcher,
    db: Arc<Db>,
    mut receiver: mpsc::Receiver<HandlerItem>,
    board: Arc<AckBoard>,
) {
    while let Some(item) = receiver.recv().await {
        if let Err(error) = dispatcher.dispatch_batch(&item.topic, &item.records, item.from_offset).await {
            // Only a failure to store a dead letter gets here; the records stay in the copy and the
            // handled position does not move, so they are handed over again at the next start.
            tracing::error!(topic = %item.topic, %error, "handler batch failed");
        } else if let Some(handled_to) = item.handled_to {
            let db = db.clone();
            let topic = item.topic.clone();
            match tokio::task::spawn_blocking(move || db.set_handled(&topic, handled_to)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(topic = %item.topic, %error, "cannot store the handled position")
                }
                Err(error) => {
                    tracing::error!(topic = %item.topic, %error, "cannot store the handled position")
                }
            }
        }
        if item.epoch != 0 {
            let mut done = board.done.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            // Items finish in the order they came, so the latest is the cumulative ack.
            done.insert(item.topic.clone(), (item.epoch, item.ack_to));
        }
        board.outstanding.fetch_sub(1, Ordering::SeqCst);
        board.changed.notify_one();
    }
}
