//! The `registry` binary's command line: every setting as a flag and a `REGISTRY_` environment variable, with
//! defaults in code (durations with units, read by `service::units`), plus the `healthcheck` subcommand.
//!
//! This module owns parsing and checking settings. It does not open anything; `main` turns the result into
//! `Settings` and starts the service.

use crate::identities::Identities;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use service::HttpLimits;
use service::http_server::{parse_connection_limit, parse_header_timeout, parse_idle_timeout};
use service::units::{duration_between, format_duration};

use crate::state::Settings;

/// The relay tree's registry: brokers register here, heartbeat, and learn their parent.
#[derive(Debug, Parser)]
#[command(name = "registry", version, about, long_about = None)]
pub struct Cli {
    /// What to do; without a subcommand the registry serves.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The service's settings.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Exit 0 if the registry at --url answers 200, 1 otherwise (for container healthchecks).
    Healthcheck {
        /// The URL to GET.
        #[arg(long, env = "REGISTRY_HEALTHCHECK_URL", default_value = "http://127.0.0.1:8500/health")]
        url: String,
        /// How long to wait for each step (connect, send, read), from 1ms to 1m.
        #[arg(long, default_value = "3s",
              value_parser = duration_between(Duration::from_millis(1), Duration::from_secs(60)))]
        timeout: Duration,
    },
}

/// The service's settings.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The address to listen on for HTTP.
    #[arg(long, env = "REGISTRY_LISTEN", default_value = "0.0.0.0:8500")]
    pub listen: SocketAddr,
    /// The SQLite file for nodes, assignments and history (its directory is created).
    #[arg(long, env = "REGISTRY_DB", default_value = "./data/registry.sqlite")]
    pub db: PathBuf,
    /// A node with no heartbeat for this long is expired and its children are reassigned (50ms to 1d).
    #[arg(long, env = "REGISTRY_EXPIRY", default_value = "5s",
          value_parser = duration_between(Duration::from_millis(50), Duration::from_secs(86_400)))]
    pub expiry: Duration,
    /// How often brokers are told to heartbeat (10ms to 1h); must be shorter than the expiry.
    #[arg(long, env = "REGISTRY_HEARTBEAT_INTERVAL", default_value = "1s",
          value_parser = duration_between(Duration::from_millis(10), Duration::from_secs(3_600)))]
    pub heartbeat_interval: Duration,
    /// A shared token that register, heartbeat, parent and deregister requests must carry
    /// (`Authorization: Bearer <token>` or a `token` field); none when unset or empty.
    #[arg(long, env = "REGISTRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A JSON file naming every node the registry accepts, with its own token, its level and optionally its
    /// labels (`{"nodes": [{"id", "level", "token", "labels"}]}`): a request for node X then needs X's token
    /// (`--token` is not used), and X registers only at its level and labels.
    #[arg(long, env = "REGISTRY_NODES_FILE")]
    pub nodes_file: Option<PathBuf>,
    /// How many topology history events are kept.
    #[arg(long, env = "REGISTRY_HISTORY_LIMIT", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub history_limit: u64,
    /// Most HTTP connections open at once (1 to 1000000); more wait in the listen backlog until one
    /// closes. Every broker keeps one open while it heartbeats.
    #[arg(long, env = "REGISTRY_MAX_HTTP_CONNECTIONS", default_value = "1024",
          value_parser = parse_connection_limit)]
    pub max_http_connections: usize,
    /// How long a client may take to send a request's head, from connecting or from the previous answer;
    /// a kept-alive connection unused for this long is closed too (100ms to 10m).
    #[arg(long, env = "REGISTRY_HTTP_HEADER_TIMEOUT", default_value = "10s",
          value_parser = parse_header_timeout)]
    pub http_header_timeout: Duration,
    /// Longest silence on a connection in mid-request (a body that stops arriving, an answer the client
    /// stops reading) before it is closed; time in a handler does not count (100ms to 1h).
    #[arg(long, env = "REGISTRY_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_idle_timeout)]
    pub http_idle_timeout: Duration,
    /// Log as JSON lines instead of text (the filter comes from `RUST_LOG`).
    #[arg(long, env = "REGISTRY_LOG_JSON", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub log_json: bool,
}

impl ServeArgs {
    /// The library settings these flags describe, or why they do not make sense together.
    pub fn settings(&self) -> Result<Settings, String> {
        if self.heartbeat_interval >= self.expiry {
            return Err(format!(
                "--heartbeat-interval ({}) must be shorter than --expiry ({}), or every node would expire",
                format_duration(self.heartbeat_interval),
                format_duration(self.expiry)
            ));
        }
        Ok(Settings {
            db_path: self.db.clone(),
            expiry: self.expiry,
            heartbeat_interval: self.heartbeat_interval,
            token: self.token.clone().filter(|token| !token.is_empty()),
            identities: self.nodes_file.as_deref().map(Identities::load).transpose()?,
            history_limit: self.history_limit,
            http: HttpLimits {
                max_connections: self.max_http_connections,
                header_timeout: self.http_header_timeout,
                idle_timeout: self.http_idle_timeout,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let cli = Cli::try_parse_from(["registry"]).unwrap();
        assert!(cli.command.is_none());
        let settings = cli.serve.settings().unwrap();
        assert_eq!(cli.serve.listen, "0.0.0.0:8500".parse().unwrap());
        assert_eq!(settings.db_path, PathBuf::from("./data/registry.sqlite"));
        assert_eq!(settings.expiry, Settings::DEFAULT_EXPIRY);
        assert_eq!(settings.heartbeat_interval, Settings::DEFAULT_HEARTBEAT_INTERVAL);
        assert_eq!(settings.history_limit, Settings::DEFAULT_HISTORY_LIMIT);
        assert_eq!(settings.http, Settings::DEFAULT_HTTP_LIMITS);
    }

    #[test]
    fn bad_values_and_inconsistent_timing_are_refused() {
        assert!(Cli::try_parse_from(["registry", "--expiry", "soon"]).is_err());
        assert!(Cli::try_parse_from(["registry", "--expiry", "5000"]).is_err(), "a duration needs a unit");
        assert!(Cli::try_parse_from(["registry", "--expiry", "10ms"]).is_err(), "below the range");
        assert!(Cli::try_parse_from(["registry", "--heartbeat-interval", "2h"]).is_err(), "above the range");
        assert!(Cli::try_parse_from(["registry", "--listen", "nowhere"]).is_err());
        assert!(Cli::try_parse_from(["registry", "--bogus"]).is_err());
        assert!(Cli::try_parse_from(["registry", "--max-http-connections", "0"]).is_err());
        assert!(Cli::try_parse_from(["registry", "--http-header-timeout", "1ms"]).is_err());
        assert!(Cli::try_parse_from(["registry", "--http-idle-timeout", "1d"]).is_err());
        let cli =
            Cli::try_parse_from(["registry", "--expiry", "500ms", "--heartbeat-interval", "500ms"]).unwrap();
        assert!(cli.serve.settings().unwrap_err().contains("--heartbeat-interval (500ms)"));
        let cli = Cli::try_parse_from(["registry", "--expiry", "30s", "--heartbeat-interval", "2s"]).unwrap();
        assert_eq!(cli.serve.settings().unwrap().expiry, Duration::from_secs(30));
        let cli = Cli::try_parse_from(["registry", "--token", ""]).unwrap();
        assert_eq!(cli.serve.settings().unwrap().token, None);
    }

    #[test]
    fn the_healthcheck_subcommand_takes_a_url() {
        let cli =
            Cli::try_parse_from(["registry", "healthcheck", "--url", "http://127.0.0.1:1/health"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Healthcheck { url, .. }) if url == "http://127.0.0.1:1/health")
        );
    }
}
