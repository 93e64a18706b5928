//! The SETTINGS frame (protocol version 4) through the public codec: both shapes round trip, the exact
//! bytes, every truncation asks for more, and every malformed length or value is a `WireError`.

mod common;

use common::{encoded, raw_frame};
use protocol::frame::{DEFAULT_MAX_FRAME_LEN, ErrorCode, Frame};
use protocol::{Cleanup, Settings, TopicSettings, TopicUid, WireError};

fn settings_frame(settings: Option<TopicSettings>) -> Frame {
    Frame::Settings(Settings { topic: "t".to_string(), uid: TopicUid(0x0102), settings })
}

fn compact() -> TopicSettings {
    TopicSettings {
        cleanup: Cleanup::Compact,
        retention_bytes: None,
        retention_age_ms: Some(1_000),
        tombstone_retention_ms: Some(86_400_000),
    }
}

fn decode(bytes: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
    Frame::decode(bytes, DEFAULT_MAX_FRAME_LEN)
}

#[test]
fn both_shapes_round_trip_and_every_truncation_needs_more() {
    for frame in [
        settings_frame(None),
        settings_frame(Some(compact())),
        settings_frame(Some(TopicSettings::default())),
    ] {
        let bytes = encoded(&frame);
        assert_eq!(decode(&bytes).unwrap(), Some((frame.clone(), bytes.len())));
        for n in 0..bytes.len() {
            assert_eq!(decode(&bytes[..n]).unwrap(), None, "at {n}");
        }
    }
}

#[test]
fn settings_golden_bytes() {
    let mut uid = vec![0x02, 0x01];
    uid.extend_from_slice(&[0; 14]);
    #[rustfmt::skip]
    let defaults_payload: Vec<u8> = [&[1, 0, b't'][..], &uid, &[0]].concat();
    assert_eq!(encoded(&settings_frame(None)), raw_frame(0x10, &defaults_payload));

    #[rustfmt::skip]
    let explicit_payload: Vec<u8> = [
        &[1, 0, b't'][..],                      // topic
        &uid,                                   // uid
        &[1],                                   // explicit
        &[1],                                   // cleanup compact
        &[0b110],                               // present: retention_age_ms, tombstone_retention_ms
        &[0; 8],                                // retention_bytes (absent)
        &1_000u64.to_le_bytes(),                // retention_age_ms
        &86_400_000u64.to_le_bytes(),           // tombstone_retention_ms
    ].concat();
    let frame = settings_frame(Some(compact()));
    assert_eq!(encoded(&frame), raw_frame(0x10, &explicit_payload));
    assert_eq!(decode(&raw_frame(0x10, &explicit_payload)).unwrap().unwrap().0, frame);
}

/// A payload that must be refused as malformed.
fn refused(payload: &[u8]) -> WireError {
    let error = decode(&raw_frame(0x10, payload)).unwrap_err();
    assert_eq!(error.error_code(), ErrorCode::MalformedFrame, "{error}");
    error
}

#[test]
fn malformed_lengths_and_values_are_wire_errors() {
    let good = encoded(&settings_frame(Some(compact())));
    let payload = &good[9..];
    // Every payload cut short of its fields (a whole frame around it) names a truncation, never panics.
    for n in 0..payload.len() {
        let error = refused(&payload[..n]);
        assert!(matches!(error, WireError::FrameTruncated { frame: "SETTINGS", .. }), "at {n}: {error}");
    }
    // Bytes after the settings, or after a defaults marker.
    let mut longer = payload.to_vec();
    longer.push(0);
    assert_eq!(refused(&longer), WireError::TrailingBytes { frame: "SETTINGS", n_bytes: 1 });
    let defaults = encoded(&settings_frame(None));
    let mut defaults_longer = defaults[9..].to_vec();
    defaults_longer.extend_from_slice(&compact().to_bytes());
    assert!(matches!(refused(&defaults_longer), WireError::TrailingBytes { .. }));
    // A topic length running past the payload.
    assert!(matches!(refused(&[200, 0, b't']), WireError::FrameTruncated { field: "topic", .. }));

    let explicit_at = 2 + 1 + 16;
    let cases: [(usize, u8, &str); 4] = [
        (explicit_at, 2, "explicit is 2"),
        (explicit_at + 1, 3, "unknown cleanup policy 3"),
        (explicit_at + 2, 0b1110, "present"),
        (explicit_at + 3, 1, "absent"),
    ];
    for (at, byte, expected) in cases {
        let mut bad = payload.to_vec();
        bad[at] = byte;
        let error = refused(&bad);
        assert!(matches!(error, WireError::Malformed { frame: "SETTINGS", .. }), "{error}");
        assert!(error.to_string().contains(expected), "{error} should mention {expected:?}");
    }
}
