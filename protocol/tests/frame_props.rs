//! Property tests: arbitrary bytes never make a decoder panic, any payload the decoder accepts re-encodes to
//! the same bytes, and arbitrary valid frames round-trip through both decoders.

mod common;

use bytes::{Bytes, BytesMut};
use common::raw_frame;
use proptest::collection::vec;
use proptest::prelude::*;
use protocol::frame::{
    Ack, Batch, DEFAULT_MAX_FRAME_LEN, ErrorCode, ErrorFrame, FRAME_HEADER_LEN, Frame, Hello, Ping, Publish,
    PublishAck, Ready, Reset, Role, Seek, StartPosition, TopicAnnounce, TopicPosition, TopicStart, Welcome,
};
use protocol::{
    Epoch, EpochHistory, Epochs, NO_EPOCH, NewRecord, ProducerRecords, RecordView, TopicUid, check_batch,
};

fn uid() -> impl Strategy<Value = TopicUid> {
    prop_oneof![Just(TopicUid::UNKNOWN), any::<u128>().prop_map(TopicUid)]
}

fn text() -> impl Strategy<Value = String> {
    // Mostly short names, with some non-ASCII text so multi-byte UTF-8 is covered.
    prop_oneof!["[a-z0-9._-]{0,12}", "\\PC{0,8}"]
}

fn start() -> impl Strategy<Value = StartPosition> {
    prop_oneof![
        Just(StartPosition::Committed),
        Just(StartPosition::Earliest),
        Just(StartPosition::Latest),
        any::<u64>().prop_map(StartPosition::Offset),
        Just(StartPosition::FullRefresh),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![(1u16..=14).prop_map(ErrorCode::from_code), (15u16..).prop_map(ErrorCode::Other)]
}

fn hello() -> impl Strategy<Value = Frame> {
    let topic = (text(), uid(), any::<u32>(), start()).prop_map(|(topic, uid, epoch, start)| TopicStart {
        topic,
        uid,
        epoch,
        start,
    });
    (
        any::<u16>(),
        prop_oneof![Just(Role::Consumer), Just(Role::Pipe), Just(Role::Producer)],
        any::<u8>(),
        (text(), text(), text()),
        any::<u16>(),
        vec(topic, 0..5),
    )
        .prop_map(|(version, role, level, (client_id, group, token), max_in_flight, topics)| {
            let (batch_max_records, batch_max_bytes) = (u32::from(max_in_flight) * 3, u32::from(level) << 12);
            Frame::Hello(Hello {
                version,
                role,
                level,
                client_id,
                group,
                token,
                max_in_flight,
                batch_max_records,
                batch_max_bytes,
                topics,
            })
        })
}

fn welcome() -> impl Strategy<Value = Frame> {
    let topic = (text(), uid(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
        |(topic, uid, log_start, end_offset, start_at)| TopicPosition {
            topic,
            uid,
            log_start,
            end_offset,
            start_at,
        },
    );
    (any::<u16>(), text(), any::<u8>(), any::<u32>(), vec(topic, 0..5)).prop_map(
        |(version, node_id, level, heartbeat_ms, topics)| {
            Frame::Welcome(Welcome { version, node_id, level, heartbeat_ms, topics })
        },
    )
}

fn batch() -> impl Strategy<Value = Frame> {
    (text(), any::<u64>(), any::<u32>(), any::<u64>(), vec(any::<u8>(), 1..200)).prop_map(
        |(topic, first_offset, n_more, end_offset, records)| {
            let last_offset = first_offset.saturating_add(u64::from(n_more));
            Frame::Batch(Batch {
                topic,
                first_offset,
                last_offset,
                end_offset,
                records: Bytes::from(records),
            })
        },
    )
}

fn publish() -> impl Strategy<Value = Frame> {
    // Attributes without the tombstone bit: a tombstone needs a key and no value.
    let record = (vec(any::<u8>(), 0..8), vec(any::<u8>(), 0..40), (0u8..4).prop_map(|codec| codec << 1));
    (text(), any::<u64>(), vec(record, 1..5)).prop_map(|(topic, sequence, records)| {
        let records: Vec<NewRecord<'_>> = records
            .iter()
            .map(|(key, value, attributes)| NewRecord { key, headers: &[], value, attributes: *attributes })
            .collect();
        let records = ProducerRecords::encode(&records).unwrap();
        Frame::Publish(Publish { topic, sequence, records })
    })
}

fn publish_ack() -> impl Strategy<Value = Frame> {
    (text(), any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(topic, sequence, first_offset, n_more)| {
        let last_offset = first_offset.saturating_add(u64::from(n_more));
        Frame::PublishAck(PublishAck { topic, sequence, first_offset, last_offset })
    })
}

fn any_frame() -> impl Strategy<Value = Frame> {
    let ping = (any::<u64>(), any::<u64>()).prop_map(|(nonce, timestamp_ms)| Ping { nonce, timestamp_ms });
    prop_oneof![
        hello(),
        welcome(),
        batch(),
        (text(), any::<u64>()).prop_map(|(topic, next_offset)| Frame::Ack(Ack { topic, next_offset })),
        (text(), start()).prop_map(|(topic, start)| Frame::Seek(Seek { topic, start })),
        (text(), uid(), any::<u64>(), any::<u64>()).prop_map(|(topic, uid, log_start, end_offset)| {
            Frame::Reset(Reset { topic, uid, log_start, end_offset })
        }),
        (text(), uid(), any::<u64>()).prop_map(|(topic, uid, end_offset)| Frame::Ready(Ready {
            topic,
            uid,
            end_offset
        })),
        ping.clone().prop_map(Frame::Ping),
        ping.prop_map(Frame::Pong),
        (error_code(), any::<bool>(), text()).prop_map(|(code, fatal, message)| Frame::Error(ErrorFrame {
            code,
            fatal,
            message
        })),
        (text(), uid(), any::<u64>(), any::<u64>()).prop_map(|(topic, uid, log_start, end_offset)| {
            Frame::Topic(TopicAnnounce { topic, uid, log_start, end_offset })
        }),
        (text(), uid(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(topic, uid, log_start, end_offset, start_at)| {
                Frame::Position(TopicPosition { topic, uid, log_start, end_offset, start_at })
            }
        ),
        (text(), uid(), vec((any::<u32>(), any::<u64>()), 0..6)).prop_map(|(topic, uid, mut entries)| {
            // Any valid history: numbers and starts sorted, numbers distinct and not NO_EPOCH.
            entries.sort_unstable();
            entries.dedup_by_key(|entry| entry.0);
            entries.retain(|entry| entry.0 != NO_EPOCH);
            let mut starts: Vec<u64> = entries.iter().map(|entry| entry.1).collect();
            starts.sort_unstable();
            let entries = entries
                .iter()
                .zip(starts)
                .map(|(&(epoch, _), start_offset)| Epoch { epoch, start_offset })
                .collect();
            Frame::Epochs(Epochs { topic, uid, history: EpochHistory::new(entries).unwrap() })
        }),
        publish(),
        publish_ack(),
    ]
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..300), max_len in 0usize..400) {
        let _ = Frame::decode(&bytes, max_len);
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = Frame::decode_from(&mut buf, max_len);
        let _ = RecordView::decode(&bytes);
        let _ = check_batch(&bytes, 0);
    }

    /// Random payloads behind a correct header reach the payload parsers, which random bytes alone would
    /// almost never do past the CRC check. Whatever they accept must re-encode to exactly the same bytes,
    /// so every frame has a single encoding.
    #[test]
    fn accepted_payloads_re_encode_identically(frame_type in 0u8..=16, payload in vec(any::<u8>(), 0..120)) {
        let bytes = raw_frame(frame_type, &payload);
        let sliced = Frame::decode(&bytes, DEFAULT_MAX_FRAME_LEN);
        let mut buf = BytesMut::from(&bytes[..]);
        let shared = Frame::decode_from(&mut buf, DEFAULT_MAX_FRAME_LEN);
        prop_assert_eq!(sliced.clone().map(|decoded| decoded.map(|(frame, _)| frame)), shared);
        if let Ok(Some((frame, consumed))) = sliced {
            prop_assert_eq!(consumed, bytes.len());
            let mut again = Vec::new();
            frame.encode(&mut again).unwrap();
            prop_assert_eq!(again, bytes);
        }
    }

    #[test]
    fn valid_frames_round_trip(frame in any_frame(), prefix in vec(any::<u8>(), 0..4)) {
        let mut bytes = prefix.clone();
        frame.encode(&mut bytes).unwrap();
        let encoded = &bytes[prefix.len()..];
        let (decoded, consumed) = Frame::decode(encoded, DEFAULT_MAX_FRAME_LEN).unwrap().unwrap();
        prop_assert_eq!(&decoded, &frame);
        prop_assert_eq!(consumed, encoded.len());
        let mut buf = BytesMut::from(encoded);
        buf.extend_from_slice(&prefix);
        prop_assert_eq!(Frame::decode_from(&mut buf, DEFAULT_MAX_FRAME_LEN).unwrap(), Some(frame));
        prop_assert_eq!(&buf[..], &prefix[..]);
    }

    /// Valid payloads with one byte changed, then given a correct header, probe the parsers near the
    /// boundary between accepted and refused; the same two rules hold.
    #[test]
    fn damaged_payloads_decode_or_are_refused(frame in any_frame(), at in any::<prop::sample::Index>(), xor in 1u8..) {
        let mut bytes = Vec::new();
        frame.encode(&mut bytes).unwrap();
        let mut payload = bytes.split_off(FRAME_HEADER_LEN);
        let at = at.index(payload.len());
        payload[at] ^= xor;
        let bytes = raw_frame(frame.frame_type().as_u8(), &payload);
        let sliced = Frame::decode(&bytes, DEFAULT_MAX_FRAME_LEN);
        let mut buf = BytesMut::from(&bytes[..]);
        prop_assert_eq!(sliced.clone().map(|decoded| decoded.map(|(frame, _)| frame)), Frame::decode_from(&mut buf, DEFAULT_MAX_FRAME_LEN));
        match sliced {
            Ok(Some((decoded, _))) => {
                let mut again = Vec::new();
                decoded.encode(&mut again).unwrap();
                prop_assert_eq!(again, bytes);
            }
            Ok(None) => prop_assert!(false, "a whole frame decoded as partial"),
            Err(error) => prop_assert_eq!(error.error_code(), ErrorCode::MalformedFrame, "{}", error),
        }
    }
}
