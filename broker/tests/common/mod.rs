//! The broker suite's own helpers for its in-process integration tests: consumer groups (members built on
//! the `client` crate, committed offsets) on a `testkit::TestBroker`, and what tests check about the
//! batches they receive. The broker itself (started on 127.0.0.1 port 0 with a temporary data directory, or
//! as a child piped to one) and its HTTP calls come from `testkit`. Tests of the tree as real processes use
//! `tests/tree/mod.rs` instead.

#![allow(dead_code)]

use std::time::Duration;

use client::{Consumer, ConsumerConfig, Event};
use protocol::frame::{Batch, StartPosition, TopicPosition, TopicStart, Welcome};
use protocol::{RecordIter, TopicUid};
pub use testkit::{TestBroker, WAIT};

/// Consumer groups on a test broker: connecting members and reading committed offsets. Only this suite
/// speaks the consumer protocol to a broker directly.
pub trait Groups {
    /// Connects a consumer of `group` (member `{group}-member`) with a 500 ms heartbeat.
    async fn consumer(&self, group: &str, topics: Vec<TopicStart>) -> (Consumer, Welcome);

    /// Connects a consumer like [`Groups::consumer`] with its configuration changed by `adjust`.
    async fn consumer_with(
        &self,
        group: &str,
        topics: Vec<TopicStart>,
        adjust: impl FnOnce(&mut ConsumerConfig),
    ) -> (Consumer, Welcome);

    /// The group's committed offset in a topic, as `/test/stats` shows it.
    async fn committed(&self, group: &str, topic: &str) -> Option<u64>;

    /// Waits (bounded by [`WAIT`]) until the group's committed offset in `topic` equals `offset`.
    async fn wait_committed(&self, group: &str, topic: &str, offset: u64);
}

impl Groups for TestBroker {
    async fn consumer(&self, group: &str, topics: Vec<TopicStart>) -> (Consumer, Welcome) {
        self.consumer_with(group, topics, |_| {}).await
    }

    async fn consumer_with(
        &self,
        group: &str,
        topics: Vec<TopicStart>,
        adjust: impl FnOnce(&mut ConsumerConfig),
    ) -> (Consumer, Welcome) {
        let mut config = ConsumerConfig::new(format!("{group}-member"), group, topics);
        config.heartbeat = Duration::from_millis(500);
        adjust(&mut config);
        Consumer::connect(self.consumers, config).await.unwrap()
    }

    async fn committed(&self, group: &str, topic: &str) -> Option<u64> {
        let (_, stats) = self.get("/test/stats").await;
        stats["groups"].as_array().unwrap().iter().find_map(|entry| {
            (entry["group"] == group && entry["topic"] == topic).then(|| entry["committed"].as_u64().unwrap())
        })
    }

    async fn wait_committed(&self, group: &str, topic: &str, offset: u64) {
        let what = format!("group {group} commits {offset} in {topic}");
        wait_until(&what, || async { self.committed(group, topic).await == Some(offset) }).await;
    }
}

/// Waits (bounded by [`WAIT`]) until `condition` holds, polling every 10 ms; `what` names it on failure.
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A subscription entry with an unknown uid.
pub fn start(topic: &str, start: StartPosition) -> TopicStart {
    TopicStart { topic: topic.to_string(), uid: TopicUid::UNKNOWN, epoch: protocol::NO_EPOCH, start }
}

/// One record as a test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its offset.
    pub offset: u64,
    /// Its key.
    pub key: String,
    /// Its value.
    pub value: Vec<u8>,
}

/// The records of a batch, checked.
pub fn records_of(batch: &Batch) -> Vec<Seen> {
    RecordIter::new(&batch.records)
        .map(|record| {
            let record = record.unwrap();
            Seen {
                offset: record.offset(),
                key: String::from_utf8_lossy(record.key()).into_owned(),
                value: record.value().to_vec(),
            }
        })
        .collect()
}

/// The next event, bounded by [`WAIT`].
pub async fn next_event(consumer: &mut Consumer) -> Event {
    tokio::time::timeout(WAIT, consumer.next_event()).await.expect("no event in time").unwrap()
}

/// Seeks and waits for the POSITION answer, dropping batches sent from the old position meanwhile.
pub async fn seek(consumer: &mut Consumer, topic: &str, start: StartPosition) -> TopicPosition {
    consumer.seek(topic, start).await.unwrap();
    loop {
        match next_event(consumer).await {
            Event::Position(position) => {
                assert_eq!(position.topic, topic);
                return position;
            }
            Event::Batch(batch) => assert_eq!(batch.topic, topic),
            other => panic!("expected POSITION, got {other:?}"),
        }
    }
}

/// Receives and acknowledges batches of `topic` until the consumer has every offset below `end`; returns
/// what arrived, in order. Fails on any other event.
pub async fn receive_until(consumer: &mut Consumer, topic: &str, end: u64) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut next = None;
    while next.is_none_or(|next| next < end) {
        match next_event(consumer).await {
            Event::Batch(batch) => {
                assert_eq!(batch.topic, topic);
                seen.extend(records_of(&batch));
                next = Some(batch.last_offset + 1);
                consumer.ack(topic, batch.last_offset + 1).await.unwrap();
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    seen
}
