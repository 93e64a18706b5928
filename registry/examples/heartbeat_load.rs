//! A load tool for a running registry: registers a tree of nodes (1 ROOT, then 4 children per node down to
//! LOCAL, capped at `--nodes`), then sends heartbeats from `--concurrency` workers for `--seconds`, and prints
//! heartbeats per second and latency percentiles.
//!
//! ```sh
//! cargo build --release -p registry --examples
//! target/release/registry --listen 127.0.0.1:8500 --db /tmp/load.sqlite &
//! target/release/examples/heartbeat_load --url http://127.0.0.1:8500 --nodes 1000 --seconds 10
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

/// Settings read from `--name value` pairs.
struct Options {
    url: String,
    nodes: usize,
    seconds: u64,
    concurrency: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut options =
        Options { url: "http://127.0.0.1:8500".to_owned(), nodes: 1_000, seconds: 10, concurrency: 16 };
    let mut args = std::env::args().skip(1);
    while let Some(name) = args.next() {
        let value = args.next().with_context(|| format!("{name} needs a value"))?;
        match name.as_str() {
            "--url" => options.url = value,
            "--nodes" => options.nodes = value.parse().context("--nodes")?,
            "--seconds" => options.seconds = value.parse().context("--seconds")?,
            "--concurrency" => options.concurrency = value.parse().context("--concurrency")?,
            other => bail!("unknown option {other}; use --url, --nodes, --seconds, --concurrency"),
        }
    }
    if options.nodes == 0 || options.concurrency == 0 {
        bail!("--nodes and --concurrency must be positive");
    }
    Ok(options)
}

/// Ids and levels of a tree with four children per node, top down, `count` nodes in all; LOCAL takes whatever
/// the levels above leave.
fn tree(count: usize) -> Vec<(String, &'static str)> {
    const LEVELS: [&str; 5] = ["ROOT", "L2", "L3", "POS", "LOCAL"];
    let mut nodes = vec![("root".to_owned(), LEVELS[0])];
    let mut width = 1;
    for (depth, level) in LEVELS.iter().enumerate().skip(1) {
        width *= 4;
        let last = depth == LEVELS.len() - 1;
        let mut index = 0;
        while nodes.len() < count && (last || index < width) {
            nodes.push((format!("n{depth}-{index}"), *level));
            index += 1;
        }
    }
    nodes.truncate(count);
    nodes
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let nodes = tree(options.nodes);

    let started = Instant::now();
    for (id, level) in &nodes {
        let body = json!({"id": id, "level": level, "http_addr": "127.0.0.1:1", "tcp_addr": "127.0.0.1:2"});
        let response = client.post(format!("{}/api/v1/nodes", options.url)).json(&body).send().await?;
        if !response.status().is_success() {
            bail!("register {id}: {} {}", response.status(), response.text().await.unwrap_or_default());
        }
    }
    let register_seconds = started.elapsed().as_secs_f64();
    println!(
        "registered {} nodes in {register_seconds:.2} s ({:.0} registrations/s, one client)",
        nodes.len(),
        nodes.len() as f64 / register_seconds
    );

    let deadline = Instant::now() + Duration::from_secs(options.seconds);
    let mut workers = Vec::new();
    for worker in 0..options.concurrency {
        let client = client.clone();
        let url = options.url.clone();
        let ids: Vec<String> =
            nodes.iter().skip(worker).step_by(options.concurrency).map(|(id, _)| id.clone()).collect();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let body = json!({"state": "streaming", "topics": {"prices": {"end_offset": 123, "lag": 0}}});
            'outer: while Instant::now() < deadline {
                for id in &ids {
                    if Instant::now() >= deadline {
                        break 'outer;
                    }
                    let sent = Instant::now();
                    let response =
                        client.post(format!("{url}/api/v1/nodes/{id}/heartbeat")).json(&body).send().await?;
                    if !response.status().is_success() {
                        bail!("heartbeat {id}: {}", response.status());
                    }
                    response.bytes().await?;
                    latencies.push(sent.elapsed());
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    latencies.sort();
    let percentile = |fraction: f64| {
        let index = ((latencies.len() as f64 - 1.0) * fraction).round() as usize;
        latencies.get(index).map_or(0.0, |latency| latency.as_secs_f64() * 1e3)
    };
    println!(
        "{} heartbeats in {} s with {} clients: {:.0} heartbeats/s, p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        options.seconds,
        options.concurrency,
        latencies.len() as f64 / options.seconds as f64,
        percentile(0.5),
        percentile(0.99)
    );
    println!("machine: {} logical CPUs", std::thread::available_parallelism().map_or(0, usize::from));
    Ok(())
}
