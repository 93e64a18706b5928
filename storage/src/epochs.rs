//! Keeping a topic's epoch history (`protocol::epoch`): ROOT begins a new epoch each time it starts, a
//! relay or a consumer-app adopts the history its upstream sends, unless its copy holds records that the
//! history says ROOT no longer has; then the copy must be refreshed instead.
//!
//! A history is durable before anyone is told of it or a record of a new epoch is written under it: SQLite
//! first, then the topic's identity file (recovery rewrites the file from SQLite if a crash comes between),
//! then the log in memory, which wakes its readers so that sessions pass it on.

use std::sync::Arc;

use protocol::EpochHistory;

use crate::error::Error;
use crate::log::Log;
use crate::replace::Replacement;
use crate::store::Store;

/// What [`Store::adopt_epochs`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    /// The copy already had this history.
    Unchanged,
    /// The history is recorded.
    Stored,
    /// The copy holds records past where its last epoch ended upstream: they are not ROOT's any more. The
    /// history was not recorded; the copy must be replaced (a full refresh).
    Diverged {
        /// The epoch of the copy's last record.
        epoch: u32,
        /// The copy's next offset.
        next_offset: u64,
        /// Where that epoch ended upstream: the first offset the copy holds wrongly.
        at: u64,
    },
}

impl Store {
    /// Begins a new epoch at the log end (ROOT, at every start): records written from now on belong to
    /// it, so any copy holding other records at these offsets (ROOT lost its tail) is found out. A topic
    /// whose history is unknown (written before epochs existed) gets epoch 0 from offset 0 first.
    pub fn begin_epoch(&self, log: &Arc<Log>) -> Result<EpochHistory, Error> {
        let mut epochs = log.epochs();
        if epochs.is_empty() {
            epochs = EpochHistory::first(0);
        }
        let epochs = epochs.begin(log.next_offset());
        self.set_epochs(log, epochs.clone())?;
        Ok(epochs)
    }

    /// Adopts `epochs`, the history of the same topic upstream, unless the copy diverged from it.
    pub fn adopt_epochs(&self, log: &Arc<Log>, epochs: EpochHistory) -> Result<Adopted, Error> {
        if log.epochs() == epochs {
            return Ok(Adopted::Unchanged);
        }
        let epoch = log.epoch_claim();
        let next_offset = log.next_offset();
        if let Some(at) = epochs.divergence(epoch, next_offset) {
            return Ok(Adopted::Diverged { epoch, next_offset, at });
        }
        self.set_epochs(log, epochs)?;
        Ok(Adopted::Stored)
    }

    /// Records a committed topic's history: SQLite, the identity file, then the log.
    fn set_epochs(&self, log: &Arc<Log>, epochs: EpochHistory) -> Result<(), Error> {
        let _admin = self.admin();
        if !self.topic(log.name()).is_some_and(|current| Arc::ptr_eq(&current, log)) {
            return Err(Error::Closed { topic: log.name().to_string() });
        }
        self.meta().set_epochs(log.name(), &epochs)?;
        self.write_identity_with_epochs(log, &epochs)?;
        log.replace_epochs(epochs);
        Ok(())
    }
}

impl Replacement {
    /// Gives the copy being built its upstream's history; it is recorded with the copy when the copy is
    /// committed.
    pub fn set_epochs(&self, epochs: EpochHistory) {
        self.log().replace_epochs(epochs);
    }
}
