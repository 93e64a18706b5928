//! The `webhook` handler: POSTs each record as its JSON form (`protocol::json::RecordJson`) to a URL.
//! Any answer but a 2xx, a timeout or a connection failure is a failure, which the dispatcher retries.
//!
//! It owns the HTTP client and nothing else: retries and dead letters are the dispatcher's.

use std::time::Duration;

use protocol::json::RecordJson;

use super::{HandlerError, HandlerFuture, Message, MessageHandler};

/// Header that carries the record's topic, since `RecordJson` itself does not name it.
pub const TOPIC_HEADER: &str = "x-relay-topic";

/// POSTs each record to a fixed URL.
#[derive(Debug, Clone)]
pub struct WebhookHandler {
    /// The HTTP client (connection pool, timeout).
    client: reqwest::Client,
    /// Where records go.
    url: String,
}

impl WebhookHandler {
    /// A handler for `url`; each request may take at most `timeout`.
    pub fn new(url: impl Into<String>, timeout: Duration) -> Result<WebhookHandler, HandlerError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|error| HandlerError(format!("cannot build the webhook client: {error}")))?;
        Ok(WebhookHandler { client, url: url.into() })
    }

    async fn post(&self, message: &Message) -> Result<(), HandlerError> {
        let view =
            message.view().map_err(|error| HandlerError(format!("record does not decode: {error}")))?;
        let body = RecordJson::from_view(&view)
            .map_err(|error| HandlerError(format!("record has no JSON form: {error}")))?;
        let response = self
            .client
            .post(&self.url)
            .header(TOPIC_HEADER, &*message.topic)
            .json(&body)
            .send()
            .await
            .map_err(|error| HandlerError(format!("POST {} failed: {error}", self.url)))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(HandlerError(format!("POST {} answered {status}", self.url)))
        }
    }
}

impl MessageHandler for WebhookHandler {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn handle<'a>(&'a self, message: &'a Message) -> HandlerFuture<'a> {
        Box::pin(self.post(message))
    }
}
