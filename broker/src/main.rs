//! The `broker` binary: parses the command line, sets up logging and signals, and runs the broker (or the
//! `healthcheck` subcommand). Everything else lives in the library.

use std::process::ExitCode;

use broker::config::{Cli, Command};

fn main() -> ExitCode {
    let cli: Cli = service::cli::parse_or_exit();
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
        service::cli::exit_invalid::<Cli>(message);
    }
    service::init_logging(config.log_json);
    service::raise_open_files_limit(config.max_open_connections());
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
