//! One topic's delivery position inside a session: where the next batch starts, which batches are
//! unacknowledged, whether a full refresh is running, and the log it reads from. This module owns the
//! arithmetic of positions (resolving a start position, cutting the next batch, releasing acknowledged
//! batches); the session owns the connection, the window across topics and the frames.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use protocol::TopicUid;
use protocol::frame::{Epochs, Settings, StartPosition};
use storage::Log;
use tokio::sync::Notify;

use crate::groups::Committed;
use crate::members::Claim;

/// Where delivery of a topic begins, once a start position is resolved against the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// Deliver from this offset.
    At(u64),
    /// Run a full refresh: RESET, everything from the log start, READY.
    Refresh,
    /// An explicit offset beyond the log end: refused with OFFSET_OUT_OF_RANGE.
    OutOfRange {
        /// The offset asked for.
        requested: u64,
        /// The log end.
        end_offset: u64,
    },
}

/// Resolves a start position against a log.
///
/// A client uid that is known and differs from the log's means the client holds another history, so it
/// gets a full refresh whatever it asked. A committed offset recorded for another uid is ignored. A
/// position below the log start can only be served by a full refresh. A committed offset beyond the log
/// end (this node is behind the copy the consumer already has) waits there for the log to catch up, and so
/// does an explicit offset beyond the end from a client that holds this very history (it names the log's
/// uid): this node restarted with less than the client holds (a restored or lost data directory, a tail
/// it had not flushed) and refetches it from its parent, so the client waits rather than being left out. An
/// explicit offset beyond the end from a client that holds no copy is refused, since it asked for
/// something that does not exist.
///
/// A client that holds this history up to an explicit offset, with its last record in `client_epoch`,
/// gets a full refresh if the log's epoch history says that epoch ended below that offset: the client
/// holds records ROOT lost and gave to others (`protocol::epoch`).
pub fn resolve_start(
    start: StartPosition,
    client_uid: TopicUid,
    client_epoch: u32,
    log: &Log,
    committed: Option<Committed>,
) -> Begin {
    let uid = log.uid();
    if !client_uid.is_unknown() && client_uid != uid {
        return Begin::Refresh;
    }
    if let StartPosition::Offset(next_offset) = start
        && client_uid == uid
        && let Some(at) = log.epochs().divergence(client_epoch, next_offset)
    {
        tracing::warn!(topic = %log.name(), client_epoch, client_next_offset = next_offset, diverged_at = at,
            "the client holds records this history does not (epoch {client_epoch} ended at {at}); \
             it gets a full refresh");
        return Begin::Refresh;
    }
    let log_start = log.log_start();
    let end_offset = log.readable_offset();
    let wanted = match start {
        StartPosition::FullRefresh => return Begin::Refresh,
        StartPosition::Earliest => log_start,
        StartPosition::Latest => end_offset,
        StartPosition::Committed => match committed.filter(|committed| committed.uid == uid) {
            Some(committed) if committed.next_offset < log_start => return Begin::Refresh,
            Some(committed) if below_delete_horizon(log, committed.next_offset) => return Begin::Refresh,
            Some(committed) => return Begin::At(committed.next_offset),
            None => log_start,
        },
        StartPosition::Offset(offset) => offset,
    };
    if wanted < log_start || below_delete_horizon(log, wanted) {
        Begin::Refresh
    } else if wanted > end_offset && client_uid != uid {
        Begin::OutOfRange { requested: wanted, end_offset }
    } else {
        Begin::At(wanted)
    }
}

/// Whether a client that holds records up to `next_offset` (and nothing past it) would resume below the
/// log's delete horizon: compaction may have dropped a delete it never received, so only a full refresh
/// (which replaces its copy) can take the deleted key away from it. A client at the log start holds nothing
/// this log still has, and streams from there.
pub fn below_delete_horizon(log: &Log, next_offset: u64) -> bool {
    let below = next_offset > log.log_start() && next_offset < log.delete_horizon();
    if below {
        tracing::info!(topic = %log.name(), next_offset, delete_horizon = log.delete_horizon(),
            "the client is below the delete horizon; it gets a full refresh");
    }
    below
}

/// A full refresh in progress on one cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refresh {
    /// The log start when the refresh began: the first offset of the new copy.
    pub start: u64,
    /// The log end when the refresh began: READY is sent once delivery reaches it.
    pub end: u64,
    /// Whether READY has been queued.
    pub ready_sent: bool,
}

/// The log a cursor reads; every change of its readable offset or epoch history, and its closing, wake
/// the session (`Log::wake_on_change`).
#[derive(Debug)]
pub struct Attached {
    /// The log.
    pub log: Arc<Log>,
    /// The version of the log's epoch history last sent (EPOCHS), if any: sent before the first batch,
    /// again after a RESET, and whenever it changes.
    pub epochs_sent: Option<u64>,
    /// The version of the log's settings last sent (SETTINGS), if any: sent before the first batch, again
    /// after a RESET, and whenever they change.
    pub settings_sent: Option<u64>,
}

impl Attached {
    /// Attaches to a log: every change of its readable offset wakes the session.
    pub fn new(log: Arc<Log>, wake: &Arc<Notify>) -> Attached {
        log.wake_on_change(wake);
        Attached { log, epochs_sent: None, settings_sent: None }
    }

    /// Whether the log was replaced or deleted since attaching.
    pub fn is_closed(&self) -> bool {
        self.log.is_closed()
    }
}

/// One topic of a session.
#[derive(Debug)]
pub struct Cursor {
    /// The topic name.
    pub topic: String,
    /// The log, or `None` while waiting for the topic to be created.
    pub attached: Option<Attached>,
    /// For a waiting topic, where to start once it exists.
    pub pending_start: StartPosition,
    /// For a waiting topic, the uid of the copy the client holds (unknown if none): if the topic appears
    /// with another uid, the client gets a full refresh.
    pub client_uid: TopicUid,
    /// For a waiting topic, the epoch of the client's last record (`protocol::NO_EPOCH` if none).
    pub client_epoch: u32,
    /// The next offset to send.
    pub next_send: u64,
    /// The latest offset the client acknowledged (`next_offset` of its last ACK).
    pub acked: u64,
    /// The end (last offset + 1) of each unacknowledged batch, oldest first.
    pub in_flight: VecDeque<u64>,
    /// A full refresh in progress.
    pub refresh: Option<Refresh>,
    /// This session's ownership of (group, topic).
    pub claim: Claim,
}

/// A batch cut from a log, ready to frame.
#[derive(Debug)]
pub struct CutBatch {
    /// Offset of its first record.
    pub first_offset: u64,
    /// Offset of its last record.
    pub last_offset: u64,
    /// The log end when it was read.
    pub end_offset: u64,
    /// The records, verbatim.
    pub records: Bytes,
    /// The number of records.
    pub n_records: u64,
    /// The last record's timestamp.
    pub last_timestamp_ms: u64,
}

impl Cursor {
    /// A cursor waiting for its topic to be created.
    pub fn waiting(topic: String, start: StartPosition, claim: Claim) -> Cursor {
        Cursor {
            topic,
            attached: None,
            pending_start: start,
            client_uid: TopicUid::UNKNOWN,
            client_epoch: protocol::NO_EPOCH,
            next_send: 0,
            acked: 0,
            in_flight: VecDeque::new(),
            refresh: None,
            claim,
        }
    }

    /// The log's uid, or unknown while waiting.
    pub fn uid(&self) -> TopicUid {
        self.attached.as_ref().map_or(TopicUid::UNKNOWN, |attached| attached.log.uid())
    }

    /// Moves delivery to `offset`, forgetting unacknowledged batches and any refresh. Returns how many
    /// in-flight batches were forgotten, for the session's window.
    pub fn reposition(&mut self, offset: u64) -> usize {
        let forgotten = self.in_flight.len();
        self.in_flight.clear();
        self.next_send = offset;
        self.refresh = None;
        forgotten
    }

    /// Starts a full refresh from the log's current start to its current end. Returns the forgotten
    /// in-flight count and the refresh, or `None` while waiting for the topic.
    pub fn begin_refresh(&mut self) -> Option<(usize, Refresh)> {
        let log = &self.attached.as_ref()?.log;
        let refresh = Refresh { start: log.log_start(), end: log.readable_offset(), ready_sent: false };
        let forgotten = self.reposition(refresh.start);
        // Nothing of the new copy is acknowledged yet: an ACK of the old one must not complete the refresh.
        self.acked = refresh.start;
        self.refresh = Some(refresh);
        Some((forgotten, refresh))
    }

    /// Whether READY is due: a refresh has delivered everything up to its end.
    pub fn ready_due(&self) -> bool {
        self.refresh.is_some_and(|refresh| !refresh.ready_sent && self.next_send >= refresh.end)
    }

    /// Whether the log's epoch history changed since it was last sent (or was never sent).
    pub fn epochs_due(&self) -> bool {
        self.attached
            .as_ref()
            .is_some_and(|attached| attached.epochs_sent != Some(attached.log.epochs_version()))
    }

    /// The EPOCHS frame to send now, if the history is due and known; marks it sent either way.
    pub fn take_epochs(&mut self) -> Option<Epochs> {
        let attached = self.attached.as_mut()?;
        let version = attached.log.epochs_version();
        if attached.epochs_sent == Some(version) {
            return None;
        }
        attached.epochs_sent = Some(version);
        let history = attached.log.epochs();
        (!history.is_empty()).then(|| Epochs { topic: self.topic.clone(), uid: attached.log.uid(), history })
    }

    /// Whether the log's settings changed since they were last sent (or were never sent).
    pub fn settings_due(&self) -> bool {
        self.attached
            .as_ref()
            .is_some_and(|attached| attached.settings_sent != Some(attached.log.settings_version()))
    }

    /// The SETTINGS frame to send now, if due (explicit settings or the defaults marker); marks it sent.
    pub fn take_settings(&mut self) -> Option<Settings> {
        let attached = self.attached.as_mut()?;
        let version = attached.log.settings_version();
        if attached.settings_sent == Some(version) {
            return None;
        }
        attached.settings_sent = Some(version);
        Some(Settings {
            topic: self.topic.clone(),
            uid: attached.log.uid(),
            settings: attached.log.settings(),
        })
    }

    /// The offset below which records may be sent now.
    fn send_limit(&self) -> u64 {
        let Some(attached) = &self.attached else {
            return self.next_send;
        };
        let readable = attached.log.readable_offset();
        match self.refresh {
            Some(refresh) if !refresh.ready_sent => refresh.end.min(readable),
            _ => readable,
        }
    }

    /// Whether delivery stands below the log's delete horizon (it moved past this client, or past a
    /// refresh in progress): only a new full refresh serves it now.
    pub fn below_delete_horizon(&self) -> bool {
        self.attached.as_ref().is_some_and(|attached| {
            attached.log.delete_horizon() > self.next_send
                && below_delete_horizon(&attached.log, self.next_send)
        })
    }

    /// Whether there are records to send.
    pub fn has_records(&self) -> bool {
        self.next_send < self.send_limit()
    }

    /// Reads the next batch (at most `max_records` records and about `max_bytes` bytes) and advances the
    /// cursor past it, recording it as in flight. `Ok(None)` if nothing is readable.
    pub fn cut_batch(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Option<CutBatch>, storage::Error> {
        let limit = self.send_limit();
        let Some(attached) = &self.attached else {
            return Ok(None);
        };
        if self.next_send >= limit {
            return Ok(None);
        }
        let max_records = max_records.min(usize::try_from(limit - self.next_send).unwrap_or(usize::MAX));
        let chunk = attached.log.read(self.next_send, max_records, max_bytes)?;
        if chunk.n_records == 0 {
            return Ok(None);
        }
        let batch = CutBatch {
            first_offset: chunk.first_offset,
            last_offset: chunk.next_offset - 1,
            end_offset: attached.log.readable_offset().max(chunk.next_offset),
            n_records: chunk.n_records,
            last_timestamp_ms: chunk.last_timestamp_ms,
            records: chunk.records,
        };
        self.next_send = chunk.next_offset;
        self.in_flight.push_back(chunk.next_offset);
        Ok(Some(batch))
    }

    /// Releases the batches an ACK of `next_offset` covers and returns how many.
    pub fn release(&mut self, next_offset: u64) -> usize {
        let mut released = 0;
        while self.in_flight.front().is_some_and(|&end| end <= next_offset) {
            self.in_flight.pop_front();
            released += 1;
        }
        self.acked = next_offset;
        released
    }
}
