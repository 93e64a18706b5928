//! The one shared helper of the tree tests (`tests/tree_*.rs`): the real `registry` and `broker` binaries
//! started as processes on 127.0.0.1 port 0 (each reads its bound addresses back from the line the binary
//! logs when it starts), stopped with SIGTERM or killed with SIGKILL by PID, restarted on the addresses
//! they had and the same data directory, and a checker that fetches a topic's whole range from a
//! node's HTTP API (raw bytes) and counts lost, duplicated and out-of-order offsets and hashes the records.
//! Every wait is bounded; every process is killed when its handle is dropped, and the logs of a failed
//! test are printed.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

mod check;
mod consumer;

// Each tree test binary uses a different part of this helper.
#[allow(unused_imports)]
pub use check::{Range, fetch_range};
#[allow(unused_imports)]
pub use consumer::{BackgroundConsumer, ConsumerCopy};

/// The longest any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The token every registry call of the tree tests carries.
pub const REGISTRY_TOKEN: &str = "tree-registry-token";

/// The broker binary under test.
pub fn broker_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_broker"))
}

/// The registry binary next to the broker's. A workspace test run (`cargo nextest run --workspace`) has
/// built it already; a run of this package alone (`cargo test -p broker`) builds it once here, since cargo
/// only builds the binaries of the package under test. An existing binary is used as it is: rebuilding it
/// from inside a test would resolve features for the registry alone and recompile its dependencies.
pub fn registry_binary() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let broker = broker_binary();
        let dir = broker.parent().expect("the broker binary has a directory");
        let path = dir.join("registry");
        if !path.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let mut command = Command::new(cargo);
            command.args(["build", "--quiet", "-p", "registry", "--bin", "registry"]);
            if dir.ends_with("release") {
                command.arg("--release");
            }
            let status = command.current_dir(env!("CARGO_MANIFEST_DIR")).status().expect("cargo runs");
            assert!(status.success(), "building the registry binary failed");
        }
        assert!(path.exists(), "no registry binary at {}", path.display());
        path
    })
    .clone()
}

/// The address a process binds before it has run once: any free port, chosen by the system.
pub const ANY_PORT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// One child process, killed (SIGKILL) when dropped.
pub struct Process {
    /// A name for messages.
    pub name: String,
    /// The process, while it runs.
    child: Option<Child>,
    /// Where its stdout and stderr go (appended across restarts).
    pub log: PathBuf,
    /// The length of the log when this run started: this run's lines come after it.
    log_start: u64,
}

impl Process {
    /// Starts `command` with its output appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Process {
        let file = OpenOptions::new().create(true).append(true).open(log).unwrap();
        let log_start = file.metadata().unwrap().len();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        Process { name: name.to_string(), child: Some(child), log: log.to_path_buf(), log_start }
    }

    /// Waits (bounded by [`DEADLINE`]) until this run of the process logs a line containing `message`,
    /// and returns the line; fails if the process exits first.
    pub async fn wait_for_line(&mut self, message: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.assert_running();
            let text = self.log_text();
            let this_run = text.get(usize::try_from(self.log_start).unwrap()..).unwrap_or_default();
            if let Some(line) = this_run.lines().find(|line| line.contains(message)) {
                return line.to_string();
            }
            assert!(Instant::now() < deadline, "{} never logged {message:?}", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its PID.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().expect("running").id()).unwrap()
    }

    /// Sends `signal` to the process.
    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on a PID this test started and has not reaped yet; no memory is involved.
        let result = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(result, 0, "cannot signal {}", self.name);
    }

    /// SIGSTOP: the process freezes with its sockets open, like a host that hangs.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// kill -9, then reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: as in `signal`.
            unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (bounded) for the exit; SIGKILL if it does not come.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not exit after SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Panics (with its log) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("{} exited with {status}:\n{}", self.name, tail(&self.log, 40));
        }
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A broker of the tree: its settings, addresses and data directory survive restarts.
pub struct BrokerNode {
    /// Its node id.
    pub id: String,
    /// Its level flag value.
    pub level: String,
    /// Extra flags.
    pub args: Vec<String>,
    /// Its HTTP address ([`ANY_PORT`] until it has started once).
    pub http: SocketAddr,
    /// Its TCP consumer address ([`ANY_PORT`] until it has started once).
    pub tcp: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The process, while it runs.
    pub process: Option<Process>,
}

/// A tree of processes in one temporary directory.
pub struct Tree {
    /// Data directories and logs.
    pub dir: TempDir,
    /// The registry's address, once it has started.
    pub registry_addr: Option<SocketAddr>,
    /// The registry process.
    pub registry: Option<Process>,
    /// The brokers, by id.
    pub nodes: BTreeMap<String, BrokerNode>,
    /// An HTTP client.
    pub http: reqwest::Client,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Tree {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
        Tree {
            dir: tempfile::tempdir().unwrap(),
            registry_addr: None,
            registry: None,
            nodes: BTreeMap::new(),
            http,
        }
    }

    /// Starts the registry (on port 0, or on its address if it ran already, since the brokers know it) with
    /// the database file `db` in the tree's directory, and waits until it answers.
    pub async fn start_registry(&mut self, db: &str) {
        let listen = self.registry_addr.unwrap_or(ANY_PORT);
        let mut command = Command::new(registry_binary());
        command
            .args(["--listen", &listen.to_string()])
            .arg("--db")
            .arg(self.dir.path().join(db))
            .args(["--expiry", "3s", "--heartbeat-interval", "300ms", "--token", REGISTRY_TOKEN])
            .env("RUST_LOG", "info");
        let mut process = Process::spawn("registry", command, &self.dir.path().join("registry.log"));
        let line = process.wait_for_line("registry listening").await;
        let address = log_field(&line, "address").parse().expect("the registry logs its address");
        self.registry_addr = Some(address);
        self.registry = Some(process);
        let url = format!("http://{address}/health");
        self.wait_http("the registry answers", &url).await;
    }

    /// The registry's base URL.
    pub fn registry_url(&self) -> String {
        format!("http://{}", self.registry_addr.expect("a started registry"))
    }

    /// Adds a broker (not started).
    pub fn add(&mut self, id: &str, level: &str, args: &[&str]) {
        let data_dir = self.dir.path().join(id);
        let node = BrokerNode {
            id: id.to_string(),
            level: level.to_string(),
            args: args.iter().map(ToString::to_string).collect(),
            http: ANY_PORT,
            tcp: ANY_PORT,
            data_dir,
            process: None,
        };
        self.nodes.insert(id.to_string(), node);
    }

    /// Adds a broker registered with the tree's registry and starts it.
    pub async fn add_started(&mut self, id: &str, level: &str, args: &[&str]) {
        let mut all: Vec<String> = vec![
            "--registry-url".into(),
            self.registry_url(),
            "--registry-token".into(),
            REGISTRY_TOKEN.into(),
        ];
        all.extend(args.iter().map(ToString::to_string));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.add(id, level, &all);
        self.start(id).await;
    }

    /// Starts a broker on port 0 (or restarts it on the addresses it had) and its data directory, reads its
    /// addresses from its start line, and waits for `/health`.
    pub async fn start(&mut self, id: &str) {
        let node = self.nodes.get_mut(id).expect("a known node");
        let mut command = Command::new(broker_binary());
        command
            .args(["--node-id", &node.id, "--level", &node.level])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--http-addr", &node.http.to_string(), "--consumer-addr", &node.tcp.to_string()])
            .args(["--test-endpoints", "--heartbeat", "500ms", "--pipe-heartbeat", "300ms"])
            .args(["--pipe-reconnect-max", "1s"])
            .args(&node.args)
            .env("RUST_LOG", "info,broker=debug");
        // 8M segments unless the node's own flags choose (a flag cannot be given twice).
        if !node.args.iter().any(|arg| arg == "--segment-bytes") {
            command.args(["--segment-bytes", "8M"]);
        }
        let log = self.dir.path().join(format!("{id}.log"));
        let mut process = Process::spawn(id, command, &log);
        let line = process.wait_for_line("broker started").await;
        node.http = log_field(&line, "http_addr").parse().expect("the broker logs its HTTP address");
        node.tcp = log_field(&line, "consumer_addr").parse().expect("the broker logs its consumer address");
        node.process = Some(process);
        let url = format!("http://{}/health", node.http);
        self.wait_http(&format!("{id} answers"), &url).await;
    }

    /// kill -9.
    pub fn kill(&mut self, id: &str) {
        if let Some(mut process) = self.nodes.get_mut(id).and_then(|node| node.process.take()) {
            process.kill();
        }
    }

    /// SIGSTOP (killed with SIGKILL when the tree is dropped).
    pub fn freeze(&self, id: &str) {
        self.nodes[id].process.as_ref().expect("running").freeze();
    }

    /// SIGTERM; returns the exit status.
    pub fn stop(&mut self, id: &str) -> ExitStatus {
        let mut process = self.nodes.get_mut(id).and_then(|node| node.process.take()).expect("running");
        process.terminate()
    }

    /// A broker's HTTP address.
    pub fn http_of(&self, id: &str) -> SocketAddr {
        self.nodes[id].http
    }

    /// A broker's log so far.
    pub fn log_of(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{id}.log"))).unwrap_or_default()
    }

    /// GETs JSON from a broker (`None` if it does not answer or answers an error).
    pub async fn get(&self, id: &str, path: &str) -> Option<Value> {
        self.get_url(&format!("http://{}{path}", self.http_of(id))).await
    }

    /// GETs JSON from any URL (`None` if there is no good answer).
    pub async fn get_url(&self, url: &str) -> Option<Value> {
        let response = self.http.get(url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// Generates records at a broker (ROOT) through the test endpoint.
    pub async fn inject(&self, id: &str, topic: &str, count: u64, size: usize) -> Value {
        let url = format!("http://{}/test/inject-messages", self.http_of(id));
        let body = serde_json::json!({"topic": topic, "count": count, "size": size});
        let response = self.http.post(url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200, "inject at {id}");
        response.json().await.unwrap()
    }

    /// Waits until `url` answers 200.
    async fn wait_http(&mut self, what: &str, url: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.assert_all_running();
            if let Ok(response) = self.http.get(url).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Panics if a process the tree started has died on its own.
    pub fn assert_all_running(&mut self) {
        for process in self.nodes.values_mut().filter_map(|node| node.process.as_mut()) {
            process.assert_running();
        }
        if let Some(registry) = self.registry.as_mut() {
            registry.assert_running();
        }
    }

    /// Starts the failover shape with a registry: ROOT, L2, two L3s (`l3-a`, `l3-b`) and a POS, and waits
    /// until the POS streams from one L3 and the other L3 from the L2. Returns `(the POS's parent, the other
    /// L3)`.
    pub async fn start_two_l3s(&mut self) -> (String, String) {
        self.start_registry("registry.sqlite").await;
        self.add_started("root", "root", &[]).await;
        self.add_started("l2", "l2", &[]).await;
        self.add_started("l3-a", "l3", &[]).await;
        self.add_started("l3-b", "l3", &[]).await;
        self.add_started("pos", "pos", &[]).await;
        let first_parent = self.wait_streaming("pos", None).await;
        let other = if first_parent == "l3-a" { "l3-b" } else { "l3-a" };
        self.wait_streaming(other, Some("l2")).await;
        (first_parent, other.to_string())
    }

    /// Waits until a broker's pipe streams (from `parent`, if given); returns the parent's id.
    pub async fn wait_streaming(&self, id: &str, parent: Option<&str>) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(node) = self.get(id, "/api/v1/node").await {
                let current = node["parent"]["id"].as_str().unwrap_or_default().to_string();
                if node["parent"]["connected"] == true && parent.is_none_or(|parent| parent == current) {
                    return current;
                }
            }
            assert!(Instant::now() < deadline, "timed out waiting until {id} streams from {parent:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until a broker holds `topic` with `uid` up to `end` (readable).
    pub async fn wait_copy(&self, id: &str, topic: &str, uid: &str, end: u64) {
        let what = format!("{id} holds {topic} ({uid}) up to {end}");
        wait_until(&what, || async {
            let Some(info) = self.get(id, &format!("/api/v1/topics/{topic}")).await else { return false };
            info["uid"] == uid && info["end_offset"] == end && info["durable_offset"] == end
        })
        .await;
    }

    /// Fetches a topic's whole range from a broker and checks it.
    pub async fn range(&self, id: &str, topic: &str) -> Range {
        fetch_range(&self.http, self.http_of(id), topic).await
    }

    /// Checks that a broker's copy of `topic` is exactly `reference`'s: every offset once, in order, the
    /// same bytes (by hash) and the same uid. Prints the report.
    pub async fn assert_same_copy(&self, id: &str, topic: &str, reference: &Range) {
        let range = self.range(id, topic).await;
        println!("{id:>8}: {range}");
        assert_eq!((range.lost, range.duplicated, range.out_of_order), (0, 0, 0), "{id}: {range}");
        assert_eq!(range.uid, reference.uid, "{id}: another history");
        assert_eq!((range.log_start, range.end_offset), (reference.log_start, reference.end_offset), "{id}");
        assert_eq!(range.hash, reference.hash, "{id}: the bytes differ from the reference");
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for id in self.nodes.keys() {
                eprintln!(
                    "----- {id} (last lines) -----\n{}",
                    tail(&self.dir.path().join(format!("{id}.log")), 25)
                );
            }
            eprintln!("----- registry -----\n{}", tail(&self.dir.path().join("registry.log"), 15));
        }
        for node in self.nodes.values_mut() {
            if let Some(mut process) = node.process.take() {
                process.kill();
            }
        }
    }
}

/// The segment files of `topic` in a broker's data directory, oldest first.
pub fn segment_files(data_dir: &Path, topic: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for generation in std::fs::read_dir(data_dir.join("topics").join(topic)).unwrap() {
        let generation = generation.unwrap().path();
        if !generation.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&generation).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|extension| extension == "log") {
                files.push(file);
            }
        }
    }
    files.sort();
    files
}

/// Flips one byte of a file in place.
pub fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at).unwrap();
    byte[0] ^= 0x5a;
    file.write_all_at(&byte, at).unwrap();
    file.sync_all().unwrap();
}

/// Loses what a relay had not flushed when its power went: every record of `topic` from `from_offset` on is
/// zeroed in its active (last) segment, which keeps its size, as a preallocated file would. Sealed segments
/// were synced when sealed, so they keep everything.
pub fn lose_tail(data_dir: &Path, topic: &str, from_offset: u64) {
    use std::os::unix::fs::FileExt;
    let files = segment_files(data_dir, topic);
    let active = files.last().expect("a segment");
    let file = std::fs::OpenOptions::new().read(true).write(true).open(active).unwrap();
    let size = file.metadata().unwrap().len();
    let mut position = 0u64;
    loop {
        let mut header = [0u8; 16];
        if position + 16 > size || file.read_exact_at(&mut header, position).is_err() {
            return;
        }
        let len = u32::from_le_bytes(header[..4].try_into().unwrap());
        let offset = u64::from_le_bytes(header[8..16].try_into().unwrap());
        if len == 0 {
            return;
        }
        if offset >= from_offset {
            let zeros = vec![0u8; (size - position) as usize];
            file.write_all_at(&zeros, position).unwrap();
            file.sync_all().unwrap();
            return;
        }
        position += 4 + u64::from(len);
    }
}

/// The value of `name=value` in a text log line (empty if the line has no such field).
pub fn log_field<'a>(line: &'a str, name: &str) -> &'a str {
    let key = format!(" {name}=");
    let Some(start) = line.find(&key) else { return "" };
    let value = &line[start + key.len()..];
    &value[..value.find(char::is_whitespace).unwrap_or(value.len())]
}

/// Waits (bounded by [`DEADLINE`]) until `condition` holds, polling every 20 ms.
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
