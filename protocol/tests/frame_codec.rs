//! The frame codec through its public interface: round trips, exact bytes, partial input, every kind of bad
//! frame, the zero-copy decoder and the vectored BATCH header, and the producer frames PUBLISH and
//! PUBLISH_ACK.

mod common;

use bytes::{Bytes, BytesMut};
use common::{encoded, raw_frame, sample_frames, sample_producer_records, sample_records};
use protocol::frame::{
    Ack, Batch, DEFAULT_MAX_FRAME_LEN, ErrorCode, ErrorFrame, FRAME_HEADER_LEN, Frame, FrameType, Hello,
    MAX_FRAME_LEN_LIMIT, Ping, Publish, PublishAck, Role, StartPosition, TopicStart, encode_batch_header,
};
use protocol::{NO_EPOCH, NewRecord, ProducerRecords, TopicUid, WireError, check_batch};

fn decode_whole(bytes: &[u8]) -> Result<Frame, WireError> {
    match Frame::decode(bytes, DEFAULT_MAX_FRAME_LEN)? {
        Some((frame, consumed)) => {
            assert_eq!(consumed, bytes.len());
            Ok(frame)
        }
        None => panic!("a whole frame of {} bytes decoded as partial", bytes.len()),
    }
}

#[test]
fn every_frame_type_round_trips() {
    let frames = sample_frames();
    let types: Vec<FrameType> = frames.iter().map(Frame::frame_type).collect();
    assert_eq!(types, FrameType::ALL, "the samples cover every frame type once");
    for frame in frames {
        let bytes = encoded(&frame);
        assert_eq!(bytes[4], frame.frame_type().as_u8());
        assert_eq!(decode_whole(&bytes).unwrap(), frame, "{}", frame.name());
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(Frame::decode_from(&mut buf, DEFAULT_MAX_FRAME_LEN).unwrap(), Some(frame));
        assert!(buf.is_empty());
    }
}

#[test]
fn every_truncation_needs_more_bytes() {
    for frame in sample_frames() {
        let bytes = encoded(&frame);
        for n in 0..bytes.len() {
            assert_eq!(
                Frame::decode(&bytes[..n], DEFAULT_MAX_FRAME_LEN).unwrap(),
                None,
                "{} at {n}",
                frame.name()
            );
            let mut buf = BytesMut::from(&bytes[..n]);
            assert_eq!(Frame::decode_from(&mut buf, DEFAULT_MAX_FRAME_LEN).unwrap(), None);
            assert_eq!(buf.len(), n, "a partial frame leaves the buffer alone");
        }
    }
}

#[test]
fn hello_golden_bytes() {
    let hello = Frame::Hello(Hello {
        version: 1,
        role: Role::Pipe,
        level: 2,
        client_id: "l3".to_string(),
        group: "l3".to_string(),
        token: String::new(),
        max_in_flight: 8,
        batch_max_records: 0,
        batch_max_bytes: 65_536,
        topics: vec![
            TopicStart {
                topic: "px".to_string(),
                uid: TopicUid(1),
                epoch: 3,
                start: StartPosition::Offset(5),
            },
            TopicStart {
                topic: "*".to_string(),
                uid: TopicUid::UNKNOWN,
                epoch: NO_EPOCH,
                start: StartPosition::Earliest,
            },
        ],
    });
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        91, 0, 0, 0,                    // len
        0x01,                           // type HELLO
        0xd9, 0x1f, 0x06, 0xc4,         // crc
        1, 0,                           // version
        1,                              // role: pipe
        2,                              // level: L3
        2, 0, b'l', b'3',               // client_id
        2, 0, b'l', b'3',               // group
        0, 0,                           // token: empty
        8, 0,                           // max_in_flight
        0, 0, 0, 0,                     // batch_max_records: the server's
        0, 0, 1, 0,                     // batch_max_bytes: 64 KiB
        2, 0,                           // n topics
        2, 0, b'p', b'x',               // topic
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // uid 1
        3, 0, 0, 0,                     // epoch 3
        3, 5, 0, 0, 0, 0, 0, 0, 0,      // start: OFFSET 5
        1, 0, b'*',                     // topic
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // uid unknown
        0xff, 0xff, 0xff, 0xff,         // epoch: none
        1, 0, 0, 0, 0, 0, 0, 0, 0,      // start: EARLIEST
    ];
    assert_eq!(encoded(&hello), expected);
    assert_eq!(decode_whole(&expected).unwrap(), hello);
}

#[test]
fn batch_golden_bytes() {
    // The codec does not look inside the records, so any bytes stand in for them here.
    let batch = Frame::Batch(Batch {
        topic: "t".to_string(),
        first_offset: 7,
        last_offset: 7,
        end_offset: 8,
        records: Bytes::from_static(b"RECORDS"),
    });
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        34, 0, 0, 0,                    // len
        0x03,                           // type BATCH
        0x91, 0x9d, 0x9e, 0x2a,         // crc
        1, 0, b't',                     // topic
        7, 0, 0, 0, 0, 0, 0, 0,         // first_offset
        7, 0, 0, 0, 0, 0, 0, 0,         // last_offset
        8, 0, 0, 0, 0, 0, 0, 0,         // end_offset
        b'R', b'E', b'C', b'O', b'R', b'D', b'S',
    ];
    assert_eq!(encoded(&batch), expected);
    assert_eq!(decode_whole(&expected).unwrap(), batch);
}

#[test]
fn ack_golden_bytes() {
    let ack = Frame::Ack(Ack { topic: "px".to_string(), next_offset: 43 });
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        12, 0, 0, 0,                    // len
        0x04,                           // type ACK
        0xde, 0x28, 0xd8, 0x3a,         // crc
        2, 0, b'p', b'x',               // topic
        43, 0, 0, 0, 0, 0, 0, 0,        // next_offset
    ];
    assert_eq!(encoded(&ack), expected);
    assert_eq!(decode_whole(&expected).unwrap(), ack);
}

#[test]
fn error_golden_bytes() {
    let error =
        Frame::Error(ErrorFrame { code: ErrorCode::SlowConsumer, fatal: true, message: "slow".into() });
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        9, 0, 0, 0,                     // len
        0x0A,                           // type ERROR
        0x87, 0xa9, 0xae, 0x71,         // crc
        9, 0,                           // code: SLOW_CONSUMER
        1,                              // fatal
        4, 0, b's', b'l', b'o', b'w',   // message
    ];
    assert_eq!(encoded(&error), expected);
    assert_eq!(decode_whole(&expected).unwrap(), error);
}

#[test]
fn bad_crc_is_refused() {
    let clean = encoded(&Frame::Ack(Ack { topic: "px".to_string(), next_offset: 43 }));
    // Every byte after the length field is covered: the type byte, the CRC itself and the payload.
    for at in 4..clean.len() {
        let mut bytes = clean.clone();
        bytes[at] ^= 0x01;
        let error = Frame::decode(&bytes, DEFAULT_MAX_FRAME_LEN).unwrap_err();
        assert!(matches!(error, WireError::FrameCrc { .. }), "flip at {at}: {error:?}");
        assert_eq!(error.error_code(), ErrorCode::BadCrc);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(Frame::decode_from(&mut buf, DEFAULT_MAX_FRAME_LEN), Err(error));
        assert_eq!(buf.len(), bytes.len(), "an error leaves the buffer alone");
    }
}

#[test]
fn oversized_length_is_refused_before_the_payload_arrives() {
    let mut header = Vec::new();
    header.extend_from_slice(&1001u32.to_le_bytes());
    header.push(FrameType::Batch.as_u8());
    header.extend_from_slice(&[0; 4]);
    assert_eq!(header.len(), FRAME_HEADER_LEN);
    let expected = WireError::FrameTooLarge { len: 1001, max: 1000 };
    assert_eq!(Frame::decode(&header, 1000), Err(expected.clone()));
    assert_eq!(Frame::decode(&header[..4], 1000), Err(expected.clone()), "the length field alone suffices");
    assert_eq!(expected.error_code(), ErrorCode::FrameTooLarge);
    let mut buf = BytesMut::from(&header[..]);
    assert_eq!(Frame::decode_from(&mut buf, 1000), Err(expected));
    // A frame exactly at the limit is only waiting for its payload.
    header[..4].copy_from_slice(&1000u32.to_le_bytes());
    assert_eq!(Frame::decode(&header, 1000), Ok(None));
}

#[test]
fn configured_maximum_is_capped_at_the_protocol_limit() {
    let len = MAX_FRAME_LEN_LIMIT + 1;
    let header = (len as u32).to_le_bytes();
    assert_eq!(
        Frame::decode(&header, usize::MAX),
        Err(WireError::FrameTooLarge { len, max: MAX_FRAME_LEN_LIMIT })
    );
}

#[test]
fn unknown_frame_type_is_refused() {
    // 0x11 is past the last type.
    for frame_type in [0x00, 0x11, 0x7f, 0xff] {
        let bytes = raw_frame(frame_type, b"");
        let error = Frame::decode(&bytes, DEFAULT_MAX_FRAME_LEN).unwrap_err();
        assert_eq!(error, WireError::UnknownFrameType { frame_type });
        assert_eq!(error.error_code(), ErrorCode::UnknownFrameType);
    }
    for frame_type in FrameType::ALL {
        assert_eq!(FrameType::from_u8(frame_type.as_u8()), Some(frame_type));
    }
}

/// Decodes a raw frame that must be refused, checks its error code, and returns the error.
fn refused(frame_type: FrameType, payload: &[u8]) -> WireError {
    let bytes = raw_frame(frame_type.as_u8(), payload);
    let error = Frame::decode(&bytes, DEFAULT_MAX_FRAME_LEN).unwrap_err();
    assert_eq!(error.error_code(), ErrorCode::MalformedFrame, "{error}");
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(Frame::decode_from(&mut buf, DEFAULT_MAX_FRAME_LEN), Err(error.clone()));
    assert_eq!(buf.len(), bytes.len(), "an error leaves the buffer alone");
    error
}

/// The payload of `ACK px 43`.
fn ack_payload() -> Vec<u8> {
    let mut payload = vec![2, 0, b'p', b'x'];
    payload.extend_from_slice(&43u64.to_le_bytes());
    payload
}

#[test]
fn trailing_bytes_are_refused() {
    let mut payload = ack_payload();
    payload.push(0);
    assert_eq!(refused(FrameType::Ack, &payload), WireError::TrailingBytes { frame: "ACK", n_bytes: 1 });
    let mut ping = vec![0; 16];
    ping.extend_from_slice(b"extra");
    let error = refused(FrameType::Pong, &ping);
    assert_eq!(error, WireError::TrailingBytes { frame: "PONG", n_bytes: 5 });
    assert_eq!(error.to_string(), "PONG payload has 5 bytes left over after its last field");
}

#[test]
fn truncated_payload_names_the_field() {
    let payload = ack_payload();
    assert_eq!(
        refused(FrameType::Ack, &payload[..payload.len() - 1]),
        WireError::FrameTruncated { frame: "ACK", field: "next_offset" }
    );
    assert_eq!(
        refused(FrameType::Ack, &payload[..3]),
        WireError::FrameTruncated { frame: "ACK", field: "topic" }
    );
    assert_eq!(
        refused(FrameType::Hello, &[]),
        WireError::FrameTruncated { frame: "HELLO", field: "version" }
    );
}

#[test]
fn bad_utf8_is_refused() {
    let mut payload = ack_payload();
    payload[2] = 0xff;
    let error = refused(FrameType::Ack, &payload);
    assert_eq!(error, WireError::BadUtf8 { frame: "ACK", field: "topic" });
    assert_eq!(error.to_string(), "ACK field `topic` is not valid UTF-8");
}

#[test]
fn start_positions_are_checked() {
    let seek = |kind: u8, offset: u64| {
        let mut payload = vec![2, 0, b'p', b'x', kind];
        payload.extend_from_slice(&offset.to_le_bytes());
        payload
    };
    let error = refused(FrameType::Seek, &seek(5, 0));
    assert_eq!(error, WireError::UnknownStartKind { frame: "SEEK", kind: 5 });
    assert_eq!(error.to_string(), "SEEK has unknown start position kind 5; the known kinds are 0 to 4");
    let error = refused(FrameType::Seek, &seek(2, 9));
    assert_eq!(error.to_string(), "SEEK is malformed: start position of kind 2 has offset 9; it must be 0");
    for (kind, start) in [
        (0, StartPosition::Committed),
        (1, StartPosition::Earliest),
        (2, StartPosition::Latest),
        (4, StartPosition::FullRefresh),
    ] {
        let Frame::Seek(decoded) = decode_whole(&raw_frame(FrameType::Seek.as_u8(), &seek(kind, 0))).unwrap()
        else {
            panic!("SEEK decoded as another frame");
        };
        assert_eq!(decoded.start, start);
    }
}

#[test]
fn unknown_role_is_refused() {
    let mut bytes = encoded(&sample_frames()[0]);
    let mut payload = bytes.split_off(FRAME_HEADER_LEN);
    payload[2] = 3;
    assert_eq!(refused(FrameType::Hello, &payload), WireError::UnknownRole { role: 3 });
    payload[2] = 2;
    let Frame::Hello(hello) = decode_whole(&raw_frame(FrameType::Hello.as_u8(), &payload)).unwrap() else {
        panic!("HELLO decoded as another frame");
    };
    assert_eq!(hello.role, Role::Producer);
}

#[test]
fn batch_fields_are_checked() {
    let batch = |first: u64, last: u64, records: &[u8]| {
        let mut payload = vec![1, 0, b't'];
        for offset in [first, last, 100] {
            payload.extend_from_slice(&offset.to_le_bytes());
        }
        payload.extend_from_slice(records);
        payload
    };
    let error = refused(FrameType::Batch, &batch(8, 7, b"R"));
    assert_eq!(error.to_string(), "BATCH is malformed: first_offset 8 is greater than last_offset 7");
    let error = refused(FrameType::Batch, &batch(7, 7, b""));
    assert_eq!(error.to_string(), "BATCH is malformed: it carries no records");
    let mut dst = vec![0xAA];
    assert!(encode_batch_header("t", 8, 7, 100, b"R", &mut dst).is_err());
    assert!(encode_batch_header("t", 7, 7, 100, b"", &mut dst).is_err());
    assert_eq!(dst, [0xAA], "a refused header leaves the buffer alone");
}

#[test]
fn error_fatal_flag_is_zero_or_one() {
    let error = refused(FrameType::Error, &[1, 0, 2, 0, 0]);
    assert_eq!(error.to_string(), "ERROR is malformed: fatal is 2; it must be 0 or 1");
}

#[test]
fn error_codes_from_newer_peers_are_carried() {
    let bytes = raw_frame(FrameType::Error.as_u8(), &[0xe7, 0x03, 0, 2, 0, b'h', b'i']);
    let frame = decode_whole(&bytes).unwrap();
    let expected = ErrorFrame { code: ErrorCode::Other(999), fatal: false, message: "hi".to_string() };
    assert_eq!(frame, Frame::Error(expected));
    assert_eq!(encoded(&frame), bytes);
    for code in 1..=15 {
        let known = ErrorCode::from_code(code);
        assert!(!matches!(known, ErrorCode::Other(_)), "code {code} is in the table");
        assert_eq!(known.code(), code);
    }
    assert_eq!(ErrorCode::BadCrc.to_string(), "BAD_CRC (2)");
    assert!(!ErrorCode::UnknownTopic.is_fatal_by_default());
    assert!(!ErrorCode::OffsetOutOfRange.is_fatal_by_default());
    assert!(ErrorCode::MalformedFrame.is_fatal_by_default());
}

#[test]
fn error_frame_reports_a_wire_error() {
    let mut bytes = encoded(&Frame::Ping(Ping { nonce: 1, timestamp_ms: 2 }));
    bytes[12] ^= 0xff;
    let error = Frame::decode(&bytes, DEFAULT_MAX_FRAME_LEN).unwrap_err();
    let report = ErrorFrame::from_wire_error(&error);
    assert_eq!(report.code, ErrorCode::BadCrc);
    assert!(report.fatal);
    assert!(report.message.starts_with("frame CRC is 0x"), "{}", report.message);
}

#[test]
fn decode_from_reads_several_frames_from_one_buffer() {
    let frames = sample_frames();
    let mut buf = BytesMut::new();
    for frame in &frames {
        buf.extend_from_slice(&encoded(frame));
    }
    let mut decoded = Vec::new();
    while let Some(frame) = Frame::decode_from(&mut buf, DEFAULT_MAX_FRAME_LEN).unwrap() {
        decoded.push(frame);
        assert!(decoded.len() <= frames.len());
    }
    assert_eq!(decoded, frames);
    assert!(buf.is_empty());

    // The slice decoder walks the same bytes with the consumed counts it returns.
    let all: Vec<u8> = frames.iter().flat_map(encoded).collect();
    let mut at = 0;
    for frame in &frames {
        let (decoded, consumed) = Frame::decode(&all[at..], DEFAULT_MAX_FRAME_LEN).unwrap().unwrap();
        assert_eq!(&decoded, frame);
        at += consumed;
    }
    assert_eq!(at, all.len());
}

#[test]
fn decode_from_assembles_frames_across_calls() {
    let frames = sample_frames();
    let all: Vec<u8> = frames.iter().flat_map(encoded).collect();
    // Feed the stream in uneven pieces, as a socket would deliver it.
    for piece_len in [1, 7, 100] {
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for piece in all.chunks(piece_len) {
            buf.extend_from_slice(piece);
            while let Some(frame) = Frame::decode_from(&mut buf, DEFAULT_MAX_FRAME_LEN).unwrap() {
                decoded.push(frame);
            }
        }
        assert_eq!(decoded, frames, "pieces of {piece_len} bytes");
        assert!(buf.is_empty());
    }
}

#[test]
fn decode_from_shares_the_batch_records() {
    let frame = sample_frames().remove(2);
    let mut buf = BytesMut::from(&encoded(&frame)[..]);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let Some(Frame::Batch(batch)) = Frame::decode_from(&mut buf, DEFAULT_MAX_FRAME_LEN).unwrap() else {
        panic!("the sample did not decode as a BATCH");
    };
    assert!(range.contains(&(batch.records.as_ptr() as usize)), "records were copied");
    assert_eq!(batch.records, sample_records());
    let summary = check_batch(&batch.records, batch.first_offset).unwrap();
    assert_eq!((summary.n_records, summary.last_offset), (3, batch.last_offset));
}

#[test]
fn batch_header_plus_records_is_the_batch_frame() {
    let records = sample_records();
    let mut header = vec![0xAA];
    encode_batch_header("prices", 40, 42, 50, &records, &mut header).unwrap();
    let mut vectored = header[1..].to_vec();
    assert_eq!(vectored.len(), FRAME_HEADER_LEN + 2 + "prices".len() + 24);
    vectored.extend_from_slice(&records);
    let frame = Frame::Batch(Batch {
        topic: "prices".to_string(),
        first_offset: 40,
        last_offset: 42,
        end_offset: 50,
        records: Bytes::from(records),
    });
    assert_eq!(vectored, encoded(&frame));
    assert_eq!(decode_whole(&vectored).unwrap(), frame);
}

#[test]
fn encoding_refuses_what_cannot_be_encoded() {
    let long = "x".repeat(u16::MAX as usize + 1);
    let mut dst = vec![0xAA];
    let ack = Frame::Ack(Ack { topic: long.clone(), next_offset: 1 });
    let error = ack.encode(&mut dst).unwrap_err();
    assert_eq!(error, WireError::StringTooLong { frame: "ACK", field: "topic", len: 65_536 });
    assert_eq!(error.error_code(), ErrorCode::Internal);
    assert_eq!(dst, [0xAA], "a refused frame leaves the buffer alone");
    assert!(encode_batch_header(&long, 1, 1, 2, b"R", &mut dst).is_err());
    assert_eq!(dst, [0xAA]);

    let Frame::Hello(mut hello) = sample_frames().remove(0) else { panic!("the first sample is HELLO") };
    let error_frame =
        Frame::Error(ErrorFrame { code: ErrorCode::Internal, fatal: true, message: long.clone() });
    assert!(matches!(error_frame.encode(&mut dst), Err(WireError::StringTooLong { field: "message", .. })));
    let topic = hello.topics[0].clone();
    hello.topics = vec![topic; u16::MAX as usize + 1];
    let error = Frame::Hello(hello).encode(&mut dst).unwrap_err();
    assert_eq!(error, WireError::TooManyTopics { frame: "HELLO", n_topics: 65_536 });
    assert_eq!(dst, [0xAA]);

    // A string of exactly the maximum length is fine.
    let max = "y".repeat(u16::MAX as usize);
    let frame = Frame::Ack(Ack { topic: max, next_offset: 1 });
    let mut bytes = Vec::new();
    frame.encode(&mut bytes).unwrap();
    assert_eq!(decode_whole(&bytes).unwrap(), frame);
}

#[test]
fn encoding_refuses_frames_above_the_protocol_limit() {
    let records = Bytes::from(vec![0u8; MAX_FRAME_LEN_LIMIT]);
    let frame =
        Frame::Batch(Batch { topic: "t".into(), first_offset: 0, last_offset: 0, end_offset: 1, records });
    let mut dst = Vec::new();
    let error = frame.encode(&mut dst).unwrap_err();
    assert_eq!(error, WireError::FrameTooLarge { len: MAX_FRAME_LEN_LIMIT + 27, max: MAX_FRAME_LEN_LIMIT });
    assert!(dst.is_empty());
    let Frame::Batch(batch) = &frame else { unreachable!() };
    assert_eq!(encode_batch_header("t", 0, 0, 1, &batch.records, &mut dst), Err(error));
    assert!(dst.is_empty());
}

#[test]
fn an_epoch_history_out_of_order_is_malformed() {
    let mut payload = vec![1, 0, b't'];
    payload.extend_from_slice(&[0; 16]);
    payload.extend_from_slice(&2u16.to_le_bytes());
    for (epoch, start_offset) in [(1u32, 10u64), (1, 20)] {
        payload.extend_from_slice(&epoch.to_le_bytes());
        payload.extend_from_slice(&start_offset.to_le_bytes());
    }
    let error = Frame::decode(&raw_frame(0x0D, &payload), DEFAULT_MAX_FRAME_LEN).unwrap_err();
    assert!(matches!(&error, WireError::Malformed { frame: "EPOCHS", .. }), "{error}");
    assert_eq!(error.error_code(), ErrorCode::MalformedFrame);
}

#[test]
fn publish_golden_bytes() {
    let records = ProducerRecords::encode(&[NewRecord::new(b"k", b"v")]).unwrap();
    let publish = Frame::Publish(Publish { topic: "t".to_string(), sequence: 5, records });
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        26, 0, 0, 0,                    // len
        0x0E,                           // type PUBLISH
        0x28, 0xaa, 0x07, 0xb2,         // crc
        1, 0, b't',                     // topic
        5, 0, 0, 0, 0, 0, 0, 0,         // sequence
        1, 0, 0, 0,                     // n
        7, 0, 0, 0,                     // record: len
        0,                              //   attrs
        1, 0,                           //   key_len
        0, 0,                           //   headers_len
        b'k',                           //   key
        b'v',                           //   value
    ];
    assert_eq!(encoded(&publish), expected);
    assert_eq!(decode_whole(&expected).unwrap(), publish);
}

#[test]
fn publish_ack_golden_bytes() {
    let ack = Frame::PublishAck(PublishAck {
        topic: "t".to_string(),
        sequence: 5,
        first_offset: 7,
        last_offset: 9,
    });
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        27, 0, 0, 0,                    // len
        0x0F,                           // type PUBLISH_ACK
        0x85, 0xd7, 0x66, 0x45,         // crc
        1, 0, b't',                     // topic
        5, 0, 0, 0, 0, 0, 0, 0,         // sequence
        7, 0, 0, 0, 0, 0, 0, 0,         // first_offset
        9, 0, 0, 0, 0, 0, 0, 0,         // last_offset
    ];
    assert_eq!(encoded(&ack), expected);
    assert_eq!(decode_whole(&expected).unwrap(), ack);
}

/// A PUBLISH payload for topic `t`, sequence 1, with the given `n` and record bytes.
fn publish_payload(n: u32, records: &[u8]) -> Vec<u8> {
    let mut payload = vec![1, 0, b't'];
    payload.extend_from_slice(&1u64.to_le_bytes());
    payload.extend_from_slice(&n.to_le_bytes());
    payload.extend_from_slice(records);
    payload
}

#[test]
fn publish_records_are_proven_by_the_decoder() {
    let one = ProducerRecords::encode(&[NewRecord::new(b"k", b"v")]).unwrap().as_bytes().to_vec();
    let error = refused(FrameType::Publish, &publish_payload(0, b""));
    assert_eq!(error.to_string(), "PUBLISH is malformed: n is 0; a PUBLISH carries at least one record");
    let error = refused(FrameType::Publish, &publish_payload(2, &one));
    assert_eq!(error.to_string(), "PUBLISH is malformed: n is 2 but the payload holds 1 records");
    // Every cut inside the only record: the frame is whole, so its record is not.
    for cut in 1..one.len() {
        let error = refused(FrameType::Publish, &publish_payload(1, &one[..cut]));
        assert!(matches!(error, WireError::ProducerRecord { index: 0, .. }), "cut at {cut}: {error}");
    }
    let mut two = one.clone();
    two.extend_from_slice(&one);
    two[one.len() + 4] = 0x08;
    let error = refused(FrameType::Publish, &publish_payload(2, &two));
    assert_eq!(error.to_string(), "record 1: record attributes 0x08 use reserved bits");
    let mut overrun = one.clone();
    overrun[7] = 3;
    let error = refused(FrameType::Publish, &publish_payload(1, &overrun));
    assert!(error.to_string().starts_with("record 0: key_len 1 and headers_len 3 run past"), "{error}");
    assert_eq!(ErrorFrame::from_wire_error(&error).code, ErrorCode::MalformedFrame);
    assert!(ErrorFrame::from_wire_error(&error).fatal);
}

#[test]
fn publish_ack_offsets_are_checked() {
    let mut payload = vec![1, 0, b't'];
    for value in [5u64, 9, 7] {
        payload.extend_from_slice(&value.to_le_bytes());
    }
    let error = refused(FrameType::PublishAck, &payload);
    assert_eq!(error.to_string(), "PUBLISH_ACK is malformed: first_offset 9 is greater than last_offset 7");
    let ack = PublishAck { topic: "t".to_string(), sequence: 5, first_offset: 9, last_offset: 7 };
    let mut dst = vec![0xAA];
    assert!(Frame::PublishAck(ack).encode(&mut dst).is_err());
    let empty = Publish {
        topic: "t".to_string(),
        sequence: 1,
        records: ProducerRecords::check(Bytes::new()).unwrap(),
    };
    assert!(Frame::Publish(empty).encode(&mut dst).is_err());
    assert_eq!(dst, [0xAA], "a refused frame leaves the buffer alone");
}

#[test]
fn decode_from_shares_the_publish_records() {
    let frame = sample_frames().into_iter().find(|frame| frame.frame_type() == FrameType::Publish).unwrap();
    let mut buf = BytesMut::from(&encoded(&frame)[..]);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let Some(Frame::Publish(publish)) = Frame::decode_from(&mut buf, DEFAULT_MAX_FRAME_LEN).unwrap() else {
        panic!("the sample did not decode as a PUBLISH");
    };
    assert!(range.contains(&(publish.records.as_bytes().as_ptr() as usize)), "records were copied");
    assert_eq!(publish.records, sample_producer_records());
    let keys: Vec<&[u8]> = publish.records.iter().map(|record| record.key).collect();
    assert_eq!(keys, [&b"AAPL"[..], b"MSFT", b""]);
}
