//! The `registry` binary's command line: every setting as a flag and an environment variable, with defaults in
//! code, plus the `healthcheck` subcommand.
//!
//! This module owns parsing and checking settings. It does not open anything; `main` turns the result into
//! `Settings` and starts the service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
        /// How long to wait for each step (connect, send, read), in milliseconds.
        #[arg(long, default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
        timeout_ms: u64,
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
    /// A node with no heartbeat for this long is expired and its children are reassigned.
    #[arg(long, env = "REGISTRY_EXPIRY_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(50..=86_400_000))]
    pub expiry_ms: u64,
    /// How often brokers are told to heartbeat; must be shorter than the expiry.
    #[arg(long, env = "REGISTRY_HEARTBEAT_INTERVAL_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub heartbeat_interval_ms: u64,
    /// A shared token that register, heartbeat, parent and deregister requests must carry
    /// (`Authorization: Bearer <token>` or a `token` field); none when unset or empty.
    #[arg(long, env = "REGISTRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How many topology history events are kept.
    #[arg(long, env = "REGISTRY_HISTORY_LIMIT", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub history_limit: u64,
    /// Log in JSON instead of text (RUST_LOG sets the filter).
    #[arg(long, env = "LOG_JSON")]
    pub log_json: bool,
}

impl ServeArgs {
    /// The library settings these flags describe, or why they do not make sense together.
    pub fn settings(&self) -> Result<Settings, String> {
        if self.heartbeat_interval_ms >= self.expiry_ms {
            return Err(format!(
                "--heartbeat-interval-ms ({}) must be shorter than --expiry-ms ({}), or every node would expire",
                self.heartbeat_interval_ms, self.expiry_ms
            ));
        }
        Ok(Settings {
            db_path: self.db.clone(),
            expiry: Duration::from_millis(self.expiry_ms),
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms),
            token: self.token.clone().filter(|token| !token.is_empty()),
            history_limit: self.history_limit,
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
    }

    #[test]
    fn bad_values_and_inconsistent_timing_are_refused() {
        assert!(Cli::try_parse_from(["registry", "--expiry-ms", "soon"]).is_err());
        assert!(Cli::try_parse_from(["registry", "--listen", "nowhere"]).is_err());
        assert!(Cli::try_parse_from(["registry", "--bogus"]).is_err());
        let cli = Cli::try_parse_from(["registry", "--expiry-ms", "500", "--heartbeat-interval-ms", "500"])
            .unwrap();
        assert!(cli.serve.settings().is_err());
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
