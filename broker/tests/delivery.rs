//! Delivery over real sockets: publish over HTTP, consume over TCP with the `client` crate.

mod common;

use client::Event;
use common::{Groups, TestBroker, next_event, receive_until, records_of, seek, start};
use protocol::frame::{ErrorCode, StartPosition};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_messages_arrive_in_order_and_commit() {
    let broker = TestBroker::start().await;
    let symbols = ["AAPL", "GOOGL", "MSFT", "TSLA", "AMZN"];
    for (index, symbol) in symbols.iter().enumerate() {
        let answer = broker.publish("prices", json!({"key": symbol, "value": {"price": index}})).await;
        assert_eq!(answer["first_offset"], index);
        assert_eq!(answer["count"], 1);
    }
    let (mut consumer, welcome) =
        broker.consumer("app", vec![start("prices", StartPosition::Committed)]).await;
    assert_eq!(welcome.topics.len(), 1);
    assert_eq!((welcome.topics[0].start_at, welcome.topics[0].end_offset), (0, 5));
    let seen = receive_until(&mut consumer, "prices", 5).await;
    let keys: Vec<&str> = seen.iter().map(|record| record.key.as_str()).collect();
    assert_eq!(keys, symbols);
    assert_eq!(seen.iter().map(|record| record.offset).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    assert_eq!(seen[2].value, br#"{"price":2}"#);
    broker.wait_committed("app", "prices", 5).await;
    // A graceful stop tells connected consumers.
    broker.stop().await;
    match next_event(&mut consumer).await {
        Event::Error(error) => assert_eq!((error.code, error.fatal), (ErrorCode::ShuttingDown, true)),
        other => panic!("expected SHUTTING_DOWN, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_earliest_latest_and_offset() {
    let broker = TestBroker::start().await;
    broker.inject("ticks", 20, 10).await;
    let (mut consumer, _) = broker.consumer("seeker", vec![start("ticks", StartPosition::Earliest)]).await;
    assert_eq!(receive_until(&mut consumer, "ticks", 20).await.len(), 20);

    assert_eq!(seek(&mut consumer, "ticks", StartPosition::Offset(15)).await.start_at, 15);
    let again = receive_until(&mut consumer, "ticks", 20).await;
    assert_eq!(again.first().map(|record| record.offset), Some(15));
    assert_eq!(again.len(), 5);

    assert_eq!(seek(&mut consumer, "ticks", StartPosition::Earliest).await.start_at, 0);
    let all = receive_until(&mut consumer, "ticks", 20).await;
    assert_eq!(all.iter().map(|record| record.offset).collect::<Vec<_>>(), (0..20).collect::<Vec<_>>());

    // Beyond the end: a non-fatal error, and delivery resumes from the last acknowledgement.
    consumer.seek("ticks", StartPosition::Offset(500)).await.unwrap();
    match next_event(&mut consumer).await {
        Event::Error(error) => assert_eq!((error.code, error.fatal), (ErrorCode::OffsetOutOfRange, false)),
        other => panic!("expected OFFSET_OUT_OF_RANGE, got {other:?}"),
    }
    match next_event(&mut consumer).await {
        Event::Position(position) => assert_eq!(position.start_at, 20),
        other => panic!("expected POSITION, got {other:?}"),
    }

    let position = seek(&mut consumer, "ticks", StartPosition::Latest).await;
    assert_eq!((position.start_at, position.end_offset), (20, 20));
    broker.inject("ticks", 1, 10).await;
    let latest = receive_until(&mut consumer, "ticks", 21).await;
    assert_eq!(latest.iter().map(|record| record.offset).collect::<Vec<_>>(), vec![20]);
    broker.stop().await;
}

/// Collects a full refresh: RESET, batches, READY. Returns (log_start, end, offsets).
async fn collect_refresh(consumer: &mut client::Consumer, topic: &str) -> (u64, u64, Vec<u64>) {
    let mut reset = loop {
        match next_event(consumer).await {
            Event::Reset(reset) => break reset,
            // Batches sent before the refresh began may still be arriving.
            Event::Batch(batch) => consumer.ack(topic, batch.last_offset + 1).await.unwrap(),
            other => panic!("expected RESET, got {other:?}"),
        }
    };
    assert_eq!(reset.topic, topic);
    let mut offsets = Vec::new();
    loop {
        match next_event(consumer).await {
            Event::Batch(batch) => {
                offsets.extend(records_of(&batch).iter().map(|record| record.offset));
                consumer.ack(topic, batch.last_offset + 1).await.unwrap();
            }
            // Retention overtook the refresh itself (its start was deleted while it ran): the broker
            // starts it again from the new log start, and what was collected so far is dropped.
            Event::Reset(again) => {
                assert_eq!(again.topic, topic);
                assert!(again.log_start > reset.log_start, "a repeated RESET only moves forward");
                reset = again;
                offsets.clear();
            }
            Event::Ready(ready) => {
                assert_eq!(ready.end_offset, reset.end_offset);
                assert_eq!(ready.uid, reset.uid);
                return (reset.log_start, ready.end_offset, offsets);
            }
            other => panic!("expected BATCH or READY, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_refresh_when_asked() {
    let broker = TestBroker::start().await;
    broker.inject("catalog", 35, 50).await;
    let (mut consumer, welcome) =
        broker.consumer("shop", vec![start("catalog", StartPosition::FullRefresh)]).await;
    assert_eq!(welcome.topics[0].start_at, 0);
    let (log_start, end, offsets) = collect_refresh(&mut consumer, "catalog").await;
    assert_eq!((log_start, end), (0, 35));
    assert_eq!(offsets, (0..35).collect::<Vec<_>>());
    // After READY the group's position is the refresh's end, and delivery goes on from there.
    broker.wait_committed("shop", "catalog", 35).await;
    broker.inject("catalog", 2, 50).await;
    assert_eq!(receive_until(&mut consumer, "catalog", 37).await.len(), 2);

    // A SEEK can ask for a refresh too.
    assert_eq!(seek(&mut consumer, "catalog", StartPosition::FullRefresh).await.start_at, 0);
    let (_, end, offsets) = collect_refresh(&mut consumer, "catalog").await;
    assert_eq!((end, offsets.len()), (37, 37));
    drop(consumer);

    // A copy of another history (another uid) gets a full refresh whatever it asks for.
    let other_history = protocol::frame::TopicStart {
        topic: "catalog".into(),
        uid: protocol::TopicUid(12345),
        epoch: protocol::NO_EPOCH,
        start: StartPosition::Offset(20),
    };
    let (mut consumer, welcome) = broker.consumer("shop2", vec![other_history]).await;
    assert_eq!(welcome.topics[0].start_at, 0);
    let (_, end, offsets) = collect_refresh(&mut consumer, "catalog").await;
    assert_eq!((end, offsets.len()), (37, 37));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_refresh_reaches_live_and_later_members() {
    let broker = TestBroker::start().await;
    broker.inject("promos", 12, 20).await;
    let (mut consumer, _) = broker.consumer("tills", vec![start("promos", StartPosition::Committed)]).await;
    receive_until(&mut consumer, "promos", 12).await;
    broker.wait_committed("tills", "promos", 12).await;

    let (status, answer) = broker.post("/api/v1/groups/tills/refresh", &json!({"topic": "promos"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["live"], json!(["promos"]));
    let (_, end, offsets) = collect_refresh(&mut consumer, "promos").await;
    assert_eq!((end, offsets), (12, (0..12).collect::<Vec<_>>()));
    // The broker marks the refresh done once it has the consumer's ACK after READY; an ACK still on its way
    // when the next refresh starts would be taken for that one's (an ACK names no refresh), so wait for it.
    common::wait_until("the first refresh is done", || async {
        let (_, groups) = broker.get("/api/v1/groups").await;
        groups["groups"].as_array().is_some_and(|rows| {
            rows.iter().any(|row| row["group"] == "tills" && row["refresh_pending"] == false)
        })
    })
    .await;
    drop(consumer);

    // No live member now: the refresh waits for the group's next HELLO.
    broker.wait_committed("tills", "promos", 12).await;
    let (status, answer) = broker.post("/api/v1/groups/tills/refresh", &json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["topics"], json!(["promos"]));
    let (mut consumer, welcome) =
        broker.consumer("tills", vec![start("promos", StartPosition::Committed)]).await;
    assert_eq!(welcome.topics[0].start_at, 0);
    let (_, end, offsets) = collect_refresh(&mut consumer, "promos").await;
    assert_eq!((end, offsets.len()), (12, 12));

    let (status, answer) = broker.post("/api/v1/groups/nobody/refresh", &json!({})).await;
    assert_eq!((status, answer["error"].as_str()), (404, Some("unknown_group")));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_topics_and_waiting_topics_are_announced() {
    let broker = TestBroker::start().await;
    broker.inject("first", 3, 10).await;
    let (mut everything, welcome) = broker.consumer("all", vec![start("*", StartPosition::Earliest)]).await;
    assert_eq!(welcome.topics.iter().map(|topic| topic.topic.as_str()).collect::<Vec<_>>(), vec!["first"]);
    let (mut waiter, welcome) = broker.consumer("waiter", vec![start("later", StartPosition::Latest)]).await;
    assert!(welcome.topics[0].uid.is_unknown());
    assert_eq!(receive_until(&mut everything, "first", 3).await.len(), 3);

    let answer = broker.publish("later", json!([{"key": "k1"}, {"key": "k2"}])).await;
    assert_eq!(answer["count"], 2);
    for consumer in [&mut everything, &mut waiter] {
        match next_event(consumer).await {
            Event::Topic(topic) => {
                assert_eq!(topic.topic, "later");
                assert_eq!(topic.uid.to_string(), answer["uid"].as_str().unwrap());
            }
            other => panic!("expected TOPIC, got {other:?}"),
        }
        let seen = receive_until(consumer, "later", 2).await;
        assert_eq!(seen.iter().map(|record| record.key.as_str()).collect::<Vec<_>>(), vec!["k1", "k2"]);
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_independent_and_a_newer_member_takes_over() {
    let broker = TestBroker::start().await;
    broker.inject("stock", 10, 10).await;
    let (mut first, _) = broker.consumer("a", vec![start("stock", StartPosition::Committed)]).await;
    let (mut other_group, _) = broker.consumer("b", vec![start("stock", StartPosition::Committed)]).await;
    assert_eq!(receive_until(&mut first, "stock", 10).await.len(), 10);
    assert_eq!(receive_until(&mut other_group, "stock", 10).await.len(), 10);
    broker.wait_committed("a", "stock", 10).await;

    let (mut second, welcome) = broker.consumer("a", vec![start("stock", StartPosition::Committed)]).await;
    assert_eq!(welcome.topics[0].start_at, 10);
    match next_event(&mut first).await {
        Event::Error(error) => assert_eq!((error.code, error.fatal), (ErrorCode::Superseded, true)),
        other => panic!("expected SUPERSEDED, got {other:?}"),
    }
    broker.inject("stock", 5, 10).await;
    let seen = receive_until(&mut second, "stock", 15).await;
    assert_eq!(seen.iter().map(|record| record.offset).collect::<Vec<_>>(), (10..15).collect::<Vec<_>>());
    assert_eq!(receive_until(&mut other_group, "stock", 15).await.len(), 5);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_readable_over_http() {
    let broker = TestBroker::start().await;
    broker.publish("prices", json!([{"key": "a", "value": 1}, {"key": "b", "value_text": "two"}])).await;
    let (status, list) = broker.get("/api/v1/topics").await;
    assert_eq!(status, 200);
    assert_eq!(list["topics"][0]["topic"], "prices");
    let (status, topic) = broker.get("/api/v1/topics/prices").await;
    assert_eq!((status, topic["end_offset"].as_u64(), topic["log_start"].as_u64()), (200, Some(2), Some(0)));
    let (status, page) = broker.get("/api/v1/topics/prices/records?from=1&limit=5").await;
    assert_eq!(status, 200);
    assert_eq!(page["records"][0]["value_text"], "two");
    assert_eq!(page["next"], 2);

    let response = broker
        .client
        .get(broker.url("/api/v1/topics/prices/records?from=0&max_bytes=100000"))
        .header("accept", "application/octet-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-first-offset"], "0");
    assert_eq!(response.headers()["x-next-offset"], "2");
    let bytes = response.bytes().await.unwrap();
    assert_eq!(protocol::check_batch(&bytes, 0).unwrap().n_records, 2);

    let (status, missing) = broker.get("/api/v1/topics/nope").await;
    assert_eq!((status, missing["error"].as_str()), (404, Some("unknown_topic")));
    let metrics = broker.client.get(broker.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("relay_log_end_offset{topic=\"prices\"} 2"), "{metrics}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_acking_is_dropped_and_resumes_from_its_commit() {
    let broker = TestBroker::start_with(|config| {
        config.slow_consumer_timeout = std::time::Duration::from_millis(800);
        config.heartbeat = std::time::Duration::from_millis(200);
    })
    .await;
    broker.inject("slow", 500, 10).await;
    let (mut consumer, _) = broker
        .consumer_with("lazy", vec![start("slow", StartPosition::Committed)], |config| {
            config.batch_max_records = 10;
        })
        .await;
    // Acknowledge the first 30 records, then keep reading without acknowledging.
    assert_eq!(receive_until(&mut consumer, "slow", 30).await.len(), 30);
    broker.wait_committed("lazy", "slow", 30).await;
    let mut unacked_batches = 0;
    let error = loop {
        match next_event(&mut consumer).await {
            Event::Batch(_) => unacked_batches += 1,
            Event::Error(error) => break error,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!((error.code, error.fatal), (ErrorCode::SlowConsumer, true));
    // The in-flight window bounded what was sent without acknowledgement.
    assert!(unacked_batches <= 8, "{unacked_batches} batches were sent past the window");
    let (mut consumer, welcome) =
        broker.consumer("lazy", vec![start("slow", StartPosition::Committed)]).await;
    assert_eq!(welcome.topics[0].start_at, 30);
    let rest = receive_until(&mut consumer, "slow", 500).await;
    assert_eq!(rest.first().map(|record| record.offset), Some(30));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_below_the_log_start_gets_a_full_refresh() {
    let broker = TestBroker::start_with(|config| {
        config.segment_bytes = 4096;
        config.retention_bytes = 16 * 1024;
        config.retention_check_interval = std::time::Duration::from_millis(20);
    })
    .await;
    broker.inject("short", 10, 100).await;
    let (mut consumer, _) = broker.consumer("behind", vec![start("short", StartPosition::Committed)]).await;
    receive_until(&mut consumer, "short", 10).await;
    broker.wait_committed("behind", "short", 10).await;
    drop(consumer);
    broker.inject("short", 1000, 100).await;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    let log_start = loop {
        let (_, topic) = broker.get("/api/v1/topics/short").await;
        let log_start = topic["log_start"].as_u64().unwrap();
        if log_start > 10 {
            break log_start;
        }
        assert!(tokio::time::Instant::now() < deadline, "retention never ran");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let (mut consumer, welcome) =
        broker.consumer("behind", vec![start("short", StartPosition::Committed)]).await;
    assert!(welcome.topics[0].start_at >= log_start);
    let (start_offset, end, offsets) = collect_refresh(&mut consumer, "short").await;
    assert_eq!(end, 1010);
    assert_eq!(offsets, (start_offset..1010).collect::<Vec<_>>());
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_bounded_by_bytes_and_by_what_the_consumer_asks() {
    let broker = TestBroker::start().await;
    broker.inject("catalog", 600, 1_000).await;
    // The broker's default bounds a batch by bytes (1 MiB), not by a handful of records.
    let (mut consumer, _) = broker.consumer("big", vec![start("catalog", StartPosition::Earliest)]).await;
    let Event::Batch(batch) = next_event(&mut consumer).await else { panic!("a batch first") };
    assert_eq!((batch.first_offset, batch.last_offset), (0, 599), "one batch holds everything readable");
    // A consumer may ask for smaller batches, by records or by bytes.
    let (mut consumer, _) = broker
        .consumer_with("few", vec![start("catalog", StartPosition::Earliest)], |config| {
            config.batch_max_records = 7;
        })
        .await;
    let Event::Batch(batch) = next_event(&mut consumer).await else { panic!("a batch first") };
    assert_eq!((batch.first_offset, batch.last_offset), (0, 6));
    let (mut consumer, _) = broker
        .consumer_with("small", vec![start("catalog", StartPosition::Earliest)], |config| {
            config.batch_max_bytes = 10_000;
        })
        .await;
    let Event::Batch(batch) = next_event(&mut consumer).await else { panic!("a batch first") };
    assert!(batch.records.len() <= 10_000 && batch.last_offset >= 5, "{} bytes", batch.records.len());
    broker.stop().await;
}
