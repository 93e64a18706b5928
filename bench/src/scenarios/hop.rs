//! The `hop` scenario: ROOT and one child (L2) over the pipe. By default ROOT is loaded first and the
//! child's catch-up is timed, so the figure is the pipe alone; with `--live` the child is connected first
//! and records are injected while it relays. Measures MB/s and records/s through the hop and CPU per
//! relayed record on each side.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::positions::{PositionSampler, Watched};
use super::{mb_per_s, per_s, process_table, spawn_inject, usage_snapshot, wait_for};
use crate::config::HopArgs;
use crate::launch::Parent;
use crate::load::Destination;
use crate::report::{Figure, Report, Target};
use crate::run::Run;
use crate::svg::{Panel, XAxis};

/// The topic relayed.
const TOPIC: &str = "bench-hop";

/// How long loading or relaying may take, each.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

/// How often the child's position is read while it relays: short, because the start and the end of the
/// transfer are taken from these samples.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(10);

/// The `hop` scenario.
pub async fn run(args: &HopArgs, run: &Run, report: &mut Report) -> Result<()> {
    report.parameters = serde_json::json!({
        "count": args.count, "size": args.size, "inject_batch": args.inject_batch, "live": args.live,
        "flush": run.common.flush.as_flag(), "broker_args": run.common.broker_args,
    });
    let api = &run.api;
    let mut launcher = run.launcher();
    let root = launcher.start_broker("root", "root", &Parent::None, &[]).await?;
    let destination =
        Destination { base: root.http.clone(), topic: TOPIC.to_string(), value_size: args.size };
    let produced = Arc::new(AtomicU64::new(0));
    let parent = Parent::Fixed(root.http.clone());

    let (child, end, load_task, before, began) = if args.live {
        // One record creates the topic; the child holding it proves the pipe is up before timing starts.
        api.inject(&root.http, TOPIC, 1, args.size).await?;
        let child = launcher.start_broker("l2", "l2", &parent, &[]).await?;
        wait_for(
            "the child to hold the first record",
            PHASE_TIMEOUT,
            SAMPLE_INTERVAL,
            &mut launcher,
            async || Ok(api.topic(&child.http, TOPIC).await?.filter(|topic| topic.end_offset >= 1)),
        )
        .await?;
        let before = usage_snapshot(&launcher);
        let began = Instant::now();
        let task = spawn_inject(api, &destination, args.count, args.inject_batch, PHASE_TIMEOUT, &produced);
        (child, 1 + args.count, Some(task), before, began)
    } else {
        let loading = run.progress(args.count, "loading ROOT");
        let task = spawn_inject(api, &destination, args.count, args.inject_batch, PHASE_TIMEOUT, &produced);
        while !task.is_finished() {
            loading.set_position(produced.load(std::sync::atomic::Ordering::Relaxed));
            launcher.check_running()?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let injected = task.await.context("the load task failed")??;
        loading.finish_and_clear();
        report.figure(Figure::new(
            "ROOT ingest while loading",
            per_s(injected.records, injected.elapsed),
            "records/s",
        ));
        // Taken before the child exists, so the child's CPU counts from its start.
        let before = usage_snapshot(&launcher);
        let began = Instant::now();
        let child = launcher.start_broker("l2", "l2", &parent, &[]).await?;
        (child, injected.records, None, before, began)
    };

    let nodes = vec![
        Watched { label: "ROOT".to_string(), http: root.http.clone(), is_app: false },
        Watched { label: "L2".to_string(), http: child.http.clone(), is_app: false },
    ];
    let mut sampler = PositionSampler::new(TOPIC, nodes, Instant::now());
    let relaying = run.progress(end, "relaying");
    // The transfer is timed between the first sample showing the child past its starting point and the
    // first showing it complete.
    let start_position = if args.live { 1 } else { 0 };
    let mut first: Option<(Instant, u64)> = None;
    let mut last: Option<Instant> = None;
    wait_for("the child to hold every record", PHASE_TIMEOUT, SAMPLE_INTERVAL, &mut launcher, async || {
        let sample = sampler.sample(api).await?;
        let position = sample.positions[1].unwrap_or(0);
        relaying.set_position(position);
        let now = Instant::now();
        if first.is_none() && position > start_position {
            first = Some((now, position));
        }
        if position >= end {
            last = Some(now);
            return Ok(Some(()));
        }
        Ok(None)
    })
    .await?;
    relaying.finish_and_clear();
    if let Some(task) = load_task {
        task.await.context("the load task failed")??;
    }
    let child_bytes = api.topic(&child.http, TOPIC).await?.map_or(0, |topic| topic.bytes);
    let processes =
        process_table(&launcher, &before, |name| (name != "relay-bench").then_some(end - start_position));
    launcher.stop_all();

    let (first_at, first_position) = match first {
        Some((at, position)) if position < end => (at, position),
        _ => {
            report.note(
                "the whole transfer fitted between two samples, so it is timed from the child's start \
                 (catch-up) or the first injection (live) instead; use a larger --count",
            );
            (began, start_position)
        }
    };
    let last_at = last.context("the child never completed")?;
    let records = end - first_position;
    let elapsed = last_at.saturating_duration_since(first_at).max(SAMPLE_INTERVAL);
    let record_bytes = child_bytes / end.max(1);
    report.figure(
        Figure::new("pipe, one hop", mb_per_s(records * record_bytes, elapsed), "MB/s")
            .with_target(Target::at_least(500.0, ">= 500 MB/s (1 KiB records, loopback)")),
    );
    report.figure(Figure::new("pipe, one hop: records/s", per_s(records, elapsed), "records/s"));
    if let Some(child_cpu) =
        processes.iter().find(|process| process.name == "l2").and_then(|p| p.cpu_us_per_record)
    {
        report.figure(
            Figure::new("child CPU per relayed record", child_cpu, "us")
                .with_target(Target::at_most(1.0, "<= 1 us per 1 KiB record per hop")),
        );
    }
    if let Some(root_cpu) =
        processes.iter().find(|process| process.name == "root").and_then(|p| p.cpu_us_per_record)
    {
        report.figure(Figure::new("parent CPU per relayed record", root_cpu, "us"));
    }
    report.processes = processes;
    report.note(format!(
        "{} mode; the rate is timed from the first {} ms sample showing the child moving to the first showing \
         it complete ({} records of {} bytes); CPU per record is each process's CPU from the child's start \
         (including its start-up) to the end, divided by the records relayed",
        if args.live { "live" } else { "catch-up" },
        SAMPLE_INTERVAL.as_millis(),
        records,
        record_bytes
    ));
    for series in sampler.rate_series() {
        report.series.insert(format!("records/s at {}", series.name), series.points);
    }
    report.panels = vec![Panel {
        title: "records per second through the hop".to_string(),
        x_label: "seconds since the child started".to_string(),
        y_label: "records/s".to_string(),
        x_axis: XAxis::Linear,
        series: sampler.rate_series(),
    }];
    Ok(())
}
