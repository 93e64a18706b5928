//! The `broker` binary: parses the command line, sets up logging and signals, and runs the broker (or the
//! `healthcheck` subcommand). Everything else lives in the library.

use std::process::ExitCode;

use broker::config::{Cli, Command};
use clap::Parser;
use clap::error::ErrorKind;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return clap_exit(&error),
    };
    if let Some(Command::Healthcheck { url, timeout }) = cli.command {
        return match service::healthcheck::probe(&url, timeout) {
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
    service::init_logging(config.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("broker: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(broker::run(config, service::shutdown_signal())) {
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
