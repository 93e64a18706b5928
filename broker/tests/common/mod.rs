//! The one shared helper of the broker's in-process integration tests: a real broker started in-process on
//! 127.0.0.1 port 0 with a temporary data directory (or a child broker piped to one), an HTTP client, and
//! consumer helpers built on the `client` crate. Every wait here is bounded. Tests of the tree as real
//! processes use `tests/tree/mod.rs` instead.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use broker::config::{Config, Level};
use broker::{Broker, Node};
use client::{Consumer, ConsumerConfig, Event};
use protocol::frame::{Batch, StartPosition, TopicPosition, TopicStart, Welcome};
use protocol::{RecordIter, TopicUid};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The longest any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// A broker running in this process.
pub struct TestBroker {
    /// Its HTTP address.
    pub http: SocketAddr,
    /// Its consumer address.
    pub consumers: SocketAddr,
    /// Its shared state.
    pub node: Arc<Node>,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// The data directory (kept alive for restarts).
    pub dir: Arc<TempDir>,
    /// Stops the broker.
    stop: Option<oneshot::Sender<()>>,
    /// The running broker.
    task: Option<JoinHandle<Result<(), broker::Error>>>,
}

impl TestBroker {
    /// A ROOT broker with test endpoints and a short heartbeat.
    pub async fn start() -> TestBroker {
        TestBroker::start_with(|_| {}).await
    }

    /// A broker with the test defaults changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestBroker {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        TestBroker::start_in(dir, adjust).await
    }

    /// A child broker at `level` whose pipe connects to `parent` (a fixed parent, no registry), with a
    /// short pipe heartbeat.
    pub async fn start_child(parent: &TestBroker, level: Level, node_id: &str) -> TestBroker {
        let parent_url = parent.http.to_string();
        TestBroker::start_with(|config| {
            config.level = level;
            config.node_id = node_id.to_string();
            config.parent_url = Some(parent_url);
            config.pipe_heartbeat = Duration::from_millis(200);
        })
        .await
    }

    /// A broker on an existing data directory.
    pub async fn start_in(dir: Arc<TempDir>, adjust: impl FnOnce(&mut Config)) -> TestBroker {
        let mut config = Config::for_tests(dir.path().join("data"));
        config.test_endpoints = true;
        config.heartbeat = Duration::from_millis(500);
        config.group_commit_interval = Duration::from_millis(20);
        config.segment_bytes = 8 * 1024 * 1024;
        adjust(&mut config);
        let broker = Broker::bind(config).await.unwrap();
        let http = broker.http_addr().unwrap();
        let consumers = broker.consumer_addr().unwrap();
        let node = Arc::clone(broker.node());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(broker.run(async move {
            let _ = stopped.await;
        }));
        TestBroker {
            http,
            consumers,
            node,
            client: reqwest::Client::new(),
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the broker gracefully and waits for it.
    pub async fn stop(mut self) -> Arc<TempDir> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task).await.unwrap().unwrap().unwrap();
        }
        Arc::clone(&self.dir)
    }

    /// The URL of `path` on this broker.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// POSTs JSON and returns the status and the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.client.post(self.url(path)).json(body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// GETs JSON.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Publishes records at ROOT and returns the answer; panics on failure.
    pub async fn publish(&self, topic: &str, body: Value) -> Value {
        let (status, answer) = self.post(&format!("/api/v1/topics/{topic}/messages"), &body).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    /// Generates `count` records of `size` bytes through the test endpoint.
    pub async fn inject(&self, topic: &str, count: u64, size: usize) -> Value {
        let body = serde_json::json!({"topic": topic, "count": count, "size": size});
        let (status, answer) = self.post("/test/inject-messages", &body).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    /// Connects a consumer.
    pub async fn consumer(&self, group: &str, topics: Vec<TopicStart>) -> (Consumer, Welcome) {
        self.consumer_with(group, topics, |_| {}).await
    }

    /// Connects a consumer with an adjusted configuration.
    pub async fn consumer_with(
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

    /// The group's committed offset in a topic, as `/test/stats` shows it.
    pub async fn committed(&self, group: &str, topic: &str) -> Option<u64> {
        let (_, stats) = self.get("/test/stats").await;
        stats["groups"].as_array().unwrap().iter().find_map(|entry| {
            (entry["group"] == group && entry["topic"] == topic).then(|| entry["committed"].as_u64().unwrap())
        })
    }

    /// Waits (bounded) until the group's committed offset in `topic` equals `offset`.
    pub async fn wait_committed(&self, group: &str, topic: &str, offset: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.committed(group, topic).await != Some(offset) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "group {group} never committed {offset} in {topic}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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
    TopicStart { topic: topic.to_string(), uid: TopicUid::UNKNOWN, start }
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
