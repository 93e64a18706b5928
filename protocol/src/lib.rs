//! The relay tree's bytes: the record layout shared by segment files, the pipe and consumers, and the frame
//! codec spoken on consumer connections and inside the pipe's WebSocket messages.
//!
//! Architecture invariant: this crate does no I/O and knows no async runtime. Decoders take byte slices and
//! answer `Ok(None)` for "not enough bytes yet", so any transport can drive them.

pub mod error;
pub mod record;
pub mod topic;

pub use error::WireError;
pub use record::{BatchSummary, NewRecord, RecordIter, RecordView, check_batch};
pub use topic::{ALL_TOPICS, TopicUid, validate_topic_name};
