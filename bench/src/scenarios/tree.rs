//! The `tree` scenario: the chain ROOT -> L2 -> L3 -> POS -> LOCAL (fixed parents, or parents assigned by
//! a registry) with a consumer-app on LOCAL, plus the measuring consumer (probe.rs) on LOCAL. Producers
//! publish at ROOT as fast as they can, or at `--rate` for latency; the run samples every node's position
//! and ends when the consumer-app holds every record. Also owns starting the chain, which `idle` reuses.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::sync::{oneshot, watch};

use super::positions::{PositionSampler, Watched};
use super::{mb_per_s, per_s, process_table, usage_snapshot, wait_for};
use crate::config::{ProducerKind, TreeArgs};
use crate::latency::{LatencyRecorder, LatencySummary};
use crate::launch::{BrokerHandle, Launcher, Parent};
use crate::load::{self, Clock, Destination, LoadOutcome, Plan};
use crate::probe::{ProbeSettings, run_probe};
use crate::report::{Figure, Report, Target};
use crate::run::Run;
use crate::svg::{Panel, XAxis};

/// The levels of the chain, parent first: (process name and `--level` value, label).
pub const LEVELS: [(&str, &str); 5] =
    [("root", "ROOT"), ("l2", "L2"), ("l3", "L3"), ("pos", "POS"), ("local", "LOCAL")];

/// The topic published.
const TOPIC: &str = "bench-tree";

/// How often positions are sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// How long the chain may take to relay the first record, and the tail may take to drain after
/// publishing stops.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts the chain ROOT -> L2 -> L3 -> POS -> LOCAL, each broker with the previous one as its parent, or
/// with a registry (started here) assigning parents.
pub async fn start_chain(launcher: &mut Launcher, registry: bool) -> Result<Vec<BrokerHandle>> {
    let registry_url = if registry { Some(launcher.start_registry().await?) } else { None };
    let mut chain: Vec<BrokerHandle> = Vec::new();
    for (name, _) in LEVELS {
        // With a registry every broker registers, ROOT included, so that the registry can assign it as L2's
        // parent; ROOT itself never asks for one.
        let parent = match (chain.last(), &registry_url) {
            (_, Some(url)) => Parent::Registry(url.clone()),
            (None, None) => Parent::None,
            (Some(parent), None) => Parent::Fixed(parent.http.clone()),
        };
        chain.push(launcher.start_broker(name, name, &parent, &[]).await?);
    }
    Ok(chain)
}

/// The `tree` scenario.
pub async fn run(args: &TreeArgs, run: &Run, report: &mut Report) -> Result<()> {
    let producer =
        args.producer.unwrap_or(if args.rate.is_some() { ProducerKind::Http } else { ProducerKind::Inject });
    let batch = args.batch.unwrap_or(match (producer, args.rate) {
        (ProducerKind::Inject, _) => 10_000,
        (ProducerKind::Http | ProducerKind::Tcp, Some(_)) => 1,
        (ProducerKind::Http | ProducerKind::Tcp, None) => 100,
    });
    let producers = args.producers.unwrap_or(if args.rate.is_some() { 64 } else { 4 });
    report.parameters = serde_json::json!({
        "count": args.count, "duration_s": args.duration.as_secs_f64(), "size": args.size,
        "rate": args.rate, "batch": batch, "producers": producers, "producer": format!("{producer:?}"),
        "registry": args.registry, "flush": run.common.flush.as_flag(), "broker_args": run.common.broker_args,
    });
    if producer == ProducerKind::Inject && args.rate.is_some() {
        bail!("--rate needs --producer http or tcp (injected records carry no publish time)");
    }
    let api = &run.api;
    let clock = Clock::new();
    let mut launcher = run.launcher();
    let chain = start_chain(&mut launcher, args.registry).await?;
    let (root, local) = (&chain[0], &chain[chain.len() - 1]);

    // One record creates the topic and proves that the whole chain relays.
    api.publish(&root.http, TOPIC, load::json_batch(0, 1, args.size, clock.now_us())).await?;
    wait_for(
        "the first record to reach LOCAL",
        SETTLE_TIMEOUT,
        Duration::from_millis(50),
        &mut launcher,
        async || Ok(api.topic(&local.http, TOPIC).await?.filter(|topic| topic.end_offset >= 1)),
    )
    .await?;
    let app = launcher.start_consumer_app("consumer-app", &local.consumer_addr, TOPIC).await?;
    wait_for(
        "the consumer-app to hold the first record",
        SETTLE_TIMEOUT,
        Duration::from_millis(50),
        &mut launcher,
        async || {
            let stats = api.app_stats(&app.http).await?;
            Ok(stats.topics.get(TOPIC).filter(|topic| topic.position >= 1).map(|_| ()))
        },
    )
    .await?;

    let expected_run = args
        .duration
        .min(Duration::from_secs_f64(args.count as f64 / args.rate.unwrap_or(100_000).max(1) as f64));
    let (until_tx, until_rx) = watch::channel(None);
    let (ready_tx, ready_rx) = oneshot::channel();
    let probe_received = Arc::new(AtomicU64::new(0));
    let hard_deadline = Instant::now() + args.duration + SETTLE_TIMEOUT;
    let probe = tokio::spawn(run_probe(
        ProbeSettings {
            addr: local.consumer_addr.clone(),
            topic: TOPIC.to_string(),
            group: "bench-probe".to_string(),
            from_offset: 1,
            // Storing (a flush per batch) is what makes "publish -> stored" end to end; in a throughput run
            // the consumer-app is the endpoint measured, and the probe only checks and counts, so it takes
            // as little of the two cores as it can.
            store_dir: args.rate.map(|_| run.data_dir.join("probe")),
            start: run.started,
            window: LatencyRecorder::window_for(expected_run),
        },
        clock,
        until_rx,
        hard_deadline,
        ready_tx,
        Arc::clone(&probe_received),
    ));
    if ready_rx.await.is_err() {
        return Err(probe
            .await
            .context("the probe task failed")?
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("the probe stopped")));
    }

    let mut nodes: Vec<Watched> = chain
        .iter()
        .zip(LEVELS)
        .map(|(broker, (_, label))| Watched {
            label: label.to_string(),
            http: broker.http.clone(),
            is_app: false,
        })
        .collect();
    nodes.push(Watched { label: "consumer-app".to_string(), http: app.http.clone(), is_app: true });
    let app_index = nodes.len() - 1;
    let t0 = Instant::now();
    let mut sampler = PositionSampler::new(TOPIC, nodes, t0);
    let before = usage_snapshot(&launcher);
    let produced = Arc::new(AtomicU64::new(0));
    let destination =
        Destination { base: root.http.clone(), topic: TOPIC.to_string(), value_size: args.size };
    let publish_deadline = t0 + args.duration;
    let producing = {
        let (api, destination, produced) = (api.clone(), destination.clone(), Arc::clone(&produced));
        let (count, rate) = (args.count, args.rate);
        let root_tcp = root.consumer_addr.clone();
        tokio::spawn(async move {
            let plan = Plan { total: count, batch, concurrency: producers, deadline: publish_deadline };
            match (producer, rate) {
                (ProducerKind::Inject, _) => load::inject(&api, &destination, plan, produced).await,
                (ProducerKind::Http, None) => {
                    load::publish_closed(&api, &destination, plan, clock, produced).await
                }
                (ProducerKind::Http, Some(rate)) => {
                    load::publish_open(&api, &destination, plan, rate, clock, produced).await
                }
                (ProducerKind::Tcp, None) => {
                    load::publish_tcp_closed(&root_tcp, &destination, plan, clock, produced).await
                }
                (ProducerKind::Tcp, Some(rate)) => {
                    load::publish_tcp_open(&root_tcp, &destination, plan, rate, clock, produced).await
                }
            }
        })
    };
    let progress = run.progress(args.count, "relayed");
    let mut producing = Some(producing);
    let mut load_outcome: Option<LoadOutcome> = None;
    let mut final_end = None;
    loop {
        let sample = sampler.sample(api).await?.clone();
        let app_position = sample.positions[app_index].unwrap_or(0);
        progress.set_position(app_position.saturating_sub(1));
        if producing.as_ref().is_some_and(|task| task.is_finished())
            && let Some(task) = producing.take()
        {
            let outcome = task.await.context("the producer task failed")??;
            final_end = Some(1 + outcome.records);
            progress.set_length(outcome.records);
            let _ = until_tx.send(final_end);
            load_outcome = Some(outcome);
        }
        if final_end.is_some_and(|end| app_position >= end) && probe.is_finished() {
            break;
        }
        launcher.check_running()?;
        if Instant::now() >= hard_deadline {
            bail!(
                "the chain did not deliver every record within {:?} after publishing stopped (consumer-app at \
                 {app_position}, expected {final_end:?})",
                SETTLE_TIMEOUT
            );
        }
        tokio::time::sleep(SAMPLE_INTERVAL).await;
    }
    progress.finish_and_clear();
    let load_outcome = load_outcome.context("the producers did not finish")?;
    let probe = probe.await.context("the probe task failed")??;
    let records = load_outcome.records;
    let processes = process_table(&launcher, &before, |name| (name != "relay-bench").then_some(records));
    launcher.stop_all();

    let end = 1 + records;
    let app_done_s = sampler.reached_at(app_index, end).unwrap_or_else(|| t0.elapsed().as_secs_f64());
    let sustained = Duration::from_secs_f64(app_done_s);
    let record_bytes = probe.bytes / probe.received.max(1);
    report.figure(Figure::new("records published", records as f64, "records"));
    report.figure(Figure::new("published at ROOT", per_s(records, load_outcome.elapsed), "records/s"));
    report.figure(
        Figure::new("end to end, stored in the consumer-app", per_s(records, sustained), "records/s")
            .with_target(Target::at_least(200_000.0, ">= 200,000 records/s (1 KiB, durable)")),
    );
    report.figure(Figure::new(
        "end to end, stored in the consumer-app: MB/s",
        mb_per_s(records * record_bytes, sustained),
        "MB/s",
    ));
    if let (Some(first), Some(last)) = (probe.first_arrival, probe.last_arrival) {
        let span = last.saturating_duration_since(t0).max(first.saturating_duration_since(t0));
        report.figure(Figure::new(
            "delivered at LOCAL to the measuring consumer",
            per_s(probe.received, span),
            "records/s",
        ));
    }
    report.figure(Figure::new("records missing at the measuring consumer", probe.missing as f64, "records"));
    report.figure(Figure::new(
        "records duplicated at the measuring consumer",
        probe.duplicates as f64,
        "records",
    ));
    if !probe.complete {
        report.note(format!("the measuring consumer stopped at offset {} of {end}", probe.next_offset));
    }
    if let Some(rate) = args.rate {
        report.figure(Figure::new("requested rate", rate as f64, "records/s"));
        report.note(format!(
            "open loop: {} requests of {batch} records, at most {producers} in flight; {} sends left more than \
             5 ms after their scheduled time (largest delay {:.1} ms)",
            load_outcome.requests,
            load_outcome.late_sends,
            load_outcome.max_behind.as_secs_f64() * 1e3
        ));
    }
    let stored = probe.stored.summary();
    if let Some(stored) = &stored {
        let mut figure = Figure::new(
            "end-to-end latency p99 (publish -> stored at a consumer on LOCAL)",
            stored.p99_us as f64,
            "us",
        );
        if args.rate.is_some() {
            figure = figure.with_target(Target::at_most(2_000.0, "p99 <= 2 ms at 5,000 records/s"));
        }
        report.figure(figure);
    }
    // L2, L3 and POS each take every record from their parent and send it to one child: their CPU per
    // record is the cost of one relaying hop.
    let relays: Vec<f64> = processes
        .iter()
        .filter(|process| ["l2", "l3", "pos"].contains(&process.name.as_str()))
        .filter_map(|process| process.cpu_us_per_record)
        .collect();
    if !relays.is_empty() {
        report.figure(
            Figure::new("CPU per relayed record per hop (mean of L2, L3, POS)", mean(&relays), "us")
                .with_target(Target::at_most(1.0, "<= 1 us per 1 KiB record per hop")),
        );
    }
    report.hops = sampler.hop_lags(0.0);
    report.processes = processes;
    report.note(format!(
        "positions sampled every {} ms over HTTP (broker log end, consumer-app copy position); the end-to-end \
         rate is records / time until the consumer-app held the last one; cpu us/record is each process's \
         CPU over the run divided by the records published",
        SAMPLE_INTERVAL.as_millis()
    ));
    report.note(format!(
        "producer: {producer:?}, {batch} records per request, {producers} tasks or requests in flight"
    ));
    let latencies: Vec<LatencySummary> =
        [stored, probe.delivered.summary(), probe.root_to_delivered.summary()]
            .into_iter()
            .flatten()
            .collect();
    report.panels = tree_panels(&sampler, &latencies);
    for series in sampler.rate_series() {
        report.series.insert(format!("records/s at {}", series.name), series.points);
    }
    for series in sampler.lag_series() {
        report.series.insert(format!("lag {}", series.name), series.points);
    }
    report.latencies = latencies;
    Ok(())
}

/// The plots: latency over time and percentile curves (when latencies were measured), records per second
/// per node and lag per hop.
fn tree_panels(sampler: &PositionSampler, latencies: &[LatencySummary]) -> Vec<Panel> {
    let mut panels = Vec::new();
    if let Some(first) = latencies.first() {
        panels.push(first.over_time_panel(format!("{} over time", first.name)));
        panels.push(Panel {
            title: "latency percentiles".to_string(),
            x_label: "percentile".to_string(),
            y_label: "microseconds".to_string(),
            x_axis: XAxis::Nines,
            series: latencies.iter().map(|latency| latency.curve_series(latency.name.clone())).collect(),
        });
    }
    panels.push(Panel {
        title: "records per second at each node".to_string(),
        x_label: "seconds since publishing started".to_string(),
        y_label: "records/s".to_string(),
        x_axis: XAxis::Linear,
        series: sampler.rate_series(),
    });
    panels.push(Panel {
        title: "lag per hop".to_string(),
        x_label: "seconds since publishing started".to_string(),
        y_label: "records".to_string(),
        x_axis: XAxis::Linear,
        series: sampler.lag_series(),
    });
    panels
}

/// The arithmetic mean of non-empty `values`.
fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}
