//! A full refresh being built: a new copy of a topic in its own generation directory, invisible to
//! readers of the topic until [`crate::Store::commit_replace`] switches to it. Aborting it, or dropping it
//! without committing, deletes the new generation. The switch itself is in `store.rs`.

use std::sync::Arc;

use crate::error::Error;
use crate::log::Log;
use crate::meta::Meta;
use crate::paths::remove_dir_logged;

/// A new copy of a topic under construction.
#[derive(Debug)]
pub struct Replacement {
    /// The new copy's log; append to it with [`Log::append_records`].
    log: Arc<Log>,
    /// The metadata database, to forget the generation on abort.
    meta: Arc<Meta>,
    /// Set once committed or aborted, so that dropping does nothing more.
    finished: bool,
}

impl Replacement {
    /// Wraps the log of a new generation.
    pub(crate) fn new(log: Arc<Log>, meta: Arc<Meta>) -> Replacement {
        Replacement { log, meta, finished: false }
    }

    /// The new copy's log, for appending (and reading, for checks) while it is built.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Throws the new copy away: closes its log and deletes its generation.
    pub fn abort(mut self) -> Result<(), Error> {
        self.finished = true;
        self.discard()
    }

    /// Called once the switch is committed, so that dropping keeps the files.
    pub(crate) fn disarm(mut self) {
        self.finished = true;
    }

    /// Closes the log, forgets its segment rows and deletes its directory.
    fn discard(&self) -> Result<(), Error> {
        self.log.close();
        let result = self.meta.delete_generation(self.log.name(), self.log.generation);
        remove_dir_logged(&self.log.dir, "replacement aborted");
        result
    }
}

impl Drop for Replacement {
    fn drop(&mut self) {
        if !self.finished
            && let Err(error) = self.discard()
        {
            tracing::warn!(topic = %self.log.name(), %error, "dropping an uncommitted replacement failed");
        }
    }
}
