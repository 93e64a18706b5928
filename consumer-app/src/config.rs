//! The consumer-app's configuration: every setting as a flag and as a `CONSUMER_*` environment variable,
//! with defaults in code (sizes and durations with units, read by `service::units`), so that one image
//! serves several kinds of consumer through its environment.
//!
//! This module parses and checks settings; it starts nothing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use protocol::{ALL_TOPICS, validate_topic_name};
use service::HttpLimits;
use service::http_server::{parse_connection_limit, parse_header_timeout, parse_idle_timeout};
use service::units::{format_duration, format_size, parse_duration, parse_size};

use crate::handler::RetryPolicy;

/// The shortest heartbeat interval accepted.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

/// The smallest `--max-frame-bytes` accepted: room for a batch of a few records.
const MIN_FRAME_BYTES: u64 = 64 * 1024;

/// The largest `--max-frame-bytes` accepted, as the broker's own ceiling.
const MAX_FRAME_BYTES: u64 = 64 * 1024 * 1024;

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

    /// How long one webhook request may take.
    #[arg(long = "webhook-timeout", env = "CONSUMER_WEBHOOK_TIMEOUT", default_value = "5s",
          value_parser = parse_duration)]
    pub webhook_timeout: Duration,

    /// Directory of the local copy: the segment log and `app.sqlite`.
    #[arg(long = "data-dir", env = "CONSUMER_DATA_DIR", default_value = "./consumer-data")]
    pub data_dir: PathBuf,

    /// Size at which a segment file of the local copy is sealed and a new one started (K/M/G suffixes are
    /// binary multiples).
    #[arg(long = "segment-bytes", env = "CONSUMER_SEGMENT_BYTES", default_value = "256M",
          value_parser = parse_size)]
    pub segment_bytes: u64,

    /// Bytes of sealed segments compaction reads and writes per second at most, for topics whose cleanup
    /// policy compacts (0 = no limit).
    #[arg(long = "compaction-rate", env = "CONSUMER_COMPACTION_RATE", default_value = "64M",
          value_parser = parse_size)]
    pub compaction_rate: u64,

    /// How often compaction looks for a topic that is due a pass (at least 100ms).
    #[arg(long = "compaction-interval", env = "CONSUMER_COMPACTION_INTERVAL", default_value = "10s",
          value_parser = parse_duration)]
    pub compaction_interval: Duration,

    /// Address the REST API listens on.
    #[arg(long = "http-listen", env = "CONSUMER_HTTP_LISTEN", default_value = "0.0.0.0:8090")]
    pub listen: SocketAddr,

    /// Most REST connections open at once (1 to 1000000); more wait in the listen backlog until one
    /// closes.
    #[arg(long = "max-http-connections", env = "CONSUMER_MAX_HTTP_CONNECTIONS", default_value = "256",
          value_parser = parse_connection_limit)]
    pub max_http_connections: usize,

    /// How long a REST client may take to send a request's head, from connecting or from the previous
    /// answer; a kept-alive connection unused for this long is closed too (100ms to 10m).
    #[arg(long = "http-header-timeout", env = "CONSUMER_HTTP_HEADER_TIMEOUT", default_value = "10s",
          value_parser = parse_header_timeout)]
    pub http_header_timeout: Duration,

    /// Longest silence on a REST connection in mid-request (a body that stops arriving, an answer the
    /// client stops reading) before it is closed; time in a handler does not count (100ms to 1h).
    #[arg(long = "http-idle-timeout", env = "CONSUMER_HTTP_IDLE_TIMEOUT", default_value = "60s",
          value_parser = parse_idle_timeout)]
    pub http_idle_timeout: Duration,

    /// How many unacknowledged batches the broker may push ahead (1 to 1024).
    #[arg(long = "max-in-flight", env = "CONSUMER_MAX_IN_FLIGHT", default_value_t = 8)]
    pub max_in_flight: u16,

    /// How many times a handler is tried on one record before it goes to the dead letters (1 to 100).
    #[arg(long = "retry-attempts", env = "CONSUMER_RETRY_ATTEMPTS", default_value_t = 3)]
    pub retry_attempts: u32,

    /// Wait before the first handler retry; it doubles up to the maximum.
    #[arg(long = "retry-backoff", env = "CONSUMER_RETRY_BACKOFF", default_value = "100ms",
          value_parser = parse_duration)]
    pub retry_backoff: Duration,

    /// The longest wait between handler retries.
    #[arg(long = "retry-max-backoff", env = "CONSUMER_RETRY_MAX_BACKOFF", default_value = "5s",
          value_parser = parse_duration)]
    pub retry_max_backoff: Duration,

    /// Wait before the first reconnection to the broker; it doubles (with jitter).
    #[arg(long = "reconnect-backoff", env = "CONSUMER_RECONNECT_BACKOFF", default_value = "200ms",
          value_parser = parse_duration)]
    pub reconnect_backoff: Duration,

    /// The longest wait between reconnections.
    #[arg(long = "reconnect-max-backoff", env = "CONSUMER_RECONNECT_MAX_BACKOFF", default_value = "10s",
          value_parser = parse_duration)]
    pub reconnect_max_backoff: Duration,

    /// Heartbeat interval on the broker connection (at least 100ms); a peer silent for three is dropped.
    #[arg(long = "heartbeat", env = "CONSUMER_HEARTBEAT", default_value = "5s", value_parser = parse_duration)]
    pub heartbeat: Duration,

    /// Token the broker requires, if any.
    #[arg(long, env = "CONSUMER_TOKEN", default_value = "", hide_env_values = true)]
    pub token: String,

    /// Largest frame accepted from the broker (64K to 64M).
    #[arg(long = "max-frame-bytes", env = "CONSUMER_MAX_FRAME_BYTES", default_value = "8M",
          value_parser = parse_size)]
    pub max_frame_bytes: u64,

    /// Log as JSON lines instead of text (the filter comes from `RUST_LOG`).
    #[arg(long = "log-json", env = "CONSUMER_LOG_JSON", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
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
    /// Checks what clap cannot: topic names, ranges, and settings that depend on each other. The error is
    /// one readable line naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.topics.is_empty() {
            return Err("CONSUMER_TOPICS is empty; name topics or use *".to_string());
        }
        for topic in &self.topics {
            if topic != ALL_TOPICS {
                validate_topic_name(topic)
                    .map_err(|reason| format!("bad topic in CONSUMER_TOPICS: {reason}"))?;
            }
        }
        if self.consumer_id.is_empty() || self.consumer_id.len() > 200 {
            return Err("CONSUMER_ID must be 1 to 200 bytes".to_string());
        }
        if !(1..=1024).contains(&self.max_in_flight) {
            return Err(format!("CONSUMER_MAX_IN_FLIGHT must be 1 to 1024, got {}", self.max_in_flight));
        }
        if !(1..=100).contains(&self.retry_attempts) {
            return Err(format!("CONSUMER_RETRY_ATTEMPTS must be 1 to 100, got {}", self.retry_attempts));
        }
        if self.heartbeat < MIN_HEARTBEAT {
            return Err(format!(
                "CONSUMER_HEARTBEAT must be at least {}, got {}",
                format_duration(MIN_HEARTBEAT),
                format_duration(self.heartbeat)
            ));
        }
        if self.reconnect_backoff.is_zero() || self.reconnect_max_backoff < self.reconnect_backoff {
            return Err(format!(
                "CONSUMER_RECONNECT_BACKOFF ({}) must be above zero and at most \
                 CONSUMER_RECONNECT_MAX_BACKOFF ({})",
                format_duration(self.reconnect_backoff),
                format_duration(self.reconnect_max_backoff)
            ));
        }
        if self.retry_max_backoff < self.retry_backoff {
            return Err(format!(
                "CONSUMER_RETRY_MAX_BACKOFF ({}) is below CONSUMER_RETRY_BACKOFF ({})",
                format_duration(self.retry_max_backoff),
                format_duration(self.retry_backoff)
            ));
        }
        if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&self.max_frame_bytes) {
            return Err(format!(
                "CONSUMER_MAX_FRAME_BYTES must be between {} and {}, got {}",
                format_size(MIN_FRAME_BYTES),
                format_size(MAX_FRAME_BYTES),
                format_size(self.max_frame_bytes)
            ));
        }
        if !(storage::MIN_SEGMENT_BYTES..=storage::MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(format!(
                "CONSUMER_SEGMENT_BYTES must be between {} and {}, got {}",
                format_size(storage::MIN_SEGMENT_BYTES),
                format_size(storage::MAX_SEGMENT_BYTES),
                format_size(self.segment_bytes)
            ));
        }
        if self.compaction_interval < Duration::from_millis(100) {
            return Err(format!(
                "CONSUMER_COMPACTION_INTERVAL must be at least 100ms, got {}",
                format_duration(self.compaction_interval)
            ));
        }
        if self.handler == HandlerKind::Webhook {
            match &self.webhook_url {
                None => return Err("CONSUMER_HANDLER=webhook needs CONSUMER_WEBHOOK_URL".to_string()),
                Some(url) if !url.starts_with("http://") => {
                    return Err(format!("CONSUMER_WEBHOOK_URL must start with http://, got {url:?}"));
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
            initial_backoff: self.retry_backoff,
            max_backoff: self.retry_max_backoff,
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

    /// The limits of the REST listener.
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            max_connections: self.max_http_connections,
            header_timeout: self.http_header_timeout,
            idle_timeout: self.http_idle_timeout,
        }
    }

    /// Whether every topic is subscribed (`*` among the topics).
    pub fn all_topics(&self) -> bool {
        self.topics.iter().any(|topic| topic == ALL_TOPICS)
    }
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
        assert_eq!(config.heartbeat, Duration::from_secs(5));
        assert_eq!(config.webhook_timeout, Duration::from_secs(5));
        assert_eq!(config.retry_policy().initial_backoff, Duration::from_millis(100));
        assert_eq!(config.retry_policy().max_backoff, Duration::from_secs(5));
        assert_eq!(
            (config.reconnect_backoff, config.reconnect_max_backoff),
            (Duration::from_millis(200), Duration::from_secs(10))
        );
        assert_eq!((config.segment_bytes, config.max_frame_bytes), (256 << 20, 8 << 20));
        assert_eq!(
            config.http_limits(),
            HttpLimits {
                max_connections: 256,
                header_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(60),
            }
        );
        let config = parse(&["--segment-bytes", "268435456", "--heartbeat", "2s"]).unwrap();
        assert_eq!((config.segment_bytes, config.heartbeat), (256 << 20, Duration::from_secs(2)));
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
        assert!(parse(&["--heartbeat", "5ms"]).unwrap().validate().is_err());
        assert!(parse(&["--heartbeat", "5"]).is_err(), "a duration needs a unit");
        assert!(parse(&["--max-frame-bytes", "1K"]).unwrap().validate().is_err());
        let message =
            parse(&["--retry-backoff", "2s", "--retry-max-backoff", "1s"]).unwrap().validate().unwrap_err();
        assert_eq!(message, "CONSUMER_RETRY_MAX_BACKOFF (1s) is below CONSUMER_RETRY_BACKOFF (2s)");
        assert!(parse(&["--max-in-flight", "abc"]).is_err());
        assert!(parse(&["--handler", "nope"]).is_err());
        assert!(parse(&["--max-http-connections", "0"]).is_err());
        assert!(parse(&["--http-header-timeout", "10"]).is_err(), "a duration needs a unit");
        assert!(parse(&["--http-idle-timeout", "50ms"]).is_err());
        assert_eq!(parse(&["--max-http-connections", "8"]).unwrap().http_limits().max_connections, 8);
    }
}
