//! A run's results: figures with their targets from the design, latency percentiles, per-process CPU and
//! memory, lag per hop and notes; printed as tables and written as `report.json` plus `plot.svg`. This
//! module formats and writes; the scenarios measure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::latency::LatencySummary;
use crate::machine::{Machine, ProcessUsage};
use crate::svg::{self, Panel};

/// A goal a figure is compared with.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Target {
    /// The goal as the design states it.
    pub text: String,
    /// The figure must be at least this.
    pub at_least: Option<f64>,
    /// The figure must be at most this.
    pub at_most: Option<f64>,
}

impl Target {
    /// A goal the figure must reach or exceed.
    pub fn at_least(value: f64, text: &str) -> Target {
        Target { text: text.to_string(), at_least: Some(value), at_most: None }
    }

    /// A goal the figure must not exceed.
    pub fn at_most(value: f64, text: &str) -> Target {
        Target { text: text.to_string(), at_least: None, at_most: Some(value) }
    }

    /// Whether `value` meets the goal.
    pub fn met_by(&self, value: f64) -> bool {
        self.at_least.is_none_or(|low| value >= low) && self.at_most.is_none_or(|high| value <= high)
    }
}

/// One measured figure.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Figure {
    /// What it is.
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Its unit (`records/s`, `MB/s` with MB = 10^6 bytes, `us`, `MiB`).
    pub unit: String,
    /// The design's goal for it, if it has one.
    pub target: Option<Target>,
    /// Whether the goal is met.
    pub meets_target: Option<bool>,
}

impl Figure {
    /// A figure without a goal.
    pub fn new(name: &str, value: f64, unit: &str) -> Figure {
        Figure { name: name.to_string(), value, unit: unit.to_string(), target: None, meets_target: None }
    }

    /// The figure compared with `target`.
    pub fn with_target(mut self, target: Target) -> Figure {
        self.meets_target = Some(target.met_by(self.value));
        self.target = Some(target);
        self
    }
}

/// CPU and memory of one process of the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProcessFigures {
    /// Its name in the run (`root`, `l2`, `consumer-app`, `relay-bench`).
    pub name: String,
    /// Its PID.
    pub pid: u32,
    /// CPU seconds (user + system) over its whole life up to the end of the measurement.
    pub cpu_seconds: f64,
    /// CPU seconds during the measured phase only.
    pub cpu_seconds_measured: f64,
    /// The most resident memory, MiB.
    pub peak_rss_mib: f64,
    /// Resident memory at the end, MiB.
    pub rss_mib: f64,
    /// CPU microseconds per record handled in the measured phase, when that means something.
    pub cpu_us_per_record: Option<f64>,
}

impl ProcessFigures {
    /// Figures from the usage at the start and at the end of the measured phase; `records` handled.
    pub fn from_usage(
        name: &str,
        pid: u32,
        before: Option<ProcessUsage>,
        after: ProcessUsage,
        records: Option<u64>,
    ) -> ProcessFigures {
        let measured = after.cpu_seconds - before.map_or(0.0, |usage| usage.cpu_seconds);
        ProcessFigures {
            name: name.to_string(),
            pid,
            cpu_seconds: after.cpu_seconds,
            cpu_seconds_measured: measured,
            peak_rss_mib: mib(after.peak_rss_bytes),
            rss_mib: mib(after.rss_bytes),
            cpu_us_per_record: records.filter(|n| *n > 0).map(|n| measured * 1e6 / n as f64),
        }
    }
}

/// Lag between one node and its parent over the measured phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HopLag {
    /// The hop (`ROOT -> L2`).
    pub hop: String,
    /// Largest lag seen, records.
    pub max_records: u64,
    /// Mean lag over the samples, records.
    pub mean_records: f64,
    /// Lag at the last sample, records.
    pub final_records: u64,
    /// Samples taken.
    pub samples: usize,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario.
    pub scenario: String,
    /// The run's id (its folder name).
    pub run_id: String,
    /// When the run started, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// The machine.
    pub machine: Machine,
    /// The scenario's settings.
    pub parameters: serde_json::Value,
    /// The headline figures.
    pub figures: Vec<Figure>,
    /// Latency percentiles, one entry per kind measured.
    pub latencies: Vec<LatencySummary>,
    /// CPU and memory per process.
    pub processes: Vec<ProcessFigures>,
    /// Lag per hop.
    pub hops: Vec<HopLag>,
    /// Raw time series behind the plots: name -> (seconds, value) points.
    pub series: BTreeMap<String, Vec<(f64, f64)>>,
    /// How the figures were obtained and anything that limits them.
    pub notes: Vec<String>,
    /// The plot panels.
    #[serde(skip)]
    pub panels: Vec<Panel>,
}

impl Report {
    /// An empty report for `scenario`.
    pub fn new(scenario: &str, run_id: &str, started_unix_ms: u64, machine: Machine) -> Report {
        Report {
            scenario: scenario.to_string(),
            run_id: run_id.to_string(),
            started_unix_ms,
            machine,
            parameters: serde_json::Value::Null,
            figures: Vec::new(),
            latencies: Vec::new(),
            processes: Vec::new(),
            hops: Vec::new(),
            series: BTreeMap::new(),
            notes: Vec::new(),
            panels: Vec::new(),
        }
    }

    /// Adds a figure.
    pub fn figure(&mut self, figure: Figure) {
        self.figures.push(figure);
    }

    /// Adds a note.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The report as text tables.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "relay-bench {} (run {})", self.scenario, self.run_id);
        let _ = writeln!(out, "machine: {}", self.machine.describe());
        if !self.figures.is_empty() {
            let rows: Vec<Vec<String>> = self
                .figures
                .iter()
                .map(|figure| {
                    vec![
                        figure.name.clone(),
                        format!("{} {}", format_value(figure.value), figure.unit),
                        figure.target.as_ref().map_or_else(String::new, |target| target.text.clone()),
                        match figure.meets_target {
                            Some(true) => "met".to_string(),
                            Some(false) => "MISSED".to_string(),
                            None => String::new(),
                        },
                    ]
                })
                .collect();
            out.push('\n');
            out.push_str(&table(&["figure", "value", "target", ""], &rows));
        }
        if !self.latencies.is_empty() {
            let rows: Vec<Vec<String>> = self
                .latencies
                .iter()
                .map(|latency| {
                    vec![
                        latency.name.clone(),
                        latency.count.to_string(),
                        format_us(latency.p50_us),
                        format_us(latency.p90_us),
                        format_us(latency.p99_us),
                        format_us(latency.p999_us),
                        format_us(latency.max_us),
                    ]
                })
                .collect();
            out.push('\n');
            out.push_str(&table(&["latency", "count", "p50", "p90", "p99", "p99.9", "max"], &rows));
            for latency in &self.latencies {
                let _ = writeln!(out, "  {}: {}", latency.name, latency.method);
            }
        }
        if !self.hops.is_empty() {
            let rows: Vec<Vec<String>> = self
                .hops
                .iter()
                .map(|hop| {
                    vec![
                        hop.hop.clone(),
                        hop.max_records.to_string(),
                        format!("{:.0}", hop.mean_records),
                        hop.final_records.to_string(),
                    ]
                })
                .collect();
            out.push('\n');
            out.push_str(&table(&["lag per hop (records)", "max", "mean", "final"], &rows));
        }
        if !self.processes.is_empty() {
            let rows: Vec<Vec<String>> = self
                .processes
                .iter()
                .map(|process| {
                    vec![
                        process.name.clone(),
                        process.pid.to_string(),
                        format!("{:.2}", process.cpu_seconds_measured),
                        format!("{:.2}", process.cpu_seconds),
                        format!("{:.1}", process.peak_rss_mib),
                        format!("{:.1}", process.rss_mib),
                        process.cpu_us_per_record.map_or_else(String::new, |us| format!("{us:.2}")),
                    ]
                })
                .collect();
            out.push('\n');
            out.push_str(&table(
                &[
                    "process",
                    "pid",
                    "cpu s (measured)",
                    "cpu s (total)",
                    "peak RSS MiB",
                    "RSS MiB",
                    "cpu us/record",
                ],
                &rows,
            ));
        }
        if !self.notes.is_empty() {
            out.push_str("\nnotes:\n");
            for note in &self.notes {
                let _ = writeln!(out, "  - {note}");
            }
        }
        out
    }

    /// Writes `report.json` and, if there are panels, `plot.svg` into `dir`; returns the files written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let json_path = dir.join("report.json");
        let json = serde_json::to_vec_pretty(self).context("cannot encode the report")?;
        std::fs::write(&json_path, json).with_context(|| format!("cannot write {}", json_path.display()))?;
        let mut written = vec![json_path];
        if !self.panels.is_empty() {
            let svg_path = dir.join("plot.svg");
            let title = format!("relay-bench {} ({})", self.scenario, self.run_id);
            std::fs::write(&svg_path, svg::render(&title, &self.panels))
                .with_context(|| format!("cannot write {}", svg_path.display()))?;
            written.push(svg_path);
        }
        Ok(written)
    }
}

/// Bytes as MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// A value with thousands separators when large, three significant digits when small.
pub fn format_value(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    if value.abs() >= 1000.0 {
        let rounded = value.round() as i128;
        let digits = rounded.unsigned_abs().to_string();
        let mut grouped = String::new();
        for (index, digit) in digits.chars().enumerate() {
            if index > 0 && (digits.len() - index).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        if rounded < 0 { format!("-{grouped}") } else { grouped }
    } else if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// Microseconds as `850 us`, `1.25 ms` or `2.1 s`.
pub fn format_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us} us")
    } else if us < 1_000_000 {
        format!("{:.2} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

/// A left-aligned text table.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|title| title.chars().count()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(index) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.to_vec());
    out.push_str(&line(
        widths
            .iter()
            .map(|width| "-".repeat(*width))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_compared() {
        let fast = Figure::new("throughput", 250_000.0, "records/s")
            .with_target(Target::at_least(200_000.0, ">= 200,000 records/s"));
        assert_eq!(fast.meets_target, Some(true));
        let slow = Figure::new("p99", 3_000.0, "us").with_target(Target::at_most(2_000.0, "<= 2 ms"));
        assert_eq!(slow.meets_target, Some(false));
        assert_eq!(Figure::new("x", 1.0, "u").meets_target, None);
    }

    #[test]
    fn values_are_formatted() {
        assert_eq!(format_value(1_234_567.4), "1,234,567");
        assert_eq!(format_value(-1_234.0), "-1,234");
        assert_eq!(format_value(512.4), "512");
        assert_eq!(format_value(12.345), "12.3");
        assert_eq!(format_value(0.5), "0.500");
        assert_eq!(format_us(850), "850 us");
        assert_eq!(format_us(1_250), "1.25 ms");
        assert_eq!(format_us(2_100_000), "2.10 s");
    }

    #[test]
    fn a_report_prints_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = Report::new("test", "test-1", 0, Machine::detect());
        report.figure(Figure::new("records", 10.0, "records/s").with_target(Target::at_least(5.0, ">= 5")));
        report.processes.push(ProcessFigures::from_usage(
            "root",
            1,
            None,
            ProcessUsage { cpu_seconds: 2.0, rss_bytes: 1 << 20, peak_rss_bytes: 2 << 20 },
            Some(1_000_000),
        ));
        report.note("a note");
        let text = report.render_text();
        assert!(text.contains("records") && text.contains("met") && text.contains("a note"), "{text}");
        assert_eq!(report.processes[0].cpu_us_per_record, Some(2.0));
        let written = report.write(dir.path()).unwrap();
        assert_eq!(written.len(), 1);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
        assert_eq!(json["figures"][0]["meets_target"], serde_json::Value::Bool(true));
        assert_eq!(json["machine"]["cores"].as_u64().unwrap() as usize, report.machine.cores);
    }
}
