//! The consumer-app's configuration: every setting as a flag and as a `CONSUMER_*` environment variable,
//! with defaults in code, so that one image serves several kinds of consumer through its environment.
//!
//! This module parses and checks settings; it starts nothing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use protocol::{ALL_TOPICS, validate_topic_name};

use crate::handler::RetryPolicy;

/// The consumer-app: a durable local copy of relay topics, kept current by push from a broker and
/// answered over REST.
#[derive(Debug, Clone, Parser)]
#[command(name = "consumer-app", version, about)]
pub struct Config {
    /// The broker's TCP consumer address (host:port); any level of the tree can serve consumers.
    #[arg(long = "broker-addr", env = "CONSUMER_BROKER_ADDR", default_value = "127.0.0.1:9090")]
    pub broker: String,

    /// This consumer's id, sent in HELLO and shown in the broker's consumer list.
    #[arg(long = "consumer-id", env = "CONSUMER_ID", default_value = "consumer-app")]
    pub consumer_id: String,

    /// The consumer group whose committed offsets the broker keeps; defaults to the consumer id.
    #[arg(long, env = "CONSUMER_GROUP")]
    pub group: Option<String>,

    /// Topics to copy, as a comma-separated list; `*` copies every topic, present and future.
    #[arg(long, env = "CONSUMER_TOPICS", value_delimiter = ',', default_value = "*")]
    pub topics: Vec<String>,

    /// What to do with each record once it is in the local copy.
    #[arg(long, env = "CONSUMER_HANDLER", value_enum, ignore_case = true, default_value_t = HandlerKind::Store)]
    pub handler: HandlerKind,

    /// Where the `webhook` handler POSTs each record (http:// only).
    #[arg(long = "webhook-url", env = "CONSUMER_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// How long one webhook request may take, in milliseconds.
    #[arg(long = "webhook-timeout-ms", env = "CONSUMER_WEBHOOK_TIMEOUT_MS", default_value_t = 5_000)]
    pub webhook_timeout_ms: u64,

    /// Directory of the local copy: the segment log and `app.sqlite`.
    #[arg(long = "data-dir", env = "CONSUMER_DATA_DIR", default_value = "./consumer-data")]
    pub data_dir: PathBuf,

    /// Size at which a segment file of the local copy is sealed and a new one started, in bytes.
    #[arg(long = "segment-bytes", env = "CONSUMER_SEGMENT_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub segment_bytes: u64,

    /// Address the REST API listens on.
    #[arg(long = "http-listen", env = "CONSUMER_HTTP_LISTEN", default_value = "0.0.0.0:8090")]
    pub listen: SocketAddr,

    /// How many unacknowledged batches the broker may push ahead (1 to 1024).
    #[arg(long = "max-in-flight", env = "CONSUMER_MAX_IN_FLIGHT", default_value_t = 8)]
    pub max_in_flight: u16,

    /// How many times a handler is tried on one record before it goes to the dead letters (1 to 100).
    #[arg(long = "retry-attempts", env = "CONSUMER_RETRY_ATTEMPTS", default_value_t = 3)]
    pub retry_attempts: u32,

    /// Wait before the first handler retry, in milliseconds; it doubles up to the maximum.
    #[arg(long = "retry-backoff-ms", env = "CONSUMER_RETRY_BACKOFF_MS", default_value_t = 100)]
    pub retry_backoff_ms: u64,

    /// The longest wait between handler retries, in milliseconds.
    #[arg(long = "retry-max-backoff-ms", env = "CONSUMER_RETRY_MAX_BACKOFF_MS", default_value_t = 5_000)]
    pub retry_max_backoff_ms: u64,

    /// Wait before the first reconnection to the broker, in milliseconds; it doubles (with jitter).
    #[arg(long = "reconnect-backoff-ms", env = "CONSUMER_RECONNECT_BACKOFF_MS", default_value_t = 200)]
    pub reconnect_backoff_ms: u64,

    /// The longest wait between reconnections, in milliseconds.
    #[arg(
        long = "reconnect-max-backoff-ms",
        env = "CONSUMER_RECONNECT_MAX_BACKOFF_MS",
        default_value_t = 10_000
    )]
    pub reconnect_max_backoff_ms: u64,

    /// Heartbeat interval on the broker connection, in milliseconds; a peer silent for three is dropped.
    #[arg(long = "heartbeat-ms", env = "CONSUMER_HEARTBEAT_MS", default_value_t = 5_000)]
    pub heartbeat_ms: u64,

    /// Token the broker requires, if any.
    #[arg(long, env = "CONSUMER_TOKEN", default_value = "", hide_env_values = true)]
    pub token: String,

    /// Largest frame accepted from the broker, in bytes.
    #[arg(long = "max-frame-bytes", env = "CONSUMER_MAX_FRAME_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_frame_bytes: usize,

    /// Write logs as JSON lines instead of text.
    #[arg(long = "log-json", env = "CONSUMER_LOG_JSON")]
    pub log_json: bool,

    /// A subcommand instead of running the app.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Exits 0 if the app answers `GET /health` with a 2xx: a container healthcheck that needs no curl.
    Healthcheck {
        /// The URL to probe (plain `http://host:port/path`); by default `/health` on the port of
        /// `--http-listen` at 127.0.0.1.
        #[arg(long)]
        url: Option<String>,
    },
}

/// The built-in record handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HandlerKind {
    /// Keep the local copy only.
    Store,
    /// Log each record with `tracing`.
    Log,
    /// POST each record as JSON to `--webhook-url`.
    Webhook,
}

impl Config {
    /// Parses the command line and environment, then checks the values against each other.
    ///
    /// On a bad value the error is one readable line, meant to be printed before a non-zero exit.
    pub fn from_args() -> Result<Config, ConfigExit> {
        let config = Config::try_parse().map_err(|error| match error.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                ConfigExit::Info(error.render().to_string())
            }
            _ => {
                let rendered = error.render().to_string();
                let first = rendered.lines().next().unwrap_or("invalid arguments").to_string();
                ConfigExit::Invalid(first)
            }
        })?;
        config.validate().map_err(ConfigExit::Invalid)?;
        Ok(config)
    }

    /// Checks what clap cannot: topic names, ranges, and settings that depend on each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.topics.is_empty() {
            return Err("error: CONSUMER_TOPICS is empty; name topics or use *".to_string());
        }
        for topic in &self.topics {
            if topic != ALL_TOPICS {
                validate_topic_name(topic)
                    .map_err(|reason| format!("error: bad topic in CONSUMER_TOPICS: {reason}"))?;
            }
        }
        if self.consumer_id.is_empty() || self.consumer_id.len() > 200 {
            return Err("error: CONSUMER_ID must be 1 to 200 bytes".to_string());
        }
        if !(1..=1024).contains(&self.max_in_flight) {
            return Err(format!(
                "error: CONSUMER_MAX_IN_FLIGHT must be 1 to 1024, got {}",
                self.max_in_flight
            ));
        }
        if !(1..=100).contains(&self.retry_attempts) {
            return Err(format!(
                "error: CONSUMER_RETRY_ATTEMPTS must be 1 to 100, got {}",
                self.retry_attempts
            ));
        }
        if self.heartbeat_ms < 100 {
            return Err(format!(
                "error: CONSUMER_HEARTBEAT_MS must be at least 100, got {}",
                self.heartbeat_ms
            ));
        }
        if self.reconnect_backoff_ms == 0 || self.reconnect_max_backoff_ms < self.reconnect_backoff_ms {
            return Err("error: reconnect backoff must be positive and not above its maximum".to_string());
        }
        if self.retry_max_backoff_ms < self.retry_backoff_ms {
            return Err("error: CONSUMER_RETRY_MAX_BACKOFF_MS is below CONSUMER_RETRY_BACKOFF_MS".to_string());
        }
        if self.max_frame_bytes < 64 * 1024 || self.max_frame_bytes > 64 * 1024 * 1024 {
            return Err("error: CONSUMER_MAX_FRAME_BYTES must be between 64 KiB and 64 MiB".to_string());
        }
        if !(storage::MIN_SEGMENT_BYTES..=storage::MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(format!(
                "error: CONSUMER_SEGMENT_BYTES must be between {} and {}, got {}",
                storage::MIN_SEGMENT_BYTES,
                storage::MAX_SEGMENT_BYTES,
                self.segment_bytes
            ));
        }
        if self.handler == HandlerKind::Webhook {
            match &self.webhook_url {
                None => return Err("error: CONSUMER_HANDLER=webhook needs CONSUMER_WEBHOOK_URL".to_string()),
                Some(url) if !url.starts_with("http://") => {
                    return Err(format!("error: CONSUMER_WEBHOOK_URL must start with http://, got {url:?}"));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The consumer group, defaulting to the consumer id.
    pub fn group(&self) -> &str {
        self.group.as_deref().unwrap_or(&self.consumer_id)
    }

    /// The handler retry policy these settings describe.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.retry_attempts,
            initial_backoff: Duration::from_millis(self.retry_backoff_ms),
            max_backoff: Duration::from_millis(self.retry_max_backoff_ms),
            multiplier: 2.0,
        }
    }

    /// The storage settings of the local copy: durable appends (an ack means the records are on disk).
    pub fn log_config(&self) -> storage::LogConfig {
        storage::LogConfig {
            segment_bytes: self.segment_bytes,
            preallocate_chunk_bytes: (self.segment_bytes / 8)
                .clamp(storage::MIN_SEGMENT_BYTES, 32 * 1024 * 1024),
            flush: storage::FlushPolicy::Always,
            ..storage::LogConfig::default()
        }
    }

    /// Whether every topic is subscribed (`*` among the topics).
    pub fn all_topics(&self) -> bool {
        self.topics.iter().any(|topic| topic == ALL_TOPICS)
    }
}

/// Why parsing stopped before the app could run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigExit {
    /// Help or version text was asked for: print it and exit 0.
    Info(String),
    /// A bad value: print the line and exit non-zero.
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("consumer-app").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_valid() {
        let config = parse(&[]).unwrap();
        config.validate().unwrap();
        assert_eq!(config.topics, vec!["*".to_string()]);
        assert!(config.all_topics());
        assert_eq!(config.group(), "consumer-app");
        assert_eq!(config.listen.port(), 8090);
        assert_eq!(config.handler, HandlerKind::Store);
    }

    #[test]
    fn topic_list_and_bad_names() {
        let config = parse(&["--topics", "prices,catalog", "--group", "tills"]).unwrap();
        config.validate().unwrap();
        assert_eq!(config.topics, vec!["prices".to_string(), "catalog".to_string()]);
        assert!(!config.all_topics());
        assert_eq!(config.group(), "tills");
        let bad = parse(&["--topics", "prices,a/b"]).unwrap();
        let message = bad.validate().unwrap_err();
        assert!(message.contains("a/b"), "{message}");
        assert!(!message.contains('\n'));
    }

    #[test]
    fn webhook_needs_an_http_url() {
        let config = parse(&["--handler", "webhook"]).unwrap();
        assert!(config.validate().unwrap_err().contains("CONSUMER_WEBHOOK_URL"));
        let config = parse(&["--handler", "webhook", "--webhook-url", "ftp://x"]).unwrap();
        assert!(config.validate().is_err());
        let config = parse(&["--handler", "webhook", "--webhook-url", "http://127.0.0.1:1/hook"]).unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn ranges_are_checked() {
        assert!(parse(&["--max-in-flight", "0"]).unwrap().validate().is_err());
        assert!(parse(&["--retry-attempts", "0"]).unwrap().validate().is_err());
        assert!(parse(&["--heartbeat-ms", "5"]).unwrap().validate().is_err());
        assert!(parse(&["--max-in-flight", "abc"]).is_err());
        assert!(parse(&["--handler", "nope"]).is_err());
    }
}
