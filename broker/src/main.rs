//! The `broker` binary: parses the command line, sets up logging and signals, and runs the broker (or the
//! `healthcheck` subcommand). Everything else lives in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use broker::config::{Cli, Command};
use clap::Parser;
use clap::error::ErrorKind;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return clap_exit(&error),
    };
    if let Some(Command::Healthcheck { url, timeout }) = cli.command {
        return match broker::healthcheck::probe(&url, timeout) {
            Ok(_) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("broker healthcheck: {message}");
                ExitCode::FAILURE
            }
        };
    }
    let config = cli.config;
    if let Err(message) = config.validate() {
        eprintln!("broker: {message}");
        return ExitCode::from(2);
    }
    init_logging(config.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("broker: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(broker::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "broker failed");
            eprintln!("broker: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints help or version as clap renders them; any other parse error as its first line only.
fn clap_exit(error: &clap::Error) -> ExitCode {
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            print!("{}", error.render());
            ExitCode::SUCCESS
        }
        _ => {
            let rendered = error.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid command line");
            eprintln!("broker: {}", first.strip_prefix("error: ").unwrap_or(first));
            ExitCode::from(2)
        }
    }
}

/// Text or JSON logs on stderr, filtered by `RUST_LOG` (default `info`). Colours only on a terminal, so
/// that log files and collectors get plain text.
fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the broker");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
