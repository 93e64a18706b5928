//! The consumer-app binary against a real broker: the five-record example, bad requests, handlers with
//! retry and dead letters (a webhook to a small server here that fails on purpose), and the command line.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use common::{AppProcess, FIVE, start_broker};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_records_end_to_end() {
    let broker = start_broker().await;
    let data = tempfile::tempdir().unwrap();
    // Three records exist before the app connects, two arrive while it streams.
    let record = |key: &str, price: u64| json!({ "key": key, "value": { "symbol": key, "price": price } });
    broker.publish("prices", json!([record("AAPL", 100), record("GOOGL", 101), record("MSFT", 102)])).await;
    let app = AppProcess::start(broker.consumers, data.path(), &[("CONSUMER_TOPICS", "prices")]).await;
    app.wait_for_position("prices", 3).await;
    broker.publish("prices", json!([record("TSLA", 103), record("AMZN", 104)])).await;
    let stats = app.wait_for_position("prices", 5).await;

    let prices = &stats["topics"]["prices"];
    assert_eq!((prices["records"].as_u64(), prices["position"].as_u64()), (Some(5), Some(5)));
    assert_eq!(prices["lag"].as_u64(), Some(0));
    assert_eq!(stats["connection"]["connected"], true);

    let (status, page) = app.get("/api/v1/topics/prices/messages").await;
    assert_eq!(status, 200);
    assert_eq!(common::offsets(&page), vec![0, 1, 2, 3, 4]);
    let keys: Vec<&str> =
        page["messages"].as_array().unwrap().iter().map(|m| m["key"].as_str().unwrap()).collect();
    assert_eq!(keys, FIVE);

    // Keys are indexed just after records become readable: wait for the index, not only the position.
    let aapl = app.wait_for("/api/v1/topics/prices/keys/AAPL", "AAPL indexed", |_| true).await;
    assert_eq!(aapl["value"], json!({ "symbol": "AAPL", "price": 100 }));
    assert_eq!(app.get("/ready").await.0, 200);

    // Bad requests through the real server: JSON bodies with 404 and 400.
    let (status, body) = app.get("/api/v1/topics/nope/messages").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_topic")));
    let (status, body) = app.get("/api/v1/topics/prices/messages?limit=1001").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_limit")));
    let (status, body) = app.get("/api/v1/topics/prices/messages/x").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_offset")));

    // The container healthcheck, as the image runs it.
    let healthcheck = std::process::Command::new(env!("CARGO_BIN_EXE_consumer-app"))
        .env_clear()
        .args(["healthcheck", "--url", &format!("http://{}/health", app.addr)])
        .status()
        .unwrap();
    assert!(healthcheck.success());

    app.stop().await;
    common::check_copy(data.path(), "prices", 5);

    // With the broker gone, a restarted app still serves its copy, and says it is ready.
    let broker_addr = broker.consumers;
    broker.stop().await;
    let app = AppProcess::start(broker_addr, data.path(), &[("CONSUMER_TOPICS", "prices")]).await;
    assert_eq!(app.get("/ready").await.0, 200);
    let (status, aapl) = app.get("/api/v1/topics/prices/keys/AAPL").await;
    assert_eq!((status, aapl["offset"].as_u64()), (200, Some(0)));
    let (_, stats) = app.get("/api/v1/stats").await;
    assert_eq!(stats["connection"]["connected"], false);
    assert_eq!(stats["topics"]["prices"]["records"].as_u64(), Some(5));
    app.stop().await;
}

/// What the webhook server saw, and how it answers: per key, how many calls fail before one succeeds.
#[derive(Debug, Default)]
struct Hook {
    /// Calls per key.
    calls: Mutex<HashMap<String, u32>>,
    /// Offsets accepted, in order.
    accepted: Mutex<Vec<u64>>,
}

async fn hook(State(hook): State<Arc<Hook>>, Json(record): Json<Value>) -> StatusCode {
    let key = record["key"].as_str().unwrap_or_default().to_string();
    let call = {
        let mut calls = hook.calls.lock().unwrap();
        let count = calls.entry(key.clone()).or_default();
        *count += 1;
        *count
    };
    let failures = match key.as_str() {
        "flaky" => 2,
        "poison" => u32::MAX,
        _ => 0,
    };
    if call <= failures {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    hook.accepted.lock().unwrap().push(record["offset"].as_u64().unwrap());
    StatusCode::NO_CONTENT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_retries_then_dead_letters_and_goes_on() {
    let state = Arc::new(Hook::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = listener.local_addr().unwrap();
    let server = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(state.clone());
    let server = tokio::spawn(async move { axum::serve(listener, server).await });

    let broker = start_broker().await;
    let records: Vec<Value> = ["ok-1", "flaky", "poison", "ok-2"]
        .iter()
        .map(|key| json!({ "key": key, "value": { "k": key } }))
        .collect();
    broker.publish("orders", Value::Array(records)).await;
    let data = tempfile::tempdir().unwrap();
    let url = format!("http://{hook_addr}/hook");
    let app = AppProcess::start(
        broker.consumers,
        data.path(),
        &[
            ("CONSUMER_TOPICS", "orders"),
            ("CONSUMER_HANDLER", "webhook"),
            ("CONSUMER_WEBHOOK_URL", &url),
            ("CONSUMER_RETRY_ATTEMPTS", "3"),
            ("CONSUMER_RETRY_BACKOFF", "10ms"),
            ("CONSUMER_RETRY_MAX_BACKOFF", "20ms"),
        ],
    )
    .await;
    let stats = app
        .wait_for("/api/v1/stats", "the handler to finish", |stats| {
            stats["handler"]["successes"].as_u64() == Some(3)
                && stats["handler"]["dead_letters"].as_u64() == Some(1)
        })
        .await;
    assert_eq!(stats["handler"]["name"], "webhook");
    // flaky failed twice, poison three times.
    assert_eq!(stats["handler"]["failures"].as_u64(), Some(5));
    assert_eq!(*state.accepted.lock().unwrap(), vec![0, 1, 3], "the stream went on past the poison record");
    assert_eq!(state.calls.lock().unwrap()["flaky"], 3);
    assert_eq!(state.calls.lock().unwrap()["poison"], 3);

    let (status, letters) = app.get("/api/v1/dead-letters").await;
    assert_eq!(status, 200);
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0]["offset"].as_u64(), letters[0]["key"].as_str()), (Some(2), Some("poison")));
    assert_eq!(letters[0]["attempts"].as_u64(), Some(3));
    assert!(letters[0]["error"].as_str().unwrap().contains("500"));

    // A record published now is handled too, and the dead letter survives a restart.
    broker.publish("orders", json!({ "key": "ok-3", "value": 1 })).await;
    app.wait_for("/api/v1/stats", "ok-3", |stats| stats["handler"]["successes"].as_u64() == Some(4)).await;
    app.stop().await;
    let app = AppProcess::start(
        broker.consumers,
        data.path(),
        &[("CONSUMER_TOPICS", "orders"), ("CONSUMER_HANDLER", "webhook"), ("CONSUMER_WEBHOOK_URL", &url)],
    )
    .await;
    let (_, letters) = app.get("/api/v1/dead-letters").await;
    assert_eq!(letters.as_array().unwrap().len(), 1);
    // Nothing is handed to the webhook twice after a clean stop.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(*state.accepted.lock().unwrap(), vec![0, 1, 3, 4]);
    app.stop().await;
    broker.stop().await;
    server.abort();
}

#[test]
fn bad_settings_exit_non_zero_with_one_line() {
    for (name, value) in [
        ("CONSUMER_MAX_IN_FLIGHT", "0"),
        ("CONSUMER_MAX_IN_FLIGHT", "lots"),
        ("CONSUMER_HANDLER", "webhook"),
        ("CONSUMER_TOPICS", "a/b"),
        ("CONSUMER_HTTP_LISTEN", "nowhere"),
        ("CONSUMER_HEARTBEAT", "5000"),
        ("CONSUMER_HEARTBEAT", "50ms"),
        ("CONSUMER_SEGMENT_BYTES", "lots"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_consumer-app"))
            .env_clear()
            .env(name, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{name}={value}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "{name}={value}: {stderr}");
        assert!(stderr.starts_with("consumer-app: "), "{name}={value}: {stderr}");
    }
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_consumer-app")).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8(help.stdout).unwrap().contains("CONSUMER_BROKER_ADDR"));
}
