//! Frames and helpers shared by the codec tests: one sample of every frame type, and a way to build frames
//! with a correct header around an arbitrary payload.

#![allow(dead_code)]

use bytes::Bytes;
use protocol::frame::{
    Ack, Batch, ErrorCode, ErrorFrame, FRAME_HEADER_LEN, Frame, Hello, LEVEL_CONSUMER, PROTOCOL_VERSION,
    Ping, Publish, PublishAck, Ready, Reset, Role, Seek, StartPosition, TopicAnnounce, TopicPosition,
    TopicStart, Welcome,
};
use protocol::record::encode_headers;
use protocol::{
    Cleanup, Epoch, EpochHistory, Epochs, NO_EPOCH, NewRecord, ProducerRecords, Settings, TopicSettings,
    TopicUid,
};

/// Three records with offsets 40, 41 and 42.
pub fn sample_records() -> Vec<u8> {
    let mut records = Vec::new();
    for offset in 40..43 {
        NewRecord::new(b"AAPL", b"{\"price\":1}").encode_to_vec(
            offset,
            1_700_000_000_000 + offset,
            &mut records,
        );
    }
    records
}

/// Three records in the producer layout: one with a header, one tombstone, one with an empty key.
pub fn sample_producer_records() -> ProducerRecords {
    let headers = encode_headers([("source", &b"till-7"[..])]).unwrap();
    ProducerRecords::encode(&[
        NewRecord { key: b"AAPL", headers: &headers, value: b"{\"price\":1}", attributes: 0 },
        NewRecord { key: b"MSFT", headers: &[], value: b"", attributes: protocol::record::ATTR_TOMBSTONE },
        NewRecord::new(b"", b"no key"),
    ])
    .unwrap()
}

/// One frame of every type, with non-trivial values in every field.
pub fn sample_frames() -> Vec<Frame> {
    let uid = TopicUid(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff);
    vec![
        Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            role: Role::Consumer,
            level: LEVEL_CONSUMER,
            client_id: "till-7".to_string(),
            group: "pricing".to_string(),
            token: "sécret".to_string(),
            max_in_flight: 16,
            batch_max_records: 500,
            batch_max_bytes: 1 << 20,
            topics: vec![
                TopicStart { topic: "prices".to_string(), uid, epoch: 3, start: StartPosition::Offset(1234) },
                TopicStart {
                    topic: "catalog".to_string(),
                    uid: TopicUid::UNKNOWN,
                    epoch: NO_EPOCH,
                    start: StartPosition::Committed,
                },
                TopicStart { topic: "a".to_string(), uid, epoch: 0, start: StartPosition::Latest },
                TopicStart { topic: "b".to_string(), uid, epoch: 1, start: StartPosition::FullRefresh },
                TopicStart {
                    topic: "*".to_string(),
                    uid: TopicUid::UNKNOWN,
                    epoch: NO_EPOCH,
                    start: StartPosition::Earliest,
                },
            ],
        }),
        Frame::Welcome(Welcome {
            version: PROTOCOL_VERSION,
            node_id: "l2-eu-west".to_string(),
            level: 1,
            heartbeat_ms: 5_000,
            topics: vec![TopicPosition {
                topic: "prices".to_string(),
                uid,
                log_start: 100,
                end_offset: 2_000,
                start_at: 1_234,
            }],
        }),
        Frame::Batch(Batch {
            topic: "prices".to_string(),
            first_offset: 40,
            last_offset: 42,
            end_offset: 50,
            records: Bytes::from(sample_records()),
        }),
        Frame::Ack(Ack { topic: "prices".to_string(), next_offset: 43 }),
        Frame::Seek(Seek { topic: "prices".to_string(), start: StartPosition::Offset(7) }),
        Frame::Reset(Reset { topic: "prices".to_string(), uid, log_start: 100, end_offset: 2_000 }),
        Frame::Ready(Ready { topic: "prices".to_string(), uid, end_offset: 2_000 }),
        Frame::Ping(Ping { nonce: 0xdead_beef, timestamp_ms: 1_700_000_000_000 }),
        Frame::Pong(Ping { nonce: 0xdead_beef, timestamp_ms: 1_700_000_000_000 }),
        Frame::Error(ErrorFrame {
            code: ErrorCode::UnknownTopic,
            fatal: false,
            message: "topic \"nope\" does not exist".to_string(),
        }),
        Frame::Topic(TopicAnnounce { topic: "promotions".to_string(), uid, log_start: 0, end_offset: 3 }),
        Frame::Position(TopicPosition {
            topic: "prices".to_string(),
            uid,
            log_start: 100,
            end_offset: 2_000,
            start_at: 1_999,
        }),
        Frame::Epochs(Epochs {
            topic: "prices".to_string(),
            uid,
            history: EpochHistory::new(vec![
                Epoch { epoch: 0, start_offset: 0 },
                Epoch { epoch: 2, start_offset: 1_500 },
            ])
            .unwrap(),
        }),
        Frame::Publish(Publish {
            topic: "prices".to_string(),
            sequence: 0x0102_0304_0506_0708,
            records: sample_producer_records(),
        }),
        Frame::PublishAck(PublishAck {
            topic: "prices".to_string(),
            sequence: 0x0102_0304_0506_0708,
            first_offset: 2_000,
            last_offset: 2_002,
        }),
        Frame::Settings(Settings {
            topic: "prices".to_string(),
            uid,
            settings: Some(TopicSettings {
                cleanup: Cleanup::CompactDelete,
                retention_bytes: Some(256 << 20),
                retention_age_ms: Some(7 * 86_400_000),
                tombstone_retention_ms: None,
            }),
        }),
    ]
}

/// Encodes a frame that is known to be encodable.
pub fn encoded(frame: &Frame) -> Vec<u8> {
    let mut bytes = Vec::new();
    frame.encode(&mut bytes).unwrap();
    bytes
}

/// A frame with the given type byte and payload and a correct length and CRC, whatever the payload holds.
pub fn raw_frame(frame_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[frame_type]);
    hasher.update(payload);
    let mut bytes = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.push(frame_type);
    bytes.extend_from_slice(&hasher.finalize().to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}
