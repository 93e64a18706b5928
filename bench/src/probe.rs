//! The measuring consumer: a TCP client (the `client` crate) on the last hop that checks every record
//! arrives once and in order, stores each batch durably in its own `storage` log (the engine the
//! consumer-app uses) before acknowledging it, and records three latencies per record: publish to
//! delivery and publish to durably stored (from the `bench_ts_us` header, microseconds), and ROOT's
//! append to delivery (from the record's ROOT timestamp, which has millisecond resolution).

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
    let mut header_times: Vec<u64> = Vec::new();
    loop {
        if until.borrow_and_update().is_some_and(|end| outcome.next_offset >= end) {
            outcome.complete = true;
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        let event = match tokio::time::timeout(EVENT_POLL, consumer.next_event()).await {
            Err(_) => continue,
            Ok(event) => event.context("probe connection")?,
        };
        let batch = match event {
            Event::Batch(batch) if batch.topic == settings.topic => batch,
            Event::Error(error) if error.fatal => bail!("the broker refused the probe: {error:?}"),
            _ => continue,
        };
        let arrival = Instant::now();
        let arrival_us = clock.unix_us(arrival);
        outcome.first_arrival.get_or_insert(arrival);
        outcome.last_arrival = Some(arrival);
        header_times.clear();
        for record in RecordIter::new(&batch.records) {
            let record = record.context("a record with a bad CRC reached the probe")?;
            let offset = record.offset();
            if offset < outcome.next_offset {
                outcome.duplicates += 1;
                continue;
            }
            outcome.missing += offset - outcome.next_offset;
            outcome.next_offset = offset + 1;
            outcome.received += 1;
            outcome.bytes += record.as_bytes().len() as u64;
            outcome
                .root_to_delivered
                .record(arrival, arrival_us.saturating_sub(record.timestamp_ms() * 1000));
            if let Some(sent_us) = header_time(&record) {
                outcome.delivered.record(arrival, arrival_us.saturating_sub(sent_us));
                header_times.push(sent_us);
            }
        }
        received.store(outcome.received, Ordering::Relaxed);
        if let Some(log) = &log {
            let log = Arc::clone(log);
            let records = batch.records.clone();
            tokio::task::spawn_blocking(move || log.append_records(&records))
                .await
                .context("the probe's store task failed")?
                .context("the probe cannot store a batch")?;
            let stored_at = Instant::now();
            let stored_us = clock.unix_us(stored_at);
            for sent_us in &header_times {
                outcome.stored.record(stored_at, stored_us.saturating_sub(*sent_us));
            }
        }
        consumer.ack(&settings.topic, batch.last_offset + 1).await.context("probe ack")?;
    }
    let _ = consumer.close().await;
    Ok(outcome)
}

/// Opens the probe's durable copy of `topic`, starting at `first_offset`, flushed before every ack.
fn open_copy(
    dir: &std::path::Path,
    topic: &str,
    uid: protocol::TopicUid,
    first_offset: u64,
) -> Result<(Store, Arc<Log>)> {
    let config = LogConfig {
        segment_bytes: 256 << 20,
        preallocate_chunk_bytes: 32 << 20,
        flush: FlushPolicy::Always,
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
