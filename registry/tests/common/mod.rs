//! The one helper every integration test uses: starts the real registry in-process on 127.0.0.1:0 with its own
//! SQLite file, and offers small JSON request helpers.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use registry::{AppState, Settings};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A registry running in this process.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// A client for it.
    pub client: reqwest::Client,
    /// The settings it runs with.
    pub settings: Settings,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Settings for a test: the database in `dir`, and an expiry long enough that nothing expires unless a test
/// shortens it.
pub fn settings(dir: &tempfile::TempDir) -> Settings {
    let mut settings = Settings::new(db_path(dir));
    settings.expiry = Duration::from_secs(30);
    settings.heartbeat_interval = Duration::from_millis(100);
    settings
}

/// The database file a test directory holds.
pub fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("registry.sqlite")
}

/// A register body.
pub fn node_body(id: &str, level: &str, labels: Value) -> Value {
    json!({
        "id": id,
        "level": level,
        "labels": labels,
        "http_addr": format!("127.0.0.1:80{}", id.len()),
        "tcp_addr": "127.0.0.1:9091",
    })
}

impl TestServer {
    /// Opens the state and serves it on a fresh port.
    pub async fn start(settings: Settings) -> TestServer {
        let state = AppState::open(settings.clone()).expect("open the registry state");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(registry::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
        TestServer { addr, client, settings, stop: Some(stop), task: Some(task) }
    }

    /// Stops the server and waits until it has shut down and written its state.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends `request` and answers the status and the JSON body (`Value::Null` for an empty body). Panics if a
    /// non-empty body is not JSON, since every answer of the API must be.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        if text.is_empty() {
            return (status, Value::Null);
        }
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("{status}: not JSON ({error}): {text}"));
        (status, body)
    }

    /// GET `path` as JSON.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.get(self.url(path))).await
    }

    /// POST `body` to `path` as JSON.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.client.post(self.url(path)).json(body)).await
    }

    /// Registers a node and answers the assignment, failing the test unless it is accepted.
    pub async fn register(&self, id: &str, level: &str, labels: Value) -> Value {
        let (status, body) = self.post("/api/v1/nodes", &node_body(id, level, labels)).await;
        assert_eq!(status, StatusCode::OK, "register {id}: {body}");
        body
    }

    /// Heartbeats a node with `body` and answers the assignment, failing the test unless it is accepted.
    pub async fn heartbeat(&self, id: &str, body: &Value) -> Value {
        let (status, answer) = self.post(&format!("/api/v1/nodes/{id}/heartbeat"), body).await;
        assert_eq!(status, StatusCode::OK, "heartbeat {id}: {answer}");
        answer
    }
}

/// The parent id in an assignment, if any.
pub fn parent_id(assignment: &Value) -> Option<String> {
    assignment["parent"]["id"].as_str().map(str::to_owned)
}

/// The alternates' ids in an assignment.
pub fn alternate_ids(assignment: &Value) -> Vec<String> {
    assignment["alternates"]
        .as_array()
        .map(|nodes| nodes.iter().filter_map(|node| node["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// How long a registry process may take to start.
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(20);

/// Kills the process if the test fails before it exits, so that no registry outlives the test.
pub struct ProcessGuard(pub std::process::Child);

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Reads the JSON log on stderr until the "registry listening" line and answers its address.
pub fn listening_address(child: &mut std::process::Child) -> String {
    let stderr = child.stderr.take().expect("piped stderr");
    let (lines, received) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        // Stops reading once the address is found, on purpose: the registry must keep working, and exit
        // cleanly, with nobody reading its log (a lost log line must never crash a service).
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let started = std::time::Instant::now();
    loop {
        let remaining = PROCESS_DEADLINE
            .checked_sub(started.elapsed())
            .expect("the registry never said it was listening");
        let line = received.recv_timeout(remaining).expect("a log line before the deadline");
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if entry["fields"]["message"] == "registry listening" {
            return entry["fields"]["address"].as_str().expect("address field").to_owned();
        }
    }
}
