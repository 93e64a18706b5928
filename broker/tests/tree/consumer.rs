//! A TCP consumer (the `client` crate) running in the background on a broker, keeping its own copy of one
//! topic the way an application would: dropping what it already holds by offset, rebuilding at a full
//! refresh, acknowledging every batch, and connecting again from its own end when a connection is lost.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{Consumer, ConsumerConfig, Event, topic_start};
use protocol::NO_EPOCH;
use protocol::frame::{StartPosition, TopicStart};
use protocol::{RecordIter, TopicUid};

use super::wait_until;

/// What a TCP consumer holds: its live copy of one topic, rebuilt at each full refresh.
#[derive(Debug, Clone, Default)]
pub struct ConsumerCopy {
    /// The uid of the live copy.
    pub uid: TopicUid,
    /// The next offset expected in the live copy.
    pub next: u64,
    /// Records in the live copy.
    pub n_records: u64,
    /// Records dropped because the copy already held their offset.
    pub duplicates: u64,
    /// Offsets skipped.
    pub gaps: u64,
    /// Full refreshes completed.
    pub refreshes: u64,
    /// Connections made again after one was lost.
    pub reconnects: u64,
}

/// A consumer running in the background on a broker's TCP port, reading one topic from the earliest
/// offset, acknowledging every batch, and keeping a [`ConsumerCopy`].
pub struct BackgroundConsumer {
    /// The copy, as it stands.
    pub copy: Arc<Mutex<ConsumerCopy>>,
    /// The consuming task.
    task: tokio::task::JoinHandle<()>,
}

impl BackgroundConsumer {
    /// Connects and starts consuming; after a lost connection it connects again (every 100 ms until it
    /// can), resuming from its own copy's end with its uid, as an application keeping a copy would.
    pub async fn start(tcp: SocketAddr, group: &str, topic: &str) -> BackgroundConsumer {
        let group = group.to_string();
        let config = move |start: TopicStart| {
            let mut config = ConsumerConfig::new(format!("{group}-1"), group.clone(), vec![start]);
            config.heartbeat = Duration::from_millis(500);
            config
        };
        let (mut consumer, welcome) =
            Consumer::connect(tcp, config(topic_start(topic, StartPosition::Earliest))).await.unwrap();
        let live = ConsumerCopy {
            uid: welcome.topics.first().map_or(TopicUid::UNKNOWN, |position| position.uid),
            next: welcome.topics.first().map_or(0, |position| position.start_at),
            ..ConsumerCopy::default()
        };
        let copy = Arc::new(Mutex::new(live));
        let shared = Arc::clone(&copy);
        let topic = topic.to_string();
        let task = tokio::spawn(async move {
            loop {
                consume(&mut consumer, &topic, &shared).await;
                consumer = loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let (uid, next) = {
                        let live = shared.lock().unwrap();
                        (live.uid, live.next)
                    };
                    let start = TopicStart {
                        topic: topic.clone(),
                        uid,
                        epoch: NO_EPOCH,
                        start: StartPosition::Offset(next),
                    };
                    if let Ok((consumer, _)) = Consumer::connect(tcp, config(start)).await {
                        shared.lock().unwrap().reconnects += 1;
                        break consumer;
                    }
                };
            }
        });
        BackgroundConsumer { copy, task }
    }

    /// The copy now.
    pub fn copy(&self) -> ConsumerCopy {
        self.copy.lock().unwrap().clone()
    }

    /// Waits until the live copy ends at `end` with `uid`.
    pub async fn wait_for(&self, uid: &str, end: u64) -> ConsumerCopy {
        wait_until(&format!("the consumer holds {uid} up to {end}"), || async {
            let copy = self.copy();
            copy.uid.to_string() == uid && copy.next == end
        })
        .await;
        self.copy()
    }
}

/// Consumes until the connection ends: records kept by offset, a refresh built aside and swapped in at
/// READY, every batch acknowledged.
async fn consume(consumer: &mut Consumer, topic: &str, shared: &Mutex<ConsumerCopy>) {
    let mut pending: Option<ConsumerCopy> = None;
    while let Ok(event) = consumer.next_event().await {
        match event {
            Event::Batch(batch) => {
                {
                    let mut live = shared.lock().unwrap();
                    let target = match pending.as_mut() {
                        Some(pending) => pending,
                        None => &mut *live,
                    };
                    for record in RecordIter::new(&batch.records) {
                        let offset = record.unwrap().offset();
                        if offset < target.next {
                            target.duplicates += 1;
                            continue;
                        }
                        target.gaps += offset - target.next;
                        target.next = offset + 1;
                        target.n_records += 1;
                    }
                }
                if consumer.ack(topic, batch.last_offset + 1).await.is_err() {
                    return;
                }
            }
            Event::Reset(reset) => {
                pending =
                    Some(ConsumerCopy { uid: reset.uid, next: reset.log_start, ..ConsumerCopy::default() });
            }
            Event::Ready(_) => {
                if let Some(mut new) = pending.take() {
                    let mut live = shared.lock().unwrap();
                    new.refreshes = live.refreshes + 1;
                    new.reconnects = live.reconnects;
                    *live = new;
                }
            }
            Event::Topic(announce) => {
                let mut live = shared.lock().unwrap();
                live.uid = announce.uid;
            }
            Event::Position(_) | Event::Error(_) => {}
        }
    }
}

impl Drop for BackgroundConsumer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
