//! Latency recording: an HDR histogram over the whole run plus one coarser histogram per time window, so a
//! report can give exact percentiles and a plot can show latency over time. Values are microseconds. This
//! module records and summarises; it does not know where the values come from.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::svg::{Panel, Series, XAxis};

/// The largest latency recorded exactly (one hour); larger values are recorded as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Most windows kept; later values fall into the last one.
const MAX_WINDOWS: usize = 2_000;

/// Latencies of one kind over one run.
#[derive(Debug)]
pub struct LatencyRecorder {
    /// What is measured, for reports (`publish -> LOCAL delivered`).
    name: String,
    /// How it is measured, for reports (which timestamps, which resolution).
    method: String,
    /// Every value, 3 significant digits.
    total: Histogram<u64>,
    /// An empty window histogram, cloned for each new window so that recording cannot fail.
    window_template: Histogram<u32>,
    /// Values per window of `window` since `start`, 2 significant digits.
    windows: Vec<Histogram<u32>>,
    /// Where window 0 starts.
    start: Instant,
    /// The window length.
    window: Duration,
}

/// One window of a latency series.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct WindowPoint {
    /// Seconds from the start of the run to the window's start.
    pub t_s: f64,
    /// Values in the window.
    pub count: u64,
    /// Median, microseconds.
    pub p50_us: u64,
    /// 99th percentile, microseconds.
    pub p99_us: u64,
    /// Largest value, microseconds.
    pub max_us: u64,
}

/// Percentiles of one kind of latency.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencySummary {
    /// What is measured.
    pub name: String,
    /// How it is measured.
    pub method: String,
    /// Values recorded.
    pub count: u64,
    /// Smallest, microseconds.
    pub min_us: u64,
    /// Mean, microseconds.
    pub mean_us: f64,
    /// Median, microseconds.
    pub p50_us: u64,
    /// 90th percentile, microseconds.
    pub p90_us: u64,
    /// 99th percentile, microseconds.
    pub p99_us: u64,
    /// 99.9th percentile, microseconds.
    pub p999_us: u64,
    /// Largest, microseconds.
    pub max_us: u64,
    /// The series over time.
    pub series: Vec<WindowPoint>,
    /// The percentile curve: (percentile in %, microseconds), from 0 up to the largest value, which is
    /// placed at percentile 100 (1 - 1/count).
    pub curve: Vec<(f64, u64)>,
}

impl LatencySummary {
    /// The plot of p50, p99 and max per time window, titled `title`.
    pub fn over_time_panel(&self, title: String) -> Panel {
        let line = |name: &str, value: fn(&WindowPoint) -> u64| Series {
            name: name.into(),
            points: self.series.iter().map(|point| (point.t_s, value(point) as f64)).collect(),
        };
        Panel {
            title,
            x_label: "seconds since the start of the run".to_string(),
            y_label: "microseconds".to_string(),
            x_axis: XAxis::Linear,
            series: vec![
                line("p50", |point| point.p50_us),
                line("p99", |point| point.p99_us),
                line("max", |point| point.max_us),
            ],
        }
    }

    /// The percentile curve as one plot line named `name`.
    pub fn curve_series(&self, name: String) -> Series {
        Series { name, points: self.curve.iter().map(|&(percentile, us)| (percentile, us as f64)).collect() }
    }
}

impl LatencyRecorder {
    /// A recorder whose windows of length `window` start at `start`.
    pub fn new(name: &str, method: &str, start: Instant, window: Duration) -> Result<LatencyRecorder> {
        Ok(LatencyRecorder {
            name: name.to_string(),
            method: method.to_string(),
            total: new_histogram(3)?,
            window_template: new_histogram(2)?,
            windows: Vec::new(),
            start,
            window: window.max(Duration::from_millis(1)),
        })
    }

    /// A window length giving about 100 points over `expected_run`, between 100 ms and 5 s.
    pub fn window_for(expected_run: Duration) -> Duration {
        (expected_run / 100).clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Records `latency_us` observed at `at`.
    pub fn record(&mut self, at: Instant, latency_us: u64) {
        let value = latency_us.clamp(1, MAX_LATENCY_US);
        self.total.saturating_record(value);
        let since = at.saturating_duration_since(self.start);
        let index = ((since.as_nanos() / self.window.as_nanos()) as usize).min(MAX_WINDOWS - 1);
        while self.windows.len() <= index {
            self.windows.push(self.window_template.clone());
        }
        self.windows[index].saturating_record(value);
    }

    /// The percentiles, the series and the curve; `None` if nothing was recorded.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.total.is_empty() {
            return None;
        }
        let series = self
            .windows
            .iter()
            .enumerate()
            .filter(|(_, histogram)| !histogram.is_empty())
            .map(|(index, histogram)| WindowPoint {
                t_s: (self.window * index as u32).as_secs_f64(),
                count: histogram.len(),
                p50_us: histogram.value_at_quantile(0.5),
                p99_us: histogram.value_at_quantile(0.99),
                max_us: histogram.max(),
            })
            .collect();
        Some(LatencySummary {
            name: self.name.clone(),
            method: self.method.clone(),
            count: self.total.len(),
            min_us: self.total.min(),
            mean_us: self.total.mean(),
            p50_us: self.total.value_at_quantile(0.5),
            p90_us: self.total.value_at_quantile(0.9),
            p99_us: self.total.value_at_quantile(0.99),
            p999_us: self.total.value_at_quantile(0.999),
            max_us: self.total.max(),
            series,
            curve: percentile_curve(&self.total),
        })
    }
}

/// A histogram from 1 us to [`MAX_LATENCY_US`] with `digits` significant digits.
fn new_histogram<T: hdrhistogram::Counter>(digits: u8) -> Result<Histogram<T>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, digits).context("cannot create a latency histogram")
}

/// The curve plotted against "nines": points at percentiles 1 - 10^(-x/10) for x from 0 up to what the
/// number of values supports, ending with the maximum placed at percentile 1 - 1/n (with n values, the
/// highest percentile that a single value stands for), so the curve does not run off to 100.
fn percentile_curve(histogram: &Histogram<u64>) -> Vec<(f64, u64)> {
    let n = histogram.len() as f64;
    let last_quantile = 1.0 - 1.0 / n.max(2.0);
    let mut curve = Vec::new();
    for step in 0..=80 {
        let quantile = 1.0 - 10f64.powf(-(step as f64) / 10.0);
        if quantile >= last_quantile {
            break;
        }
        curve.push((quantile * 100.0, histogram.value_at_quantile(quantile)));
    }
    curve.push((last_quantile * 100.0, histogram.max()));
    curve
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_windows() {
        let start = Instant::now();
        let mut recorder = LatencyRecorder::new("x", "test", start, Duration::from_secs(1)).unwrap();
        assert!(recorder.summary().is_none());
        for value in 1..=1000u64 {
            recorder.record(start, value);
        }
        recorder.record(start + Duration::from_millis(2500), 50_000);
        let summary = recorder.summary().unwrap();
        assert_eq!(summary.count, 1001);
        assert!((495..=505).contains(&summary.p50_us), "{}", summary.p50_us);
        assert!((985..=1000).contains(&summary.p99_us), "{}", summary.p99_us);
        assert!((49_900..=50_100).contains(&summary.max_us));
        assert_eq!(summary.series.len(), 2);
        assert_eq!(summary.series[0].count, 1000);
        assert_eq!(summary.series[1].t_s, 2.0);
        assert_eq!(summary.curve.first().map(|point| point.0), Some(0.0));
        assert_eq!(summary.curve.last().map(|point| point.1), Some(summary.max_us));
        assert!(summary.curve.windows(2).all(|pair| pair[0].1 <= pair[1].1));
    }

    #[test]
    fn out_of_range_values_are_kept() {
        let start = Instant::now();
        let mut recorder = LatencyRecorder::new("x", "test", start, Duration::from_millis(100)).unwrap();
        recorder.record(start, 0);
        recorder.record(start + Duration::from_secs(100_000), u64::MAX);
        let summary = recorder.summary().unwrap();
        assert_eq!(summary.count, 2);
        assert_eq!(summary.min_us, 1);
        assert!(summary.max_us >= MAX_LATENCY_US);
        assert_eq!(summary.series.len(), 2);
    }

    #[test]
    fn window_length_is_bounded() {
        assert_eq!(LatencyRecorder::window_for(Duration::from_secs(1)), Duration::from_millis(100));
        assert_eq!(LatencyRecorder::window_for(Duration::from_secs(60)), Duration::from_millis(600));
        assert_eq!(LatencyRecorder::window_for(Duration::from_secs(3600)), Duration::from_secs(5));
    }
}
