//! The `idle` scenario: the chain ROOT -> L2 -> L3 -> POS -> LOCAL carrying a number of small topics, then
//! left alone; each broker's resident memory is sampled while it settles. The figure is LOCAL's RSS at the
//! end.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::tree::{LEVELS, start_chain};
use super::{process_table, usage_snapshot, wait_for};
use crate::config::IdleArgs;
use crate::report::{Figure, Report, Target};
use crate::run::Run;
use crate::svg::{Panel, Series, XAxis};

/// How long the topics may take to reach LOCAL.
const RELAY_TIMEOUT: Duration = Duration::from_secs(120);

/// How often memory is read while settling.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(500);

/// The `idle` scenario.
pub async fn run(args: &IdleArgs, run: &Run, report: &mut Report) -> Result<()> {
    report.parameters = serde_json::json!({
        "topics": args.topics, "records": args.records, "settle_s": args.settle.as_secs_f64(),
        "flush": run.common.flush.as_flag(), "broker_args": run.common.broker_args,
    });
    let api = &run.api;
    let mut launcher = run.launcher();
    let chain = start_chain(&mut launcher, false).await?;
    let (root, local) = (&chain[0], &chain[chain.len() - 1]);
    let topics: Vec<String> = (0..args.topics).map(|index| format!("bench-idle-{index}")).collect();
    for topic in &topics {
        api.inject(&root.http, topic, args.records.max(1), 100).await?;
    }
    wait_for(
        "every topic to reach LOCAL",
        RELAY_TIMEOUT,
        Duration::from_millis(100),
        &mut launcher,
        async || {
            for topic in &topics {
                let held = api.topic(&local.http, topic).await?;
                if held.is_none_or(|position| position.end_offset < args.records.max(1)) {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .await?;

    let before = usage_snapshot(&launcher);
    let settling = run.progress(args.settle.as_secs(), "settling (s)");
    let started = Instant::now();
    let mut series: Vec<Series> =
        LEVELS.iter().map(|(_, label)| Series { name: label.to_string(), points: Vec::new() }).collect();
    while started.elapsed() < args.settle {
        launcher.check_running()?;
        let t_s = started.elapsed().as_secs_f64();
        for ((name, _), line) in LEVELS.iter().zip(series.iter_mut()) {
            if let Some(usage) = launcher.usage(name) {
                line.points.push((t_s, usage.rss_bytes as f64 / 1e6));
            }
        }
        settling.set_position(started.elapsed().as_secs());
        tokio::time::sleep(SAMPLE_INTERVAL).await;
    }
    settling.finish_and_clear();
    let held = api.topic_count(&local.http).await?;
    let local_usage = launcher.usage("local");
    let processes = process_table(&launcher, &before, |_| None);
    launcher.stop_all();

    if let Some(usage) = local_usage {
        report.figure(
            Figure::new(&format!("idle LOCAL broker RSS, {held} topics"), usage.rss_bytes as f64 / 1e6, "MB")
                .with_target(Target::at_most(30.0, "<= 30 MB RSS with 10 topics")),
        );
        report.figure(Figure::new("idle LOCAL broker peak RSS", usage.peak_rss_bytes as f64 / 1e6, "MB"));
    }
    report.processes = processes;
    report.note(format!(
        "{} topics of {} records (100-byte values) injected at ROOT and relayed to LOCAL, then {:.0} s idle; \
         RSS is VmRSS from /proc/<pid>/status (MB = 10^6 bytes)",
        args.topics,
        args.records.max(1),
        args.settle.as_secs_f64()
    ));
    for line in &series {
        report.series.insert(format!("RSS MB of {}", line.name), line.points.clone());
    }
    report.panels = vec![Panel {
        title: "resident memory while idle".to_string(),
        x_label: "seconds idle".to_string(),
        y_label: "MB".to_string(),
        x_axis: XAxis::Linear,
        series,
    }];
    Ok(())
}
