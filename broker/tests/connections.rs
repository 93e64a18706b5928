//! Connection floods against the real `broker` binary as a process (127.0.0.1 only): idle, half-sent HTTP
//! requests beyond `--max-http-connections` cannot starve `/health`, ingest or consumers, and the broker's
//! open files stay under the cap; 2,000 consumer connections at once beyond `--max-connections` are
//! refused with an ERROR frame while a streaming consumer loses nothing and new consumers are served
//! afterwards; and a broker out of file descriptors waits at its accept loops instead of spinning. Every
//! loop is bounded in count and time, every socket is closed at the end, and each broker is killed by PID.

mod tree;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use client::{Consumer, ConsumerConfig, Event, topic_start};
use protocol::frame::{Frame, Hello, LEVEL_CONSUMER, PROTOCOL_VERSION, Role, StartPosition, TopicStart};
use protocol::{RecordIter, TopicUid};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tree::{DEADLINE, Process, broker_binary, log_field, tail};

/// Idle, half-sent HTTP requests opened at once.
const HTTP_FLOOD: usize = 1_100;

/// Consumer connections opened at once.
const CONSUMER_STORM: usize = 2_000;

/// The line a broker's log would repeat if an accept loop spun out of file descriptors.
const OUT_OF_FILES: &str = "Too many open files";

/// A ROOT broker process and its addresses.
struct Root {
    process: Process,
    http: SocketAddr,
    tcp: SocketAddr,
    client: reqwest::Client,
    /// Holds the data directory and the log.
    dir: TempDir,
}

impl Root {
    /// Starts a ROOT broker on port 0 with the test endpoints and `args`; with `open_files`, the process
    /// runs with that hard and soft limit on open files.
    async fn start(args: &[&str], open_files: Option<u64>) -> Root {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(broker_binary());
        command
            .args(["--node-id", "root", "--level", "root"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--http-addr", "127.0.0.1:0", "--consumer-addr", "127.0.0.1:0", "--test-endpoints"])
            .args(["--segment-bytes", "8M"])
            .args(args)
            .env("RUST_LOG", "info");
        if let Some(limit) = open_files {
            // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut process = Process::spawn("root", command, &dir.path().join("root.log"));
        let line = process.wait_for_line("broker started").await;
        let http = log_field(&line, "http_addr").parse().expect("the broker logs its HTTP address");
        let tcp = log_field(&line, "consumer_addr").parse().expect("the broker logs its consumer address");
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        Root { process, http, tcp, client, dir }
    }

    /// Waits (bounded) until `/health` answers 200; returns how long that took.
    async fn wait_healthy(&mut self) -> Duration {
        let start = Instant::now();
        loop {
            self.process.assert_running();
            if let Ok(response) = self.client.get(format!("http://{}/health", self.http)).send().await
                && response.status() == 200
            {
                return start.elapsed();
            }
            assert!(start.elapsed() < DEADLINE, "/health never answered 200");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Publishes one record through the ingest endpoint; returns its offset.
    async fn publish(&self, topic: &str, value: &str) -> u64 {
        let url = format!("http://{}/api/v1/topics/{topic}/messages", self.http);
        let response =
            self.client.post(url).json(&json!({"key": "k", "value_text": value})).send().await.unwrap();
        assert_eq!(response.status(), 200, "ingest");
        let answer: Value = response.json().await.unwrap();
        answer["last_offset"].as_u64().unwrap()
    }

    /// Generates `count` records of 100 bytes.
    async fn inject(&self, topic: &str, count: u64) {
        let url = format!("http://{}/test/inject-messages", self.http);
        let body = json!({"topic": topic, "count": count, "size": 100});
        let response = self.client.post(url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200, "inject");
    }

    /// The value of a counter in `/metrics`.
    async fn metric(&self, name: &str) -> u64 {
        let text = self
            .client
            .get(format!("http://{}/metrics", self.http))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    /// Lines of this broker's log containing `text`.
    fn log_lines(&self, text: &str) -> usize {
        self.process.log_text().lines().filter(|line| line.contains(text)).count()
    }

    /// The broker's open file descriptors now.
    fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.process.pid())).map_or(0, Iterator::count)
    }

    /// Checks the broker still runs, then kills it by PID.
    fn finish(mut self) {
        self.process.assert_running();
        self.process.kill();
        drop(self.dir);
    }
}

/// Raises this test process's own open-files limit, and checks it fits `sockets`.
fn raise_own_limit(sockets: usize) {
    let limit = service::raise_open_files_limit(0).expect("the open-files limit can be read");
    let needed = u64::try_from(sockets).unwrap() + 256;
    assert!(limit >= needed, "this test needs {needed} open files; the hard limit allows {limit}");
}

/// Connects a `client::Consumer` of `group` to `topic` from the earliest offset, retrying (bounded) while
/// the broker refuses or is out of reach.
async fn connect_consumer(tcp: SocketAddr, group: &str, topic: &str) -> Consumer {
    let start = Instant::now();
    loop {
        let mut config = ConsumerConfig::new(group, group, vec![topic_start(topic, StartPosition::Earliest)]);
        config.heartbeat = Duration::from_millis(500);
        match Consumer::connect(tcp, config).await {
            Ok((consumer, _welcome)) => return consumer,
            Err(error) => assert!(start.elapsed() < DEADLINE, "no consumer could connect: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a consumer received: the next offset it expects, and offsets that came twice or never.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Received {
    next: u64,
    duplicated: u64,
    lost: u64,
}

/// Receives and acknowledges `topic` until offset `end` (bounded by [`DEADLINE`]), counting offsets
/// lost, duplicated or out of order.
async fn receive_until(consumer: &mut Consumer, topic: &str, end: u64) -> Received {
    let mut received = Received::default();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while received.next < end {
        let event = tokio::time::timeout_at(deadline, consumer.next_event())
            .await
            .unwrap_or_else(|_| panic!("stuck at offset {} of {end}", received.next))
            .expect("the consumer keeps streaming");
        let Event::Batch(batch) = event else { continue };
        for record in RecordIter::new(&batch.records) {
            let offset = record.expect("records pass their CRC").offset();
            if offset < received.next {
                received.duplicated += 1;
                continue;
            }
            received.lost += offset - received.next;
            received.next = offset + 1;
        }
        consumer.ack(topic, batch.last_offset + 1).await.expect("ack");
    }
    received
}

/// Opens `n` connections to `http` at once, each sending a request line and half a header and then
/// nothing. Returns once every connection is open, with the sender that releases them and the tasks
/// holding them (each ends when released or when the broker closes it).
async fn open_half_requests(http: SocketAddr, n: usize) -> (watch::Sender<bool>, JoinSet<()>) {
    let (release, released) = watch::channel(false);
    let (opened, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut holders = JoinSet::new();
    for _ in 0..n {
        let (mut released, opened, failed) = (released.clone(), Arc::clone(&opened), Arc::clone(&failed));
        holders.spawn(async move {
            let connected = tokio::time::timeout(DEADLINE, TcpStream::connect(http)).await;
            opened.fetch_add(1, Ordering::Relaxed);
            let Ok(Ok(mut stream)) = connected else {
                failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            if stream.write_all(b"GET /health HTTP/1.1\r\nHost: fl").await.is_err() {
                return;
            }
            let mut byte = [0u8; 1];
            tokio::select! {
                _ = released.wait_for(|release| *release) => {}
                _ = stream.read(&mut byte) => {}
            }
        });
    }
    let start = Instant::now();
    while opened.load(Ordering::Relaxed) < n {
        assert!(start.elapsed() < DEADLINE, "the flood never finished connecting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "connections of the flood could not connect");
    (release, holders)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_half_sent_http_requests_cannot_starve_the_broker() {
    raise_own_limit(HTTP_FLOOD + 16);
    let mut root = Root::start(&["--max-http-connections", "200", "--http-header-timeout", "1s"], None).await;
    root.wait_healthy().await;
    let quiet_files = root.open_files();

    let (release, mut holders) = open_half_requests(root.http, HTTP_FLOOD).await;
    // While the flood is held open, watch the broker's descriptors; the cap must bound them.
    let sampling = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (pid, peak) = (root.process.pid(), Arc::clone(&sampling));
        tokio::spawn(async move {
            for _ in 0..3_000 {
                let open = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
                peak.fetch_max(open, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let health_took = root.wait_healthy().await;
    sampler.abort();
    let peak_files = sampling.load(Ordering::Relaxed);
    println!(
        "{HTTP_FLOOD} half-sent requests (cap 200, header timeout 1s): /health answered after {health_took:?}; \
         the broker's open files peaked at {peak_files} ({quiet_files} before the flood)"
    );
    assert!(
        peak_files <= quiet_files + 200 + 16,
        "the HTTP cap did not bound the broker's descriptors: {peak_files} open, {quiet_files} before"
    );

    let first = root.publish("flood", "during the flood").await;
    root.inject("flood", 999).await;
    let mut consumer = connect_consumer(root.tcp, "after-flood", "flood").await;
    let received = receive_until(&mut consumer, "flood", first + 1000).await;
    assert_eq!(received, Received { next: first + 1000, duplicated: 0, lost: 0 });
    drop(consumer);

    release.send_replace(true);
    let start = Instant::now();
    while holders.join_next().await.is_some() {
        assert!(start.elapsed() < DEADLINE, "the flood's sockets did not close");
    }
    assert_eq!(root.log_lines(OUT_OF_FILES), 0, "{}", tail(&root.process.log, 20));
    root.finish();
}

/// What one connection of the storm heard first.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// WELCOME: served.
    Welcomed,
    /// An ERROR frame, with its message.
    Refused(String),
    /// The broker closed the connection without a frame.
    Closed,
    /// Connecting failed.
    NotConnected,
    /// Nothing within the deadline: the connection hung.
    Hung,
    /// Another frame.
    Other(&'static str),
}

/// Connects and sends HELLO (its own group, the idle topic from its end), then reads the first frame.
async fn first_answer(tcp: SocketAddr, n: usize) -> (Answer, Option<TcpStream>) {
    let Ok(Ok(mut stream)) = tokio::time::timeout(DEADLINE, TcpStream::connect(tcp)).await else {
        return (Answer::NotConnected, None);
    };
    let hello = Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        role: Role::Consumer,
        level: LEVEL_CONSUMER,
        client_id: format!("storm-{n}"),
        group: format!("storm-{n}"),
        token: String::new(),
        max_in_flight: 0,
        batch_max_records: 0,
        batch_max_bytes: 0,
        topics: vec![TopicStart {
            topic: "idle".into(),
            uid: TopicUid::UNKNOWN,
            epoch: protocol::NO_EPOCH,
            start: StartPosition::Latest,
        }],
    });
    let mut bytes = Vec::new();
    hello.encode(&mut bytes).unwrap();
    if stream.write_all(&bytes).await.is_err() {
        return (Answer::Closed, None);
    }
    let mut buffer = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some((frame, _)) = Frame::decode(&buffer, 1 << 20).expect("the broker sends valid frames") {
            let answer = match frame {
                Frame::Welcome(_) => Answer::Welcomed,
                Frame::Error(error) => Answer::Refused(format!("{}: {}", error.code.name(), error.message)),
                other => Answer::Other(other.name()),
            };
            return (answer, Some(stream));
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return (Answer::Hung, Some(stream)),
            Ok(Ok(0) | Err(_)) => return (Answer::Closed, None),
            Ok(Ok(n)) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Opens `n` consumer connections at once and returns what each heard first; every connection is kept
/// open until all have an answer, then closed.
async fn consumer_storm(tcp: SocketAddr, n: usize) -> Vec<Answer> {
    let (release, released) = watch::channel(false);
    let (answers, mut answered) = mpsc::channel(n);
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let (mut released, answers) = (released.clone(), answers.clone());
        tasks.spawn(async move {
            let (answer, stream) = first_answer(tcp, i).await;
            let _ = answers.send(answer).await;
            let _ = released.wait_for(|release| *release).await;
            drop(stream);
        });
    }
    drop(answers);
    let mut all = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + DEADLINE * 2;
    while all.len() < n {
        match tokio::time::timeout_at(deadline, answered.recv()).await {
            Ok(Some(answer)) => all.push(answer),
            Ok(None) | Err(_) => panic!("only {} of {n} connections were answered", all.len()),
        }
    }
    release.send_replace(true);
    while tasks.join_next().await.is_some() {}
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_beyond_the_limit_are_refused_while_a_stream_goes_on() {
    raise_own_limit(CONSUMER_STORM + 16);
    let mut root = Root::start(&["--max-connections", "500", "--heartbeat", "5s"], None).await;
    root.wait_healthy().await;
    root.publish("idle", "a topic nobody writes to again").await;
    let first = root.publish("stream", "the first record").await;
    const ROUNDS: u64 = 50;
    const PER_ROUND: u64 = 100;
    let end = first + 1 + ROUNDS * PER_ROUND;

    let mut streaming = connect_consumer(root.tcp, "streaming", "stream").await;
    // The streaming consumer keeps its place until the storm is over, so the storm's count is exact.
    let receiving = tokio::spawn(async move {
        let received = receive_until(&mut streaming, "stream", end).await;
        (received, streaming)
    });
    let injecting = async {
        for _ in 0..ROUNDS {
            root.inject("stream", PER_ROUND).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (answers, ()) = tokio::join!(consumer_storm(root.tcp, CONSUMER_STORM), injecting);
    let (received, streaming) =
        tokio::time::timeout(DEADLINE, receiving).await.expect("the stream finished").unwrap();

    let count = |wanted: fn(&Answer) -> bool| answers.iter().filter(|answer| wanted(answer)).count();
    let welcomed = count(|answer| *answer == Answer::Welcomed);
    let refused = count(|answer| matches!(answer, Answer::Refused(_)));
    let closed = count(|answer| *answer == Answer::Closed);
    println!(
        "{CONSUMER_STORM} consumer connections at once, limit 500 (one taken by the streaming consumer): \
         {welcomed} welcomed, {refused} refused with ERROR, {closed} closed without a frame; the stream \
         received {received:?} of {end}"
    );
    let unexpected: Vec<&Answer> = answers
        .iter()
        .filter(|answer| !matches!(answer, Answer::Welcomed | Answer::Refused(_) | Answer::Closed))
        .collect();
    assert!(unexpected.is_empty(), "hung or odd answers: {:?}", &unexpected[..unexpected.len().min(5)]);
    assert_eq!(welcomed, 499, "every free place and no more is served");
    assert_eq!(refused + closed, CONSUMER_STORM - 499);
    assert!(refused > 0, "refused connections hear why");
    for answer in &answers {
        if let Answer::Refused(message) = answer {
            assert!(message.starts_with("TOO_MANY_CONNECTIONS: too many connections"), "{message}");
        }
    }
    assert_eq!(
        received,
        Received { next: end, duplicated: 0, lost: 0 },
        "the stream lost or repeated records"
    );
    let counted = root.metric("relay_connections_refused_total").await;
    assert_eq!(
        counted,
        u64::try_from(refused + closed).unwrap(),
        "relay_connections_refused counts each refusal once:\n{}",
        tail(&root.process.log, 20)
    );

    drop(streaming);

    // The places of the storm's connections are free again.
    let mut late = connect_consumer(root.tcp, "late", "stream").await;
    let received = receive_until(&mut late, "stream", end).await;
    assert_eq!(received, Received { next: end, duplicated: 0, lost: 0 });
    drop(late);
    assert_eq!(root.log_lines(OUT_OF_FILES), 0, "{}", tail(&root.process.log, 20));
    assert_eq!(root.log_lines("refusing consumer connections"), 1, "one warning for the whole episode");
    root.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_accept_loops_wait_instead_of_spinning() {
    const FLOOD: usize = 600;
    raise_own_limit(FLOOD + 16);
    // A cap far above what the process may open: the limit is reached, and accept fails with EMFILE.
    let args = ["--max-http-connections", "5000", "--http-header-timeout", "1s"];
    let mut root = Root::start(&args, Some(256)).await;
    root.wait_healthy().await;

    let (release, mut holders) = open_half_requests(root.http, FLOOD).await;
    let health_took = root.wait_healthy().await;
    release.send_replace(true);
    let start = Instant::now();
    while holders.join_next().await.is_some() {
        assert!(start.elapsed() < DEADLINE, "the flood's sockets did not close");
    }
    let failures = root.log_lines("accepting connections fails");
    let resumed = root.log_lines("accepting connections again");
    let out_of_files = root.log_lines(OUT_OF_FILES);
    println!(
        "{FLOOD} half-sent requests against 256 open files: /health answered after {health_took:?}; the log \
         has {failures} backoff warnings, {resumed} recoveries, {out_of_files} lines naming EMFILE"
    );
    assert!(failures >= 1, "the flood never exhausted the descriptors: {}", tail(&root.process.log, 20));
    assert!(out_of_files <= 2 * failures, "one line per episode, not per failed accept");
    assert!(failures <= 60, "{failures} warnings: the accept loop logged (or spun) per failure");

    // Everything works again once the descriptors are back.
    let first = root.publish("after", "after the flood").await;
    root.inject("after", 99).await;
    let mut consumer = connect_consumer(root.tcp, "after", "after").await;
    assert_eq!(receive_until(&mut consumer, "after", first + 100).await.next, first + 100);
    drop(consumer);
    root.finish();
}
