//! The `storage` scenario: the storage engine in this process, one thread. For each value size it appends
//! batches without flushing (then reads the sealed segments back sequentially) and with a flush per
//! batch, timing each append call. Nothing here touches the network.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use protocol::{NewRecord, TopicUid};
use storage::{FlushPolicy, LogConfig, Store};

use super::{mb_per_s, per_s};
use crate::config::StorageArgs;
use crate::latency::{LatencyRecorder, LatencySummary};
use crate::report::{Figure, Report, Target};
use crate::run::Run;
use crate::svg::{Panel, Series, XAxis};

/// Bytes at most written by one append case, so a fast disk does not fill up within the time limit.
const MAX_CASE_BYTES: u64 = 4 << 30;

/// Records per read call in the read case.
const READ_RECORDS: usize = 10_000;

/// Bytes per read call in the read case.
const READ_BYTES: usize = 4 << 20;

/// The `storage` scenario.
pub async fn run(args: &StorageArgs, run: &Run, report: &mut Report) -> Result<()> {
    report.parameters = serde_json::json!({
        "count": args.count, "duration_s": args.duration.as_secs_f64(), "sizes": args.sizes,
        "batch": args.batch, "segment_bytes": args.segment_bytes, "data_dir": run.data_dir,
    });
    // The engine is synchronous; it runs on a blocking thread that stops between batches once this
    // future is dropped (Ctrl-C or the run's time limit).
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(Arc::clone(&stop));
    let (args, data_dir, keep, start) = (args.clone(), run.data_dir.clone(), run.common.keep, run.started);
    let quiet = run.common.quiet;
    let cases = tokio::task::spawn_blocking(move || run_cases(&args, &data_dir, keep, start, quiet, &stop))
        .await
        .context("the storage task failed")??;
    let mut latency_panel = Panel {
        title: "append call latency over time (p99 per window)".to_string(),
        x_label: "seconds since the start of the run".to_string(),
        y_label: "microseconds".to_string(),
        x_axis: XAxis::Linear,
        series: Vec::new(),
    };
    let mut curve_panel = Panel {
        title: "append call latency percentiles".to_string(),
        x_label: "percentile".to_string(),
        y_label: "microseconds".to_string(),
        x_axis: XAxis::Nines,
        series: Vec::new(),
    };
    for case in cases {
        report.figures.extend(case.figures);
        if let Some(latency) = case.latency {
            latency_panel.series.push(Series {
                name: latency.name.clone(),
                points: latency.series.iter().map(|point| (point.t_s, point.p99_us as f64)).collect(),
            });
            curve_panel.series.push(Series {
                name: latency.name.clone(),
                points: latency.curve.iter().map(|&(percentile, us)| (percentile, us as f64)).collect(),
            });
            report.latencies.push(latency);
        }
        report.notes.extend(case.notes);
    }
    report.panels = vec![latency_panel, curve_panel];
    report.note(format!(
        "one thread, batches of {} records through Log::append; 'no flush' is FlushPolicy::Never (page \
         cache only), 'flush' is FlushPolicy::Always (each append returns after its bytes are on disk)",
        report.parameters["batch"]
    ));
    report.note(
        "record bytes include the 29-byte record header and the key (`key-NNNNNN`); MB = 10^6 bytes; the \
         read case reads sealed segments just written, so from the page cache",
    );
    Ok(())
}

/// What one case measured.
#[derive(Debug)]
struct CaseResult {
    /// Its figures.
    figures: Vec<Figure>,
    /// Latency of its append calls.
    latency: Option<LatencySummary>,
    /// Notes.
    notes: Vec<String>,
}

/// Sets the flag when dropped.
#[derive(Debug)]
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs every case in order; each case's directory is removed after it unless `keep`.
fn run_cases(
    args: &StorageArgs,
    data_dir: &Path,
    keep: bool,
    start: Instant,
    quiet: bool,
    stop: &AtomicBool,
) -> Result<Vec<CaseResult>> {
    let mut results = Vec::new();
    for &size in &args.sizes {
        for flush in [false, true] {
            let label = format!("{} B{}", size, if flush { ", flush" } else { ", no flush" });
            if !quiet {
                eprintln!("storage: appending {label}...");
            }
            let dir = data_dir.join(format!("storage-{size}-{}", if flush { "flush" } else { "noflush" }));
            let result = append_case(args, &dir, size, flush, &label, start, stop);
            let result = result.and_then(|mut case| {
                if !flush {
                    if !quiet {
                        eprintln!("storage: reading {size} B sealed segments...");
                    }
                    case.1.figures.extend(read_case(&case.0, size, stop)?);
                }
                Ok(case.1)
            });
            if !keep {
                let _ = std::fs::remove_dir_all(&dir);
            }
            results.push(result?);
            if stop.load(Ordering::Relaxed) {
                bail!("stopped");
            }
        }
    }
    Ok(results)
}

/// Appends batches of `size`-byte values until the count, the byte cap or the duration is reached.
/// Returns the store (for the read case) and the figures.
fn append_case(
    args: &StorageArgs,
    dir: &Path,
    size: usize,
    flush: bool,
    label: &str,
    start: Instant,
    stop: &AtomicBool,
) -> Result<(Store, CaseResult)> {
    let config = LogConfig {
        segment_bytes: args.segment_bytes,
        flush: if flush { FlushPolicy::Always } else { FlushPolicy::Never },
        ..LogConfig::default()
    };
    let store =
        Store::open(dir, config).with_context(|| format!("cannot open a store in {}", dir.display()))?;
    let log = store.create_topic("bench", TopicUid(0xbe9c4), 0).context("cannot create the topic")?;
    let keys: Vec<Vec<u8>> = (0..args.batch).map(|n| format!("key-{n:06}").into_bytes()).collect();
    let value = vec![b'x'; size];
    let batch: Vec<NewRecord<'_>> = keys.iter().map(|key| NewRecord::new(key, &value)).collect();
    let batch_bytes: u64 = batch.iter().map(|record| record.encoded_len() as u64).sum();
    let record_bytes = batch_bytes / args.batch as u64;
    let count = args.count.min(MAX_CASE_BYTES / record_bytes.max(1)).max(args.batch as u64);
    let mut latency = LatencyRecorder::new(
        &format!("append {} x {label}", args.batch),
        "wall time of one Log::append call of a whole batch",
        start,
        LatencyRecorder::window_for(args.duration),
    )?;
    let began = Instant::now();
    let deadline = began + args.duration;
    let mut appended = 0u64;
    while appended < count && Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let call = Instant::now();
        log.append(&batch).context("append failed")?;
        let done = Instant::now();
        latency.record(done, (done - call).as_micros() as u64);
        appended += args.batch as u64;
    }
    let elapsed = began.elapsed();
    let bytes = appended * record_bytes;
    let records_per_s = per_s(appended, elapsed);
    let mut figures = vec![
        Figure::new(&format!("append {label}: records/s"), records_per_s, "records/s"),
        Figure::new(&format!("append {label}: MB/s"), mb_per_s(bytes, elapsed), "MB/s"),
    ];
    // The design's append targets are for the engine's own speed; with a flush per batch the disk's sync
    // time dominates, so those figures are shown without a target.
    if size <= 100 && !flush {
        figures[0] = figures[0].clone().with_target(Target::at_least(2_000_000.0, ">= 2,000,000 records/s"));
    }
    if size >= 1024 && !flush {
        figures[1] = figures[1].clone().with_target(Target::at_least(1_000.0, ">= 1 GB/s (1,000 MB/s)"));
    }
    let mut notes = Vec::new();
    if appended < count {
        notes.push(format!(
            "append {label}: stopped by --duration after {appended} of {count} records ({:.1} s)",
            elapsed.as_secs_f64()
        ));
    }
    Ok((store, CaseResult { figures, latency: latency.summary(), notes }))
}

/// Reads the sealed segments of the store's topic from start to end, twice: as the broker serves them
/// (zero-copy chunks) and with every record's CRC checked.
fn read_case(store: &Store, size: usize, stop: &AtomicBool) -> Result<Vec<Figure>> {
    let log = store.topic("bench").context("the topic is gone")?;
    let sealed_end = log
        .segments()
        .iter()
        .filter(|segment| segment.sealed)
        .filter_map(|segment| segment.last_offset)
        .max()
        .map(|last| last + 1);
    let Some(end) = sealed_end else {
        return Ok(vec![Figure::new(
            &format!("read {size} B sealed: no sealed segment (raise --count or lower --segment-bytes)"),
            0.0,
            "records/s",
        )]);
    };
    let mut figures = Vec::new();
    for verify in [false, true] {
        let began = Instant::now();
        let mut from = log.log_start();
        let (mut records, mut bytes) = (0u64, 0u64);
        while from < end && !stop.load(Ordering::Relaxed) {
            let chunk = log.read(from, READ_RECORDS.min((end - from) as usize), READ_BYTES)?;
            if chunk.is_empty() {
                bail!("read at offset {from} returned nothing below the sealed end {end}");
            }
            if verify {
                for record in chunk.iter() {
                    record.context("a stored record failed its check")?;
                }
            }
            records += chunk.n_records;
            bytes += chunk.records.len() as u64;
            from = chunk.next_offset;
        }
        let elapsed = began.elapsed();
        let what = if verify { "read + CRC check" } else { "read" };
        let mut figure =
            Figure::new(&format!("{what} {size} B sealed: records/s"), per_s(records, elapsed), "records/s");
        if size <= 100 && !verify {
            figure = figure.with_target(Target::at_least(5_000_000.0, ">= 5,000,000 records/s"));
        }
        figures.push(figure);
        figures.push(Figure::new(&format!("{what} {size} B sealed: MB/s"), mb_per_s(bytes, elapsed), "MB/s"));
    }
    // The background scrub: every sealed segment once, CRCs checked, on this one thread.
    let began = Instant::now();
    let step = store.scrub(u64::MAX);
    let elapsed = began.elapsed();
    if step.bytes_checked > 0 {
        figures.push(Figure::new(
            &format!("scrub {size} B sealed: MB/s"),
            mb_per_s(step.bytes_checked, elapsed),
            "MB/s",
        ));
        let per_gb_ms = elapsed.as_secs_f64() * 1e3 / (step.bytes_checked as f64 / 1e9);
        figures.push(Figure::new(&format!("scrub {size} B sealed: CPU per GB"), per_gb_ms, "ms"));
    }
    Ok(figures)
}
