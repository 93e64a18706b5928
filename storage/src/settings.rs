//! Keeping a topic's explicit settings (`protocol::TopicSettings`): set at ROOT through its API, adopted by
//! a relay or a consumer-app from its upstream's SETTINGS frames, carried into a full refresh's new copy.
//!
//! Settings are durable before anyone is told of them: SQLite first, then the topic's identity file
//! (recovery rewrites the file from SQLite if a crash comes between), then the log in memory, which wakes
//! its readers so that sessions pass them on. Applying them is retention's and compaction's business (`retention.rs`, `compact.rs`).

use std::sync::Arc;

use protocol::TopicSettings;

use crate::error::Error;
use crate::log::Log;
use crate::replace::Replacement;
use crate::store::Store;

impl Store {
    /// Replaces a committed topic's settings as a whole (`None`: back to the store's defaults). Answers
    /// whether they changed; unchanged settings write nothing. Fails with [`Error::Closed`] if `log` is no
    /// longer the topic's committed copy.
    pub fn set_settings(&self, log: &Arc<Log>, settings: Option<TopicSettings>) -> Result<bool, Error> {
        let _admin = self.admin();
        if !self.topic(log.name()).is_some_and(|current| Arc::ptr_eq(&current, log)) {
            return Err(Error::Closed { topic: log.name().to_string() });
        }
        if log.settings() == settings {
            return Ok(false);
        }
        self.meta().set_settings(log.name(), settings.as_ref())?;
        self.write_identity_with_settings(log, settings)?;
        log.replace_settings(settings);
        Ok(true)
    }
}

impl Replacement {
    /// Gives the copy being built its upstream's settings; they are recorded with the copy when the copy is
    /// committed.
    pub fn set_settings(&self, settings: Option<TopicSettings>) {
        self.log().replace_settings(settings);
    }
}
