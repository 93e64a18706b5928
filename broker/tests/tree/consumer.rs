//! A TCP consumer (the `client` crate) running in the background on a broker, keeping its own copy of one
//! topic the way an application would: dropping what it already holds by offset, rebuilding at a full
//! refresh, and acknowledging every batch.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{Consumer, ConsumerConfig, Event, topic_start};
use protocol::frame::StartPosition;
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
    /// Connects and starts consuming.
    pub async fn start(tcp: SocketAddr, group: &str, topic: &str) -> BackgroundConsumer {
        let mut config = ConsumerConfig::new(
            format!("{group}-1"),
            group,
            vec![topic_start(topic, StartPosition::Earliest)],
        );
        config.heartbeat = Duration::from_millis(500);
        let (mut consumer, welcome) = Consumer::connect(tcp, config).await.unwrap();
        let live = ConsumerCopy {
            uid: welcome.topics.first().map_or(TopicUid::UNKNOWN, |position| position.uid),
            next: welcome.topics.first().map_or(0, |position| position.start_at),
            ..ConsumerCopy::default()
        };
        let copy = Arc::new(Mutex::new(live));
        let shared = Arc::clone(&copy);
        let topic = topic.to_string();
        let task = tokio::spawn(async move {
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
                        if consumer.ack(&topic, batch.last_offset + 1).await.is_err() {
                            return;
                        }
                    }
                    Event::Reset(reset) => {
                        pending = Some(ConsumerCopy {
                            uid: reset.uid,
                            next: reset.log_start,
                            ..ConsumerCopy::default()
                        });
                    }
                    Event::Ready(_) => {
                        if let Some(mut new) = pending.take() {
                            let mut live = shared.lock().unwrap();
                            new.refreshes = live.refreshes + 1;
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

impl Drop for BackgroundConsumer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
