//! The follower against an upstream that speaks the real codec: batches already received are gathered and
//! proven before the sink sees them, an ACK leaves only for what the sink reported durable (at once or later
//! through `next_work`), a corrupt record is answered with BAD_RECORDS and the link is made again from where
//! the copy stands, and a silent upstream is left.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use client::{Durable, Endpoint, Fault, FollowConfig, LinkEnd, Sink, Target, Upstream, Work};
use protocol::frame::{
    Batch, DEFAULT_MAX_FRAME_LEN, Epochs, ErrorCode, Frame, Hello, LEVEL_CONSUMER, PROTOCOL_VERSION, Ready,
    Reset, Role, Settings, StartPosition, TopicAnnounce, TopicPosition, TopicStart, Welcome,
};
use protocol::{CheckedBatch, NewRecord, TopicUid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// Reads frames from `socket` until one that is not a heartbeat decodes.
async fn read_frame(socket: &mut TcpStream, buffer: &mut BytesMut) -> Frame {
    loop {
        if let Some(frame) = Frame::decode_from(buffer, DEFAULT_MAX_FRAME_LEN).unwrap() {
            if matches!(frame, Frame::Ping(_) | Frame::Pong(_)) {
                continue;
            }
            return frame;
        }
        let read = tokio::time::timeout(Duration::from_secs(10), socket.read_buf(buffer)).await;
        assert!(read.expect("the follower went quiet").unwrap() > 0, "the follower closed early");
    }
}

async fn write_frames(socket: &mut TcpStream, frames: Vec<Frame>) {
    let mut bytes = Vec::new();
    for frame in frames {
        frame.encode(&mut bytes).unwrap();
    }
    socket.write_all(&bytes).await.unwrap();
}

fn records(first: u64, last: u64) -> Bytes {
    let mut out = Vec::new();
    for offset in first..=last {
        NewRecord::new(b"k", format!("value {offset}").as_bytes()).encode_to_vec(offset, 7, &mut out);
    }
    Bytes::from(out)
}

fn batch(first: u64, last: u64) -> Frame {
    Frame::Batch(Batch {
        topic: "t".into(),
        first_offset: first,
        last_offset: last,
        end_offset: 100,
        records: records(first, last),
    })
}

fn welcome() -> Frame {
    Frame::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        node_id: "up".into(),
        level: 0,
        heartbeat_ms: 60_000,
        topics: Vec::new(),
    })
}

/// The groups a sink received, each as the (first, next) offsets of its batches.
type Groups = Arc<Mutex<Vec<Vec<(u64, u64)>>>>;

/// A copy in memory: it holds offsets, reports the first group durable at once and the rest only when the
/// test says so through `later`.
struct MemorySink {
    /// Next offset held.
    next: u64,
    /// The groups received, as (first, next) offset ranges per batch.
    groups: Groups,
    /// Durable positions the test releases.
    later: mpsc::Receiver<u64>,
}

impl Sink for MemorySink {
    async fn hello_topics(&mut self) -> Result<Vec<TopicStart>, Fault> {
        Ok(vec![TopicStart {
            topic: "t".into(),
            uid: TopicUid(9),
            epoch: protocol::NO_EPOCH,
            start: StartPosition::Offset(self.next),
        }])
    }

    async fn on_welcome(&mut self, _welcome: &Welcome) -> Result<(), Fault> {
        Ok(())
    }

    async fn on_topic(&mut self, _announce: &TopicAnnounce) -> Result<(), Fault> {
        Ok(())
    }

    async fn on_batches(&mut self, batches: Vec<CheckedBatch>) -> Result<Vec<Durable>, Fault> {
        let group: Vec<(u64, u64)> =
            batches.iter().map(|batch| (batch.first_offset(), batch.next_offset())).collect();
        self.next = batches.last().map_or(self.next, CheckedBatch::next_offset);
        let first_group = self.groups.lock().unwrap().is_empty();
        self.groups.lock().unwrap().push(group);
        Ok(if first_group { vec![Durable { topic: "t".into(), next_offset: self.next }] } else { Vec::new() })
    }

    async fn on_epochs(&mut self, _epochs: Epochs) -> Result<bool, Fault> {
        Ok(false)
    }

    async fn on_settings(&mut self, _settings: Settings) -> Result<(), Fault> {
        Ok(())
    }

    async fn on_reset(&mut self, _reset: Reset) -> Result<Vec<Durable>, Fault> {
        Ok(Vec::new())
    }

    async fn on_ready(&mut self, _ready: Ready) -> Result<Vec<Durable>, Fault> {
        Ok(Vec::new())
    }

    async fn on_position(&mut self, _position: &TopicPosition) -> Result<(), Fault> {
        Ok(())
    }

    async fn next_work(&mut self) -> Result<Work, Fault> {
        match self.later.recv().await {
            Some(next_offset) => {
                Ok(Work { acks: vec![Durable { topic: "t".into(), next_offset }], seeks: Vec::new() })
            }
            None => std::future::pending().await,
        }
    }

    async fn on_link_end(&mut self) {}
}

/// One fixed upstream; remembers how links ended.
struct Fixed {
    target: Target,
    ends: Arc<Mutex<Vec<LinkEnd>>>,
}

impl Upstream for Fixed {
    async fn choose(&mut self) -> Option<Target> {
        Some(self.target.clone())
    }

    fn ended(&mut self, _target: &Target, end: &LinkEnd) {
        self.ends.lock().unwrap().push(end.clone());
    }
}

fn config() -> FollowConfig {
    FollowConfig {
        hello: Hello {
            version: PROTOCOL_VERSION,
            role: Role::Consumer,
            level: LEVEL_CONSUMER,
            client_id: "c".into(),
            group: "g".into(),
            token: String::new(),
            max_in_flight: 0,
            batch_max_records: 0,
            batch_max_bytes: 0,
            topics: Vec::new(),
        },
        heartbeat: Duration::from_millis(400),
        max_frame_len: DEFAULT_MAX_FRAME_LEN,
        connect_timeout: Duration::from_secs(3),
        reconnect_initial: Duration::from_millis(10),
        reconnect_max: Duration::from_millis(50),
        upstream_level: None,
        upstream_noun: "broker",
        link_noun: "connection",
    }
}

#[tokio::test]
async fn batches_are_gathered_proven_and_acknowledged_only_when_the_sink_says_so() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let groups = Arc::new(Mutex::new(Vec::new()));
    let ends = Arc::new(Mutex::new(Vec::new()));
    let (release, later) = mpsc::channel(4);
    let (stop, stopped) = oneshot::channel::<()>();
    let mut sink = MemorySink { next: 0, groups: Arc::clone(&groups), later };
    let mut upstream = Fixed {
        target: Target { name: "up".into(), endpoint: Endpoint::Tcp(addr) },
        ends: Arc::clone(&ends),
    };
    let follower = tokio::spawn(async move {
        client::follow(&config(), &mut upstream, &mut sink, async move {
            let _ = stopped.await;
        })
        .await;
    });

    let (mut socket, _) = listener.accept().await.unwrap();
    let mut buffer = BytesMut::new();
    let Frame::Hello(hello) = read_frame(&mut socket, &mut buffer).await else { panic!("no HELLO") };
    assert_eq!(hello.topics[0].start, StartPosition::Offset(0));
    // Three contiguous batches in one write arrive together: one group, one ACK.
    write_frames(&mut socket, vec![welcome(), batch(0, 1), batch(2, 4), batch(5, 5)]).await;
    let Frame::Ack(ack) = read_frame(&mut socket, &mut buffer).await else { panic!("no ACK") };
    assert_eq!(ack.next_offset, 6);
    assert_eq!(groups.lock().unwrap()[0], vec![(0, 2), (2, 5), (5, 6)]);

    // The next group is not durable yet: no ACK until the sink reports it through next_work.
    write_frames(&mut socket, vec![batch(6, 7)]).await;
    let early = tokio::time::timeout(Duration::from_millis(300), read_frame(&mut socket, &mut buffer)).await;
    assert!(early.is_err(), "an ACK left before the sink reported anything durable: {early:?}");
    release.send(8).await.unwrap();
    let Frame::Ack(ack) = read_frame(&mut socket, &mut buffer).await else { panic!("no ACK") };
    assert_eq!(ack.next_offset, 8);

    // A corrupt record: BAD_RECORDS, the link ends, and the next HELLO resumes from the copy's end.
    let Frame::Batch(mut corrupt) = batch(8, 9) else { unreachable!() };
    let mut bytes = corrupt.records.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    corrupt.records = Bytes::from(bytes);
    write_frames(&mut socket, vec![Frame::Batch(corrupt)]).await;
    let Frame::Error(error) = read_frame(&mut socket, &mut buffer).await else { panic!("no ERROR") };
    assert_eq!((error.code, error.fatal), (ErrorCode::BadRecords, true), "{error:?}");
    assert_eq!(groups.lock().unwrap().len(), 2, "the corrupt batch reached the sink");
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut buffer = BytesMut::new();
    let Frame::Hello(hello) = read_frame(&mut socket, &mut buffer).await else { panic!("no HELLO") };
    assert_eq!(hello.topics[0].start, StartPosition::Offset(8));
    assert!(matches!(&ends.lock().unwrap()[0], LinkEnd::Failed { streamed: true, faulted: true, .. }));

    // A silent upstream (WELCOME, then nothing, PINGs unanswered) is left after three heartbeats.
    write_frames(&mut socket, vec![welcome()]).await;
    let (_socket, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("no reconnect")
        .unwrap();
    let reason = match &ends.lock().unwrap()[1] {
        LinkEnd::Failed { reason, .. } => reason.clone(),
        other => panic!("{other:?}"),
    };
    assert!(reason.contains("silent"), "{reason}");
    stop.send(()).unwrap();
    follower.await.unwrap();
    assert_eq!(ends.lock().unwrap().last(), Some(&LinkEnd::Shutdown));
}
