//! One run of a scenario: its id and folders (results, logs, data), the machine, the shared HTTP client,
//! the progress bar, and the removal of data directories at the end unless `--keep`. This module owns
//! the folder layout of a run; the scenarios own what happens in it.
//!
//! ```text
//! {out}/{scenario}-{YYYYMMDD-HHMMSS}/report.json    figures (report.rs)
//! {out}/{scenario}-{YYYYMMDD-HHMMSS}/plot.svg       plots (svg.rs)
//! {out}/{scenario}-{YYYYMMDD-HHMMSS}/logs/{name}.log  each process's output (process.rs)
//! {out}/{scenario}-{YYYYMMDD-HHMMSS}/data/{name}/     each process's data, removed unless --keep
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::api::Api;
use crate::config::CommonArgs;
use crate::launch::Launcher;
use crate::machine::Machine;
use crate::report::Report;

/// The context of one run.
#[derive(Debug)]
pub struct Run {
    /// `{scenario}-{YYYYMMDD-HHMMSS}` (UTC).
    pub id: String,
    /// The scenario's name.
    pub scenario: String,
    /// The run's results folder.
    pub dir: PathBuf,
    /// The processes' logs.
    pub log_dir: PathBuf,
    /// The processes' data directories.
    pub data_dir: PathBuf,
    /// The shared options.
    pub common: CommonArgs,
    /// When the run started.
    pub started: Instant,
    /// When the run started, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// The machine.
    pub machine: Machine,
    /// The HTTP client.
    pub api: Api,
}

impl Run {
    /// Creates the run's folders.
    pub fn create(scenario: &str, common: &CommonArgs) -> Result<Run> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let mut id = format!("{scenario}-{}", utc_stamp(now.as_secs()));
        // Two runs started within the same second get distinct folders.
        let mut suffix = 1;
        while common.out.join(&id).exists() && suffix < 1000 {
            suffix += 1;
            id = format!("{scenario}-{}-{suffix}", utc_stamp(now.as_secs()));
        }
        let dir = common.out.join(&id);
        let log_dir = dir.join("logs");
        let data_dir = match &common.data_dir {
            Some(base) => base.join(&id),
            None => dir.join("data"),
        };
        for path in [&dir, &log_dir, &data_dir] {
            std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
        }
        Ok(Run {
            id,
            scenario: scenario.to_string(),
            dir,
            log_dir,
            data_dir,
            common: common.clone(),
            started: Instant::now(),
            started_unix_ms: now.as_millis() as u64,
            machine: Machine::detect(),
            api: Api::new()?,
        })
    }

    /// An empty report for this run.
    pub fn report(&self) -> Report {
        Report::new(&self.scenario, &self.id, self.started_unix_ms, self.machine.clone())
    }

    /// A launcher for this run's processes.
    pub fn launcher(&self) -> Launcher {
        Launcher::new(
            &self.common.bin_dir,
            &self.log_dir,
            &self.data_dir,
            self.common.flush,
            &self.common.broker_args,
            self.api.clone(),
        )
    }

    /// A progress bar of `len` steps labelled `message`; hidden with `--quiet` or when stderr is not a
    /// terminal.
    pub fn progress(&self, len: u64, message: &str) -> ProgressBar {
        if self.common.quiet {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{msg:>14} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({per_sec}, eta {eta})",
        ) {
            bar.set_style(style);
        }
        bar.set_message(message.to_string());
        bar
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.common.keep {
            eprintln!("relay-bench: data kept in {}", self.data_dir.display());
        } else if let Err(error) = std::fs::remove_dir_all(&self.data_dir) {
            eprintln!("relay-bench: cannot remove {}: {error}", self.data_dir.display());
        }
    }
}

/// Seconds since the epoch as `YYYYMMDD-HHMMSS` in UTC.
fn utc_stamp(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let second_of_day = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// The proleptic Gregorian date of a day number counted from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_dates() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
        assert_eq!(utc_stamp(1_700_000_000), "20231114-221320");
    }
}
