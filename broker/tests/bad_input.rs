//! Bad input gets its documented error on that connection only: a healthy consumer keeps receiving
//! throughout, and nothing stored is lost.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use client::Event;
use common::{Groups, TestBroker, WAIT, next_event, records_of, start};
use protocol::frame::{
    Ack, ErrorCode, Frame, Hello, LEVEL_CONSUMER, PROTOCOL_VERSION, Role, Seek, StartPosition,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn encode(frame: &Frame) -> Vec<u8> {
    let mut bytes = Vec::new();
    frame.encode(&mut bytes).unwrap();
    bytes
}

fn hello(token: &str) -> Frame {
    Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        role: Role::Consumer,
        level: LEVEL_CONSUMER,
        client_id: "raw".into(),
        group: "raw".into(),
        token: token.into(),
        max_in_flight: 0,
        batch_max_records: 0,
        batch_max_bytes: 0,
        topics: vec![start("healthy", StartPosition::Latest)],
    })
}

/// Rewrites a frame's type byte and payload, with a correct length and CRC.
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

/// Sends `bytes` on a fresh connection and returns the frames received until the broker closes it.
async fn exchange(broker: &TestBroker, chunks: &[Vec<u8>]) -> Vec<Frame> {
    let mut socket = TcpStream::connect(broker.consumers).await.unwrap();
    for chunk in chunks {
        socket.write_all(chunk).await.unwrap();
    }
    let mut buffer = BytesMut::new();
    let mut frames = Vec::new();
    loop {
        while let Some(frame) = Frame::decode_from(&mut buffer, 1 << 20).unwrap() {
            frames.push(frame);
        }
        let read =
            tokio::time::timeout(WAIT, socket.read_buf(&mut buffer)).await.expect("connection not closed");
        if read.unwrap_or(0) == 0 {
            return frames;
        }
    }
}

/// The code of the last (fatal) ERROR frame.
fn fatal_code(frames: &[Frame]) -> ErrorCode {
    match frames.last() {
        Some(Frame::Error(error)) if error.fatal => error.code,
        other => panic!("expected a fatal ERROR last, got {other:?} in {frames:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_and_cost_nothing_else() {
    let broker = TestBroker::start_with(|config| config.token = "s3cret".into()).await;
    broker.publish("healthy", json!({"key": "k0"})).await;
    let (mut healthy, _) = broker
        .consumer_with("watcher", vec![start("healthy", StartPosition::Earliest)], |config| {
            config.token = "s3cret".into();
        })
        .await;
    // Keep publishing while the bad clients misbehave.
    let publisher = {
        let client = broker.client.clone();
        let url = broker.url("/api/v1/topics/healthy/messages");
        tokio::spawn(async move {
            for n in 1..=200u32 {
                let response = client.post(&url).json(&json!({"key": format!("k{n}")})).send().await.unwrap();
                assert_eq!(response.status(), 200);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    let good_hello = encode(&hello("s3cret"));
    let mut bad_crc = good_hello.clone();
    bad_crc[5] ^= 0xff;
    assert_eq!(fatal_code(&exchange(&broker, &[bad_crc]).await), ErrorCode::BadCrc);

    let mut oversized = good_hello.clone();
    oversized[..4].copy_from_slice(&(100u32 << 20).to_le_bytes());
    assert_eq!(fatal_code(&exchange(&broker, &[oversized]).await), ErrorCode::FrameTooLarge);

    assert_eq!(fatal_code(&exchange(&broker, &[reframe(0x7f, b"hi")]).await), ErrorCode::UnknownFrameType);

    let mut trailing = good_hello[9..].to_vec();
    trailing.push(0);
    assert_eq!(fatal_code(&exchange(&broker, &[reframe(0x01, &trailing)]).await), ErrorCode::MalformedFrame);

    let ack = encode(&Frame::Ack(Ack { topic: "healthy".into(), next_offset: 1 }));
    assert_eq!(fatal_code(&exchange(&broker, &[ack]).await), ErrorCode::ProtocolViolation);

    assert_eq!(fatal_code(&exchange(&broker, &[encode(&hello("wrong"))]).await), ErrorCode::Unauthorized);

    // An unknown topic is not fatal: the connection goes on, and a bad frame after it then ends it.
    let seek = encode(&Frame::Seek(Seek { topic: "nope".into(), start: StartPosition::Earliest }));
    let frames = exchange(&broker, &[good_hello.clone(), seek, reframe(0x7f, b"")]).await;
    assert!(matches!(&frames[0], Frame::Welcome(_)), "{frames:?}");
    assert!(
        frames.iter().any(|frame| matches!(frame, Frame::Error(error) if error.code == ErrorCode::UnknownTopic && !error.fatal)),
        "{frames:?}"
    );
    assert_eq!(fatal_code(&frames), ErrorCode::UnknownFrameType);

    // A peer that says HELLO and then nothing is dropped after three heartbeat intervals.
    let frames = exchange(&broker, std::slice::from_ref(&good_hello)).await;
    assert!(matches!(&frames[0], Frame::Welcome(_)), "{frames:?}");
    assert!(
        frames[1..].iter().all(|frame| matches!(
            frame,
            Frame::Ping(_) | Frame::Epochs(_) | Frame::Settings(_) | Frame::Batch(_)
        )),
        "{frames:?}"
    );
    assert!(frames.iter().any(|frame| matches!(frame, Frame::Ping(_))), "{frames:?}");

    // HTTP: bad JSON is a 400 JSON body.
    let response = broker
        .client
        .post(broker.url("/api/v1/topics/healthy/messages"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "bad_json");
    assert!(body["detail"].as_str().is_some_and(|detail| !detail.is_empty()));
    let (status, body) = broker.post("/api/v1/topics/healthy/messages", &json!({"vlaue": 1})).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_json")));
    let (status, body) = broker.post("/api/v1/topics/bad%20name/messages", &json!({"key": "x"})).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_topic_name")));

    publisher.await.unwrap();
    // The healthy consumer got every record, in order.
    let mut offsets = Vec::new();
    while offsets.len() < 201 {
        match next_event(&mut healthy).await {
            Event::Batch(batch) => {
                offsets.extend(records_of(&batch).iter().map(|record| record.offset));
                healthy.ack("healthy", batch.last_offset + 1).await.unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(offsets, (0..201).collect::<Vec<_>>());
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_is_refused_below_root() {
    let broker = TestBroker::start_with(|config| config.level = broker::Level::L2).await;
    let (status, body) = broker.post("/api/v1/topics/prices/messages", &json!({"key": "x"})).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"], "not_root");
    assert!(body["detail"].as_str().unwrap().contains("ROOT"));
    let (status, _) = broker.post("/test/inject-messages", &json!({"topic": "prices", "count": 1})).await;
    assert_eq!(status, 409);
    let (status, body) = broker.get("/no/such/route").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("no_such_route")));
    broker.stop().await;
}
