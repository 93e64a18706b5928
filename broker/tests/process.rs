//! The real `broker` binary as a process: command-line errors, SIGTERM, and committed offsets and traffic
//! across a restart on the same data directory.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client::{Consumer, ConsumerConfig, Event};
use common::{WAIT, records_of, start};
use protocol::frame::StartPosition;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_broker");

/// A broker process and the addresses it reported.
struct Process {
    child: Child,
    http: SocketAddr,
    consumers: SocketAddr,
}

/// Starts the binary on `data_dir` with ports chosen by the system, and reads its addresses from the
/// JSON log line that announces the start.
fn spawn(data_dir: &Path) -> Process {
    let mut child = Command::new(BIN)
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .args(["--http-addr", "127.0.0.1:0", "--consumer-addr", "127.0.0.1:0"])
        .args(["--test-endpoints", "--log-json", "--heartbeat", "500ms", "--segment-bytes", "8M"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + WAIT;
    let (http, consumers) = loop {
        assert!(Instant::now() < deadline, "the broker never reported its start");
        let line = lines.next().expect("the broker exited before starting").unwrap();
        let Ok(entry) = serde_json::from_str::<Value>(&line) else { continue };
        let fields = &entry["fields"];
        if fields["message"] == "broker started" {
            break (
                fields["http_addr"].as_str().unwrap().parse().unwrap(),
                fields["consumer_addr"].as_str().unwrap().parse().unwrap(),
            );
        }
    };
    // Keep draining the pipe so the broker never blocks on a full stderr.
    std::thread::spawn(move || for _ in lines {});
    Process { child, http, consumers }
}

/// Sends SIGTERM and returns the exit status, waiting a bounded time.
fn terminate(mut process: Process) -> std::process::ExitStatus {
    let pid = i32::try_from(process.child.id()).unwrap();
    // SAFETY: kill(2) with a PID we started and still own; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = process.child.kill();
            panic!("the broker did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn post(http: SocketAddr, path: &str, body: Value) -> Value {
    let response =
        reqwest::Client::new().post(format!("http://{http}{path}")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Consumes and acknowledges `topic` from the committed offset until `end`; checks every offset once, in
/// order, starting at `expected_start`.
async fn consume(process: &Process, topic: &str, expected_start: u64, end: u64) {
    let mut config =
        ConsumerConfig::new("restart-test", "durable", vec![start(topic, StartPosition::Committed)]);
    config.heartbeat = Duration::from_millis(500);
    let (mut consumer, welcome) = Consumer::connect(process.consumers, config).await.unwrap();
    assert_eq!(welcome.topics[0].start_at, expected_start);
    let mut next = expected_start;
    let started = Instant::now();
    while next < end {
        let event = tokio::time::timeout(WAIT, consumer.next_event()).await.unwrap().unwrap();
        let Event::Batch(batch) = event else { panic!("unexpected {event:?}") };
        for record in records_of(&batch) {
            assert_eq!(record.offset, next);
            next += 1;
        }
        consumer.ack(topic, next).await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "consumed {} records of 100 B over TCP in {elapsed:?} ({:.0} records/s, batches of 10, window 8)",
        end - expected_start,
        (end - expected_start) as f64 / elapsed.as_secs_f64()
    );
    // The last commit is written within the group-commit interval; wait for it to show.
    let deadline = Instant::now() + WAIT;
    loop {
        let stats: Value =
            reqwest::get(format!("http://{}/test/stats", process.http)).await.unwrap().json().await.unwrap();
        let committed = stats["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["topic"] == topic)
            .map(|e| e["committed"].clone());
        if committed == Some(json!(end)) {
            break;
        }
        assert!(Instant::now() < deadline, "commit of {end} never showed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn bad_flags_and_values_exit_with_one_line() {
    for args in
        [&["--no-such-flag"][..], &["--level", "moon"], &["--heartbeat", "5"], &["--max-in-flight", "0"]]
    {
        let output = Command::new(BIN).args(args).output().unwrap();
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("broker: "), "{stderr}");
    }
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(help.contains("BROKER_TEST_ENDPOINTS") && help.contains("--max-body-bytes"), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_and_traffic_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let process = spawn(&data);
    let healthcheck = Command::new(BIN)
        .args(["healthcheck", "--url", &format!("http://{}/health", process.http)])
        .output()
        .unwrap();
    assert!(healthcheck.status.success(), "{healthcheck:?}");
    const ROUND: u64 = 50_000;
    for round in 0..3 {
        let answer =
            post(process.http, "/test/inject-messages", json!({"topic": "t", "count": ROUND, "size": 100}))
                .await;
        assert_eq!(answer["last_offset"], (round + 1) * ROUND - 1);
        println!("injected {ROUND} records of 100 B in {} ms", answer["elapsed_ms"]);
        consume(&process, "t", round * ROUND, (round + 1) * ROUND).await;
    }
    let status = terminate(process);
    assert!(status.success(), "{status:?}");

    let process = spawn(&data);
    let answer =
        post(process.http, "/test/inject-messages", json!({"topic": "t", "count": ROUND, "size": 100})).await;
    assert_eq!(answer["first_offset"], 3 * ROUND);
    consume(&process, "t", 3 * ROUND, 4 * ROUND).await;
    let status = terminate(process);
    assert!(status.success(), "{status:?}");
    let down = Command::new(BIN)
        .args(["healthcheck", "--url", "http://127.0.0.1:1/health", "--timeout", "1s"])
        .output()
        .unwrap();
    assert!(!down.status.success());
}
