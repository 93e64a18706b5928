//! New records at ROOT, whatever carried them (an HTTP publish as JSON or as raw producer records, PUBLISH
//! frames from a producer connection): the topic's log, created with a new uid by the first publish, and
//! one `Log::append` on a blocking thread, where storage assigns the offsets and the timestamp and applies
//! the flush policy (concurrent appends from every connection and request share one flush). The answer's
//! `durable_offset` says what the caller may acknowledge; nothing here decides durability.
//!
//! This module does not parse or answer requests and does not check that this node is ROOT: each
//! transport refuses non-ROOT publishes in its own words.

use std::sync::Arc;

use protocol::{NewRecord, OwnedRecord, ProducerRecords, TopicUid};
use storage::{AppendOutcome, Log};

use crate::error::Error;
use crate::node::Node;

/// Records to store as new ones at ROOT, owned so that they can move to a blocking thread.
pub trait NewRecords: Send + 'static {
    /// The records, borrowed, in the order they are to get offsets.
    fn new_records(&self) -> Vec<NewRecord<'_>>;

    /// How many records there are.
    fn n_records(&self) -> usize;
}

impl NewRecords for Vec<OwnedRecord> {
    fn new_records(&self) -> Vec<NewRecord<'_>> {
        self.iter().map(OwnedRecord::as_new_record).collect()
    }

    fn n_records(&self) -> usize {
        self.len()
    }
}

impl NewRecords for ProducerRecords {
    fn new_records(&self) -> Vec<NewRecord<'_>> {
        self.iter().collect()
    }

    fn n_records(&self) -> usize {
        self.len()
    }
}

/// Several batches stored by one append (PUBLISH frames gathered while the previous append flushed).
impl NewRecords for Vec<ProducerRecords> {
    fn new_records(&self) -> Vec<NewRecord<'_>> {
        self.iter().flat_map(ProducerRecords::iter).collect()
    }

    fn n_records(&self) -> usize {
        self.iter().map(ProducerRecords::len).sum()
    }
}

/// What one publish stored.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The topic's log.
    pub log: Arc<Log>,
    /// What the append did; every record below its `durable_offset` may be acknowledged.
    pub outcome: AppendOutcome,
}

/// The topic's log, created with a new random uid by the first publish. Blocking (creating a topic writes
/// files and SQLite).
pub fn topic_log(node: &Node, topic: &str) -> Result<Arc<Log>, storage::Error> {
    if let Some(log) = node.store.topic(topic) {
        return Ok(log);
    }
    let uid = TopicUid(uuid::Uuid::new_v4().as_u128());
    let log = node.store.get_or_create_topic(topic, uid)?;
    if log.uid() == uid {
        tracing::info!(%topic, %uid, "created topic");
    }
    Ok(log)
}

/// Stores `records` as new records of `topic` (creating it if needed) on a blocking thread and counts
/// them in the metrics. Returns once storage has applied the flush policy: with `always` and `interval`
/// the records are then on disk (see [`Stored::outcome`]'s `durable_offset`).
pub async fn store(node: &Arc<Node>, topic: String, records: impl NewRecords) -> Result<Stored, Error> {
    let blocking_node = Arc::clone(node);
    let (log, outcome, n_bytes) = tokio::task::spawn_blocking(move || {
        let log = topic_log(&blocking_node, &topic)?;
        let new_records = records.new_records();
        let n_bytes: u64 = new_records.iter().map(|record| record.encoded_len() as u64).sum();
        let outcome = log.append(&new_records)?;
        Ok::<_, storage::Error>((log, outcome, n_bytes))
    })
    .await??;
    node.metrics.stored(log.name(), outcome.n_appended, n_bytes);
    Ok(Stored { log, outcome })
}
