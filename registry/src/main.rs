//! The `registry` binary: parses the command line, sets up logging, opens the state, binds the listener and
//! serves until SIGINT or SIGTERM; or, as `registry healthcheck`, checks a running registry.
//!
//! Only wiring lives here; everything it calls is in the library.

use std::process::ExitCode;

use anyhow::Context;
use registry::AppState;
use registry::config::{Cli, Command, ServeArgs};

fn main() -> ExitCode {
    let cli: Cli = service::cli::parse_or_exit();
    match cli.command {
        Some(Command::Healthcheck { url, timeout }) => match service::healthcheck::probe(&url, timeout) {
            Ok(_) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("registry healthcheck: {message}");
                ExitCode::FAILURE
            }
        },
        None => serve(cli.serve),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let settings = match args.settings() {
        Ok(settings) => settings,
        Err(message) => service::cli::exit_invalid::<Cli>(message),
    };
    service::init_logging(args.log_json);
    service::raise_open_files_limit(u64::try_from(settings.http.max_connections).unwrap_or(u64::MAX));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("registry: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let state = AppState::open(settings).context("cannot open the registry state")?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = listener.local_addr().context("cannot read the bound address")?;
        tracing::info!(%address, db = %state.settings().db_path.display(), "registry listening");
        registry::serve(listener, state, service::shutdown_signal()).await;
        tracing::info!("registry stopped");
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %one_line(&error), "registry failed");
            eprintln!("registry: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line.
fn one_line(error: &anyhow::Error) -> String {
    error.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")
}
