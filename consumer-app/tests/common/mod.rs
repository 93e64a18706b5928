//! Helpers shared by the consumer-app's integration tests: records made with the real record encoder, a
//! local copy and REST router over a temporary directory, and JSON requests through the router.
#![allow(dead_code)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use consumer_app::app::{AppState, SyncStatus};
use consumer_app::copy::LocalCopy;
use consumer_app::metrics::Metrics;
use consumer_app::sync::SyncCommand;
use protocol::NewRecord;
use protocol::record::ATTR_TOMBSTONE;
use serde_json::Value;
use testkit::TestBroker;
use tokio::sync::mpsc;
use tower::ServiceExt;

/// Storage settings for tests: small segments so a few thousand records span several files.
pub fn log_config() -> storage::LogConfig {
    storage::LogConfig {
        segment_bytes: 1024 * 1024,
        preallocate_chunk_bytes: 256 * 1024,
        ..storage::LogConfig::default()
    }
}

/// Records `offsets` laid end to end, each with the key and value `record(offset)` gives.
pub fn records(offsets: std::ops::Range<u64>, record: impl Fn(u64) -> (String, String)) -> Vec<u8> {
    let mut out = Vec::new();
    for offset in offsets {
        let (key, value) = record(offset);
        NewRecord::new(key.as_bytes(), value.as_bytes()).encode_to_vec(
            offset,
            1_700_000_000_000 + offset,
            &mut out,
        );
    }
    out
}

/// A tombstone for `key` at `offset`.
pub fn tombstone(offset: u64, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let record = NewRecord { key: key.as_bytes(), headers: &[], value: &[], attributes: ATTR_TOMBSTONE };
    record.encode_to_vec(offset, 1_700_000_000_000 + offset, &mut out);
    out
}

/// The five records of the end-to-end example, offsets 0 to 4.
pub const FIVE: [&str; 5] = ["AAPL", "GOOGL", "MSFT", "TSLA", "AMZN"];

/// `{"symbol": KEY, "price": N}` for the five-record example.
pub fn five_records() -> Vec<u8> {
    records(0..5, |offset| {
        let key = FIVE[offset as usize].to_string();
        let value = format!("{{\"price\":{},\"symbol\":\"{key}\"}}", 100 + offset);
        (key, value)
    })
}

/// A local copy opened in `dir`.
pub fn open_copy(dir: &std::path::Path) -> Arc<LocalCopy> {
    Arc::new(LocalCopy::open(dir, log_config()).unwrap())
}

/// The REST router over `copy`, and the receiving end of its refresh requests.
pub fn router(copy: Arc<LocalCopy>) -> (Router, Arc<SyncStatus>, mpsc::Receiver<SyncCommand>) {
    let (commands, receiver) = mpsc::channel(8);
    let status = Arc::new(SyncStatus::default());
    let state = AppState {
        copy,
        metrics: Arc::new(Metrics::new()),
        status: status.clone(),
        commands,
        handler_name: "store",
    };
    (consumer_app::http::router(state), status, receiver)
}

/// Sends one request through the router and returns the status and the body as JSON (`Value::Null` if
/// the body is not JSON).
pub async fn call(router: &Router, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
    let request = Request::builder().method(method).uri(uri).body(Body::from(body.to_string())).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// `GET uri` through the router.
pub async fn get(router: &Router, uri: &str) -> (StatusCode, Value) {
    call(router, "GET", uri, "").await
}

/// The offsets of a messages page.
pub fn offsets(page: &Value) -> Vec<u64> {
    page["messages"].as_array().unwrap().iter().map(|message| message["offset"].as_u64().unwrap()).collect()
}

// ---------------------------------------------------------------------------------------------------
// End to end: a real broker in-process (`testkit`) and the real consumer-app binary as a process.
// ---------------------------------------------------------------------------------------------------

/// The longest any single wait may take before a test fails.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// How often waits look again.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// A ROOT broker in this process (port 0, `/test/*` endpoints, 500 ms heartbeat) with the settings this
/// suite's tests were written for: BATCH frames of up to 2000 records, group commits every 5 ms and
/// 16 MiB segments.
pub async fn start_broker() -> TestBroker {
    start_broker_with_batches(2000).await
}

/// A broker like [`start_broker`] whose BATCH frames hold at most `batch_max_records` records.
pub async fn start_broker_with_batches(batch_max_records: usize) -> TestBroker {
    TestBroker::start_with(|config| {
        config.batch_max_records = batch_max_records;
        config.group_commit_interval = std::time::Duration::from_millis(5);
        config.segment_bytes = 16 * 1024 * 1024;
    })
    .await
}

/// The real consumer-app binary, started as a process.
pub struct AppProcess {
    /// The process.
    child: std::process::Child,
    /// Its REST address, read from its log.
    pub addr: std::net::SocketAddr,
    /// An HTTP client.
    client: reqwest::Client,
}

impl AppProcess {
    /// Starts the binary against `broker` with its data in `data_dir`, plus `env`, and waits until its REST
    /// API listens.
    pub async fn start(
        broker: std::net::SocketAddr,
        data_dir: &std::path::Path,
        env: &[(&str, &str)],
    ) -> AppProcess {
        use std::io::BufRead;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_consumer-app"));
        command
            .env_clear()
            .env("CONSUMER_BROKER_ADDR", broker.to_string())
            .env("CONSUMER_DATA_DIR", data_dir)
            .env("CONSUMER_HTTP_LISTEN", "127.0.0.1:0")
            .env("CONSUMER_LOG_JSON", "true")
            .env("CONSUMER_HEARTBEAT", "500ms")
            .env("CONSUMER_RECONNECT_BACKOFF", "50ms")
            .env("CONSUMER_RECONNECT_MAX_BACKOFF", "500ms")
            .env("CONSUMER_SEGMENT_BYTES", "8M")
            .env("CONSUMER_MAX_IN_FLIGHT", "16")
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (found, listening) = std::sync::mpsc::channel();
        // The reader keeps draining the log until the process ends, so the process never blocks on a full
        // pipe; it passes on the REST address once it sees it.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let Ok(event) = serde_json::from_str::<Value>(&line) else { continue };
                if event["fields"]["message"] == "REST API listening"
                    && let Some(listen) = event["fields"]["listen"].as_str()
                {
                    let _ = found.send(listen.to_string());
                }
                if event["level"] == "ERROR" || event["level"] == "WARN" {
                    eprintln!("consumer-app: {line}");
                }
            }
        });
        let deadline = tokio::time::Instant::now() + WAIT;
        let addr = loop {
            match listening.try_recv() {
                Ok(listen) => break listen.parse().unwrap(),
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    assert!(tokio::time::Instant::now() < deadline, "consumer-app did not start listening");
                    if let Some(status) = child.try_wait().unwrap() {
                        panic!("consumer-app exited at start: {status}");
                    }
                    tokio::time::sleep(POLL).await;
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => panic!("consumer-app exited at start"),
            }
        };
        AppProcess { child, addr, client: reqwest::Client::new() }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9: the process gets no chance to clean up.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for a clean exit (bounded).
    pub async fn stop(mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) with our own child's pid and a valid signal number has no memory effects.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "consumer-app exited with {status}");
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "consumer-app did not stop on SIGTERM");
            tokio::time::sleep(POLL).await;
        }
    }

    /// `GET path`: the status and the JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(format!("http://{}{path}", self.addr)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `GET path` as text: the status and the body.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self.client.get(format!("http://{}{path}", self.addr)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let response = self
            .client
            .post(format!("http://{}{path}", self.addr))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls `GET path` until `done` holds for the body (bounded by [`WAIT`]) and returns the body.
    pub async fn wait_for(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, body) = self.get(path).await;
            if status == 200 && done(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last {path}: {body}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// A counter or gauge without labels from the app's `/metrics` (zero if absent).
    pub async fn metric(&self, name: &str) -> u64 {
        let (_, page) = self.get_text("/metrics").await;
        testkit::metric(&page, name)
    }

    /// Waits until the copy of `topic` holds every record below `position`.
    pub async fn wait_for_position(&self, topic: &str, position: u64) -> Value {
        self.wait_for("/api/v1/stats", &format!("{topic} at position {position}"), |stats| {
            stats["topics"][topic]["position"].as_u64() == Some(position)
        })
        .await
    }
}

impl Drop for AppProcess {
    fn drop(&mut self) {
        // A test that failed half way must not leave the process behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Checks a copy's records: offsets exactly `0..n`, once each, in order, with valid CRCs. Reads the
/// segment log directly with the storage engine (the app must be stopped).
pub fn check_copy(data_dir: &std::path::Path, topic: &str, n: u64) {
    // The same settings the binary uses with CONSUMER_SEGMENT_BYTES=8M.
    let config = storage::LogConfig {
        segment_bytes: 8 * 1024 * 1024,
        preallocate_chunk_bytes: 1024 * 1024,
        ..storage::LogConfig::default()
    };
    let store = storage::Store::open(consumer_app::copy::store_dir(data_dir), config).unwrap();
    let log = store.topic(topic).unwrap();
    assert_eq!((log.log_start(), log.next_offset()), (0, n));
    let mut expected = 0;
    while expected < n {
        let chunk = log.read(expected, 10_000, 8 * 1024 * 1024).unwrap();
        assert!(chunk.n_records > 0);
        for record in protocol::RecordIter::new(&chunk.records) {
            let record = record.unwrap();
            assert_eq!(record.offset(), expected, "lost, duplicated or out-of-order record");
            expected += 1;
        }
    }
    assert_eq!(expected, n);
}

/// What a test publishes to a keyed topic: each key's latest value, or `None` once deleted.
pub type Model = std::collections::BTreeMap<String, Option<String>>;

/// The live keys of `model` and their values (deleted keys left out).
pub fn live(model: &Model) -> std::collections::BTreeMap<String, String> {
    model.iter().filter_map(|(key, value)| Some((key.clone(), value.clone()?))).collect()
}

/// Checks every key of the model through `GET keys/{key}` of `topic`: a live key's value (as text), a deleted
/// key's 404 (`deleted`, or `unknown_key` once compaction dropped its tombstone). Answers how many deleted
/// keys were unknown.
pub async fn check_keys(app: &AppProcess, topic: &str, model: &Model) -> usize {
    let mut unknown = 0;
    for (key, value) in model {
        let (status, body) = app.get(&format!("/api/v1/topics/{topic}/keys/{key}")).await;
        match value {
            Some(value) => {
                assert_eq!(
                    (status, body["value_text"].as_str()),
                    (200, Some(value.as_str())),
                    "{key}: {body}"
                )
            }
            None => {
                assert_eq!(status, 404, "{key} was deleted: {body}");
                match body["error"].as_str() {
                    Some("deleted") => {}
                    Some("unknown_key") => unknown += 1,
                    other => panic!("{key}: {other:?}"),
                }
            }
        }
    }
    unknown
}

/// The live keys of `topic` and their values (as text) as the app lists them (`GET keys`, every page, which
/// reads its key index); fails on a key listed twice or a list that never ends.
pub async fn listed_keys(app: &AppProcess, topic: &str) -> std::collections::BTreeMap<String, String> {
    let mut listed = std::collections::BTreeMap::new();
    let mut after: Option<String> = None;
    for _ in 0..1_000 {
        let path = match &after {
            Some(after) => format!("/api/v1/topics/{topic}/keys?limit=1000&after={after}"),
            None => format!("/api/v1/topics/{topic}/keys?limit=1000"),
        };
        let (status, page) = app.get(&path).await;
        assert_eq!(status, 200, "{page}");
        for entry in page["keys"].as_array().unwrap() {
            let key = entry["key"].as_str().unwrap().to_string();
            let value = entry["value_text"].as_str().unwrap_or_default().to_string();
            assert!(listed.insert(key.clone(), value).is_none(), "{key} listed twice");
        }
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return listed,
        }
    }
    panic!("the key list never ended");
}
