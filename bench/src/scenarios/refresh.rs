//! The `refresh` scenario: ROOT holds a topic of N records; a consumer-app copies it (the initial
//! catch-up), then is asked for a full refresh (RESET, the whole topic, READY, atomic swap) and timed until
//! the refresh is recorded as completed. Measures MB/s and records/s of both, and CPU per record.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{mb_per_s, per_s, process_table, spawn_inject, usage_snapshot, wait_for};
use crate::config::RefreshArgs;
use crate::launch::Parent;
use crate::load::Destination;
use crate::report::{Figure, Report, Target};
use crate::run::Run;
use crate::svg::{Panel, Series, XAxis};

/// The topic refreshed.
const TOPIC: &str = "bench-refresh";

/// How long loading, catching up or refreshing may take, each.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

/// How often the consumer-app's stats are read.
const POLL: Duration = Duration::from_millis(50);

/// The `refresh` scenario.
pub async fn run(args: &RefreshArgs, run: &Run, report: &mut Report) -> Result<()> {
    report.parameters = serde_json::json!({
        "count": args.count, "size": args.size, "inject_batch": args.inject_batch,
        "flush": run.common.flush.as_flag(),
    });
    let api = &run.api;
    let mut launcher = run.launcher();
    let root = launcher.start_broker("root", "root", &Parent::None, &[]).await?;

    let loading = run.progress(args.count, "loading ROOT");
    let produced = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let destination =
        Destination { base: root.http.clone(), topic: TOPIC.to_string(), value_size: args.size };
    let load = spawn_inject(api, &destination, args.count, args.inject_batch, PHASE_TIMEOUT, &produced);
    while !load.is_finished() {
        loading.set_position(produced.load(std::sync::atomic::Ordering::Relaxed));
        launcher.check_running()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let injected = load.await.context("the load task failed")??;
    loading.finish_and_clear();
    let topic = api.topic(&root.http, TOPIC).await?.context("ROOT does not have the topic after loading")?;
    let end = topic.end_offset;
    let bytes = topic.bytes;
    report.figure(Figure::new(
        "ROOT ingest while loading",
        per_s(injected.records, injected.elapsed),
        "records/s",
    ));

    let catch_up_start = Instant::now();
    let app = launcher.start_consumer_app("consumer-app", &root.consumer_addr, TOPIC).await?;
    let catching_up = run.progress(end, "catching up");
    let mut progress_series = Vec::new();
    wait_for("the consumer-app to copy the topic", PHASE_TIMEOUT, POLL, &mut launcher, async || {
        let stats = api.app_stats(&app.http).await?;
        let position = stats.topics.get(TOPIC).map_or(0, |topic| topic.position);
        catching_up.set_position(position);
        progress_series.push((catch_up_start.elapsed().as_secs_f64(), position as f64));
        Ok((position >= end).then_some(()))
    })
    .await?;
    let catch_up = catch_up_start.elapsed();
    catching_up.finish_and_clear();
    report.figure(Figure::new("initial catch-up into the consumer-app", mb_per_s(bytes, catch_up), "MB/s"));
    report.figure(Figure::new(
        "initial catch-up into the consumer-app: records/s",
        per_s(end, catch_up),
        "records/s",
    ));

    let before = usage_snapshot(&launcher);
    let requested_unix_ms = protocol::now_ms();
    let refresh_start = Instant::now();
    api.app_refresh(&app.http, TOPIC).await?;
    let refreshing = run.progress(end, "refreshing");
    let mut refresh_series = Vec::new();
    let completed =
        wait_for("the full refresh to complete", PHASE_TIMEOUT, POLL, &mut launcher, async || {
            let stats = api.app_stats(&app.http).await?;
            let entry = stats
                .recent_refreshes
                .iter()
                .find(|entry| entry.topic == TOPIC && entry.started_ms + 1_000 >= requested_unix_ms)
                .cloned();
            if let Some(entry) = &entry {
                refreshing.set_position(entry.n_records);
                refresh_series.push((refresh_start.elapsed().as_secs_f64(), entry.n_records as f64));
                if entry.outcome == "abandoned" {
                    bail!("the consumer-app abandoned the refresh: {entry:?}");
                }
            }
            Ok(entry.filter(|entry| entry.outcome == "completed"))
        })
        .await?;
    let elapsed = refresh_start.elapsed();
    refreshing.finish_and_clear();
    let processes = process_table(&launcher, &before, |name| Some(end).filter(|_| name != "relay-bench"));
    launcher.stop_all();

    if completed.n_records != end {
        report.note(format!("the refresh copied {} records; ROOT holds {end}", completed.n_records));
    }
    report.figure(
        Figure::new("full refresh into the consumer-app", mb_per_s(bytes, elapsed), "MB/s")
            .with_target(Target::at_least(300.0, ">= 300 MB/s (1,000,000 x 1 KiB)")),
    );
    report.figure(Figure::new("full refresh: records/s", per_s(end, elapsed), "records/s"));
    if let Some(finished) = completed.finished_ms {
        let own = Duration::from_millis(finished.saturating_sub(completed.started_ms));
        report.figure(Figure::new("full refresh as the consumer-app times it", mb_per_s(bytes, own), "MB/s"));
    }
    report.processes = processes;
    report.note(format!(
        "{end} records, {bytes} bytes of records; the refresh is timed from POST /api/v1/refresh to the \
         first stats poll (every {} ms) showing it completed; cpu us/record is over the refresh only",
        POLL.as_millis()
    ));
    report.series.insert("catch-up records held".to_string(), progress_series.clone());
    report.series.insert("refresh records received".to_string(), refresh_series.clone());
    report.panels = vec![Panel {
        title: "records in the consumer-app over time".to_string(),
        x_label: "seconds since the phase started".to_string(),
        y_label: "records".to_string(),
        x_axis: XAxis::Linear,
        series: vec![
            Series { name: "initial catch-up".to_string(), points: progress_series },
            Series { name: "full refresh".to_string(), points: refresh_series },
        ],
    }];
    Ok(())
}
