//! The segment log: every broker's and the consumer-app's durable copy of its topics.
//!
//! A [`Store`] is one data directory holding many topics. Each topic is a [`Log`]: a sequence of
//! memory-mapped segment files holding records exactly as `protocol::record` lays them out, so that a
//! byte range read from one log can be appended verbatim to another (a relay's copy) or sent to a consumer
//! without re-encoding. Segment metadata lives in a small SQLite database written only when a segment is
//! created, sealed or removed, never per record.
//!
//! ```text
//! {dir}/meta.sqlite                          topics and segments (meta.rs)
//! {dir}/LOCK                                 held while a Store has the directory open
//! {dir}/topics/{name}/topic.json             the topic's identity, beside its segments (identity.rs)
//! {dir}/topics/{name}/{generation}/{base:020}.log     segment files (segment.rs)
//! {dir}/topics/{name}/{generation}/{base:020}.index   sparse index of a sealed segment (index.rs)
//! {dir}/quarantine/                          what recovery could not account for (quarantine.rs)
//! ```
//!
//! Losing `meta.sqlite` loses no data: recovery rebuilds it from the identity files and the segment files.
//!
//! Architecture invariant: this crate never speaks to the network, and it is the only code that writes a
//! segment file. It knows nothing of the tree, of consumers or of frames; it stores and serves records.

mod append;
mod compact;
mod config;
mod epochs;
mod error;
mod identity;
mod index;
mod integrity;
mod log;
mod meta;
mod paths;
mod quarantine;
mod read;
mod recovery;
mod replace;
mod retention;
mod scan;
mod segment;
mod settings;
mod space;
mod store;
mod writer;

pub use compact::{CompactionReport, TopicCompaction};
pub use config::{FlushPolicy, LogConfig, MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES};
pub use epochs::Adopted;
pub use error::Error;
pub use integrity::{DamagedSegment, ScrubStep};
pub use log::{AppendOutcome, Log, LogStats, SegmentInfo};
pub use paths::{index_path, segment_path, topic_dir};
pub use read::ReadChunk;
pub use replace::Replacement;
pub use retention::{RetentionReport, TopicRetention};
pub use store::Store;
