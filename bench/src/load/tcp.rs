//! Producers on the binary path: PUBLISH frames to ROOT's consumer port through `client::Producer`, records
//! in the producer layout with the same key, value and `bench_ts_us` header as the JSON producers, so the
//! two paths are compared on equal records. A record counts as produced once its PUBLISH_ACK arrived (it
//! is durable at ROOT). Closed loop: `plan.concurrency` connections, each keeping its window of publishes
//! in flight. Open loop: one connection whose window is `plan.concurrency` publishes, at `rate`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use client::{PendingAck, Producer, ProducerConfig};
use protocol::NewRecord;
use protocol::record::encode_headers;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{Clock, Destination, LATE_AFTER, LoadOutcome, Plan, TIMESTAMP_HEADER, claim, join_all};

/// Publishes each connection keeps waiting for their acknowledgement in a closed loop: the producer's
/// default window, which is also ROOT's default `--max-publish-in-flight`.
const CLOSED_WINDOW: u16 = client::producer::DEFAULT_MAX_IN_FLIGHT;

/// Publishes `plan.total` records in frames of `plan.batch` from `plan.concurrency` producer connections to
/// `addr` (ROOT's consumer port), each as fast as its window allows.
pub async fn publish_tcp_closed(
    addr: &str,
    destination: &Destination,
    plan: Plan,
    clock: Clock,
    produced: Arc<AtomicU64>,
) -> Result<LoadOutcome> {
    let Plan { total, batch, concurrency: connections, deadline } = plan;
    let started = Instant::now();
    let claimed = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for index in 0..connections.max(1) {
        let producer = connect(addr, index, CLOSED_WINDOW).await?;
        let destination = destination.clone();
        let (claimed, produced, requests) =
            (Arc::clone(&claimed), Arc::clone(&produced), Arc::clone(&requests));
        workers.spawn(async move {
            let mut waiting: VecDeque<(u64, PendingAck)> = VecDeque::new();
            while Instant::now() < deadline {
                let Some((first, count)) = claim(&claimed, total, batch.max(1)) else { break };
                if waiting.len() >= usize::from(CLOSED_WINDOW)
                    && let Some((count, ack)) = waiting.pop_front()
                {
                    ack.await.context("a publish was not acknowledged")?;
                    produced.fetch_add(count, Ordering::Relaxed);
                }
                waiting.push_back((count, publish(&producer, &destination, first, count, clock).await?));
                requests.fetch_add(1, Ordering::Relaxed);
            }
            for (count, ack) in waiting {
                ack.await.context("a publish was not acknowledged")?;
                produced.fetch_add(count, Ordering::Relaxed);
            }
            producer.close().await.context("closing a producer")?;
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

/// Publishes frames of `plan.batch` records at `rate` records per second (open loop) on one producer
/// connection whose window is `plan.concurrency` publishes. A send waits only while the window is full,
/// which is reported as falling behind the schedule, as for the JSON producer.
pub async fn publish_tcp_open(
    addr: &str,
    destination: &Destination,
    plan: Plan,
    rate: u64,
    clock: Clock,
    produced: Arc<AtomicU64>,
) -> Result<LoadOutcome> {
    let Plan { total, batch, concurrency, deadline } = plan;
    let batch = batch.max(1);
    let window = u16::try_from(concurrency.max(1)).unwrap_or(u16::MAX);
    let producer = connect(addr, 0, window).await?;
    let period = Duration::from_secs_f64(batch as f64 / rate.max(1) as f64);
    // The acknowledgements are awaited in order by their own task, so sending never waits on them.
    let (acks, mut to_await) = mpsc::channel::<(u64, PendingAck)>(usize::from(window));
    let counting = {
        let produced = Arc::clone(&produced);
        tokio::spawn(async move {
            while let Some((count, ack)) = to_await.recv().await {
                ack.await.context("a publish was not acknowledged")?;
                produced.fetch_add(count, Ordering::Relaxed);
            }
            Ok::<(), anyhow::Error>(())
        })
    };
    let started = Instant::now();
    let mut outcome = LoadOutcome::default();
    let mut sequence = 0u64;
    let mut tick = 0u32;
    while sequence < total {
        let scheduled = started + period * tick;
        if scheduled >= deadline {
            break;
        }
        tokio::time::sleep_until(scheduled.into()).await;
        let count = batch.min(total - sequence);
        let ack = publish(&producer, destination, sequence, count, clock).await?;
        let behind = Instant::now().saturating_duration_since(scheduled);
        outcome.max_behind = outcome.max_behind.max(behind);
        if behind > LATE_AFTER {
            outcome.late_sends += 1;
        }
        if acks.send((count, ack)).await.is_err() {
            break;
        }
        sequence += count;
        outcome.requests += 1;
        tick += 1;
    }
    drop(acks);
    counting.await.context("the acknowledgement task failed")??;
    producer.close().await.context("closing the producer")?;
    outcome.records = produced.load(Ordering::Relaxed);
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

/// Connects producer number `index`.
async fn connect(addr: &str, index: usize, window: u16) -> Result<Producer> {
    let mut config = ProducerConfig::new(format!("relay-bench-{index}"));
    config.max_in_flight = window;
    let (producer, _) =
        Producer::connect(addr, config).await.with_context(|| format!("connecting a producer to {addr}"))?;
    Ok(producer)
}

/// Queues one PUBLISH of `count` records numbered from `first`: key `k{n}`, a value of the destination's
/// size, and the `bench_ts_us` header, the time it is queued.
async fn publish(
    producer: &Producer,
    destination: &Destination,
    first: u64,
    count: u64,
    clock: Clock,
) -> Result<PendingAck> {
    let value = vec![b'x'; destination.value_size];
    let timestamp = clock.now_us().to_string();
    let headers = encode_headers([(TIMESTAMP_HEADER, timestamp.as_bytes())])?;
    let keys: Vec<String> = (first..first + count).map(|n| format!("k{n}")).collect();
    let records: Vec<NewRecord<'_>> = keys
        .iter()
        .map(|key| NewRecord { key: key.as_bytes(), headers: &headers, value: &value, attributes: 0 })
        .collect();
    producer.publish(&destination.topic, &records).await.context("publishing to ROOT")
}
