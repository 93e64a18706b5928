//! What a client asks of a running session: ACK (window room, and the group's commit) and SEEK (a new
//! position, always answered by POSITION).

use std::sync::Arc;

use protocol::TopicUid;
use protocol::frame::{Ack, ErrorCode, Frame, Seek, TopicPosition};
use tokio::time::Instant;

use super::{End, Session};
use crate::cursor::{Begin, resolve_start};
use crate::groups::Committed;

impl Session {
    /// Handles an ACK: releases window room and commits the group's offset.
    pub(super) fn on_ack(&mut self, ack: Ack) -> Result<(), End> {
        let Some(&index) = self.by_topic.get(&ack.topic) else {
            return self.queue_error(
                ErrorCode::UnknownTopic,
                format!("ACK for {:?}, which this connection does not subscribe to", ack.topic),
            );
        };
        let cursor = &mut self.cursors[index];
        // An ACK beyond what was sent can only be a stale one crossing a SEEK; it proves nothing here.
        if ack.next_offset > cursor.next_send || cursor.attached.is_none() {
            tracing::debug!(topic = %ack.topic, next_offset = ack.next_offset, "ignoring an ACK beyond the sent position");
            return Ok(());
        }
        self.in_flight -= cursor.release(ack.next_offset);
        self.last_progress = Instant::now();
        let uid = cursor.uid();
        match cursor.refresh {
            // Acks inside a refresh concern the client's new copy, which is not live until READY: they
            // free the window but commit nothing, so a refresh cut short is asked for again.
            Some(refresh) if !(refresh.ready_sent && ack.next_offset >= refresh.end) => return Ok(()),
            Some(_) => {
                cursor.refresh = None;
                self.node.groups.clear_refresh(&self.group, &ack.topic);
            }
            None => {}
        }
        if !cursor.claim.signals.is_superseded() {
            self.node.groups.commit(&self.group, &ack.topic, Committed { uid, next_offset: ack.next_offset });
        }
        Ok(())
    }

    /// Handles a SEEK.
    pub(super) fn on_seek(&mut self, seek: Seek) -> Result<(), End> {
        let Some(&index) = self.by_topic.get(&seek.topic) else {
            return self.queue_error(
                ErrorCode::UnknownTopic,
                format!("SEEK on {:?}, which this connection does not subscribe to", seek.topic),
            );
        };
        let cursor = &mut self.cursors[index];
        let Some(attached) = &cursor.attached else {
            // The topic does not exist yet: remember where to start once it does.
            cursor.pending_start = seek.start;
            let position = TopicPosition {
                topic: seek.topic,
                uid: TopicUid::UNKNOWN,
                log_start: 0,
                end_offset: 0,
                start_at: 0,
            };
            return self.queue(Frame::Position(position));
        };
        let log = Arc::clone(&attached.log);
        let committed = self.node.groups.committed(&self.group, &seek.topic);
        let begin = match resolve_start(seek.start, TopicUid::UNKNOWN, protocol::NO_EPOCH, &log, committed) {
            Begin::OutOfRange { requested, end_offset } => {
                self.queue_error(
                    ErrorCode::OffsetOutOfRange,
                    format!("offset {requested} of {:?} is beyond the log end {end_offset}", seek.topic),
                )?;
                // POSITION answers every SEEK, and the client drops batches between the two; restarting
                // from its last acknowledgement loses nothing of what it dropped.
                let acked = self.cursors[index].acked;
                if acked < log.log_start() { Begin::Refresh } else { Begin::At(acked) }
            }
            other => other,
        };
        let start_at = match begin {
            Begin::At(offset) => {
                self.in_flight -= self.cursors[index].reposition(offset);
                offset
            }
            _ => log.log_start(),
        };
        let position = TopicPosition {
            topic: seek.topic,
            uid: log.uid(),
            log_start: log.log_start(),
            end_offset: log.readable_offset(),
            start_at,
        };
        self.queue(Frame::Position(position))?;
        if begin == Begin::Refresh { self.begin_refresh(index) } else { Ok(()) }
    }
}
