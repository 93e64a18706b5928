//! The pipe between brokers in one process: children copy every topic verbatim and report their lag, the
//! endpoint refuses bad HELLOs, a child ahead of its parent waits for the range, a replaced log is sent
//! whole, a child refuses a parent that sends a gap, a bad CRC or the wrong level, and a quiet pipe is not
//! cut by the parent's HTTP idle and header timeouts.

mod common;

use std::time::Duration;

use broker::config::Level;
use bytes::Bytes;
use client::Event;
use common::{Groups, TestBroker, WAIT, next_event, receive_until, start, wait_until};
use futures_util::{SinkExt, StreamExt};
use protocol::frame::{
    Batch, ErrorCode, Frame, Hello, PROTOCOL_VERSION, Role, StartPosition, TopicPosition, TopicStart, Welcome,
};
use protocol::{NewRecord, TopicUid};
use serde_json::json;
use storage::Log;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// Every record of a log, as stored.
fn all_bytes(log: &Log) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut from = log.log_start();
    while from < log.readable_offset() {
        let chunk = log.read(from, 100_000, 16 << 20).unwrap();
        bytes.extend_from_slice(&chunk.records);
        from = chunk.next_offset;
    }
    bytes
}

/// Waits until `child` holds `topic` up to `end`.
async fn wait_for_copy(child: &TestBroker, topic: &str, end: u64) {
    let what = format!("{} holds {topic} up to {end}", child.node.config.node_id);
    wait_until(&what, || async {
        child.node.store.topic(topic).is_some_and(|log| log.readable_offset() == end)
    })
    .await;
}

/// A pipe HELLO.
fn pipe_hello(level: u8, token: &str, topics: Vec<TopicStart>) -> Frame {
    Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        role: Role::Pipe,
        level,
        client_id: "raw-child".into(),
        group: "raw-child".into(),
        token: token.into(),
        max_in_flight: 0,
        batch_max_records: 0,
        batch_max_bytes: 0,
        topics,
    })
}

fn encode(frame: &Frame) -> Vec<u8> {
    let mut bytes = Vec::new();
    frame.encode(&mut bytes).unwrap();
    bytes
}

/// Opens a raw pipe WebSocket, sends `messages` (binary), and returns the frames received until the
/// broker closes the connection or `stop` says enough.
async fn ws_exchange(
    broker: &TestBroker,
    messages: Vec<Message>,
    mut stop: impl FnMut(&[Frame]) -> bool,
) -> Vec<Frame> {
    let url = format!("ws://{}/api/v1/pipe", broker.http);
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    for message in messages {
        socket.send(message).await.unwrap();
    }
    let mut frames = Vec::new();
    while !stop(&frames) {
        let message = tokio::time::timeout(WAIT, socket.next()).await.expect("the broker went quiet");
        match message {
            Some(Ok(Message::Binary(bytes))) => {
                frames.push(Frame::decode(&bytes, 1 << 24).unwrap().unwrap().0);
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
    frames
}

/// The last frame, which must be a fatal ERROR.
fn fatal(frames: &[Frame]) -> (ErrorCode, String) {
    match frames.last() {
        Some(Frame::Error(error)) if error.fatal => (error.code, error.message.clone()),
        other => panic!("expected a fatal ERROR last, got {other:?}"),
    }
}

/// The uid of a topic at a broker.
fn uid_of(broker: &TestBroker, topic: &str) -> TopicUid {
    broker.node.store.topic(topic).unwrap().uid()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_copy_every_topic_verbatim_and_report_their_lag() {
    let root = TestBroker::start().await;
    root.inject("prices", 5000, 200).await;
    root.publish("promos", json!([{"key": "a", "value": "1"}, {"key": "b", "value": "2"}])).await;
    let l2 = TestBroker::start_child(&root, Level::L2, "l2-a").await;
    let l3 = TestBroker::start_child(&l2, Level::L3, "l3-a").await;
    wait_for_copy(&l3, "prices", 5000).await;
    wait_for_copy(&l3, "promos", 2).await;
    // Records that arrive while connected are pushed, and a topic created later appears below.
    root.inject("prices", 1000, 200).await;
    root.inject("late", 10, 50).await;
    for child in [&l2, &l3] {
        wait_for_copy(child, "prices", 6000).await;
        wait_for_copy(child, "late", 10).await;
        for topic in ["prices", "promos", "late"] {
            let parent_log = root.node.store.topic(topic).unwrap();
            let child_log = child.node.store.topic(topic).unwrap();
            assert_eq!(child_log.uid(), parent_log.uid());
            assert_eq!(child_log.log_start(), parent_log.log_start());
            assert!(all_bytes(&child_log) == all_bytes(&parent_log), "{topic} differs");
        }
    }
    let (status, node) = l3.get("/api/v1/node").await;
    assert_eq!(status, 200);
    assert_eq!(node["level"], "L3");
    assert_eq!(node["parent"]["connected"], true, "{node}");
    assert_eq!(node["pipe"]["state"], "streaming");
    assert_eq!(l3.get("/ready").await.0, 200);
    // The parent sees its child's acknowledgements as lag, on /test/stats and /metrics.
    wait_until("the child's lag is zero at ROOT", || async {
        let (_, stats) = root.get("/test/stats").await;
        let children = stats["children"].as_array().unwrap().clone();
        children.len() == 1
            && children[0]["id"] == "l2-a"
            && children[0]["topics"].as_array().unwrap().iter().all(|topic| topic["lag"] == 0)
    })
    .await;
    let metrics = root.client.get(root.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("relay_child_lag{child=\"l2-a\",topic=\"prices\"} 0"), "{metrics}");
    let metrics = l2.client.get(l2.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("relay_pipe_connected 1"), "{metrics}");
    assert!(metrics.contains("relay_pipe_records_received_total 6012"), "{metrics}");
    let (_, node) = l2.get("/api/v1/node").await;
    assert_eq!(node["children"][0]["id"], "l3-a", "{node}");
    // A consumer of the L3 copy gets the records.
    let (mut consumer, _) = l3.consumer("tills", vec![start("prices", StartPosition::Earliest)]).await;
    let seen = receive_until(&mut consumer, "prices", 6000).await;
    assert!(seen.iter().enumerate().all(|(index, record)| record.offset == index as u64));
    drop(consumer);
    l3.stop().await;
    l2.stop().await;
    root.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipe_refuses_bad_tokens_levels_roles_and_messages() {
    let root = TestBroker::start_with(|config| config.token = "s3cret".into()).await;
    root.inject("t", 5, 10).await;
    let everything = || vec![start("*", StartPosition::Earliest)];
    let is_done = |frames: &[Frame]| matches!(frames.last(), Some(Frame::Error(error)) if error.fatal);

    let hello = encode(&pipe_hello(1, "wrong", everything()));
    let frames = ws_exchange(&root, vec![Message::Binary(hello.into())], is_done).await;
    assert_eq!(fatal(&frames).0, ErrorCode::Unauthorized);

    let hello = encode(&pipe_hello(2, "s3cret", everything()));
    let frames = ws_exchange(&root, vec![Message::Binary(hello.into())], is_done).await;
    let (code, message) = fatal(&frames);
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("level L3 cannot be a child of this ROOT node"), "{message}");

    let mut consumer_hello = pipe_hello(1, "s3cret", everything());
    if let Frame::Hello(hello) = &mut consumer_hello {
        hello.role = Role::Consumer;
        hello.level = 255;
    }
    let frames = ws_exchange(&root, vec![Message::Binary(encode(&consumer_hello).into())], is_done).await;
    assert_eq!(fatal(&frames).0, ErrorCode::BadRequest);

    let mut two = encode(&pipe_hello(1, "s3cret", everything()));
    two.extend(encode(&pipe_hello(1, "s3cret", everything())));
    let frames = ws_exchange(&root, vec![Message::Binary(two.into())], is_done).await;
    assert_eq!(fatal(&frames).0, ErrorCode::MalformedFrame);
    let frames = ws_exchange(&root, vec![Message::Text("hello".into())], is_done).await;
    assert_eq!(fatal(&frames).0, ErrorCode::MalformedFrame);

    // A plain GET is not an upgrade: a JSON error, not a connection.
    let (status, body) = root.get("/api/v1/pipe").await;
    assert!((400..500).contains(&status), "{status}");
    assert_eq!(body["error"], "not_websocket");

    // The right token and level: WELCOME, then the records.
    let hello = encode(&pipe_hello(1, "s3cret", everything()));
    let frames = ws_exchange(&root, vec![Message::Binary(hello.into())], |frames| {
        frames.iter().any(|frame| matches!(frame, Frame::Batch(_)))
    })
    .await;
    assert!(matches!(&frames[0], Frame::Welcome(welcome) if welcome.level == 0 && welcome.topics.len() == 1));

    // Child brokers with a wrong token or an impossible level say why in their state and keep trying.
    let wrong_token = TestBroker::start_with(|config| {
        config.level = Level::L2;
        config.node_id = "l2-wrong".into();
        config.parent_url = Some(root.http.to_string());
        config.parent_token = "nope".into();
    })
    .await;
    let wrong_level = TestBroker::start_with(|config| {
        config.level = Level::L3;
        config.node_id = "l3-misplaced".into();
        config.parent_url = Some(root.http.to_string());
        config.parent_token = "s3cret".into();
    })
    .await;
    for (child, expected) in [(&wrong_token, "UNAUTHORIZED"), (&wrong_level, "BAD_REQUEST")] {
        wait_until("the child reports the refusal", || async {
            let (_, node) = child.get("/api/v1/node").await;
            node["pipe"]["state"] == "refused"
                && node["pipe"]["last_error"].as_str().is_some_and(|error| error.contains(expected))
        })
        .await;
        assert_eq!(child.get("/ready").await.0, 503);
        assert!(child.node.store.topic("t").is_none());
    }
    wrong_token.stop().await;
    wrong_level.stop().await;
    root.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_ahead_of_its_parent_waits_for_the_range() {
    let root = TestBroker::start().await;
    root.inject("t", 10, 10).await;
    let uid = uid_of(&root, "t");
    let url = format!("ws://{}/api/v1/pipe", root.http);
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    let topics = vec![TopicStart {
        topic: "t".into(),
        uid,
        epoch: protocol::NO_EPOCH,
        start: StartPosition::Offset(15),
    }];
    socket.send(Message::Binary(encode(&pipe_hello(1, "", topics)).into())).await.unwrap();
    let mut received = Vec::new();
    let mut inject = Some(root.inject("t", 10, 10));
    loop {
        let message = tokio::time::timeout(WAIT, socket.next()).await.unwrap().unwrap().unwrap();
        let Message::Binary(bytes) = message else { continue };
        let frame = Frame::decode(&bytes, 1 << 24).unwrap().unwrap().0;
        if let Frame::Welcome(welcome) = &frame {
            assert_eq!(welcome.topics[0].start_at, 15, "{welcome:?}");
            // The range exists only now.
            inject.take().unwrap().await;
        }
        assert!(!matches!(frame, Frame::Error(_)), "{frame:?}");
        if let Frame::Batch(batch) = &frame {
            received.push((batch.first_offset, batch.last_offset));
            if batch.last_offset == 19 {
                break;
            }
        }
    }
    assert_eq!(received[0].0, 15, "{received:?}");
    drop(inject);
    root.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_log_is_sent_whole_to_consumers_and_children() {
    let root = TestBroker::start().await;
    root.inject("t", 100, 20).await;
    let child = TestBroker::start_child(&root, Level::L2, "l2-a").await;
    wait_for_copy(&child, "t", 100).await;
    let child_dir = child.node.store.topic("t").unwrap().dir().to_path_buf();
    let (mut consumer, _) = root.consumer("g", vec![start("t", StartPosition::Earliest)]).await;
    receive_until(&mut consumer, "t", 100).await;
    // Rebuild ROOT's copy under the same uid, as a refresh from a parent would.
    let old = root.node.store.topic("t").unwrap();
    let replacement = root.node.store.begin_replace("t", old.uid(), 0).unwrap();
    replacement.log().append_records(&all_bytes(&old)).unwrap();
    root.node.store.commit_replace(replacement).unwrap();
    let mut offsets = Vec::new();
    let reset = next_event(&mut consumer).await;
    assert!(
        matches!(reset, Event::Reset(ref reset) if reset.log_start == 0 && reset.end_offset == 100),
        "{reset:?}"
    );
    loop {
        match next_event(&mut consumer).await {
            Event::Batch(batch) => {
                offsets.extend(batch.first_offset..=batch.last_offset);
                consumer.ack("t", batch.last_offset + 1).await.unwrap();
            }
            Event::Ready(ready) => {
                assert_eq!(ready.end_offset, 100);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(offsets, (0..100).collect::<Vec<u64>>());
    // The child took the new copy whole as well: a new generation with the same records.
    wait_until("the child switched to the new copy", || async {
        child.node.store.topic("t").is_some_and(|log| log.dir() != child_dir && log.readable_offset() == 100)
    })
    .await;
    assert!(
        all_bytes(&child.node.store.topic("t").unwrap()) == all_bytes(&root.node.store.topic("t").unwrap())
    );
    drop(consumer);
    child.stop().await;
    root.stop().await;
}

/// Records `first..=last` of a fake parent's topic.
fn records(first: u64, last: u64) -> Bytes {
    let mut bytes = Vec::new();
    for offset in first..=last {
        let key = format!("k{offset}");
        NewRecord::new(key.as_bytes(), b"value").encode_to_vec(offset, 1_000 + offset, &mut bytes);
    }
    Bytes::from(bytes)
}

/// A fake parent's side of one pipe connection.
struct FakeParent {
    socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
}

impl FakeParent {
    async fn accept(listener: &TcpListener) -> (FakeParent, Hello) {
        let (stream, _) = tokio::time::timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        let socket = tokio_tungstenite::accept_async(stream).await.unwrap();
        let mut parent = FakeParent { socket };
        let Frame::Hello(hello) = parent.next().await else { panic!("no HELLO") };
        (parent, hello)
    }

    async fn send(&mut self, frame: Frame) {
        self.socket.send(Message::Binary(encode(&frame).into())).await.unwrap();
    }

    /// The next frame that is not a PING or PONG.
    async fn next(&mut self) -> Frame {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next()).await.unwrap().unwrap().unwrap();
            if let Message::Binary(bytes) = message {
                match Frame::decode(&bytes, 1 << 24).unwrap().unwrap().0 {
                    Frame::Ping(_) | Frame::Pong(_) => {}
                    frame => return frame,
                }
            }
        }
    }

    async fn welcome(&mut self, level: u8, uid: TopicUid, start_at: u64) {
        let position = TopicPosition { topic: "t".into(), uid, log_start: 0, end_offset: 10, start_at };
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            node_id: "fake".into(),
            level,
            heartbeat_ms: 1000,
            topics: vec![position],
        };
        self.send(Frame::Welcome(welcome)).await;
    }

    async fn batch(&mut self, first: u64, last: u64, records: Bytes) {
        let batch =
            Batch { topic: "t".into(), first_offset: first, last_offset: last, end_offset: 10, records };
        self.send(Frame::Batch(batch)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_refuses_a_gap_a_bad_crc_and_a_parent_at_the_wrong_level() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let parent_addr = listener.local_addr().unwrap();
    let child = TestBroker::start_with(|config| {
        config.level = Level::L2;
        config.node_id = "l2-a".into();
        config.parent_url = Some(format!("http://{parent_addr}"));
        config.pipe_reconnect_max = Duration::from_millis(200);
    })
    .await;
    let uid = TopicUid(42);

    let (mut parent, hello) = FakeParent::accept(&listener).await;
    assert_eq!((hello.role, hello.level, hello.group.as_str()), (Role::Pipe, 1, "l2-a"));
    assert_eq!(hello.topics.last().map(|topic| topic.topic.as_str()), Some("*"));
    parent.welcome(0, uid, 0).await;
    parent.batch(0, 4, records(0, 4)).await;
    assert!(matches!(parent.next().await, Frame::Ack(ack) if ack.next_offset == 5));
    parent.batch(7, 9, records(7, 9)).await;
    let Frame::Error(error) = parent.next().await else { panic!("no ERROR") };
    assert_eq!((error.code, error.fatal), (ErrorCode::BadRecords, true), "{error:?}");
    assert!(error.message.contains("gap"), "{}", error.message);

    // The child comes back and resumes where its copy ends; a corrupt record is refused too.
    let (mut parent, hello) = FakeParent::accept(&listener).await;
    assert_eq!(
        hello.topics[0],
        TopicStart { topic: "t".into(), uid, epoch: protocol::NO_EPOCH, start: StartPosition::Offset(5) }
    );
    parent.welcome(0, uid, 5).await;
    let mut corrupt = records(5, 9).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    parent.batch(5, 9, Bytes::from(corrupt)).await;
    let Frame::Error(error) = parent.next().await else { panic!("no ERROR") };
    assert_eq!(error.code, ErrorCode::BadRecords, "{error:?}");

    // A "parent" that is not one level up is refused.
    let (mut parent, _) = FakeParent::accept(&listener).await;
    parent.welcome(1, uid, 5).await;
    let Frame::Error(error) = parent.next().await else { panic!("no ERROR") };
    assert_eq!(error.code, ErrorCode::BadRequest, "{error:?}");
    wait_until("the child reports the refusal", || async {
        let (_, node) = child.get("/api/v1/node").await;
        node["pipe"]["state"] == "refused"
            && node["pipe"]["last_error"].as_str().is_some_and(|error| error.contains("level"))
    })
    .await;
    // Nothing bad was stored: the copy holds exactly the five good records.
    let log = child.node.store.topic("t").unwrap();
    assert_eq!((log.log_start(), log.next_offset()), (0, 5));
    assert!(all_bytes(&log) == records(0, 4).to_vec());
    child.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_takes_the_gaps_its_parent_vouches_for_and_no_other() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let parent_addr = listener.local_addr().unwrap();
    let child = TestBroker::start_with(|config| {
        config.level = Level::L2;
        config.node_id = "l2-gaps".into();
        config.parent_url = Some(format!("http://{parent_addr}"));
        config.pipe_reconnect_max = Duration::from_millis(200);
    })
    .await;
    let uid = TopicUid(43);
    let (mut parent, _) = FakeParent::accept(&listener).await;
    parent.welcome(0, uid, 0).await;
    parent.batch(0, 4, records(0, 4)).await;
    assert!(matches!(parent.next().await, Frame::Ack(ack) if ack.next_offset == 5));
    // A compacted range: the batch covers 5..=9 and holds 7, 8 and 9.
    parent.batch(5, 9, records(7, 9)).await;
    assert!(matches!(parent.next().await, Frame::Ack(ack) if ack.next_offset == 10));
    // A batch that starts above the copy's end is a gap nobody vouched for.
    parent.batch(12, 14, records(12, 14)).await;
    let Frame::Error(error) = parent.next().await else { panic!("no ERROR") };
    assert_eq!((error.code, error.fatal), (ErrorCode::BadRecords, true), "{error:?}");
    assert!(error.message.contains("gap"), "{}", error.message);
    // So is a record below the range its batch states.
    let (mut parent, _) = FakeParent::accept(&listener).await;
    parent.welcome(0, uid, 10).await;
    parent.batch(11, 12, records(10, 12)).await;
    let Frame::Error(error) = parent.next().await else { panic!("no ERROR") };
    assert_eq!(error.code, ErrorCode::BadRecords, "{error:?}");

    let log = child.node.store.topic("t").unwrap();
    assert_eq!((log.log_start(), log.next_offset()), (0, 10));
    let mut expected = records(0, 4).to_vec();
    expected.extend_from_slice(&records(7, 9));
    assert!(all_bytes(&log) == expected);
    // A reader from inside the gap gets the next record held, and the range it covers.
    let chunk = log.read(5, 10, 1 << 20).unwrap();
    assert_eq!((chunk.first_offset, chunk.next_offset, chunk.n_records), (5, 10, 3));
    child.stop().await;
}

#[tokio::test]
async fn a_quiet_pipe_outlives_the_parents_http_timeouts() {
    // The parent closes HTTP connections silent for 100ms; the pipe is quiet for up to 200ms between
    // heartbeats, but it is a WebSocket, which the HTTP timeouts leave alone.
    let parent = TestBroker::start_with(|config| {
        config.http_idle_timeout = Duration::from_millis(100);
        config.http_header_timeout = Duration::from_millis(100);
    })
    .await;
    parent.publish("quiet", json!({"key": "a", "value": "1"})).await;
    let child = TestBroker::start_child(&parent, Level::L2, "quiet-child").await;
    wait_for_copy(&child, "quiet", 1).await;
    // Twenty idle timeouts with no record on the pipe, heartbeats only.
    tokio::time::sleep(Duration::from_secs(2)).await;
    parent.publish("quiet", json!({"key": "b", "value": "2"})).await;
    wait_for_copy(&child, "quiet", 2).await;
    assert_eq!(child.node.metrics.pipe_reconnects.get(), 0, "the parent cut the pipe");
    assert_eq!(child.node.metrics.pipe_connected.get(), 1);
    child.stop().await;
    parent.stop().await;
}
