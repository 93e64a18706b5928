//! What changes under a running session: a newer member taking a topic over, an operator refresh, a log
//! replaced or deleted under its name, and topics created after HELLO (for `*` and for topics waited on).
//! Everything here runs when the session's `Notify` wakes it.

use std::sync::Arc;

use protocol::frame::{ErrorCode, Frame, StartPosition, TopicAnnounce};

use super::{End, Session};
use crate::cursor::{Attached, Begin, Cursor, resolve_start};

impl Session {
    /// Handles a wake-up: take-over, operator refresh, replaced logs and new topics.
    pub(super) fn on_wake(&mut self) -> Result<(), End> {
        for index in 0..self.cursors.len() {
            let cursor = &self.cursors[index];
            if cursor.claim.signals.is_superseded() {
                return Err(End::fatal(
                    ErrorCode::Superseded,
                    format!(
                        "a newer connection of group {:?} took over topic {:?}",
                        self.group, cursor.topic
                    ),
                ));
            }
            if cursor.attached.as_ref().is_some_and(Attached::is_closed) {
                self.reattach(index)?;
            }
            if self.cursors[index].claim.signals.take_refresh() {
                self.begin_refresh(index)?;
            }
        }
        if self.topics_version.has_changed().unwrap_or(false) {
            self.topics_version.borrow_and_update();
            self.on_topics_changed()?;
        }
        Ok(())
    }

    /// A log was replaced or deleted: send the successor whole (RESET, every record, READY), or wait for
    /// the topic to come back. A replacement is a new copy even under the same uid (this node refreshed
    /// from its parent), so the client's copy is rebuilt from it too: the refresh propagates down the
    /// tree, and no one is left mixing records of two copies.
    pub(super) fn reattach(&mut self, index: usize) -> Result<(), End> {
        let cursor = &mut self.cursors[index];
        let old_uid = cursor.uid();
        match self.node.store.topic(&cursor.topic) {
            None => {
                cursor.attached = None;
                self.in_flight -= cursor.reposition(0);
                cursor.pending_start = StartPosition::Earliest;
                cursor.client_uid = old_uid;
                let message =
                    format!("topic {:?} was deleted; waiting for it to be created again", cursor.topic);
                self.queue_error(ErrorCode::UnknownTopic, message)
            }
            Some(log) => {
                cursor.attached = Some(Attached::new(log, &self.wake));
                self.begin_refresh(index)
            }
        }
    }

    /// The store's topic list changed: attach waiting cursors and add topics for `*`.
    fn on_topics_changed(&mut self) -> Result<(), End> {
        for index in 0..self.cursors.len() {
            if self.cursors[index].attached.is_none()
                && let Some(log) = self.node.store.topic(&self.cursors[index].topic)
            {
                self.attach_waiting(index, log)?;
            }
        }
        if let Some(start) = self.all_topics {
            for log in self.node.store.topics() {
                if !self.by_topic.contains_key(log.name()) {
                    let claim =
                        self.node.members.claim(&self.group, log.name(), self.connection_id, &self.wake);
                    let index = self.cursors.len();
                    self.by_topic.insert(log.name().to_string(), index);
                    self.cursors.push(Cursor::waiting(log.name().to_string(), start, claim));
                    self.attach_waiting(index, log)?;
                }
            }
        }
        Ok(())
    }

    /// Attaches a cursor to its newly created log, announces it with TOPIC, and positions it. A topic that
    /// did not exist when the client subscribed is new to it entirely, so LATEST means its log start.
    fn attach_waiting(&mut self, index: usize, log: Arc<storage::Log>) -> Result<(), End> {
        let committed = self.node.groups.committed(&self.group, log.name());
        let pending_refresh = self.node.groups.refresh_pending(&self.group, log.name());
        let cursor = &self.cursors[index];
        let start = match cursor.pending_start {
            StartPosition::Latest => StartPosition::Earliest,
            other => other,
        };
        let announce = TopicAnnounce {
            topic: cursor.topic.clone(),
            uid: log.uid(),
            log_start: log.log_start(),
            end_offset: log.readable_offset(),
        };
        let begin = if pending_refresh {
            Begin::Refresh
        } else {
            self.for_role(resolve_start(start, cursor.client_uid, cursor.client_epoch, &log, committed))
        };
        self.cursors[index].attached = Some(Attached::new(log, &self.wake));
        self.queue(Frame::Topic(announce))?;
        match begin {
            Begin::At(offset) => {
                self.in_flight -= self.cursors[index].reposition(offset);
                Ok(())
            }
            Begin::Refresh => self.begin_refresh(index),
            Begin::OutOfRange { requested, end_offset } => {
                self.in_flight -= self.cursors[index].reposition(end_offset);
                let message = format!(
                    "offset {requested} of {:?} is beyond the log end {end_offset}; starting at the end",
                    self.cursors[index].topic
                );
                self.queue_error(ErrorCode::OffsetOutOfRange, message)
            }
        }
    }
}
