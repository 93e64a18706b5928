//! The `fanout` scenario: one ROOT broker and many TCP consumers (the `client` crate, each its own group),
//! all connected before records are published; every consumer must receive every record. Measures how
//! many connect, deliveries per second, how long each consumer takes to get everything, ROOT-timestamp
//! latency, and the broker's CPU and memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use client::{Consumer, ConsumerConfig, Event, topic_start};
use protocol::RecordIter;
use protocol::frame::StartPosition;
use tokio::task::JoinSet;

use super::{mb_per_s, per_s, process_table, usage_snapshot, wait_for};
use crate::config::FanoutArgs;
use crate::latency::LatencyRecorder;
use crate::launch::Parent;
use crate::load::Clock;
use crate::report::{Figure, Report, Target};
use crate::run::Run;
use crate::svg::{Panel, XAxis};

/// The topic published.
const TOPIC: &str = "bench-fanout";

/// Consumers connecting at the same time.
const CONNECT_CONCURRENCY: usize = 50;

/// How long the records may take to reach every consumer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(300);

/// How long one wait for an event lasts before the stop conditions are looked at again.
const EVENT_POLL: Duration = Duration::from_millis(200);

/// What one consumer saw.
#[derive(Debug, Clone, Copy)]
struct ConsumerResult {
    /// Records received.
    received: u64,
    /// When it had every record, if it did.
    completed_at: Option<Instant>,
}

/// The `fanout` scenario.
pub async fn run(args: &FanoutArgs, run: &Run, report: &mut Report) -> Result<()> {
    report.parameters = serde_json::json!({
        "consumers": args.consumers, "count": args.count, "size": args.size,
        "inject_batch": args.inject_batch, "flush": run.common.flush.as_flag(),
    });
    let api = &run.api;
    let mut launcher = run.launcher();
    let max_connections = (args.consumers + 64).to_string();
    let root = launcher
        .start_broker("root", "root", &Parent::None, &["--max-connections".into(), max_connections])
        .await?;
    // One record creates the topic, so every consumer subscribes to an existing topic from offset 0.
    api.inject(&root.http, TOPIC, 1, args.size).await?;
    let end = 1 + args.count;
    let clock = Clock::new();
    let latency = Arc::new(Mutex::new(LatencyRecorder::new(
        "ROOT append -> delivered (every consumer)",
        "the record's ROOT timestamp (1 ms resolution, so values read up to 1 ms high) to its arrival at \
         each consumer",
        run.started,
        LatencyRecorder::window_for(Duration::from_secs(30)),
    )?));
    let received_total = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + DELIVERY_TIMEOUT;

    let connecting = run.progress(args.consumers as u64, "connecting");
    let mut consumers = JoinSet::new();
    let mut connected = 0usize;
    let mut refused = Vec::new();
    let mut pending = JoinSet::new();
    let mut next = 0usize;
    while next < args.consumers || !pending.is_empty() {
        while next < args.consumers && pending.len() < CONNECT_CONCURRENCY {
            let config = ConsumerConfig::new(
                format!("fanout-{next}"),
                format!("fanout-{next}"),
                vec![topic_start(TOPIC, StartPosition::Earliest)],
            );
            let addr = root.consumer_addr.clone();
            pending.spawn(async move { Consumer::connect(addr.as_str(), config).await });
            next += 1;
        }
        let Some(done) = pending.join_next().await else { break };
        match done.context("a connect task failed")? {
            Ok((consumer, _welcome)) => {
                connected += 1;
                connecting.set_position(connected as u64);
                let (latency, received_total) = (Arc::clone(&latency), Arc::clone(&received_total));
                consumers.spawn(consume(consumer, clock, latency, end, received_total, deadline));
            }
            Err(error) => refused.push(error.to_string()),
        }
    }
    connecting.finish_and_clear();
    launcher.check_running()?;
    if connected == 0 {
        bail!("no consumer could connect: {}", refused.first().map_or("", String::as_str));
    }

    let before = usage_snapshot(&launcher);
    let started = Instant::now();
    let delivering = run.progress(connected as u64 * end, "delivering");
    let mut published = 0u64;
    while published < args.count {
        let chunk = args.inject_batch.max(1).min(args.count - published);
        published += api.inject(&root.http, TOPIC, chunk, args.size).await?;
        delivering.set_position(received_total.load(Ordering::Relaxed));
    }
    let publish_elapsed = started.elapsed();
    let expected = connected as u64 * end;
    wait_for(
        "every consumer to receive every record",
        DELIVERY_TIMEOUT,
        Duration::from_millis(100),
        &mut launcher,
        async || {
            let received = received_total.load(Ordering::Relaxed);
            delivering.set_position(received);
            Ok((received >= expected || Instant::now() >= deadline).then_some(()))
        },
    )
    .await?;
    delivering.finish_and_clear();
    let mut results = Vec::new();
    while let Some(done) = consumers.join_next().await {
        results.push(done.context("a consumer task failed")?);
    }
    let processes = process_table(&launcher, &before, |name| (name == "root").then_some(expected));
    launcher.stop_all();

    let complete: Vec<&ConsumerResult> = results.iter().filter_map(|result| result.as_ref().ok()).collect();
    let failed = results.len() - complete.len();
    let finished: Vec<Duration> = complete
        .iter()
        .filter(|result| result.received >= end)
        .filter_map(|result| result.completed_at.map(|at| at.saturating_duration_since(started)))
        .collect();
    let last = finished.iter().max().copied().unwrap_or_else(|| started.elapsed());
    let delivered: u64 = complete.iter().map(|result| result.received).sum();
    let record_bytes = (29 + 10 + args.size) as u64;
    report.figure(
        Figure::new("consumers connected", connected as f64, "consumers")
            .with_target(Target::at_least(1_000.0, "1,000 connected and streaming")),
    );
    report.figure(
        Figure::new("consumers that received every record", finished.len() as f64, "consumers")
            .with_target(Target::at_least(args.consumers as f64, "every consumer")),
    );
    report.figure(Figure::new("deliveries", per_s(delivered, last), "records/s"));
    report.figure(Figure::new("delivered bytes (approx.)", mb_per_s(delivered * record_bytes, last), "MB/s"));
    report.figure(Figure::new("publish rate at ROOT", per_s(published, publish_elapsed), "records/s"));
    let mut sorted = finished.clone();
    sorted.sort();
    if let Some(median) = sorted.get(sorted.len() / 2) {
        report.figure(Figure::new("time until a consumer had everything: median", median.as_secs_f64(), "s"));
        report.figure(Figure::new("time until a consumer had everything: last", last.as_secs_f64(), "s"));
    }
    if !refused.is_empty() || failed > 0 {
        report.note(format!(
            "{} connections refused (first: {}), {failed} consumers failed while streaming",
            refused.len(),
            refused.first().map_or("-", String::as_str)
        ));
    }
    report.processes = processes;
    report.note(format!(
        "{connected} TCP consumers in the bench process, one group each, acking every batch; records \
         injected at ROOT in requests of {} while all are connected; cpu us/record of root is per delivery",
        args.inject_batch
    ));
    let summary = latency.lock().map_err(|_| anyhow::anyhow!("latency lock poisoned"))?.summary();
    if let Some(summary) = summary {
        report.panels = vec![
            summary.over_time_panel("ROOT append -> delivered, over time".to_string()),
            Panel {
                title: "ROOT append -> delivered, percentiles".to_string(),
                x_label: "percentile".to_string(),
                y_label: "microseconds".to_string(),
                x_axis: XAxis::Nines,
                series: vec![summary.curve_series("all consumers".to_string())],
            },
        ];
        report.latencies.push(summary);
    }
    Ok(())
}

/// One consumer: receives and acks until it has every record below `end`, or the deadline.
async fn consume(
    mut consumer: Consumer,
    clock: Clock,
    latency: Arc<Mutex<LatencyRecorder>>,
    end: u64,
    received_total: Arc<AtomicU64>,
    deadline: Instant,
) -> Result<ConsumerResult> {
    let mut next_offset = 0u64;
    let mut received = 0u64;
    let mut arrivals: Vec<u64> = Vec::new();
    while Instant::now() < deadline {
        if next_offset >= end {
            let _ = consumer.close().await;
            return Ok(ConsumerResult { received, completed_at: Some(Instant::now()) });
        }
        let event = match tokio::time::timeout(EVENT_POLL, consumer.next_event()).await {
            Err(_) => continue,
            Ok(event) => event?,
        };
        let Event::Batch(batch) = event else { continue };
        let arrival = Instant::now();
        let arrival_us = clock.unix_us(arrival);
        arrivals.clear();
        let mut fresh = 0u64;
        for record in RecordIter::new(&batch.records) {
            let record = record?;
            if record.offset() < next_offset {
                continue;
            }
            next_offset = record.offset() + 1;
            received += 1;
            fresh += 1;
            // The first record only creates the topic before the consumers connect; its age says nothing
            // about delivery.
            if record.offset() > 0 {
                arrivals.push(arrival_us.saturating_sub(record.timestamp_ms() * 1000));
            }
        }
        if let Ok(mut recorder) = latency.lock() {
            for us in &arrivals {
                recorder.record(arrival, *us);
            }
        }
        received_total.fetch_add(fresh, Ordering::Relaxed);
        consumer.ack(TOPIC, batch.last_offset + 1).await?;
    }
    Ok(ConsumerResult { received, completed_at: None })
}
