//! `relay-bench`: a load tool for the relay tree, in the manner of `nats bench` and `iggy-bench`. It
//! starts the real `broker`, `registry` and `consumer-app` binaries as processes on 127.0.0.1 (or, for the
//! storage scenario, uses the `storage` crate in process), drives them, and prints and writes what they
//! reached beside the design's targets. `main` only wires: parse, create the run, run the scenario under
//! Ctrl-C and the time limit, print and write the report.
//!
//! Architecture invariant: every process a run starts is stopped by PID before the run ends, whether it
//! ends normally, with an error, on Ctrl-C or at `--timeout` (see `process.rs`, `launch.rs`).

mod api;
mod config;
mod latency;
mod launch;
mod load;
mod machine;
mod probe;
mod process;
mod report;
mod run;
mod scenarios;
mod svg;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use crate::config::Cli;
use crate::run::Run;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(message) = cli.scenario.validate() {
        eprintln!("relay-bench: {message}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("relay-bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The scenario future runs on this thread (block_on), so the processes it spawns have this thread as
    // their parent thread, which lives until the run ends (see the death signal in process.rs).
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("relay-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the chosen scenario and reports it.
async fn run(cli: Cli) -> Result<()> {
    let run = Run::create(cli.scenario.name(), &cli.common)?;
    eprintln!("relay-bench: {} -> {}", run.id, run.dir.display());
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(cli.common.timeout, scenarios::run(&cli.scenario, &run)) => outcome
            .with_context(|| format!("the run exceeded --timeout {:?}", cli.common.timeout))
            .and_then(|report| report),
        interrupted = tokio::signal::ctrl_c() => {
            interrupted.context("cannot listen for Ctrl-C")?;
            // Returning drops the scenario future, whose launcher stops every process it started.
            anyhow::bail!("interrupted; every process started was stopped; logs in {}", run.log_dir.display());
        }
    };
    let report = outcome.with_context(|| format!("logs in {}", run.log_dir.display()))?;
    print!("{}", report.render_text());
    let written = report.write(&run.dir)?;
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}
