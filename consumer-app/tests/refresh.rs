//! Full refresh through a real broker: while 200,000 records are refreshed, a client polling the REST API
//! every few milliseconds only ever sees the complete old copy and then the complete new one; and a kill -9
//! in the middle of a refresh leaves the old copy serving, and the refresh is asked for again.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{AppProcess, start_broker};
use serde_json::Value;

const TOTAL: u64 = 200_000;

/// One look at the copy as a client sees it; panics on anything but a complete copy.
async fn check_complete(app: &AppProcess) -> bool {
    let (status, topics) = app.get("/api/v1/topics").await;
    assert_eq!(status, 200);
    let topic = topics.as_array().unwrap().iter().find(|topic| topic["topic"] == "prices").cloned();
    let topic = topic.expect("the copy disappeared");
    assert_eq!(
        (topic["first_offset"].as_u64(), topic["records"].as_u64()),
        (Some(0), Some(TOTAL)),
        "{topic}"
    );
    let (status, last) = app.get(&format!("/api/v1/topics/prices/messages?from={}&limit=1", TOTAL - 1)).await;
    assert_eq!(status, 200, "{last}");
    assert_eq!(common::offsets(&last), vec![TOTAL - 1], "{last}");
    let (status, first) = app.get("/api/v1/topics/prices/messages/0").await;
    assert_eq!((status, first["offset"].as_u64()), (200, Some(0)), "{first}");
    // key-0 was written first at offset 0 and never again.
    // (Keys are indexed just after records become readable, so the index may need a moment to catch up.)
    let key = app.wait_for("/api/v1/topics/prices/keys/key-0", "key-0 indexed", |_| true).await;
    assert_eq!(key["offset"].as_u64(), Some(0), "{key}");
    topic["refreshing"] == true
}

fn refreshes_completed(stats: &Value) -> usize {
    stats["recent_refreshes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|refresh| refresh["outcome"] == "completed")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_a_partial_copy_and_a_crash_keeps_the_old_one() {
    let broker = start_broker().await;
    broker.inject("prices", TOTAL, 100).await;
    let data = tempfile::tempdir().unwrap();
    let env = [("CONSUMER_TOPICS", "prices"), ("CONSUMER_ID", "till-1")];
    let app = Arc::new(AppProcess::start(broker.consumers, data.path(), &env).await);
    app.wait_for_position("prices", TOTAL).await;

    // A client polls every few milliseconds while the app refreshes.
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut polls, mut during_refresh) = (0u64, 0u64);
            while !stop.load(Ordering::SeqCst) && polls < 100_000 {
                if check_complete(&app).await {
                    during_refresh += 1;
                }
                polls += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (polls, during_refresh)
        })
    };
    let (status, answer) = app.post("/api/v1/refresh", r#"{"topic":"prices"}"#).await;
    assert_eq!(status, 202, "{answer}");
    let stats = app.wait_for("/api/v1/stats", "the refresh", |stats| refreshes_completed(stats) == 1).await;
    stop.store(true, Ordering::SeqCst);
    let (polls, during_refresh) = poller.await.unwrap();
    eprintln!("{polls} polls, {during_refresh} of them while the refresh ran");
    assert!(during_refresh > 0, "the poller never ran during the refresh");
    let refresh = &stats["recent_refreshes"][0];
    assert_eq!(refresh["n_records"].as_u64(), Some(TOTAL));
    assert!(stats["topics"]["prices"]["last_refresh_ms"].as_u64().is_some());
    check_complete(&app).await;

    // Now an operator refresh from the broker, and kill -9 half way through it.
    let (status, answer) = broker.post("/api/v1/groups/till-1/refresh", &serde_json::json!({})).await;
    assert_eq!(status, 200, "{answer}");
    app.wait_for("/api/v1/stats", "the refresh to be half way", |stats| {
        let n = stats["connection"]["refreshing"]["prices"]["n_records"].as_u64().unwrap_or(0);
        n > 0 && n < TOTAL / 2
    })
    .await;
    let Ok(app) = Arc::try_unwrap(app) else { panic!("the poller still holds the app") };
    app.kill9();

    // The restarted app serves the old copy at once, and asks for the refresh again.
    let app = AppProcess::start(broker.consumers, data.path(), &env).await;
    check_complete(&app).await;
    let stats = app
        .wait_for("/api/v1/stats", "the refresh asked again", |stats| refreshes_completed(stats) == 2)
        .await;
    let abandoned =
        stats["recent_refreshes"].as_array().unwrap().iter().filter(|r| r["outcome"] == "abandoned").count();
    assert_eq!(abandoned, 1, "{stats}");
    check_complete(&app).await;
    app.stop().await;
    common::check_copy(data.path(), "prices", TOTAL);
    broker.stop().await;
}
