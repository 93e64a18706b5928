//! The binary producer path at ROOT: `client::Producer` over TCP (pipelined PUBLISH frames, PUBLISH_ACKs
//! in order once durable), what a broken producer connection leaves stored, and raw producer records over
//! HTTP (`application/octet-stream`).

mod common;

use std::time::Duration;

use bytes::BytesMut;
use client::{Error, Producer, ProducerConfig};
use common::{Groups, TestBroker, WAIT, receive_until, start, wait_until};
use protocol::frame::{
    ErrorCode, Frame, Hello, LEVEL_CONSUMER, PROTOCOL_VERSION, Publish, PublishAck, Role, StartPosition,
};
use protocol::{NewRecord, ProducerRecords};
use serde_json::{Value, json};
use testkit::Level;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connects a producer with a 500 ms heartbeat and the given window.
async fn producer(broker: &TestBroker, max_in_flight: u16) -> Producer {
    let mut config = ProducerConfig::new("feed");
    config.heartbeat = Duration::from_millis(500);
    config.max_in_flight = max_in_flight;
    let (producer, welcome) = Producer::connect(broker.consumers, config).await.unwrap();
    assert!(welcome.topics.is_empty(), "a producer's WELCOME lists no topics");
    producer
}

/// The records of frame `frame`: `per_frame` records keyed `f{frame}-r{n}`.
fn keys(frame: usize, per_frame: usize) -> Vec<String> {
    (0..per_frame).map(|n| format!("f{frame}-r{n}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_publishes_arrive_in_order_with_the_offsets_of_their_acks() {
    // The producer sends up to 16 frames ahead; ROOT takes 4 at a time and leaves the rest in the socket.
    let broker = TestBroker::start_with(|config| config.max_publish_in_flight = 4).await;
    let producer = producer(&broker, 16).await;
    let (n_frames, per_frame) = (300, 4);
    // Every frame is queued before any ack is awaited: up to the window is in flight at once.
    let mut pending = Vec::new();
    for frame in 0..n_frames {
        let keys = keys(frame, per_frame);
        let records: Vec<NewRecord<'_>> =
            keys.iter().map(|key| NewRecord::new(key.as_bytes(), b"payload")).collect();
        pending.push(producer.publish("ticks", &records).await.unwrap());
    }
    let mut expected = Vec::new();
    let mut next_offset = 0;
    for (frame, ack) in pending.into_iter().enumerate() {
        let ack = tokio::time::timeout(WAIT, ack).await.expect("an ack in time").unwrap();
        assert_eq!(ack.topic, "ticks");
        assert_eq!((ack.first_offset, ack.last_offset), (next_offset, next_offset + per_frame as u64 - 1));
        next_offset = ack.last_offset + 1;
        for (n, key) in keys(frame, per_frame).into_iter().enumerate() {
            expected.push((ack.first_offset + n as u64, key));
        }
    }
    // Acknowledged means durable.
    let log = broker.node.store.topic("ticks").unwrap();
    assert!(log.durable_offset() >= next_offset);

    let (mut consumer, _) = broker.consumer("readers", vec![start("ticks", StartPosition::Earliest)]).await;
    let seen = receive_until(&mut consumer, "ticks", next_offset).await;
    let seen: Vec<(u64, String)> = seen.into_iter().map(|record| (record.offset, record.key)).collect();
    assert_eq!(seen, expected);
    producer.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_producer_stays_connected_through_heartbeats() {
    let broker = TestBroker::start().await;
    let producer = producer(&broker, 4).await;
    let first = producer.publish("idle", &[NewRecord::new(b"k", b"1")]).await.unwrap().await.unwrap();
    // Longer than three heartbeats of either side: only PING and PONG cross meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = producer.publish("idle", &[NewRecord::new(b"k", b"2")]).await.unwrap().await.unwrap();
    assert_eq!((first.first_offset, second.first_offset), (0, 1));
    producer.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_hears_why_its_connection_ended() {
    let broker = TestBroker::start().await;
    let producer = producer(&broker, 4).await;
    producer.publish("stopping", &[NewRecord::new(b"k", b"v")]).await.unwrap().await.unwrap();
    broker.stop().await;
    // The broker said SHUTTING_DOWN before it closed; every later publish fails with that cause.
    let error = match producer.publish("stopping", &[NewRecord::new(b"k", b"v")]).await {
        Ok(ack) => ack.await.unwrap_err(),
        Err(error) => error,
    };
    match &error {
        Error::Lost(cause) => match &**cause {
            Error::Rejected(frame) => assert_eq!(frame.code, ErrorCode::ShuttingDown),
            other => panic!("expected SHUTTING_DOWN, got {other}"),
        },
        other => panic!("expected a lost connection, got {other}"),
    }
    assert!(matches!(producer.close().await, Err(Error::Lost(_))));
}

/// A producer connection driven byte by byte.
struct RawProducer {
    /// The connection.
    socket: TcpStream,
    /// Bytes read and not yet decoded.
    buffer: BytesMut,
}

impl RawProducer {
    /// Connects, says HELLO as a producer and reads WELCOME.
    async fn connect(broker: &TestBroker) -> RawProducer {
        let hello = Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            role: Role::Producer,
            level: LEVEL_CONSUMER,
            client_id: "raw".into(),
            group: String::new(),
            token: String::new(),
            max_in_flight: 0,
            batch_max_records: 0,
            batch_max_bytes: 0,
            topics: Vec::new(),
        });
        let socket = TcpStream::connect(broker.consumers).await.unwrap();
        let mut raw = RawProducer { socket, buffer: BytesMut::new() };
        raw.send(&encode(&hello)).await;
        match raw.next_frame().await {
            Some(Frame::Welcome(welcome)) => assert!(welcome.topics.is_empty()),
            other => panic!("expected WELCOME, got {other:?}"),
        }
        raw
    }

    /// Writes bytes, whole frames or not.
    async fn send(&mut self, bytes: &[u8]) {
        self.socket.write_all(bytes).await.unwrap();
    }

    /// The next frame but PINGs, or `None` once the broker closed the connection.
    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            while let Some(frame) = Frame::decode_from(&mut self.buffer, 1 << 20).unwrap() {
                if !matches!(frame, Frame::Ping(_)) {
                    return Some(frame);
                }
            }
            let read = tokio::time::timeout(WAIT, self.socket.read_buf(&mut self.buffer))
                .await
                .expect("the broker answers");
            if read.unwrap_or(0) == 0 {
                return None;
            }
        }
    }

    /// Every frame but PINGs until the broker closes the connection.
    async fn frames_until_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next_frame().await {
            frames.push(frame);
        }
        frames
    }
}

fn encode(frame: &Frame) -> Vec<u8> {
    let mut bytes = Vec::new();
    frame.encode(&mut bytes).unwrap();
    bytes
}

/// A PUBLISH of `n` records to `topic`.
fn publish_frame(topic: &str, sequence: u64, n: usize) -> Vec<u8> {
    let values: Vec<String> = (0..n).map(|i| format!("value {sequence}-{i}")).collect();
    let records: Vec<NewRecord<'_>> =
        values.iter().map(|value| NewRecord::new(b"k", value.as_bytes())).collect();
    let records = ProducerRecords::encode(&records).unwrap();
    encode(&Frame::Publish(Publish { topic: topic.to_string(), sequence, records }))
}

/// Waits until the broker serves no producer connection.
async fn wait_no_producers(broker: &TestBroker) {
    wait_until("no producer is connected", || async {
        let (_, stats) = broker.get("/test/stats").await;
        stats["connections"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .all(|connection| connection["kind"] != "producer")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_disconnects_mid_frame_stores_nothing_of_that_frame() {
    let broker = TestBroker::start().await;

    // Half of a first frame: the topic is not even created.
    let mut raw = RawProducer::connect(&broker).await;
    let frame = publish_frame("halves", 1, 10);
    raw.send(&frame[..frame.len() / 2]).await;
    drop(raw);
    wait_no_producers(&broker).await;
    assert!(broker.node.store.topic("halves").is_none(), "half a frame created the topic");

    // A whole frame, acknowledged, then all of a second frame but its last byte.
    let mut raw = RawProducer::connect(&broker).await;
    raw.send(&publish_frame("halves", 1, 3)).await;
    match raw.next_frame().await {
        Some(Frame::PublishAck(ack)) => {
            assert_eq!((ack.sequence, ack.first_offset, ack.last_offset), (1, 0, 2))
        }
        other => panic!("expected PUBLISH_ACK, got {other:?}"),
    }
    let second = publish_frame("halves", 2, 5);
    raw.send(&second[..second.len() - 1]).await;
    raw.socket.shutdown().await.unwrap();
    drop(raw);
    wait_no_producers(&broker).await;
    let log = broker.node.store.topic("halves").unwrap();
    assert_eq!(log.next_offset(), 3, "only the whole frame is stored");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_publish_ends_only_its_own_connection() {
    let broker = TestBroker::start().await;
    let healthy = producer(&broker, 8).await;
    // The topic exists before the consumer below subscribes to it.
    healthy.publish("healthy", &[NewRecord::new(b"k", b"start")]).await.unwrap().await.unwrap();
    let keep_publishing = tokio::spawn(async move {
        let mut acks = Vec::new();
        for n in 0..200u32 {
            let value = n.to_string();
            acks.push(healthy.publish("healthy", &[NewRecord::new(b"k", value.as_bytes())]).await.unwrap());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut last = 0;
        for ack in acks {
            last = ack.await.expect("the healthy producer is acknowledged").last_offset;
        }
        healthy.close().await.unwrap();
        last
    });

    // A good frame, then one whose second record says its key runs past its end: the first is stored and
    // acknowledged, then a fatal MALFORMED_FRAME ends the connection.
    let mut raw = RawProducer::connect(&broker).await;
    let good = publish_frame("broken", 1, 2);
    let records = ProducerRecords::encode(&[NewRecord::new(b"k", b"v"), NewRecord::new(b"k", b"v")]).unwrap();
    let mut bad_records = records.as_bytes().to_vec();
    let second_record = bad_records.len() / 2;
    bad_records[second_record + 5] = 200; // key_len
    let mut payload = vec![6, 0];
    payload.extend_from_slice(b"broken");
    payload.extend_from_slice(&2u64.to_le_bytes());
    payload.extend_from_slice(&2u32.to_le_bytes());
    payload.extend_from_slice(&bad_records);
    raw.send(&good).await;
    raw.send(&reframe(0x0E, &payload)).await;
    let frames = raw.frames_until_closed().await;
    match &frames[..] {
        [
            Frame::PublishAck(PublishAck { sequence: 1, first_offset: 0, last_offset: 1, .. }),
            Frame::Error(error),
        ] => {
            assert_eq!((error.code, error.fatal), (ErrorCode::MalformedFrame, true));
            assert!(error.message.starts_with("record 1: key_len 200"), "{}", error.message);
        }
        other => panic!("expected PUBLISH_ACK then ERROR, got {other:?}"),
    }
    assert_eq!(broker.node.store.topic("broken").unwrap().next_offset(), 2);

    // A topic name the rules refuse is BAD_REQUEST.
    let mut raw = RawProducer::connect(&broker).await;
    raw.send(&publish_frame("no/slashes", 1, 1)).await;
    match &raw.frames_until_closed().await[..] {
        [Frame::Error(error)] => assert_eq!((error.code, error.fatal), (ErrorCode::BadRequest, true)),
        other => panic!("expected ERROR, got {other:?}"),
    }

    // Only a producer may publish.
    let (mut consumer, _) = broker.consumer("readers", vec![start("healthy", StartPosition::Earliest)]).await;
    let last = keep_publishing.await.unwrap();
    let seen = receive_until(&mut consumer, "healthy", last + 1).await;
    let values: Vec<Vec<u8>> = seen.into_iter().map(|record| record.value).collect();
    let expected: Vec<Vec<u8>> =
        std::iter::once(b"start".to_vec()).chain((0..200u32).map(|n| n.to_string().into_bytes())).collect();
    assert_eq!(values, expected, "the healthy producer lost nothing");
    consumer
        .send(&Frame::Publish(Publish {
            topic: "healthy".into(),
            sequence: 1,
            records: ProducerRecords::encode(&[NewRecord::new(b"k", b"v")]).unwrap(),
        }))
        .await
        .unwrap();
    loop {
        match common::next_event(&mut consumer).await {
            client::Event::Error(error) => {
                assert_eq!((error.code, error.fatal), (ErrorCode::ProtocolViolation, true));
                break;
            }
            client::Event::Batch(_) => {}
            other => panic!("expected PROTOCOL_VIOLATION, got {other:?}"),
        }
    }
    broker.stop().await;
}

/// A frame with the given type byte and payload and a correct length and CRC.
fn reframe(frame_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.push(frame_type);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[frame_type]);
    hasher.update(payload);
    bytes.extend_from_slice(&hasher.finalize().to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_root_accepts_producers() {
    let root = TestBroker::start().await;
    let child = TestBroker::start_child(&root, Level::L2, "l2-a").await;
    let mut config = ProducerConfig::new("feed");
    config.heartbeat = Duration::from_millis(500);
    match Producer::connect(child.consumers, config.clone()).await {
        Err(Error::Refused(error)) => {
            assert_eq!((error.code, error.fatal), (ErrorCode::BadRequest, true));
            assert!(error.message.contains("ROOT"), "{}", error.message);
        }
        other => panic!("a child broker accepted a producer: {other:?}"),
    }
    // The same HELLO is welcome at ROOT.
    let (producer, _) = Producer::connect(root.consumers, config).await.unwrap();
    producer.close().await.unwrap();
    child.stop().await;
    root.stop().await;
}

/// POSTs raw bytes as `application/octet-stream` and returns the status and the JSON answer.
async fn post_raw(broker: &TestBroker, topic: &str, body: Vec<u8>) -> (u16, Value) {
    let response = broker
        .client
        .post(broker.url(&format!("/api/v1/topics/{topic}/messages")))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_records_over_http_round_trip_beside_json() {
    let broker = TestBroker::start().await;
    let tombstone =
        NewRecord { attributes: protocol::record::ATTR_TOMBSTONE, ..NewRecord::new(b"gone", b"") };
    let records = [NewRecord::new(b"AAPL", b"\x00\x01binary"), NewRecord::new(b"", b"no key"), tombstone];
    let body = ProducerRecords::encode(&records).unwrap().as_bytes().to_vec();
    let (status, answer) = post_raw(&broker, "mixed", body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["first_offset"].as_u64(), answer["last_offset"].as_u64()), (Some(0), Some(2)));
    assert_eq!(answer["count"], 3);
    assert_eq!(answer["topic"], "mixed");
    // JSON on the same route continues the same log.
    let answer = broker.publish("mixed", json!({"key": "MSFT", "value_text": "json"})).await;
    assert_eq!((answer["first_offset"].as_u64(), answer["count"].as_u64()), (Some(3), Some(1)));

    let (mut consumer, _) = broker.consumer("readers", vec![start("mixed", StartPosition::Earliest)]).await;
    let seen = receive_until(&mut consumer, "mixed", 4).await;
    let stored: Vec<(&str, &[u8])> =
        seen.iter().map(|record| (record.key.as_str(), &record.value[..])).collect();
    assert_eq!(stored, [("AAPL", &b"\x00\x01binary"[..]), ("", b"no key"), ("gone", b""), ("MSFT", b"json")]);
    let (_, page) = broker.get("/api/v1/topics/mixed/records?from=2&limit=1").await;
    assert_eq!(page["records"][0]["tombstone"], true, "{page}");
    // The README's example, byte for byte.
    let (status, answer) = post_raw(&broker, "prices", b"\x0f\0\0\0\0\x04\0\0\0AAPL189.91".to_vec()).await;
    assert_eq!((status, answer["count"].as_u64()), (200, Some(1)), "{answer}");
    let (_, page) = broker.get("/api/v1/topics/prices/records").await;
    assert_eq!((&page["records"][0]["key"], &page["records"][0]["value"]), (&json!("AAPL"), &json!(189.91)));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_raw_bytes_are_a_400_naming_the_problem() {
    let broker = TestBroker::start().await;
    let good = ProducerRecords::encode(&[NewRecord::new(b"k", b"v")]).unwrap().as_bytes().to_vec();
    let mut truncated = good.clone();
    truncated.extend_from_slice(&good[..good.len() - 1]);
    let (status, answer) = post_raw(&broker, "bad", truncated).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("bad_record")), "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().starts_with("record 1: batch ends inside a record"),
        "{answer}"
    );
    let mut reserved = good.clone();
    reserved[4] = 0x40;
    let (status, answer) = post_raw(&broker, "bad", reserved).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("bad_record")), "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("reserved bits"), "{answer}");
    let (status, answer) = post_raw(&broker, "bad", Vec::new()).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("no_records")), "{answer}");
    let (status, answer) = post_raw(&broker, "no%2Fslash", good.clone()).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("bad_topic_name")), "{answer}");
    assert!(broker.node.store.topic("bad").is_none(), "nothing of a refused body is stored");

    let child = TestBroker::start_child(&broker, Level::L2, "l2-a").await;
    let (status, answer) = post_raw(&child, "bad", good).await;
    assert_eq!((status, answer["error"].as_str()), (409, Some("not_root")), "{answer}");
    child.stop().await;
    broker.stop().await;
}
