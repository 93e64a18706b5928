//! The measuring consumer: a TCP client (the `client` crate) on the last hop that checks every record
//! arrives once and in order, stores each batch durably in its own `storage` log (the engine the
//! consumer-app uses) before acknowledging it, and records three latencies per record: publish to
//! delivery and publish to durably stored (from the `bench_ts_us` header, microseconds), and ROOT's
//! append to delivery (from the record's ROOT timestamp, which has millisecond resolution).
//!
//! It keeps reading while it flushes: batches are appended as they arrive and one flush covers every
//! batch appended before it started (group commit), so the probe measures the brokers rather than a
//! flush per batch of its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use client::{Consumer, ConsumerConfig, Event, topic_start};
use protocol::RecordIter;
use protocol::frame::StartPosition;
use storage::{FlushPolicy, Log, LogConfig, Store};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::latency::LatencyRecorder;
use crate::load::{Clock, TIMESTAMP_HEADER};

/// How long one wait for an event lasts before the stop conditions are looked at again.
const EVENT_POLL: Duration = Duration::from_millis(200);

/// What the probe connects to and how it measures.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    /// The broker's TCP consumer address.
    pub addr: String,
    /// The topic.
    pub topic: String,
    /// The consumer group (and client id).
    pub group: String,
    /// The first offset wanted.
    pub from_offset: u64,
    /// Where to keep the durable copy; `None` measures delivery only.
    pub store_dir: Option<PathBuf>,
    /// Where latency windows start.
    pub start: Instant,
    /// The latency window length.
    pub window: Duration,
}

/// What the probe saw.
#[derive(Debug)]
pub struct ProbeOutcome {
    /// Records received (duplicates excluded).
    pub received: u64,
    /// Record bytes received.
    pub bytes: u64,
    /// The offset after the last record received.
    pub next_offset: u64,
    /// Records missing: offsets skipped over.
    pub missing: u64,
    /// Records received twice (or going backwards).
    pub duplicates: u64,
    /// When the first record arrived.
    pub first_arrival: Option<Instant>,
    /// When the last record arrived.
    pub last_arrival: Option<Instant>,
    /// Whether every record up to the announced end arrived before the deadline.
    pub complete: bool,
    /// Publish (`bench_ts_us`) to arrival at the probe.
    pub delivered: LatencyRecorder,
    /// Publish (`bench_ts_us`) to durably stored at the probe.
    pub stored: LatencyRecorder,
    /// ROOT's timestamp to arrival at the probe.
    pub root_to_delivered: LatencyRecorder,
}

/// Consumes `settings.topic` until the probe has every record below the end offset sent on `until`, or
/// `deadline` passes. `ready` is told once the broker has welcomed the probe; `received` counts records
/// as they arrive, for progress reports.
pub async fn run_probe(
    settings: ProbeSettings,
    clock: Clock,
    mut until: watch::Receiver<Option<u64>>,
    deadline: Instant,
    ready: oneshot::Sender<()>,
    received: Arc<AtomicU64>,
) -> Result<ProbeOutcome> {
    let config = ConsumerConfig::new(
        settings.group.clone(),
        settings.group.clone(),
        vec![topic_start(settings.topic.clone(), StartPosition::Offset(settings.from_offset))],
    );
    let (mut consumer, welcome) = Consumer::connect(settings.addr.as_str(), config)
        .await
        .with_context(|| format!("probe cannot connect to {}", settings.addr))?;
    let uid = welcome.topics.iter().find(|topic| topic.topic == settings.topic).map(|topic| topic.uid);
    // The store handle is held for the whole run: the directory stays locked and is flushed on close.
    let (_store, log) = match (&settings.store_dir, uid) {
        (Some(dir), Some(uid)) => {
            let (store, log) = open_copy(dir, &settings.topic, uid, settings.from_offset)?;
            (Some(store), Some(log))
        }
        (Some(_), None) => bail!("the probe's WELCOME does not list topic {}", settings.topic),
        (None, _) => (None, None),
    };
    let window = settings.window;
    let _ = ready.send(());
    let mut outcome = ProbeOutcome {
        received: 0,
        bytes: 0,
        next_offset: settings.from_offset,
        missing: 0,
        duplicates: 0,
        first_arrival: None,
        last_arrival: None,
        complete: false,
        delivered: LatencyRecorder::new(
            "publish -> delivered",
            "bench_ts_us header set by the producer when it sends the request, read by the measuring \
             consumer on arrival (microseconds, one clock)",
            settings.start,
            window,
        )?,
        stored: LatencyRecorder::new(
            "publish -> stored",
            "bench_ts_us header to the moment the measuring consumer has appended and flushed the batch \
             in its own storage log (the consumer-app's engine), before it acks",
            settings.start,
            window,
        )?,
        root_to_delivered: LatencyRecorder::new(
            "ROOT append -> delivered",
            "the record's ROOT timestamp (1 ms resolution, so values read up to 1 ms high) to arrival",
            settings.start,
            window,
        )?,
    };
    let mut flusher = Flusher::default();
    loop {
        let done = until.borrow_and_update().is_some_and(|end| outcome.next_offset >= end);
        if done && flusher.is_idle() {
            outcome.complete = true;
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        if let Some(log) = &log {
            flusher.start_if_needed(log);
        }
        tokio::select! {
            event = consumer.next_event() => {
                let batch = match event.context("probe connection")? {
                    Event::Batch(batch) if batch.topic == settings.topic => batch,
                    Event::Error(error) if error.fatal => bail!("the broker refused the probe: {error:?}"),
                    _ => continue,
                };
                let header_times = outcome.take_batch(&batch, clock)?;
                received.store(outcome.received, Ordering::Relaxed);
                match &log {
                    Some(log) => {
                        // Appending without a flush copies bytes into the mapping; the flush, shared by
                        // every batch appended meanwhile, runs on a blocking thread (see Flusher).
                        log.append_records(&batch.records).context("the probe cannot store a batch")?;
                        flusher.appended(header_times, batch.last_offset + 1);
                    }
                    None => consumer.ack(&settings.topic, batch.last_offset + 1).await.context("probe ack")?,
                }
            }
            flushed = flusher.wait(), if flusher.is_flushing() => {
                let (header_times, next_offset) = flushed?;
                let stored_at = Instant::now();
                let stored_us = clock.unix_us(stored_at);
                for sent_us in header_times {
                    outcome.stored.record(stored_at, stored_us.saturating_sub(sent_us));
                }
                consumer.ack(&settings.topic, next_offset).await.context("probe ack")?;
            }
            () = tokio::time::sleep(EVENT_POLL) => {}
        }
    }
    let _ = consumer.close().await;
    Ok(outcome)
}

impl ProbeOutcome {
    /// Checks the records of a batch that just arrived and records their delivery latencies; returns the
    /// publish times of the new records, for their stored latency later.
    fn take_batch(&mut self, batch: &protocol::Batch, clock: Clock) -> Result<Vec<u64>> {
        let arrival = Instant::now();
        let arrival_us = clock.unix_us(arrival);
        self.first_arrival.get_or_insert(arrival);
        self.last_arrival = Some(arrival);
        let mut header_times = Vec::new();
        for record in RecordIter::new(&batch.records) {
            let record = record.context("a record with a bad CRC reached the probe")?;
            let offset = record.offset();
            if offset < self.next_offset {
                self.duplicates += 1;
                continue;
            }
            self.missing += offset - self.next_offset;
            self.next_offset = offset + 1;
            self.received += 1;
            self.bytes += record.as_bytes().len() as u64;
            self.root_to_delivered.record(arrival, arrival_us.saturating_sub(record.timestamp_ms() * 1000));
            if let Some(sent_us) = header_time(&record) {
                self.delivered.record(arrival, arrival_us.saturating_sub(sent_us));
                header_times.push(sent_us);
            }
        }
        Ok(header_times)
    }
}

/// Group commit for the probe's copy: batches appended while a flush runs wait for the next one, so the
/// probe flushes as often as the disk allows, never once per batch, and still acks only durable records.
#[derive(Debug, Default)]
struct Flusher {
    /// Publish times of records appended since the running flush started, and the offset after them.
    waiting: (Vec<u64>, Option<u64>),
    /// The running flush and what it covers.
    running: Option<(JoinHandle<Result<()>>, Vec<u64>, u64)>,
}

impl Flusher {
    /// Whether a flush is running.
    fn is_flushing(&self) -> bool {
        self.running.is_some()
    }

    /// Whether nothing is waiting for a flush and none runs.
    fn is_idle(&self) -> bool {
        self.running.is_none() && self.waiting.1.is_none()
    }

    /// Notes a batch appended: its records' publish times and the offset after it.
    fn appended(&mut self, header_times: Vec<u64>, next_offset: u64) {
        self.waiting.0.extend(header_times);
        self.waiting.1 = Some(next_offset);
    }

    /// Starts a flush of everything appended so far, unless one runs or nothing waits.
    fn start_if_needed(&mut self, log: &Arc<Log>) {
        if self.running.is_some() {
            return;
        }
        let Some(next_offset) = self.waiting.1.take() else { return };
        let header_times = std::mem::take(&mut self.waiting.0);
        let log = Arc::clone(log);
        let task = tokio::task::spawn_blocking(move || log.flush().context("the probe cannot flush"));
        self.running = Some((task, header_times, next_offset));
    }

    /// Waits for the running flush; returns what it made durable. Only called while one runs.
    async fn wait(&mut self) -> Result<(Vec<u64>, u64)> {
        let Some((task, _, _)) = self.running.as_mut() else { bail!("no flush is running") };
        let result = task.await;
        let Some((_, header_times, next_offset)) = self.running.take() else { bail!("no flush is running") };
        result.context("the probe's flush task failed")??;
        Ok((header_times, next_offset))
    }
}

/// Opens the probe's durable copy of `topic`, starting at `first_offset`. The probe flushes it itself
/// (see [`Flusher`]), which is what the interval policy means.
fn open_copy(
    dir: &std::path::Path,
    topic: &str,
    uid: protocol::TopicUid,
    first_offset: u64,
) -> Result<(Store, Arc<Log>)> {
    let config = LogConfig {
        segment_bytes: 256 << 20,
        preallocate_chunk_bytes: 32 << 20,
        flush: FlushPolicy::Interval(Duration::from_millis(1)),
        ..LogConfig::default()
    };
    let store = Store::open(dir, config).with_context(|| format!("cannot open {}", dir.display()))?;
    let log = store.create_topic(topic, uid, first_offset).context("cannot create the probe's copy")?;
    Ok((store, log))
}

/// The `bench_ts_us` header of a record, if present and numeric.
fn header_time(record: &protocol::RecordView<'_>) -> Option<u64> {
    record.headers().filter_map(Result::ok).find_map(|(name, value)| {
        (name == TIMESTAMP_HEADER.as_bytes()).then(|| std::str::from_utf8(value).ok()?.parse().ok()).flatten()
    })
}
