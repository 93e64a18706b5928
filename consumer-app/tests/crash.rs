//! kill -9 of the real consumer-app process at random points while records stream in: after every restart
//! it resumes from its own copy, and in the end the copy holds every offset exactly once, in order.

mod common;

use std::time::Duration;

use common::{AppProcess, start_broker};

const TOTAL: u64 = 100_000;
const CHUNK: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_streaming_loses_and_duplicates_nothing() {
    let broker = start_broker().await;
    let data = tempfile::tempdir().unwrap();
    let env = [("CONSUMER_TOPICS", "stream")];
    let mut app = AppProcess::start(broker.consumers, data.path(), &env).await;
    let broker = std::sync::Arc::new(broker);
    let mut kills = 0;
    let mut published = 0;
    while published < TOTAL {
        // Records stream while the process is killed: mid-append, mid-index, mid-ack, or between batches.
        let injecting = {
            let broker = broker.clone();
            tokio::spawn(async move { broker.inject("stream", CHUNK, 100).await })
        };
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..80))).await;
        let (_, stats) = app.get("/api/v1/stats").await;
        eprintln!(
            "kill -9 at position {} while publishing {published}..{}",
            stats["topics"]["stream"]["position"],
            published + CHUNK
        );
        app.kill9();
        kills += 1;
        app = AppProcess::start(broker.consumers, data.path(), &env).await;
        injecting.await.unwrap();
        published += CHUNK;
    }
    assert!(kills >= 5);
    app.wait_for_position("stream", TOTAL).await;

    // Every offset once, in order, through the REST API ...
    let mut next = Some(0);
    let mut expected = 0;
    for _ in 0..=TOTAL / 1000 {
        let Some(from) = next else { break };
        let (status, page) = app.get(&format!("/api/v1/topics/stream/messages?from={from}&limit=1000")).await;
        assert_eq!(status, 200);
        for offset in common::offsets(&page) {
            assert_eq!(offset, expected, "lost, duplicated or out-of-order record");
            expected += 1;
        }
        next = page["next"].as_u64();
    }
    assert_eq!(expected, TOTAL);
    // ... and the key index agrees with the log: the last generated key of the last chunk is its newest record.
    // (Keys are indexed just after records become readable, so the index may need a moment to catch up.)
    let path = format!("/api/v1/topics/stream/keys/key-{}", CHUNK - 1);
    app.wait_for(&path, "the last key indexed at the last offset", |record| {
        record["offset"].as_u64() == Some(TOTAL - 1)
    })
    .await;

    // ... and in the segment files themselves.
    app.stop().await;
    common::check_copy(data.path(), "stream", TOTAL);
    if let Ok(broker) = std::sync::Arc::try_unwrap(broker) {
        broker.stop().await;
    }
}
