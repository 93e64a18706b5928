//! Producers that put records into ROOT: generated records through `/test/inject-messages`, JSON arrays
//! through the ingest API, and PUBLISH frames on ROOT's consumer port (`load/tcp.rs`), either as fast as
//! possible (closed loop, several tasks) or at a fixed rate (open loop, a bounded number of requests in
//! flight). JSON and PUBLISH records carry a `bench_ts_us` header: the microsecond time the request was
//! sent, so a consumer in this process can measure latency finer than ROOT's millisecond timestamps. Every
//! producer is bounded by a record count and a deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::api::Api;

mod tcp;

pub use tcp::{publish_tcp_closed, publish_tcp_open};

/// The header holding a record's publish time, microseconds since the Unix epoch.
pub const TIMESTAMP_HEADER: &str = "bench_ts_us";

/// A send counts as late when it leaves this much after its scheduled time.
const LATE_AFTER: Duration = Duration::from_millis(5);

/// Microsecond wall-clock time derived from one reading of the system clock plus the monotonic clock, so
/// that differences between two readings in this process are exact and never negative.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The monotonic instant of the system clock reading.
    base: Instant,
    /// The system clock at `base`, microseconds since the epoch.
    base_unix_us: u64,
}

impl Clock {
    /// Reads the system clock once.
    pub fn new() -> Clock {
        let base = Instant::now();
        let base_unix_us =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_micros() as u64);
        Clock { base, base_unix_us }
    }

    /// `at` in microseconds since the epoch.
    pub fn unix_us(&self, at: Instant) -> u64 {
        self.base_unix_us + at.saturating_duration_since(self.base).as_micros() as u64
    }

    /// Now, in microseconds since the epoch.
    pub fn now_us(&self) -> u64 {
        self.unix_us(Instant::now())
    }
}

/// Where and what to publish.
#[derive(Debug, Clone)]
pub struct Destination {
    /// ROOT's HTTP base URL.
    pub base: String,
    /// The topic.
    pub topic: String,
    /// Value size of each record, bytes.
    pub value_size: usize,
}

/// How much to publish, in what pieces, with how much concurrency, until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Records to publish at most.
    pub total: u64,
    /// Records per request.
    pub batch: u64,
    /// Concurrent tasks (closed loop) or most requests in flight (open loop).
    pub concurrency: usize,
    /// No request starts after this.
    pub deadline: Instant,
}

/// What a producer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOutcome {
    /// Records accepted by ROOT.
    pub records: u64,
    /// Requests sent.
    pub requests: u64,
    /// Sends that left more than 5 ms after their scheduled time (open loop only).
    pub late_sends: u64,
    /// The largest delay of a send behind its schedule (open loop only).
    pub max_behind: Duration,
    /// How long producing took.
    pub elapsed: Duration,
}

/// Injects generated records as the plan says, in requests of `plan.batch` from `plan.concurrency` tasks.
/// `produced` counts records as ROOT accepts them.
pub async fn inject(
    api: &Api,
    destination: &Destination,
    plan: Plan,
    produced: Arc<AtomicU64>,
) -> Result<LoadOutcome> {
    let Plan { total, batch: chunk, concurrency: tasks, deadline } = plan;
    let started = Instant::now();
    let claimed = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..tasks.max(1) {
        let (api, destination) = (api.clone(), destination.clone());
        let (claimed, produced, requests) =
            (Arc::clone(&claimed), Arc::clone(&produced), Arc::clone(&requests));
        workers.spawn(async move {
            while Instant::now() < deadline {
                let Some((_, count)) = claim(&claimed, total, chunk.max(1)) else { break };
                let stored =
                    api.inject(&destination.base, &destination.topic, count, destination.value_size).await?;
                requests.fetch_add(1, Ordering::Relaxed);
                produced.fetch_add(stored, Ordering::Relaxed);
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    join_all(workers).await?;
    Ok(LoadOutcome {
        records: produced.load(Ordering::Relaxed),
        requests: requests.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        ..LoadOutcome::default()
    })
}

/// Publishes JSON arrays of `plan.batch` records as fast as `plan.concurrency` tasks can, as the plan says.
pub async fn publish_closed(
    api: &Api,
    destination: &Destination,
    plan: Plan,
    clock: Clock,
    produced: Arc<AtomicU64>,
) -> Result<LoadOutcome> {
    let Plan { total, batch, concurrency: tasks, deadline } = plan;
    let started = Instant::now();
    let claimed = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..tasks.max(1) {
        let (api, destination) = (api.clone(), destination.clone());
        let (claimed, produced, requests) =
            (Arc::clone(&claimed), Arc::clone(&produced), Arc::clone(&requests));
        workers.spawn(async move {
            while Instant::now() < deadline {
                let Some((first, count)) = claim(&claimed, total, batch.max(1)) else { break };
                let body = json_batch(first, count, destination.value_size, clock.now_us());
                api.publish(&destination.base, &destination.topic, body).await?;
                requests.fetch_add(1, Ordering::Relaxed);
                produced.fetch_add(count, Ordering::Relaxed);
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    join_all(workers).await?;
    Ok(LoadOutcome {
        records: produced.load(Ordering::Relaxed),
        requests: requests.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        ..LoadOutcome::default()
    })
}

/// Publishes JSON arrays of `plan.batch` records at `rate` records per second (open loop), with at most
/// `plan.concurrency` requests outstanding, as the plan says.
///
/// A record's `bench_ts_us` is the moment its request is sent, not its scheduled time: the timer that
/// paces sends has millisecond granularity, which would otherwise add up to a millisecond to every
/// latency. Falling behind the schedule (because every allowed request is waiting on a slow ROOT) is
/// reported instead, as `late_sends` and `max_behind`.
pub async fn publish_open(
    api: &Api,
    destination: &Destination,
    plan: Plan,
    rate: u64,
    clock: Clock,
    produced: Arc<AtomicU64>,
) -> Result<LoadOutcome> {
    let Plan { total, batch, concurrency: max_in_flight, deadline } = plan;
    let batch = batch.max(1);
    let period = Duration::from_secs_f64(batch as f64 / rate.max(1) as f64);
    let in_flight = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let started = Instant::now();
    let mut outcome = LoadOutcome::default();
    let mut senders = JoinSet::new();
    let mut sequence = 0u64;
    let mut tick = 0u32;
    while sequence < total {
        let scheduled = started + period * tick;
        if scheduled >= deadline {
            break;
        }
        tokio::time::sleep_until(scheduled.into()).await;
        let permit = Arc::clone(&in_flight).acquire_owned().await.context("the send limiter closed")?;
        let behind = Instant::now().saturating_duration_since(scheduled);
        outcome.max_behind = outcome.max_behind.max(behind);
        if behind > LATE_AFTER {
            outcome.late_sends += 1;
        }
        let count = batch.min(total - sequence);
        let body = json_batch(sequence, count, destination.value_size, clock.now_us());
        let (api, destination, produced) = (api.clone(), destination.clone(), Arc::clone(&produced));
        senders.spawn(async move {
            let result = api.publish(&destination.base, &destination.topic, body).await;
            drop(permit);
            result?;
            produced.fetch_add(count, Ordering::Relaxed);
            Ok::<(), anyhow::Error>(())
        });
        while let Some(done) = senders.try_join_next() {
            done.context("a producer task failed")??;
        }
        sequence += count;
        outcome.requests += 1;
        tick += 1;
    }
    join_all(senders).await?;
    outcome.records = produced.load(Ordering::Relaxed);
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

/// A JSON array of `count` records numbered from `first`: key `k{n}`, a value of `value_size` bytes, and
/// the `bench_ts_us` header.
pub fn json_batch(first: u64, count: u64, value_size: usize, timestamp_us: u64) -> String {
    let value = "x".repeat(value_size);
    let mut body = String::with_capacity(count as usize * (value_size + 80) + 2);
    body.push('[');
    for n in first..first + count {
        if n > first {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"key":"k{n}","value_text":"{value}","headers":{{"{TIMESTAMP_HEADER}":"{timestamp_us}"}}}}"#
        ));
    }
    body.push(']');
    body
}

/// Takes up to `chunk` of what is left of `total`: the first number taken and how many; `None` when
/// nothing is left.
pub fn claim(claimed: &AtomicU64, total: u64, chunk: u64) -> Option<(u64, u64)> {
    let mut current = claimed.load(Ordering::Relaxed);
    loop {
        if current >= total {
            return None;
        }
        let take = chunk.min(total - current);
        match claimed.compare_exchange_weak(current, current + take, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Some((current, take)),
            Err(actual) => current = actual,
        }
    }
}

/// Waits for every task, returning the first error.
pub async fn join_all(mut tasks: JoinSet<Result<()>>) -> Result<()> {
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        let result = done.context("a producer task failed").and_then(|result| result);
        if let Err(error) = result {
            first_error.get_or_insert(error);
            tasks.abort_all();
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_valid_ingest_json() {
        let body = json_batch(5, 3, 10, 123);
        let records: Vec<protocol::IngestRecord> = serde_json::from_str(&body).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].key.as_deref(), Some("k5"));
        assert_eq!(records[2].value_text.as_deref(), Some("xxxxxxxxxx"));
        let headers = records[1].headers.as_ref().unwrap();
        assert_eq!(headers.get(TIMESTAMP_HEADER).map(String::as_str), Some("123"));
    }

    #[test]
    fn claims_never_exceed_the_total() {
        let claimed = AtomicU64::new(0);
        let mut taken = Vec::new();
        while let Some(claimed_range) = claim(&claimed, 250, 100) {
            taken.push(claimed_range);
        }
        assert_eq!(taken, vec![(0, 100), (100, 100), (200, 50)]);
        assert_eq!(claim(&claimed, 250, 100), None);
    }

    #[test]
    fn clock_readings_increase() {
        let clock = Clock::new();
        let now = Instant::now();
        let later = now + Duration::from_micros(1500);
        assert_eq!(clock.unix_us(later) - clock.unix_us(now), 1500);
        assert!(clock.now_us() >= clock.unix_us(now));
    }
}
