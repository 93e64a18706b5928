//! The broker's configuration: every setting as a command-line flag and a `BROKER_` environment variable,
//! with defaults in code, parsed by clap (sizes and durations with `service::units`) and then validated so
//! that a bad value ends the process with one readable line. This module owns the broker's settings and
//! their checks only; it starts nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
pub use protocol::Level;
use service::HttpLimits;
use service::http_server::{parse_connection_limit, parse_header_timeout, parse_idle_timeout};
use service::units::{parse_duration, parse_size};

/// The broker binary's command line: the broker itself, or one of its helper subcommands.
#[derive(Debug, Parser)]
#[command(
    name = "broker",
    version,
    about = "A relay-tree broker: one binary for ROOT, L2, L3, POS and LOCAL nodes.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// A helper subcommand; without one, the broker runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The broker's settings.
    #[command(flatten)]
    pub config: Config,
}

/// Helper subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Probes a broker's health endpoint and exits 0 if it answers 200 (for container healthchecks).
    Healthcheck {
        /// The URL to GET, plain `http://` only.
        #[arg(long, env = "BROKER_HEALTHCHECK_URL", default_value = "http://127.0.0.1:8080/health")]
        url: String,
        /// How long to wait for the answer.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

/// The words `--flush` takes; `node::log_config` turns them into `storage::FlushPolicy`, and nothing else in
/// the broker looks at them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FlushMode {
    /// Flush before answering every append (durable; the default).
    Always,
    /// Readers (children, consumers) see records as soon as they are written; an append (an ingest, a pipe
    /// batch) still returns only once its records are flushed, and a timer (`--flush-interval`) flushes
    /// anything else written.
    Interval,
    /// Never flush explicitly: UNSAFE, for benchmarks only; acknowledged records can be lost in a crash.
    Never,
}

/// Every setting of a running broker.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// This node's level in the tree: `root` (the cloud node: assigns offsets and timestamps), `l2` (a
    /// region), `l3` (a store cluster or store server), `pos` (a till) or `local` (an on-device node); upper
    /// case (`ROOT`, `L2`...) works too.
    #[arg(long, env = "BROKER_LEVEL", default_value = "root")]
    pub level: Level,

    /// This node's id, unique in the tree.
    #[arg(long, env = "BROKER_NODE_ID", default_value = "broker-1")]
    pub node_id: String,

    /// Directory holding the topic logs and `groups.sqlite`.
    #[arg(long, env = "BROKER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Address of the HTTP API (ingest, topics, groups, metrics, health).
    #[arg(long, env = "BROKER_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Address of the TCP consumer server.
    #[arg(long, env = "BROKER_CONSUMER_ADDR", default_value = "0.0.0.0:9090")]
    pub consumer_addr: SocketAddr,

    /// Token consumers must present in HELLO; empty means none is required.
    #[arg(long, env = "BROKER_TOKEN", default_value = "", hide_env_values = true)]
    pub token: String,

    /// Most consumer connections served at once; a connection over the limit gets a fatal ERROR frame
    /// saying so and is closed.
    #[arg(long, env = "BROKER_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Most HTTP connections open at once, the pipes of child brokers included (1 to 1000000); more wait
    /// in the listen backlog until one closes.
    #[arg(long, env = "BROKER_MAX_HTTP_CONNECTIONS", default_value = "1024",
          value_parser = parse_connection_limit)]
    pub max_http_connections: usize,

    /// How long an HTTP client may take to send a request's head, from connecting or from the previous
    /// answer; a kept-alive connection unused for this long is closed too (100ms to 10m).
    #[arg(long, env = "BROKER_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_header_timeout)]
    pub http_header_timeout: Duration,

    /// Longest silence on an HTTP connection in mid-request (a body that stops arriving, an answer the
    /// client stops reading) before it is closed; time in a handler does not count, and pipe WebSockets
    /// are exempt: they have their own heartbeats (100ms to 1h).
    #[arg(long, env = "BROKER_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_idle_timeout)]
    pub http_idle_timeout: Duration,

    /// Largest frame accepted from a consumer (bytes; K/M/G suffixes are binary multiples).
    #[arg(long, env = "BROKER_MAX_FRAME_BYTES", default_value = "8M", value_parser = parse_size)]
    pub max_frame_bytes: u64,

    /// Largest HTTP request body accepted.
    #[arg(long, env = "BROKER_MAX_BODY_BYTES", default_value = "16M", value_parser = parse_size)]
    pub max_body_bytes: u64,

    /// Most records in one BATCH frame to a consumer (bytes are bounded by `--batch-max-bytes`, which is
    /// what usually cuts a batch; a consumer's HELLO may ask for less of either).
    #[arg(long, env = "BROKER_BATCH_MAX_RECORDS", default_value_t = 10_000)]
    pub batch_max_records: usize,

    /// Most record bytes in one BATCH frame (a single larger record still goes alone).
    #[arg(long, env = "BROKER_BATCH_MAX_BYTES", default_value = "1M", value_parser = parse_size)]
    pub batch_max_bytes: u64,

    /// Most unacknowledged BATCH frames per consumer (a consumer may ask for fewer).
    #[arg(long, env = "BROKER_MAX_IN_FLIGHT", default_value_t = 8)]
    pub max_in_flight: u16,

    /// Most unacknowledged BATCH frames per child broker. A child acknowledges what is durable, after a
    /// flush at most every `--flush-interval`, so its window covers what arrives meanwhile.
    #[arg(long, env = "BROKER_PIPE_MAX_IN_FLIGHT", default_value_t = 256)]
    pub pipe_max_in_flight: u16,

    /// Most PUBLISH frames a producer may have in flight at ROOT, taken from its connection ahead of their
    /// acknowledgements (a producer may ask for fewer; frames beyond it, or beyond 32 MiB of records, wait
    /// in the socket). The frames taken while an append flushes share the next flush.
    #[arg(long, env = "BROKER_MAX_PUBLISH_IN_FLIGHT", default_value_t = 64)]
    pub max_publish_in_flight: u16,

    /// Interval of PINGs to consumers; a peer silent for three intervals is dropped.
    #[arg(long, env = "BROKER_HEARTBEAT", default_value = "2s", value_parser = parse_duration)]
    pub heartbeat: Duration,

    /// How long a consumer may leave its window full or its socket unread before it is dropped.
    #[arg(long, env = "BROKER_SLOW_CONSUMER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub slow_consumer_timeout: Duration,

    /// How often acknowledged group offsets are written to SQLite (one transaction each time).
    #[arg(long, env = "BROKER_GROUP_COMMIT_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub group_commit_interval: Duration,

    /// Size at which a segment file is sealed and a new one started.
    #[arg(long, env = "BROKER_SEGMENT_BYTES", default_value = "256M", value_parser = parse_size)]
    pub segment_bytes: u64,

    /// Age at which an active segment is sealed even if not full.
    #[arg(long, env = "BROKER_SEGMENT_MAX_AGE", default_value = "7d", value_parser = parse_duration)]
    pub segment_max_age: Duration,

    /// When appended records are flushed to disk.
    #[arg(long, env = "BROKER_FLUSH", value_enum, default_value = "always")]
    pub flush: FlushMode,

    /// Flush period for `--flush interval`; below ROOT also the least time between two background flushes of
    /// the copy (records are relayed before they are flushed; the ACK to the parent waits for the flush).
    #[arg(long, env = "BROKER_FLUSH_INTERVAL", default_value = "10ms", value_parser = parse_duration)]
    pub flush_interval: Duration,

    /// Most bytes kept per topic; older sealed segments are deleted (0 = unlimited).
    #[arg(long, env = "BROKER_RETENTION_BYTES", default_value = "0", value_parser = parse_size)]
    pub retention_bytes: u64,

    /// Oldest data kept per topic; older sealed segments are deleted (0 = forever).
    #[arg(long, env = "BROKER_RETENTION_AGE", default_value = "0", value_parser = parse_duration)]
    pub retention_age: Duration,

    /// How often retention is enforced.
    #[arg(long, env = "BROKER_RETENTION_CHECK_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub retention_check_interval: Duration,

    /// Bytes of sealed segments re-checked against their CRCs per second in the background, so damage on
    /// disk is found before anyone reads it (0 = off).
    #[arg(long, env = "BROKER_SCRUB_RATE", default_value = "32M", value_parser = parse_size)]
    pub scrub_rate: u64,

    /// Bytes of sealed segments compaction reads and writes per second at most, for topics whose cleanup
    /// policy compacts (0 = no limit).
    #[arg(long, env = "BROKER_COMPACTION_RATE", default_value = "64M", value_parser = parse_size)]
    pub compaction_rate: u64,

    /// How often compaction looks for a topic that is due a pass.
    #[arg(long, env = "BROKER_COMPACTION_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub compaction_interval: Duration,

    /// Serve the `/test/*` endpoints (inject messages, load from SQLite, stats). Off in production.
    #[arg(long, env = "BROKER_TEST_ENDPOINTS", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub test_endpoints: bool,

    /// The only directory `/test/load-from-sqlite` may read from.
    #[arg(long, env = "BROKER_TEST_DATA_DIR")]
    pub test_data_dir: Option<PathBuf>,

    /// The registry's base URL (`http://host:port`); without one the broker does not register, and a
    /// child needs `--parent-url` or a cached topology to find its parent.
    #[arg(long, env = "BROKER_REGISTRY_URL")]
    pub registry_url: Option<String>,

    /// Token sent to the registry as `Authorization: Bearer`; empty means none.
    #[arg(long, env = "BROKER_REGISTRY_TOKEN", default_value = "", hide_env_values = true)]
    pub registry_token: String,

    /// Labels given to the registry, `key=value` pairs separated by commas (`region=eu,store=12`); a
    /// parent's labels must agree with the child's.
    #[arg(long, env = "BROKER_LABELS", default_value = "", value_parser = parse_labels)]
    pub labels: Labels,

    /// The `host:port` children and tools should use for the HTTP API (default: the bound address).
    #[arg(long, env = "BROKER_ADVERTISE_HTTP")]
    pub advertise_http: Option<String>,

    /// The `host:port` consumers should use for the TCP consumer server (default: the bound address).
    #[arg(long, env = "BROKER_ADVERTISE_TCP")]
    pub advertise_tcp: Option<String>,

    /// A parent this node would like; the registry honours it when it is alive, one level up and
    /// label-compatible.
    #[arg(long, env = "BROKER_PREFERRED_PARENT")]
    pub preferred_parent: Option<String>,

    /// A fixed parent HTTP address (`host:port` or `http://host:port`), for setups without a registry.
    /// When set, the pipe always connects there; a registry, if any, only records this node.
    #[arg(long, env = "BROKER_PARENT")]
    pub parent_url: Option<String>,

    /// Token this node presents in its pipe HELLO to the parent; empty means `--token`'s value.
    #[arg(long, env = "BROKER_PARENT_TOKEN", default_value = "", hide_env_values = true)]
    pub parent_token: String,

    /// Interval of the pipe's PINGs to the parent; a parent silent for three intervals is dropped.
    #[arg(long, env = "BROKER_PIPE_HEARTBEAT", default_value = "1s", value_parser = parse_duration)]
    pub pipe_heartbeat: Duration,

    /// Most records in one BATCH frame to a child broker (bytes are bounded by `--batch-max-bytes`).
    #[arg(long, env = "BROKER_PIPE_BATCH_MAX_RECORDS", default_value_t = 1000)]
    pub pipe_batch_max_records: usize,

    /// Longest wait between two attempts to reach a parent (the wait doubles from 100ms, with jitter).
    #[arg(long, env = "BROKER_PIPE_RECONNECT_MAX", default_value = "5s", value_parser = parse_duration)]
    pub pipe_reconnect_max: Duration,

    /// Log as JSON lines instead of text (the filter comes from `RUST_LOG`).
    #[arg(long, env = "BROKER_LOG_JSON", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub log_json: bool,
}

impl Config {
    /// Checks the values clap cannot check alone; the error is one line naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_id.is_empty() || self.node_id.len() > 200 {
            return Err("--node-id must be 1 to 200 characters".to_string());
        }
        if self.max_connections == 0 || self.max_connections > 1_000_000 {
            return Err("--max-connections must be between 1 and 1000000".to_string());
        }
        const MAX_FRAME_CEILING: u64 = 64 * 1024 * 1024;
        if !(1024..=MAX_FRAME_CEILING).contains(&self.max_frame_bytes) {
            return Err(format!(
                "--max-frame-bytes must be between 1K and 64M, got {}",
                self.max_frame_bytes
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err("--max-body-bytes must be at least 1K".to_string());
        }
        if self.batch_max_records == 0 || self.batch_max_records > 100_000 {
            return Err("--batch-max-records must be between 1 and 100000".to_string());
        }
        // A BATCH frame carries its records plus a small header; it must fit the frame limit the
        // consumer decodes with, which by default equals ours.
        if self.batch_max_bytes == 0 || self.batch_max_bytes + 1024 > self.max_frame_bytes {
            return Err("--batch-max-bytes must be at least 1 and 1K less than --max-frame-bytes".to_string());
        }
        if self.max_in_flight == 0 {
            return Err("--max-in-flight must be at least 1".to_string());
        }
        if self.pipe_max_in_flight == 0 {
            return Err("--pipe-max-in-flight must be at least 1".to_string());
        }
        if self.max_publish_in_flight == 0 {
            return Err("--max-publish-in-flight must be at least 1".to_string());
        }
        if self.heartbeat < Duration::from_millis(10) || self.heartbeat > Duration::from_secs(3600) {
            return Err("--heartbeat must be between 10ms and 1h".to_string());
        }
        if self.slow_consumer_timeout.is_zero() {
            return Err("--slow-consumer-timeout must be more than zero".to_string());
        }
        if self.group_commit_interval.is_zero() {
            return Err("--group-commit-interval must be more than zero".to_string());
        }
        if self.segment_bytes < 4096 {
            return Err("--segment-bytes must be at least 4K".to_string());
        }
        if self.flush == FlushMode::Interval && self.flush_interval.is_zero() {
            return Err("--flush-interval must be more than zero with --flush interval".to_string());
        }
        if self.retention_check_interval.is_zero() {
            return Err("--retention-check-interval must be more than zero".to_string());
        }
        if self.compaction_interval.is_zero() {
            return Err("--compaction-interval must be more than zero".to_string());
        }
        self.validate_tree()
    }

    /// Checks the settings of registration and the pipe.
    fn validate_tree(&self) -> Result<(), String> {
        if let Some(url) = &self.registry_url
            && (!url.starts_with("http://") || url.len() <= "http://".len())
        {
            return Err(format!("--registry-url must be an http:// URL, got {url:?}"));
        }
        if self.level == Level::Root && self.parent_url.is_some() {
            return Err("--parent-url is for child nodes; ROOT has no parent".to_string());
        }
        if let Some(parent) = &self.parent_url
            && parent_host_port(parent).is_none()
        {
            return Err(format!("--parent-url must be host:port or http://host:port, got {parent:?}"));
        }
        for (name, value) in
            [("--advertise-http", &self.advertise_http), ("--advertise-tcp", &self.advertise_tcp)]
        {
            if let Some(value) = value
                && (value.is_empty() || value.len() > 256 || value.contains(char::is_whitespace))
            {
                return Err(format!("{name} must be a host:port without spaces, got {value:?}"));
            }
        }
        if self.pipe_heartbeat < Duration::from_millis(10) || self.pipe_heartbeat > Duration::from_secs(600) {
            return Err("--pipe-heartbeat must be between 10ms and 10m".to_string());
        }
        if self.pipe_batch_max_records == 0 || self.pipe_batch_max_records > 100_000 {
            return Err("--pipe-batch-max-records must be between 1 and 100000".to_string());
        }
        if self.pipe_reconnect_max < Duration::from_millis(100) {
            return Err("--pipe-reconnect-max must be at least 100ms".to_string());
        }
        Ok(())
    }

    /// The limits of the HTTP listener.
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            max_connections: self.max_http_connections,
            header_timeout: self.http_header_timeout,
            idle_timeout: self.http_idle_timeout,
        }
    }

    /// Every connection this broker may hold open at once: consumers and HTTP (pipes included).
    pub fn max_open_connections(&self) -> u64 {
        u64::try_from(self.max_connections.saturating_add(self.max_http_connections)).unwrap_or(u64::MAX)
    }

    /// The token this node presents to its parent.
    pub fn token_for_parent(&self) -> &str {
        if self.parent_token.is_empty() { &self.token } else { &self.parent_token }
    }

    /// The level of this node's parent, or `None` for ROOT.
    pub fn parent_level(&self) -> Option<Level> {
        self.level.parent()
    }

    /// A configuration with every default, for the given data directory, listening on 127.0.0.1 port 0.
    /// Tests and embedders start from this.
    pub fn for_tests(data_dir: PathBuf) -> Config {
        let mut config = Cli::parse_from(["broker"]).config;
        config.data_dir = data_dir;
        config.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.consumer_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config
    }
}

/// A node's labels, such as `region` and `store`, sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(pub BTreeMap<String, String>);

/// Parses labels written as `key=value` pairs separated by commas; the empty string is no labels.
pub fn parse_labels(text: &str) -> Result<Labels, String> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("label {pair:?} is not key=value"));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || key.len() > 128 || value.len() > 128 {
            return Err(format!("label {pair:?} needs a key of 1 to 128 bytes and a value of at most 128"));
        }
        if labels.insert(key.to_string(), value.to_string()).is_some() {
            return Err(format!("label {key:?} is given twice"));
        }
    }
    if labels.len() > 32 {
        return Err(format!("{} labels given; the registry takes at most 32", labels.len()));
    }
    Ok(Labels(labels))
}

/// The `host:port` of a parent address written as `host:port`, `http://host:port` or `ws://host:port`
/// (a trailing `/` is allowed); `None` if it is something else.
pub fn parent_host_port(text: &str) -> Option<&str> {
    let text = text.trim();
    let rest = ["http://", "ws://"].iter().find_map(|scheme| text.strip_prefix(scheme)).unwrap_or(text);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let valid = !rest.is_empty()
        && !rest.contains(['/', '?', '#'])
        && !rest.contains(char::is_whitespace)
        && rest.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    valid.then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let cli = Cli::try_parse_from(["broker"]).unwrap();
        assert!(cli.command.is_none());
        cli.config.validate().unwrap();
        assert_eq!(cli.config.level, Level::Root);
        assert_eq!(cli.config.batch_max_records, 10_000);
        assert_eq!(cli.config.batch_max_bytes, 1 << 20);
        assert_eq!(cli.config.max_in_flight, 8);
        assert_eq!(cli.config.max_publish_in_flight, 64);
        assert_eq!(cli.config.max_body_bytes, 16 << 20);
        assert!(!cli.config.test_endpoints);
        assert_eq!(
            cli.config.http_limits(),
            HttpLimits {
                max_connections: 1024,
                header_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(60),
            }
        );
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "broker",
            "--level",
            "pos",
            "--test-endpoints",
            "--heartbeat",
            "500ms",
            "--max-frame-bytes",
            "2M",
        ])
        .unwrap();
        assert_eq!(cli.config.level, Level::Pos);
        assert!(cli.config.test_endpoints);
        assert_eq!(cli.config.heartbeat, Duration::from_millis(500));
        assert_eq!(cli.config.max_frame_bytes, 2 << 20);
    }

    #[test]
    fn healthcheck_subcommand() {
        let cli =
            Cli::try_parse_from(["broker", "healthcheck", "--url", "http://127.0.0.1:1/health"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Healthcheck { ref url, .. }) if url.ends_with("/health"))
        );
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Cli::try_parse_from(["broker", "--level", "moon"]).is_err());
        assert!(Cli::try_parse_from(["broker", "--heartbeat", "5"]).is_err());
        assert!(Cli::try_parse_from(["broker", "--no-such-flag"]).is_err());
        assert!(Cli::try_parse_from(["broker", "--max-http-connections", "0"]).is_err());
        assert!(Cli::try_parse_from(["broker", "--http-header-timeout", "10"]).is_err());
        assert!(Cli::try_parse_from(["broker", "--http-idle-timeout", "2h"]).is_err());
        let cli =
            Cli::try_parse_from(["broker", "--max-http-connections", "200", "--http-header-timeout", "1s"])
                .unwrap();
        assert_eq!(cli.config.http_limits().max_connections, 200);
        assert_eq!(cli.config.http_limits().header_timeout, Duration::from_secs(1));
        let mut config = Cli::try_parse_from(["broker"]).unwrap().config;
        config.batch_max_bytes = config.max_frame_bytes;
        let message = config.validate().unwrap_err();
        assert!(message.contains("--batch-max-bytes") && !message.contains('\n'));
    }

    #[test]
    fn tree_settings() {
        let cli = Cli::try_parse_from([
            "broker",
            "--level",
            "L3",
            "--labels",
            "region=eu, store=12",
            "--parent-url",
            "http://127.0.0.1:8080/",
        ])
        .unwrap();
        assert_eq!(cli.config.level, Level::L3);
        assert_eq!(cli.config.labels.0.get("store").map(String::as_str), Some("12"));
        cli.config.validate().unwrap();
        assert_eq!(parent_host_port(cli.config.parent_url.as_deref().unwrap()), Some("127.0.0.1:8080"));
        assert_eq!(Level::Pos.parent(), Some(Level::L3));
        assert_eq!(Level::Root.parent(), None);
        assert_eq!(Level::Local.child(), None);
        assert!(parse_labels("region").is_err());
        assert!(parse_labels("a=1,a=2").is_err());
        assert_eq!(parse_labels("").unwrap(), Labels::default());
        assert!(parent_host_port("ftp://x:1").is_none());
        assert!(parent_host_port("host").is_none());
        let root_with_parent = Cli::try_parse_from(["broker", "--parent-url", "127.0.0.1:1"]).unwrap();
        assert!(root_with_parent.config.validate().unwrap_err().contains("ROOT"));
        let bad_registry = Cli::try_parse_from(["broker", "--registry-url", "registry:8500"]).unwrap();
        assert!(bad_registry.config.validate().unwrap_err().contains("--registry-url"));
    }
}
