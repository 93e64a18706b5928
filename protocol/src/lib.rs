//! The relay tree's bytes: the record layout shared by segment files, the pipe and consumers, the producer
//! record layout ROOT accepts new records in, and the frame codec spoken on consumer and producer
//! connections and inside the pipe's WebSocket messages. Behind the default `json` feature, also the JSON
//! form of records that the HTTP APIs accept and return.
//!
//! Architecture invariant: this crate does no I/O and knows no async runtime. Decoders take byte slices and
//! answer `Ok(None)` for "not enough bytes yet", so any transport can drive them.

pub mod batch;
pub mod epoch;
pub mod error;
pub mod frame;
#[cfg(feature = "json")]
pub mod json;
pub mod level;
pub mod producer;
pub mod record;
pub mod settings;
pub mod time;
pub mod topic;

pub use batch::{CheckedBatch, CheckedRecords, CheckedRun, check_run, skip_below};
pub use epoch::{Epoch, EpochHistory, NO_EPOCH};
pub use error::WireError;
pub use frame::{
    Ack, Batch, DEFAULT_MAX_FRAME_LEN, Epochs, ErrorCode, ErrorFrame, FRAME_HEADER_LEN, Frame, FrameType,
    Hello, LEVEL_CONSUMER, MAX_FRAME_LEN_LIMIT, PROTOCOL_VERSION, Ping, Publish, PublishAck, Ready, Reset,
    Role, Seek, Settings, StartPosition, TopicAnnounce, TopicPosition, TopicStart, Welcome,
    encode_batch_header,
};
#[cfg(feature = "json")]
pub use json::{IngestBody, IngestRecord, OwnedRecord, RecordJson, ValueJson};
pub use level::{Level, UnknownLevel};
pub use producer::ProducerRecords;
pub use record::{BatchSummary, NewRecord, RecordIter, RecordView, check_batch};
#[cfg(feature = "json")]
pub use settings::SettingsJson;
pub use settings::{Cleanup, TopicSettings};
pub use time::now_ms;
pub use topic::{ALL_TOPICS, TopicUid, validate_topic_name};
