//! The broker's configuration: every setting as a command-line flag and a `BROKER_` environment variable,
//! with defaults in code, parsed by clap and then validated so that a bad value ends the process with one
//! readable line. This module owns parsing and validation only; it starts nothing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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

/// A node's level in the relay tree; ROOT is the only level that accepts new data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Level {
    /// The cloud node: assigns offsets and timestamps.
    Root,
    /// A region.
    L2,
    /// A store cluster or store server.
    L3,
    /// A till.
    Pos,
    /// An on-device node.
    Local,
}

impl Level {
    /// The level's number on the wire (ROOT 0 ... LOCAL 4).
    pub fn as_u8(self) -> u8 {
        match self {
            Level::Root => 0,
            Level::L2 => 1,
            Level::L3 => 2,
            Level::Pos => 3,
            Level::Local => 4,
        }
    }

    /// The level's name as operators write it.
    pub fn name(self) -> &'static str {
        match self {
            Level::Root => "ROOT",
            Level::L2 => "L2",
            Level::L3 => "L3",
            Level::Pos => "POS",
            Level::Local => "LOCAL",
        }
    }
}

/// When the storage engine flushes appended records to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FlushMode {
    /// Flush before answering every append (durable; the default).
    Always,
    /// Flush on a timer (`--flush-interval`); an ingest still waits for its own records to be flushed.
    Interval,
    /// Never flush explicitly: UNSAFE, for benchmarks only; acknowledged records can be lost in a crash.
    Never,
}

/// Every setting of a running broker.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// This node's level in the tree.
    #[arg(long, env = "BROKER_LEVEL", value_enum, default_value = "root")]
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

    /// Most consumer connections served at once; more wait in the listen backlog.
    #[arg(long, env = "BROKER_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Largest frame accepted from a consumer (bytes; K/M/G suffixes are binary multiples).
    #[arg(long, env = "BROKER_MAX_FRAME_BYTES", default_value = "8M", value_parser = parse_bytes)]
    pub max_frame_bytes: u64,

    /// Largest HTTP request body accepted.
    #[arg(long, env = "BROKER_MAX_BODY_BYTES", default_value = "16M", value_parser = parse_bytes)]
    pub max_body_bytes: u64,

    /// Most records in one BATCH frame.
    #[arg(long, env = "BROKER_BATCH_MAX_RECORDS", default_value_t = 10)]
    pub batch_max_records: usize,

    /// Most record bytes in one BATCH frame (a single larger record still goes alone).
    #[arg(long, env = "BROKER_BATCH_MAX_BYTES", default_value = "1M", value_parser = parse_bytes)]
    pub batch_max_bytes: u64,

    /// Most unacknowledged BATCH frames per consumer (a consumer may ask for fewer).
    #[arg(long, env = "BROKER_MAX_IN_FLIGHT", default_value_t = 8)]
    pub max_in_flight: u16,

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
    #[arg(long, env = "BROKER_SEGMENT_BYTES", default_value = "256M", value_parser = parse_bytes)]
    pub segment_bytes: u64,

    /// Age at which an active segment is sealed even if not full.
    #[arg(long, env = "BROKER_SEGMENT_MAX_AGE", default_value = "7d", value_parser = parse_duration)]
    pub segment_max_age: Duration,

    /// When appended records are flushed to disk.
    #[arg(long, env = "BROKER_FLUSH", value_enum, default_value = "always")]
    pub flush: FlushMode,

    /// Flush period for `--flush interval`.
    #[arg(long, env = "BROKER_FLUSH_INTERVAL", default_value = "10ms", value_parser = parse_duration)]
    pub flush_interval: Duration,

    /// Most bytes kept per topic; older sealed segments are deleted (0 = unlimited).
    #[arg(long, env = "BROKER_RETENTION_BYTES", default_value = "0", value_parser = parse_bytes)]
    pub retention_bytes: u64,

    /// Oldest data kept per topic; older sealed segments are deleted (0 = forever).
    #[arg(long, env = "BROKER_RETENTION_AGE", default_value = "0", value_parser = parse_duration)]
    pub retention_age: Duration,

    /// How often retention is enforced.
    #[arg(long, env = "BROKER_RETENTION_CHECK_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub retention_check_interval: Duration,

    /// Serve the `/test/*` endpoints (inject messages, load from SQLite, stats). Off in production.
    #[arg(long, env = "BROKER_TEST_ENDPOINTS", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub test_endpoints: bool,

    /// The only directory `/test/load-from-sqlite` may read from.
    #[arg(long, env = "BROKER_TEST_DATA_DIR")]
    pub test_data_dir: Option<PathBuf>,

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
        Ok(())
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

/// Parses a byte size: a number with an optional `K`, `M`, `G` (or `KiB`, `MiB`, `GiB`) binary suffix.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let number: u64 =
        digits.parse().map_err(|_| format!("{text:?} is not a byte size such as 512K or 8M"))?;
    let multiplier: u64 = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(format!("{text:?} has an unknown size suffix; use K, M, G or T")),
    };
    number.checked_mul(multiplier).ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses a duration: a number with a unit `ms`, `s`, `m`, `h` or `d` (`0` alone means zero).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 =
        digits.parse().map_err(|_| format!("{text:?} is not a duration such as 100ms or 30s"))?;
    let millis_per_unit: u64 = match unit.trim() {
        "" if number == 0 => 0,
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?} needs a unit: ms, s, m, h or d")),
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
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
        assert_eq!(cli.config.batch_max_records, 10);
        assert_eq!(cli.config.batch_max_bytes, 1 << 20);
        assert_eq!(cli.config.max_in_flight, 8);
        assert_eq!(cli.config.max_body_bytes, 16 << 20);
        assert!(!cli.config.test_endpoints);
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
        let mut config = Cli::try_parse_from(["broker"]).unwrap().config;
        config.batch_max_bytes = config.max_frame_bytes;
        let message = config.validate().unwrap_err();
        assert!(message.contains("--batch-max-bytes") && !message.contains('\n'));
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert_eq!(parse_bytes("4K").unwrap(), 4096);
        assert_eq!(parse_bytes("1MiB").unwrap(), 1 << 20);
        assert!(parse_bytes("1X").is_err());
        assert!(parse_bytes("").is_err());
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("1y").is_err());
    }
}
