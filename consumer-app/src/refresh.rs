//! Full refresh of one topic, RESET to READY: the new copy is built beside the live one (a storage
//! replacement log and a shadow key generation) and swapped in at READY in one step, so queries see the
//! old complete copy until then and the new complete copy after.
//!
//! A refresh that does not reach READY (lost connection, crash) leaves the old copy as it was: storage
//! drops the replacement, `app.sqlite` drops the shadow keys, and the pending request makes the next
//! connection ask for the refresh again. This module owns that life cycle; the network is `sync.rs`'s.

use std::sync::Arc;

use protocol::{CheckedBatch, EpochHistory, RecordView, TopicSettings, TopicUid};

use crate::copy::{AppendSummary, Appended, LocalCopy, TopicView, append_to_log, prove};
use crate::db::RefreshStart;
use crate::error::Error;
use crate::now_ms;

/// A refresh in progress.
#[derive(Debug)]
pub struct Refresh {
    /// Topic being refreshed.
    topic: String,
    /// Uid of the new copy.
    uid: TopicUid,
    /// The new copy's log, not visible to queries yet.
    replacement: storage::Replacement,
    /// The refresh's history row and shadow key generation.
    start: RefreshStart,
    /// Records received so far.
    n_records: u64,
    /// Where the handlers stand once the new copy is live.
    handled_to_after: u64,
    /// Records below this offset were already in the old copy of the same history, so handlers skip them.
    pub handler_from: u64,
}

impl Refresh {
    /// The topic being refreshed.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Uid of the new copy.
    pub fn uid(&self) -> TopicUid {
        self.uid
    }

    /// Records received so far.
    pub fn n_records(&self) -> u64 {
        self.n_records
    }

    /// Gives the new copy its broker's epoch history; it is recorded when the copy is swapped in.
    pub fn set_epochs(&self, history: EpochHistory) {
        self.replacement.set_epochs(history);
    }

    /// Gives the new copy its broker's settings; they are recorded when the copy is swapped in.
    pub fn set_settings(&self, settings: Option<TopicSettings>) {
        self.replacement.set_settings(settings);
    }
}

impl LocalCopy {
    /// Starts building a new copy of `topic` with `uid`, whose first record has offset `log_start`.
    ///
    /// The handlers should be idle for `topic` when this is called: their position is taken as the one to
    /// resume from after the swap.
    pub fn begin_refresh(&self, topic: &str, uid: TopicUid, log_start: u64) -> Result<Refresh, Error> {
        let old = self.view(topic);
        let old_row = self.db.topic(topic)?;
        let start = self.db.begin_refresh(topic, uid, now_ms())?;
        let replacement =
            self.store.begin_replace(topic, uid, log_start).map_err(|source| Error::Storage {
                context: "starting a refresh",
                topic: topic.to_string(),
                source: Box::new(source),
            })?;
        // Same history: handlers have seen the old copy, so only records past its end are new to them.
        // A different history is new from its first record.
        let (handler_from, handled_to_after) = match (&old, &old_row) {
            (Some(view), Some(row)) if view.log.uid() == uid => (view.log.next_offset(), row.handled_to),
            _ => (0, log_start),
        };
        tracing::info!(topic, %uid, log_start, "full refresh started; queries keep the old copy");
        Ok(Refresh {
            topic: topic.to_string(),
            uid,
            replacement,
            start,
            n_records: 0,
            handled_to_after,
            handler_from,
        })
    }

    /// Appends records (proven here first, as in [`LocalCopy::append`]) to the new copy and indexes their
    /// keys into the shadow generation.
    pub fn append_refresh(
        &self,
        refresh: &mut Refresh,
        records: &[u8],
        on_record: impl FnMut(&RecordView<'_>),
    ) -> Result<AppendSummary, Error> {
        let batches = [prove(&refresh.topic, records)?];
        let appended = self.append_refresh_log(refresh, &batches)?;
        self.index_appended(&appended, &batches, on_record)
    }

    /// Appends a batch to the new copy's log only; [`LocalCopy::index_appended`] indexes it into the
    /// shadow generation.
    pub fn append_refresh_log(
        &self,
        refresh: &mut Refresh,
        batches: &[CheckedBatch],
    ) -> Result<Appended, Error> {
        let topic: Arc<str> = Arc::from(refresh.topic.as_str());
        let appended =
            append_to_log(refresh.replacement.log(), &topic, refresh.start.generation, false, batches)?;
        refresh.n_records += appended.n_appended;
        Ok(appended)
    }

    /// Swaps the new copy in: the storage replacement becomes the topic's log, one SQLite transaction
    /// makes the shadow generation live, and the view queries read is replaced. Queries wait on the view
    /// lock for the few milliseconds this takes rather than see one half swapped.
    pub fn commit_refresh(&self, refresh: Refresh) -> Result<TopicView, Error> {
        let Refresh { topic, uid, replacement, start, n_records, handled_to_after, .. } = refresh;
        self.db.mark_swapping(start.refresh_id)?;
        let mut views = self.views.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let log = self.store.commit_replace(replacement).map_err(|source| Error::Storage {
            context: "committing a refresh",
            topic: topic.clone(),
            source: Box::new(source),
        })?;
        let next_offset = log.next_offset();
        let handled_to = handled_to_after.clamp(log.log_start(), next_offset);
        self.db.switch_generation(
            &topic,
            uid,
            start.generation,
            next_offset,
            handled_to,
            Some((start.refresh_id, n_records)),
            now_ms(),
        )?;
        let view = TopicView { name: topic.as_str().into(), log, generation: start.generation };
        views.insert(topic.clone(), view.clone());
        drop(views);
        tracing::info!(topic, %uid, n_records, next_offset, "full refresh complete; the new copy is live");
        Ok(view)
    }

    /// Gives up a refresh: the new copy is dropped, the old one stays live, and the request stays pending.
    pub fn abandon_refresh(&self, refresh: Refresh) -> Result<(), Error> {
        let Refresh { topic, replacement, start, n_records, .. } = refresh;
        replacement.abort().map_err(|source| Error::Storage {
            context: "abandoning a refresh",
            topic: topic.clone(),
            source: Box::new(source),
        })?;
        self.db.abandon_refresh(&topic, start, n_records, now_ms())?;
        tracing::info!(topic, n_records, "full refresh abandoned; the old copy stays live");
        Ok(())
    }
}
