//! The `compact` scenario: a compacted topic at ROOT (`cleanup: compact`, tombstones kept 1 s). N updates
//! over K keys are published on the binary path (`client::Producer`): half of them over every key, then a
//! tombstone for each key of the delete share, then the other half over the live keys only, so the
//! tombstones land in sealed segments that compaction reaches (the active segment is never compacted). ROOT publishes with compaction held off, then is restarted on its data directory with
//! `--compaction-rate 0` and a short `--compaction-interval`, so the measuring pass reads the whole sealed
//! log alone, on one core (a pass is single-threaded), without sharing the CPU with the producers. Once
//! compaction has settled, a new, empty consumer-app copies the topic and is timed until its position
//! reaches ROOT's end; the bytes it received are compared with the bytes of the live keys' latest records.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use client::{PendingAck, Producer, ProducerConfig};
use protocol::NewRecord;
use protocol::record::{ATTR_TOMBSTONE, RECORD_HEADER_LEN};
use tokio::task::JoinSet;

use super::{mb_per_s, per_s, process_table, usage_snapshot, wait_for};
use crate::api::{Api, Metrics};
use crate::config::CompactArgs;
use crate::launch::{Launcher, Parent};
use crate::load::{claim, join_all};
use crate::report::{Figure, Report, Target};
use crate::run::Run;
use crate::svg::{Panel, Series, XAxis};

/// The compacted topic.
const TOPIC: &str = "bench-compact";

/// How long tombstones are kept before compaction may drop them.
const TOMBSTONE_RETENTION: &str = "1s";

/// ROOT's compaction interval while publishing: longer than any run, so no pass runs then.
const HELD_OFF: &str = "24h";

/// How long publishing, compacting or copying may take, each.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

/// How often ROOT's metrics and the consumer-app's stats are read.
const POLL: Duration = Duration::from_millis(100);

/// Compaction has settled once nothing it changes has moved for this long (and at least 3 intervals).
const SETTLED_AFTER: Duration = Duration::from_secs(3);

/// PUBLISH frames each producer connection keeps in flight.
const WINDOW: u16 = client::producer::DEFAULT_MAX_IN_FLIGHT;

/// ROOT's compaction counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Compaction {
    /// Passes over a topic.
    passes: f64,
    /// Bytes of sealed segments read.
    bytes_read: f64,
    /// Bytes written to compacted segments.
    bytes_written: f64,
    /// Records removed (older records of a key, expired tombstones).
    records_removed: f64,
    /// Tombstones removed after their retention.
    tombstones_removed: f64,
    /// Time in passes (pacing included; none here, the rate is unlimited).
    seconds: f64,
    /// The topic's delete horizon.
    delete_horizon: f64,
}

impl Compaction {
    /// The counters of one scrape of ROOT's `/metrics`.
    fn from_metrics(metrics: &Metrics) -> Compaction {
        Compaction {
            passes: metrics.sum("relay_compaction_passes_total"),
            bytes_read: metrics.sum("relay_compaction_bytes_read_total"),
            bytes_written: metrics.sum("relay_compaction_bytes_written_total"),
            records_removed: metrics.sum("relay_compaction_records_removed_total"),
            tombstones_removed: metrics.sum("relay_compaction_tombstones_removed_total"),
            seconds: metrics.sum("relay_compaction_seconds_total"),
            delete_horizon: metrics.labelled("relay_delete_horizon", "topic", TOPIC).unwrap_or(0.0),
        }
    }

    /// Whether anything a pass changes differs between `self` and `other` (passes alone do not count: a
    /// pass that finds nothing to remove changes nothing).
    fn changed_since(&self, other: &Compaction) -> bool {
        self.bytes_written != other.bytes_written
            || self.records_removed != other.records_removed
            || self.delete_horizon != other.delete_horizon
    }
}

/// The records the scenario publishes, in three phases: `first` updates over every key, one tombstone for
/// each of the first `deleted` keys, then the rest of the updates over the live keys only (see
/// [`Workload::record`] for the order). Keys have one width, so every update has one encoded size.
#[derive(Debug, Clone, Copy)]
struct Workload {
    /// Updates.
    updates: u64,
    /// Updates of the first phase, over every key.
    first: u64,
    /// Distinct keys.
    keys: u64,
    /// Keys deleted at the end.
    deleted: u64,
    /// Value size of an update.
    value_bytes: usize,
    /// Digits in a key's number.
    key_digits: usize,
}

impl Workload {
    fn new(args: &CompactArgs) -> Workload {
        let deleted = ((args.keys as f64 * args.delete_share).round() as u64).min(args.keys);
        let key_digits = (args.keys.saturating_sub(1).max(1).ilog10() as usize + 1).max(8);
        let first = if deleted == args.keys { args.updates } else { (args.updates / 2).max(args.keys) };
        Workload {
            updates: args.updates,
            first,
            keys: args.keys,
            deleted,
            value_bytes: args.value_bytes,
            key_digits,
        }
    }

    /// Every record published: the updates, then the tombstones.
    fn total(&self) -> u64 {
        self.updates + self.deleted
    }

    /// The key of key number `n`.
    fn key(&self, n: u64) -> String {
        format!("key-{n:0width$}", width = self.key_digits)
    }

    /// The three phases, as ranges of record numbers; each is published once the one before is stored.
    fn phases(&self) -> [std::ops::Range<u64>; 3] {
        let tombstones_end = self.first + self.deleted;
        [0..self.first, self.first..tombstones_end, tombstones_end..self.total()]
    }

    /// Record `i` of [`Workload::total`]: its key and whether it is a tombstone. Each update phase gives
    /// every one of its keys a value in order first, then picks keys at random (seeded by `i`, so a run is
    /// repeatable): the keys' latest records are then scattered over the end of the log among superseded
    /// ones, as with real traffic, and compaction must rewrite those segments rather than find them whole.
    fn record(&self, i: u64) -> (String, bool) {
        let pick = |j: u64, n: u64| if j < n { j } else { mix(i) % n };
        if i < self.first {
            (self.key(pick(i, self.keys)), false)
        } else if i < self.first + self.deleted {
            (self.key(i - self.first), true)
        } else {
            let live = pick(i - self.first - self.deleted, self.live_keys());
            (self.key(self.deleted + live), false)
        }
    }

    /// Encoded size of an update (no headers).
    fn update_len(&self) -> u64 {
        (RECORD_HEADER_LEN + 4 + self.key_digits + self.value_bytes) as u64
    }

    /// Encoded size of a tombstone.
    fn tombstone_len(&self) -> u64 {
        (RECORD_HEADER_LEN + 4 + self.key_digits) as u64
    }

    /// Bytes of every record published.
    fn published_bytes(&self) -> u64 {
        self.updates * self.update_len() + self.deleted * self.tombstone_len()
    }

    /// Keys whose latest record is a value.
    fn live_keys(&self) -> u64 {
        self.keys - self.deleted
    }

    /// The value of update `i`: its number, then filler up to the value size, so that a copy's value says
    /// which update it is.
    fn value(&self, i: u64) -> Vec<u8> {
        let mut value = format!("{i}:").into_bytes();
        value.resize(self.value_bytes.max(value.len()), b'x');
        value.truncate(self.value_bytes.max(1));
        value
    }

    /// Each key's latest record by offset (producers publish side by side, so the numbers of records do
    /// not follow their offsets): the number of its last update, or `None` if a tombstone deleted it.
    fn latest(&self, placed: &[Placed]) -> BTreeMap<String, Option<u64>> {
        let mut by_offset: Vec<&Placed> = placed.iter().collect();
        by_offset.sort_by_key(|placed| placed.first_offset);
        let mut latest = BTreeMap::new();
        for placed in by_offset {
            for i in placed.first_number..placed.first_number + placed.n {
                let (key, tombstone) = self.record(i);
                latest.insert(key, (!tombstone).then_some(i));
            }
        }
        latest
    }

    /// Bytes of the live keys' latest records: what a copy of the compacted topic must at least move.
    fn live_bytes(&self) -> u64 {
        self.live_keys() * self.update_len()
    }
}

/// Where a PUBLISH frame's records were stored: `n` records numbered from `first_number`, at offsets from
/// `first_offset`.
#[derive(Debug, Clone, Copy)]
struct Placed {
    /// The workload's number of the first record.
    first_number: u64,
    /// Records in the frame.
    n: u64,
    /// The offset ROOT gave the first.
    first_offset: u64,
}

/// SplitMix64: a well-mixed 64-bit number from `n`.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// ROOT's flags for this scenario, compaction every `interval`.
fn root_flags(args: &CompactArgs, interval: &str) -> Vec<String> {
    [
        "--segment-bytes",
        &args.segment_bytes.to_string(),
        "--compaction-rate",
        "0",
        "--compaction-interval",
        interval,
    ]
    .into_iter()
    .map(str::to_string)
    .collect()
}

/// The `compact` scenario.
pub async fn run(args: &CompactArgs, run: &Run, report: &mut Report) -> Result<()> {
    let workload = Workload::new(args);
    report.parameters = serde_json::json!({
        "updates": args.updates, "keys": args.keys, "value_bytes": args.value_bytes,
        "delete_share": args.delete_share, "deleted_keys": workload.deleted,
        "segment_bytes": args.segment_bytes, "compaction_interval_s": args.compaction_interval.as_secs_f64(),
        "compaction_rate": 0, "live": args.live, "tombstone_retention": TOMBSTONE_RETENTION, "batch": args.batch,
        "producers": args.producers, "flush": run.common.flush.as_flag(), "broker_args": run.common.broker_args,
    });
    let api = &run.api;
    let mut launcher = run.launcher();

    // Publish with compaction held off (or, with --live, already on).
    let interval = format!("{}ms", args.compaction_interval.as_millis().max(1));
    let publish_interval = if args.live { interval.as_str() } else { HELD_OFF };
    let mut root =
        launcher.start_broker("root", "root", &Parent::None, &root_flags(args, publish_interval)).await?;
    let mut before_compaction = usage_snapshot(&launcher);
    let mut compaction_started = Instant::now();
    let settings = serde_json::json!({ "cleanup": "compact", "tombstone_retention": TOMBSTONE_RETENTION });
    api.put_topic_settings(&root.http, TOPIC, &settings).await?;
    let publishing = run.progress(workload.total(), "publishing");
    let produced = Arc::new(AtomicU64::new(0));
    let placed = Arc::new(Mutex::new(Vec::new()));
    let publish_started = Instant::now();
    // Each phase is stored before the next starts, so every deleted key's latest record is its tombstone.
    for phase in workload.phases().into_iter().filter(|phase| !phase.is_empty()) {
        let task = tokio::spawn(publish(
            root.consumer_addr.clone(),
            workload,
            phase,
            args.batch,
            args.producers,
            Arc::clone(&produced),
            Arc::clone(&placed),
        ));
        watch_task(&task, &produced, &publishing, &mut launcher).await?;
        task.await.context("the producer task failed")??;
    }
    let publish_elapsed = publish_started.elapsed();
    publishing.finish_and_clear();
    let published = api.topic(&root.http, TOPIC).await?.context("ROOT does not have the topic")?;
    if published.end_offset != workload.total() {
        report.note(format!(
            "ROOT's log ends at {}; {} records were published",
            published.end_offset,
            workload.total()
        ));
    }

    // Restart ROOT on its data directory with compaction on: the measuring passes run alone.
    if !args.live {
        launcher.stop("root");
        root = launcher.start_broker("root", "root", &Parent::None, &root_flags(args, &interval)).await?;
        if let Some(pid) = launcher.pid("root") {
            eprintln!("relay-bench: ROOT restarted for compaction (pid {pid}), a pass every {interval}");
        }
        before_compaction = usage_snapshot(&launcher);
        compaction_started = Instant::now();
    }
    let settle_after = SETTLED_AFTER.max(args.compaction_interval * 3);
    let compacting = run.progress(published.bytes, "compacting (bytes read)");
    let mut read_series = Vec::new();
    let mut size_series = Vec::new();
    let mut first_pass: Option<Compaction> = None;
    let mut last = (Compaction::default(), published.bytes, Instant::now());
    let settled = wait_for("compaction to settle", PHASE_TIMEOUT, POLL, &mut launcher, async || {
        let now = Compaction::from_metrics(&api.metrics(&root.http).await?);
        let size = api.topic(&root.http, TOPIC).await?.map_or(0, |topic| topic.bytes);
        let t = compaction_started.elapsed().as_secs_f64();
        read_series.push((t, now.bytes_read / 1e6));
        size_series.push((t, size as f64 / 1e6));
        compacting.set_position(now.bytes_read as u64);
        if now.passes > 0.0 && first_pass.is_none() {
            first_pass = Some(now);
        }
        if now.changed_since(&last.0) || size != last.1 {
            last = (now, size, Instant::now());
        }
        let quiet = last.2.elapsed() >= settle_after;
        Ok((now.passes > 0.0 && quiet).then_some((now, size)))
    })
    .await?;
    compacting.finish_and_clear();
    let (compaction, compacted_size) = settled;
    let root_cpu_compacting = launcher.usage("root").filter(|_| !args.live).map(|usage| {
        usage.cpu_seconds - before_compaction.get("root").map_or(0.0, |before| before.cpu_seconds)
    });
    let end = api.topic(&root.http, TOPIC).await?.context("ROOT lost the topic")?.end_offset;

    // A new, empty consumer-app copies the compacted topic.
    let before_copy = usage_snapshot(&launcher);
    let root_before_copy = api.metrics(&root.http).await?;
    let copy_started = Instant::now();
    let app = launcher.start_consumer_app("consumer-app", &root.consumer_addr, TOPIC).await?;
    let copying = run.progress(end, "copying into a new consumer-app");
    let mut copy_series = Vec::new();
    let held =
        wait_for("the consumer-app to copy the topic", PHASE_TIMEOUT, POLL, &mut launcher, async || {
            let stats = api.app_stats(&app.http).await?;
            let topic = stats.topics.get(TOPIC).cloned();
            let position = topic.as_ref().map_or(0, |topic| topic.position);
            copying.set_position(position);
            copy_series.push((copy_started.elapsed().as_secs_f64(), position as f64));
            Ok(topic.filter(|topic| topic.position >= end && !topic.refreshing))
        })
        .await?;
    let copy_elapsed = copy_started.elapsed();
    copying.finish_and_clear();
    let placed = std::mem::take(&mut *placed.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    let checked = check_keys(api, &app.http, &workload, &placed).await?;
    let app_metrics = api.metrics(&app.http).await?;
    let root_after_copy = api.metrics(&root.http).await?;
    let processes = process_table(&launcher, &before_copy, |_| None);
    launcher.stop_all();

    let bytes_received = app_metrics
        .labelled("consumer_app_bytes_received_total", "topic", TOPIC)
        .unwrap_or_else(|| app_metrics.sum("consumer_app_bytes_received_total"));
    let records_received = app_metrics
        .labelled("consumer_app_records_received_total", "topic", TOPIC)
        .unwrap_or_else(|| app_metrics.sum("consumer_app_records_received_total"));
    // ROOT's only consumer during the copy is the consumer-app: what ROOT sent is what the copy moved.
    let sent = |name: &str| root_after_copy.sum(name) - root_before_copy.sum(name);
    let (bytes_moved, records_moved) = (sent("relay_bytes_out_total"), sent("relay_records_out_total"));
    let published_bytes = workload.published_bytes();
    let live_bytes = workload.live_bytes();

    report.figure(Figure::new(
        "records published (updates + tombstones)",
        workload.total() as f64,
        "records",
    ));
    report.figure(Figure::new("bytes published", published_bytes as f64 / 1e6, "MB"));
    report.figure(Figure::new(
        "published at ROOT (PUBLISH frames)",
        mb_per_s(published_bytes, publish_elapsed),
        "MB/s",
    ));
    report.figure(
        Figure::new(
            "compaction rate (bytes read / pass time, one core)",
            compaction.bytes_read / 1e6 / compaction.seconds.max(1e-9),
            "MB/s",
        )
        .with_target(Target::at_least(200.0, ">= 200 MB/s of segment data on one core")),
    );
    if let Some(first) = first_pass {
        report.figure(Figure::new(
            "compaction rate, first pass",
            first.bytes_read / 1e6 / first.seconds.max(1e-9),
            "MB/s",
        ));
    }
    report.figure(Figure::new("compaction passes", compaction.passes, "passes"));
    report.figure(Figure::new("compaction: bytes read", compaction.bytes_read / 1e6, "MB"));
    report.figure(Figure::new("compaction: bytes written", compaction.bytes_written / 1e6, "MB"));
    report.figure(Figure::new("compaction: time in passes", compaction.seconds, "s"));
    if let Some(cpu) = root_cpu_compacting {
        report.figure(Figure::new("ROOT CPU while compacting (whole process)", cpu, "s"));
    }
    report.figure(Figure::new("compaction: records removed", compaction.records_removed, "records"));
    report.figure(Figure::new("compaction: tombstones removed", compaction.tombstones_removed, "records"));
    report.figure(Figure::new("delete horizon", compaction.delete_horizon, "offset"));
    if !args.live {
        report.figure(Figure::new("log size before compaction", published.bytes as f64 / 1e6, "MB"));
    }
    report.figure(Figure::new("log size after compaction", compacted_size as f64 / 1e6, "MB"));
    report.figure(Figure::new(
        "compacted log / bytes published",
        compacted_size as f64 / published_bytes.max(1) as f64,
        "x",
    ));
    report.figure(Figure::new("live keys", workload.live_keys() as f64, "keys"));
    report.figure(Figure::new(
        "live keys' latest records (live keys x record size)",
        live_bytes as f64 / 1e6,
        "MB",
    ));
    report.figure(Figure::new("full copy into a new consumer-app", copy_elapsed.as_secs_f64(), "s"));
    report.figure(Figure::new(
        "keys checked in the new copy against the model (value of each live key's last update, 404 for each deleted key)",
        checked as f64,
        "keys",
    ));
    report.figure(Figure::new("full copy: bytes moved (sent by ROOT)", bytes_moved / 1e6, "MB"));
    report.figure(Figure::new("full copy: records moved (sent by ROOT)", records_moved, "records"));
    report.figure(Figure::new("full copy: bytes held by the consumer-app", held.bytes as f64 / 1e6, "MB"));
    report.figure(Figure::new(
        "full copy: bytes received (consumer_app_bytes_received_total)",
        bytes_received / 1e6,
        "MB",
    ));
    report.figure(Figure::new(
        "full copy: records received (consumer_app_records_received_total)",
        records_received,
        "records",
    ));
    report.figure(Figure::new(
        "full copy: MB/s",
        bytes_moved / 1e6 / copy_elapsed.as_secs_f64().max(1e-9),
        "MB/s",
    ));
    report.figure(Figure::new(
        "full copy: records/s",
        per_s(records_moved as u64, copy_elapsed),
        "records/s",
    ));
    report.figure(
        Figure::new(
            "full copy: bytes moved / live keys' latest records",
            bytes_moved / live_bytes.max(1) as f64,
            "x",
        )
        .with_target(Target::at_most(1.2, "<= 1.2x the live keys' latest records")),
    );
    if bytes_received != held.bytes as f64 {
        report.note(format!(
            "consumer_app_bytes_received_total ({bytes_received}) differs from the bytes the new copy holds ({}), \
             which are all it received: the consumer-app's count is off (records in batches with offset gaps, \
             as a compacted range sends, are skipped by it)",
            held.bytes
        ));
    }
    report.processes = processes;
    report.note(format!(
        "{} updates over {} keys, then {} tombstones ({} B each), then {} updates over the {} live keys ({} B \
         values, {} B per encoded update, keys of {} bytes, no headers); {} producer connections, {} records per PUBLISH frame, {} frames in flight each",
        workload.first,
        workload.keys,
        workload.deleted,
        workload.tombstone_len(),
        workload.updates - workload.first,
        workload.live_keys(),
        workload.value_bytes,
        workload.update_len(),
        4 + workload.key_digits,
        args.producers,
        args.batch,
        WINDOW
    ));
    report.note(if args.live {
        format!(
            "--live: ROOT ran with --compaction-rate 0 --compaction-interval {interval} --segment-bytes {} from \
             the start, so passes ran while publishing, sharing the cores with the producers and the ingest; the \
             rate is relay_compaction_bytes_read_total / relay_compaction_seconds_total over every pass",
            args.segment_bytes
        )
    } else {
        format!(
            "ROOT published with compaction held off (--compaction-interval {HELD_OFF}), then was restarted on \
             its data directory with --compaction-rate 0 --compaction-interval {interval} --segment-bytes {}, so \
             the first pass read the whole sealed log alone, from the page cache; the rate is \
             relay_compaction_bytes_read_total / relay_compaction_seconds_total over every pass after the restart",
            args.segment_bytes
        )
    });
    report.note(format!(
        "compaction counts as settled when records removed, bytes written, the delete horizon and the log size \
         have not moved for {:?} after at least one pass",
        settle_after
    ));
    report.note(format!(
        "the copy is timed from starting the consumer-app to the first stats poll (every {} ms) whose position \
         reaches ROOT's end ({end}); bytes moved is ROOT's relay_bytes_out_total over the copy (record bytes; \
         the consumer-app is ROOT's only consumer then), bytes held the consumer-app's stats; the active segment \
         (up to --segment-bytes) is never compacted, so it is copied whole; cpu is over the copy only",
        POLL.as_millis()
    ));
    report.series.insert("compaction MB read".to_string(), read_series.clone());
    report.series.insert("log MB".to_string(), size_series.clone());
    report.series.insert("consumer-app position".to_string(), copy_series.clone());
    report.panels = vec![
        Panel {
            title: "compaction at ROOT".to_string(),
            x_label: "seconds since ROOT restarted".to_string(),
            y_label: "MB".to_string(),
            x_axis: XAxis::Linear,
            series: vec![
                Series { name: "bytes read by compaction".to_string(), points: read_series },
                Series { name: "log size".to_string(), points: size_series },
            ],
        },
        Panel {
            title: "full copy into a new consumer-app".to_string(),
            x_label: "seconds since the consumer-app started".to_string(),
            y_label: "offset copied".to_string(),
            x_axis: XAxis::Linear,
            series: vec![Series { name: "position".to_string(), points: copy_series }],
        },
    ];
    Ok(())
}

/// Checks the consumer-app's copy key by key against the workload: a live key's value is its last update
/// (its value names it), a deleted key answers 404. The key index may trail the copy's position by a
/// batch, so a key that does not match yet is asked again (bounded). Answers the number of keys checked.
async fn check_keys(api: &Api, app: &str, workload: &Workload, placed: &[Placed]) -> Result<u64> {
    let latest = workload.latest(placed);
    for (key, expected) in &latest {
        let mut attempts = 0;
        loop {
            let (status, body) = api.app_key(app, TOPIC, key).await?;
            let matches = match expected {
                Some(i) => {
                    status == 200
                        && body["value_text"]
                            .as_str()
                            .is_some_and(|value| value.starts_with(&format!("{i}:")))
                }
                None => status == 404,
            };
            if matches {
                break;
            }
            attempts += 1;
            anyhow::ensure!(
                attempts < 100,
                "the consumer-app's copy does not match the model for key {key}: expected {}, got {status} {body}",
                expected.map_or("a 404 (deleted)".to_string(), |i| format!("update {i}"))
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(latest.len() as u64)
}

/// Shows `produced` on `bar` until `task` finishes, failing if a process exits.
async fn watch_task<T>(
    task: &tokio::task::JoinHandle<T>,
    produced: &AtomicU64,
    bar: &indicatif::ProgressBar,
    launcher: &mut Launcher,
) -> Result<()> {
    while !task.is_finished() {
        bar.set_position(produced.load(Ordering::Relaxed));
        launcher.check_running()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Publishes the workload's records numbered `range` from `producers` connections to `addr`, in frames of
/// `batch`, each connection keeping [`WINDOW`] frames in flight; `produced` counts acknowledged records.
async fn publish(
    addr: String,
    workload: Workload,
    range: std::ops::Range<u64>,
    batch: u64,
    producers: usize,
    produced: Arc<AtomicU64>,
    placed: Arc<Mutex<Vec<Placed>>>,
) -> Result<()> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let claimed = Arc::new(AtomicU64::new(0));
    let count = range.end - range.start;
    let mut workers = JoinSet::new();
    for index in 0..producers.max(1) {
        let mut config = ProducerConfig::new(format!("relay-bench-compact-{index}"));
        config.max_in_flight = WINDOW;
        let (producer, _) = Producer::connect(addr.as_str(), config)
            .await
            .with_context(|| format!("connecting a producer to {addr}"))?;
        let (claimed, produced) = (Arc::clone(&claimed), Arc::clone(&produced));
        let placed = Arc::clone(&placed);
        let first = range.start;
        workers.spawn(async move {
            let mut waiting: VecDeque<(u64, u64, PendingAck)> = VecDeque::new();
            let settle = |number: u64, n: u64, ack: protocol::frame::PublishAck| {
                produced.fetch_add(n, Ordering::Relaxed);
                placed.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(Placed {
                    first_number: number,
                    n,
                    first_offset: ack.first_offset,
                });
            };
            while Instant::now() < deadline {
                let Some((from, n)) = claim(&claimed, count, batch.max(1)) else { break };
                if waiting.len() >= usize::from(WINDOW)
                    && let Some((number, n, ack)) = waiting.pop_front()
                {
                    settle(number, n, ack.await.context("a publish was not acknowledged")?);
                }
                let keyed: Vec<(String, bool, Vec<u8>)> = (first + from..first + from + n)
                    .map(|i| {
                        let (key, tombstone) = workload.record(i);
                        let value = if tombstone { Vec::new() } else { workload.value(i) };
                        (key, tombstone, value)
                    })
                    .collect();
                let records: Vec<NewRecord<'_>> = keyed
                    .iter()
                    .map(|(key, tombstone, value)| NewRecord {
                        key: key.as_bytes(),
                        headers: &[],
                        value,
                        attributes: if *tombstone { ATTR_TOMBSTONE } else { 0 },
                    })
                    .collect();
                let ack = producer.publish(TOPIC, &records).await.context("publishing to ROOT")?;
                waiting.push_back((first + from, n, ack));
            }
            for (number, n, ack) in waiting {
                settle(number, n, ack.await.context("a publish was not acknowledged")?);
            }
            producer.close().await.context("closing a producer")?;
            Ok::<(), anyhow::Error>(())
        });
    }
    join_all(workers).await?;
    let done = claimed.load(Ordering::Relaxed).min(count);
    anyhow::ensure!(done == count, "publishing stopped after {done} of {count} records ({PHASE_TIMEOUT:?})");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_counts_its_bytes() {
        let args = CompactArgs {
            updates: 1000,
            keys: 100,
            value_bytes: 10,
            delete_share: 0.1,
            segment_bytes: 1 << 20,
            compaction_interval: Duration::from_secs(1),
            batch: 100,
            producers: 2,
            live: false,
        };
        let workload = Workload::new(&args);
        assert_eq!(workload.deleted, 10);
        assert_eq!(workload.total(), 1010);
        assert_eq!(workload.phases(), [0..500, 500..510, 510..1010]);
        assert_eq!(workload.record(0), ("key-00000000".to_string(), false));
        assert_eq!(workload.record(99), ("key-00000099".to_string(), false));
        assert_eq!(workload.record(500), ("key-00000000".to_string(), true));
        assert_eq!(workload.record(509), ("key-00000009".to_string(), true));
        assert_eq!(workload.record(510), ("key-00000010".to_string(), false));
        assert_eq!(workload.record(599), ("key-00000099".to_string(), false));
        // Every live key's latest record is an update, every deleted key's a tombstone.
        let mut latest = std::collections::HashMap::new();
        for i in 0..workload.total() {
            let (key, tombstone) = workload.record(i);
            latest.insert(key, tombstone);
        }
        assert_eq!(latest.len(), 100);
        assert_eq!(latest.values().filter(|tombstone| **tombstone).count(), 10);
        for n in 0..10 {
            assert_eq!(latest.get(&workload.key(n)), Some(&true), "key {n} ends deleted");
        }
        // After the first round the keys are not in order.
        let later: Vec<String> = (100..110).map(|i| workload.record(i).0).collect();
        assert!(later.windows(2).any(|pair| pair[0] >= pair[1]), "{later:?}");
        assert_eq!(workload.record(123), workload.record(123), "repeatable");
        let update = NewRecord::new(b"key-00000000", &[0; 10]);
        assert_eq!(workload.update_len(), update.encoded_len() as u64);
        assert_eq!(workload.tombstone_len(), NewRecord::new(b"key-00000000", b"").encoded_len() as u64);
        assert_eq!(workload.live_bytes(), 90 * workload.update_len());
        assert_eq!(workload.published_bytes(), 1000 * workload.update_len() + 10 * workload.tombstone_len());
    }
}
