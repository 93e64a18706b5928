//! The in-process broker every integration test suite starts: a real `broker::Broker` bound to 127.0.0.1
//! port 0 with a temporary data directory (or a child piped to one), and the HTTP calls tests make to it.
//! It owns starting, restarting and stopping a broker and the settings every suite shares; a suite that
//! needs other settings passes them through [`TestBroker::start_with`], and helpers that only one suite
//! uses stay in that suite's `tests/common/mod.rs`. Tests of real broker processes do not use it.

pub mod compaction;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use broker::config::{Config, Level};
use broker::{Broker, Node};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The longest a broker may take to stop before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// A broker running in this process.
#[derive(Debug)]
pub struct TestBroker {
    /// Its HTTP address.
    pub http: SocketAddr,
    /// Its TCP consumer address.
    pub consumers: SocketAddr,
    /// Its shared state, for tests that look inside.
    pub node: Arc<Node>,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// The temporary directory holding its data directory, kept alive across restarts.
    pub dir: Arc<TempDir>,
    /// Stops the broker.
    stop: Option<oneshot::Sender<()>>,
    /// The running broker.
    task: Option<JoinHandle<Result<(), broker::Error>>>,
}

impl TestBroker {
    /// A ROOT broker with the test settings (see [`TestBroker::start_in`]).
    pub async fn start() -> TestBroker {
        TestBroker::start_with(|_| {}).await
    }

    /// A broker with the test settings changed by `adjust`, in a new temporary directory.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestBroker {
        let dir = Arc::new(tempfile::tempdir().expect("a temporary directory"));
        TestBroker::start_in(dir, adjust).await
    }

    /// A child broker at `level` whose pipe connects to `parent` (a fixed parent, no registry), with a
    /// 200 ms pipe heartbeat so that a lost parent is noticed quickly.
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

    /// A broker on the data directory inside `dir` (which may hold an earlier broker's data), with the
    /// test settings changed by `adjust`. The test settings are `Config::for_tests` (port 0 for both
    /// listeners) plus the `/test/*` endpoints, a 500 ms consumer heartbeat, group commits every 20 ms and
    /// 8 MiB segments.
    pub async fn start_in(dir: Arc<TempDir>, adjust: impl FnOnce(&mut Config)) -> TestBroker {
        let mut config = Config::for_tests(dir.path().join("data"));
        config.test_endpoints = true;
        config.heartbeat = Duration::from_millis(500);
        config.group_commit_interval = Duration::from_millis(20);
        config.segment_bytes = 8 * 1024 * 1024;
        adjust(&mut config);
        TestBroker::run(dir, config).await
    }

    /// Stops the broker gracefully and starts it again with the same settings on the same data directory.
    /// The listeners bind port 0 again, so the new broker has new addresses.
    pub async fn restart(self) -> TestBroker {
        let config = self.node.config.clone();
        let dir = self.stop().await;
        TestBroker::run(dir, config).await
    }

    /// Binds a broker with `config` and runs it on a task until [`TestBroker::stop`].
    async fn run(dir: Arc<TempDir>, config: Config) -> TestBroker {
        let broker = Broker::bind(config).await.expect("the test broker starts");
        let http = broker.http_addr().expect("a bound HTTP address");
        let consumers = broker.consumer_addr().expect("a bound consumer address");
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

    /// Stops the broker gracefully, waits (bounded by [`WAIT`]) until it has stopped cleanly, and returns
    /// its directory for a restart.
    pub async fn stop(mut self) -> Arc<TempDir> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(WAIT, task).await.expect("the broker stops in time");
            result.expect("the broker task did not panic").expect("the broker stops cleanly");
        }
        Arc::clone(&self.dir)
    }

    /// The URL of `path` on this broker.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// POSTs JSON and returns the status and the JSON answer (every answer of the broker is JSON).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.client.post(self.url(path)).json(body).send().await.expect("the broker answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_else(|error| panic!("POST {path}: not JSON: {error}")))
    }

    /// PUTs a raw body (JSON or not, so that tests can send bad ones) and returns the status and the JSON
    /// answer.
    pub async fn put(&self, path: &str, body: &str) -> (u16, Value) {
        let request = self.client.put(self.url(path)).header("content-type", "application/json");
        let response = request.body(body.to_string()).send().await.expect("the broker answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_else(|error| panic!("PUT {path}: not JSON: {error}")))
    }

    /// GETs JSON and returns the status and the answer.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.expect("the broker answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_else(|error| panic!("GET {path}: not JSON: {error}")))
    }

    /// Publishes records at ROOT through the ingest API and returns the answer; fails the test unless it
    /// is 200.
    pub async fn publish(&self, topic: &str, body: Value) -> Value {
        let (status, answer) = self.post(&format!("/api/v1/topics/{topic}/messages"), &body).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    /// Generates `count` records of `size` bytes, keys `key-0`, `key-1`, ..., through the test endpoint.
    pub async fn inject(&self, topic: &str, count: u64, size: usize) -> Value {
        let body = serde_json::json!({"topic": topic, "count": count, "size": size});
        let (status, answer) = self.post("/test/inject-messages", &body).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }
}

/// The value of a counter or gauge without labels in a Prometheus text page (`name value` lines), zero if
/// the page does not have it.
pub fn metric(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}
