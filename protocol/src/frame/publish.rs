//! The two frames of the producer role: PUBLISH, new records for ROOT, and PUBLISH_ACK, ROOT's answer once
//! they are durable. Their payloads are parsed in `decode.rs` and written in `encode.rs` like every other
//! frame's; the records inside a PUBLISH are in the producer layout of [`crate::producer`], proven by the
//! decoder before the frame exists.

use crate::producer::ProducerRecords;

/// PUBLISH (0x0E), client to server: new records for one topic, to be stored at ROOT.
///
/// ```text
/// [topic:str16][sequence:8][n:4][records...]
/// ```
///
/// The `n` records (at least one) run to the end of the payload in the producer layout
/// (`[len:4][attrs:1][key_len:2][headers_len:2][key][headers][value]`, see [`crate::producer`]). The
/// decoder proves every record and that there are exactly `n` of them. `sequence` is the producer's own
/// number for the frame, echoed by its PUBLISH_ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The topic; ROOT creates it on the first publish.
    pub topic: String,
    /// Chosen by the producer to match the PUBLISH_ACK; by convention one more than the previous one.
    pub sequence: u64,
    /// The records, proven.
    pub records: ProducerRecords,
}

/// PUBLISH_ACK (0x0F), server to client: the records of one PUBLISH are stored and durable.
///
/// ```text
/// [topic:str16][sequence:8][first_offset:8][last_offset:8]
/// ```
///
/// The records got the offsets `first_offset..=last_offset`, in the order they were sent. The decoder
/// refuses `first_offset > last_offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAck {
    /// The topic.
    pub topic: String,
    /// The `sequence` of the PUBLISH this answers.
    pub sequence: u64,
    /// Offset of the first record stored.
    pub first_offset: u64,
    /// Offset of the last record stored.
    pub last_offset: u64,
}
