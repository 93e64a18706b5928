//! The queries by key of the local copy: what the copy holds for one key (its live record, the tombstone
//! that deleted it, or nothing), and the latest record of every live key in byte order of the key, a page at
//! a time. Both read the key index of one view's generation and then that view's log, so an answer never
//! mixes two copies. Nothing here writes.

use std::sync::Arc;

use bytes::Bytes;
use protocol::RecordView;

use super::{LocalCopy, TopicView, ViewError, read_one};
use crate::error::Error;

/// What the copy holds for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLookup {
    /// The key's latest record, which is a value.
    Live(Bytes),
    /// The key's latest record is a tombstone: the key was deleted.
    Deleted {
        /// Offset of the tombstone.
        offset: u64,
    },
    /// The copy holds no record of the key: never seen, or its latest record was removed by retention.
    Unknown,
}

impl KeyLookup {
    /// The record, if the key is live.
    pub fn live(self) -> Option<Bytes> {
        match self {
            KeyLookup::Live(record) => Some(record),
            KeyLookup::Deleted { .. } | KeyLookup::Unknown => None,
        }
    }
}

/// One page of the live keys of a topic.
#[derive(Debug, Clone)]
pub struct KeyPage {
    /// The latest record of each live key on the page, one per key, in byte order of the key.
    pub records: Vec<Bytes>,
    /// Whether a live key follows the last one on the page.
    pub more: bool,
}

impl LocalCopy {
    /// What the copy of `topic` holds for `key`; `Ok(None)` for an unknown topic.
    pub fn latest_by_key(&self, topic: &str, key: &[u8]) -> Result<Option<KeyLookup>, Error> {
        self.with_current_view(topic, |view| {
            match self.db.key_offset(topic, view.generation, key).map_err(ViewError::Other)? {
                Some(offset) => lookup_at(view, offset),
                None => Ok(KeyLookup::Unknown),
            }
        })
    }

    /// The latest records of up to `limit` live keys of `topic` above `after` (from the first key when
    /// `None`), in byte order of the key; `Ok(None)` for an unknown topic. Keys whose latest record is a
    /// tombstone, or is no longer held, are passed over, and more index rows are read in their place, so a
    /// page holds fewer than `limit` keys only when no live key follows it.
    pub fn live_keys(
        &self,
        topic: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Option<KeyPage>, Error> {
        self.with_current_view(topic, |view| {
            let mut records = Vec::new();
            let mut cursor = after.map(<[u8]>::to_vec);
            loop {
                // One row beyond what the page still needs, so that whether a live key follows is known
                // without another query when no key is passed over.
                let wanted = limit.saturating_sub(records.len()).saturating_add(1);
                let rows = self
                    .db
                    .keys_after(topic, view.generation, cursor.as_deref(), wanted)
                    .map_err(ViewError::Other)?;
                let exhausted = rows.len() < wanted;
                for (key, offset) in rows {
                    if let KeyLookup::Live(record) = lookup_at(view, offset)? {
                        if records.len() == limit {
                            still_current(self, view)?;
                            return Ok(KeyPage { records, more: true });
                        }
                        records.push(record);
                    }
                    cursor = Some(key);
                }
                if exhausted {
                    still_current(self, view)?;
                    return Ok(KeyPage { records, more: false });
                }
            }
        })
    }
}

/// What the record at `offset` of the view's log, the latest of its key, says of the key.
fn lookup_at(view: &TopicView, offset: u64) -> Result<KeyLookup, ViewError> {
    let Some(record) = read_one(&view.log, offset)? else {
        return Ok(KeyLookup::Unknown);
    };
    let decoded = RecordView::decode(&record).and_then(|decoded| match decoded {
        Some((decoded, _)) => Ok(decoded.is_tombstone()),
        None => Err(protocol::WireError::TruncatedBatch { remaining: record.len() }),
    });
    match decoded {
        Ok(true) => Ok(KeyLookup::Deleted { offset }),
        Ok(false) => Ok(KeyLookup::Live(record)),
        Err(source) => Err(ViewError::Other(Error::Records { topic: view.name.to_string(), source })),
    }
}

/// Fails with [`ViewError::Swapped`] if a refresh swapped `view` out: a read of several queries may then
/// have seen the index rows of a generation that was being dropped.
fn still_current(copy: &LocalCopy, view: &TopicView) -> Result<(), ViewError> {
    let current = copy
        .view(&view.name)
        .is_some_and(|current| Arc::ptr_eq(&current.log, &view.log) && current.generation == view.generation);
    if current { Ok(()) } else { Err(ViewError::Swapped) }
}
