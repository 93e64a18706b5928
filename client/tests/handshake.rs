//! The client against a peer that speaks the real codec but misbehaves in ways a broker test cannot
//! easily provoke: a refused HELLO, a broker that goes silent after WELCOME, and frames that arrive
//! together and are taken without waiting.

use std::time::Duration;

use bytes::BytesMut;
use client::Event;
use client::{Consumer, ConsumerConfig, Error, topic_start};
use protocol::frame::{
    Batch, DEFAULT_MAX_FRAME_LEN, ErrorCode, ErrorFrame, Frame, PROTOCOL_VERSION, Ping, Ready, StartPosition,
    Welcome,
};
use protocol::{NewRecord, TopicUid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads frames from `socket` until one decodes.
async fn read_frame(socket: &mut TcpStream, buffer: &mut BytesMut) -> Frame {
    for _ in 0..1000 {
        if let Some(frame) = Frame::decode_from(buffer, DEFAULT_MAX_FRAME_LEN).unwrap() {
            return frame;
        }
        assert!(socket.read_buf(buffer).await.unwrap() > 0, "client closed early");
    }
    panic!("no frame");
}

async fn write_frame(socket: &mut TcpStream, frame: Frame) {
    let mut bytes = Vec::new();
    frame.encode(&mut bytes).unwrap();
    socket.write_all(&bytes).await.unwrap();
}

fn config() -> ConsumerConfig {
    let mut config = ConsumerConfig::new("c1", "g1", vec![topic_start("prices", StartPosition::Earliest)]);
    config.heartbeat = Duration::from_millis(50);
    config
}

#[tokio::test]
async fn refused_hello_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buffer = BytesMut::new();
        let Frame::Hello(hello) = read_frame(&mut socket, &mut buffer).await else { panic!("not HELLO") };
        assert_eq!(hello.group, "g1");
        assert_eq!(hello.topics[0].topic, "prices");
        let error = ErrorFrame { code: ErrorCode::Unauthorized, fatal: true, message: "no".into() };
        write_frame(&mut socket, Frame::Error(error)).await;
    });
    let result = Consumer::connect(addr, config()).await;
    assert!(matches!(result, Err(Error::Refused(ErrorFrame { code: ErrorCode::Unauthorized, .. }))));
    server.await.unwrap();
}

#[tokio::test]
async fn silent_broker_is_detected_and_pinged() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buffer = BytesMut::new();
        read_frame(&mut socket, &mut buffer).await;
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            node_id: "n".into(),
            level: 0,
            heartbeat_ms: 50,
            topics: Vec::new(),
        };
        write_frame(&mut socket, Frame::Welcome(welcome)).await;
        // Say nothing more, but count the client's PINGs until it gives up and closes.
        let mut pings = 0;
        loop {
            match Frame::decode_from(&mut buffer, DEFAULT_MAX_FRAME_LEN).unwrap() {
                Some(Frame::Ping(_)) => pings += 1,
                Some(other) => panic!("unexpected {}", other.name()),
                None => {
                    if socket.read_buf(&mut buffer).await.unwrap_or(0) == 0 {
                        return pings;
                    }
                }
            }
        }
    });
    let (mut consumer, welcome) = Consumer::connect(addr, config()).await.unwrap();
    assert_eq!(welcome.heartbeat_ms, 50);
    let result = tokio::time::timeout(Duration::from_secs(10), consumer.next_event()).await.unwrap();
    assert!(matches!(result, Err(Error::Silent(_))), "{result:?}");
    drop(consumer);
    assert!(server.await.unwrap() >= 2);
}

/// A BATCH of one record at `offset`.
fn batch(offset: u64) -> Batch {
    let mut records = Vec::new();
    NewRecord::new(b"k", b"v").encode_to_vec(offset, 1_700_000_000_000, &mut records);
    Batch {
        topic: "prices".into(),
        first_offset: offset,
        last_offset: offset,
        end_offset: offset + 1,
        records: records.into(),
    }
}

#[tokio::test]
async fn frames_already_received_are_taken_without_waiting() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buffer = BytesMut::new();
        read_frame(&mut socket, &mut buffer).await;
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            node_id: "n".into(),
            level: 0,
            heartbeat_ms: 10_000,
            topics: Vec::new(),
        };
        write_frame(&mut socket, Frame::Welcome(welcome)).await;
        // Two batches, a PING and a READY in one write, so they arrive together.
        let mut bytes = Vec::new();
        Frame::Batch(batch(0)).encode(&mut bytes).unwrap();
        Frame::Batch(batch(1)).encode(&mut bytes).unwrap();
        Frame::Ping(Ping { nonce: 7, timestamp_ms: 1 }).encode(&mut bytes).unwrap();
        let ready = Ready { topic: "prices".into(), uid: TopicUid::UNKNOWN, end_offset: 2 };
        Frame::Ready(ready).encode(&mut bytes).unwrap();
        socket.write_all(&bytes).await.unwrap();
        // The PING met while taking the READY is answered.
        for _ in 0..100 {
            match read_frame(&mut socket, &mut buffer).await {
                Frame::Pong(pong) => return pong.nonce,
                Frame::Ping(_) => {}
                other => panic!("unexpected {}", other.name()),
            }
        }
        panic!("no PONG");
    });
    let (mut consumer, _) = Consumer::connect(addr, config()).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), consumer.next_event()).await.unwrap();
    assert!(matches!(first, Ok(Event::Batch(Batch { first_offset: 0, .. }))), "{first:?}");
    let second = consumer.try_next_event().await.unwrap();
    assert!(matches!(second, Some(Event::Batch(Batch { first_offset: 1, .. }))), "{second:?}");
    let third = consumer.try_next_event().await.unwrap();
    assert!(matches!(third, Some(Event::Ready(Ready { end_offset: 2, .. }))), "{third:?}");
    // Nothing more was sent: taking another event would mean waiting.
    assert_eq!(consumer.try_next_event().await.unwrap(), None);
    assert_eq!(tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap(), 7);
}
