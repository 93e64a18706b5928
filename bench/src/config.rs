//! The command line of `relay-bench`: one subcommand per scenario, the options every scenario shares, and
//! the parsers for sizes and durations. This module owns parsing and defaults only; it starts nothing.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `relay-bench`: drives the real relay binaries on 127.0.0.1 and reports what they reach.
#[derive(Debug, Parser)]
#[command(
    name = "relay-bench",
    version,
    about = "Load tool for the relay tree: throughput, latency, lag, CPU and memory of the real binaries.",
    long_about = "Load tool for the relay tree. Each scenario starts the real broker, registry and \
                  consumer-app binaries as processes on 127.0.0.1 (ports chosen by the system), drives them, \
                  prints a table of figures and writes report.json, plot.svg and the processes' logs into a \
                  folder under --out. Every run is bounded in records and time, and every process it \
                  starts is stopped at the end, on error and on Ctrl-C."
)]
pub struct Cli {
    /// The scenario to run.
    #[command(subcommand)]
    pub scenario: Scenario,
    /// Options shared by every scenario.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Options shared by every scenario.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Directory holding the `broker`, `registry` and `consumer-app` binaries.
    #[arg(long, global = true, env = "RELAY_BENCH_BIN_DIR", default_value = "target/release")]
    pub bin_dir: PathBuf,

    /// Folder for results: each run writes `<scenario>-<time>/` with report.json, plot.svg and logs.
    #[arg(long, global = true, env = "RELAY_BENCH_OUT", default_value = "results")]
    pub out: PathBuf,

    /// Keep the data directories of the processes (and of the storage scenario) after the run.
    #[arg(long, global = true, default_value_t = false)]
    pub keep: bool,

    /// Put data directories here instead of inside the run's results folder (pick the disk to measure).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,

    /// Hard limit on a run's wall time; the run stops with an error when it is reached.
    #[arg(long, global = true, default_value = "15m", value_parser = parse_duration)]
    pub timeout: Duration,

    /// When appended records are flushed to disk, passed to every broker (`--flush`).
    #[arg(long, global = true, value_enum, default_value_t = FlushArg::Always)]
    pub flush: FlushArg,

    /// Extra argument for every broker, repeatable (for example `--broker-arg=--batch-max-records=1000`).
    #[arg(long = "broker-arg", global = true, allow_hyphen_values = true)]
    pub broker_args: Vec<String>,

    /// No progress bar.
    #[arg(long, global = true, default_value_t = false)]
    pub quiet: bool,
}

/// A broker flush policy, as the broker's `--flush` flag spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FlushArg {
    /// Flush before acknowledging every append (durable; the broker's default).
    Always,
    /// Flush on the broker's timer.
    Interval,
    /// Never flush: unsafe, for comparison only.
    Never,
}

impl FlushArg {
    /// The value of the broker's `--flush` flag.
    pub fn as_flag(self) -> &'static str {
        match self {
            FlushArg::Always => "always",
            FlushArg::Interval => "interval",
            FlushArg::Never => "never",
        }
    }
}

/// The scenarios.
#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// In-process storage engine: append 100 B and 1 KiB records in batches, with and without flush, then
    /// read sealed segments sequentially.
    Storage(StorageArgs),
    /// ROOT and one child: pipe throughput (MB/s, records/s) and the child's CPU per relayed record.
    Hop(HopArgs),
    /// The chain ROOT -> L2 -> L3 -> POS -> LOCAL -> consumer-app: sustained records/s, lag per hop, and
    /// with --rate end-to-end latency percentiles.
    Tree(TreeArgs),
    /// Full refresh of a topic into a consumer-app: MB/s.
    Refresh(RefreshArgs),
    /// One broker, many TCP consumers connected and streaming.
    Fanout(FanoutArgs),
    /// The idle chain with a number of topics: resident memory of each broker (LOCAL's is the figure).
    Idle(IdleArgs),
    /// A compacted topic at ROOT: compaction MB/s on one core, the compacted log's size, and the bytes a
    /// new consumer-app's full copy moves beside the live keys' latest records.
    Compact(CompactArgs),
}

/// The largest value the broker generates per record (`/test/inject-messages` refuses more).
pub const MAX_VALUE_SIZE: usize = 1 << 20;

/// The most TCP consumers `fanout` opens: each takes a file descriptor in the bench and in the broker.
pub const MAX_FANOUT_CONSUMERS: usize = 50_000;

impl Scenario {
    /// Checks the values clap cannot check alone; the error is one line naming the option.
    pub fn validate(&self) -> Result<(), String> {
        let size_ok = |size: usize| {
            (1..=MAX_VALUE_SIZE)
                .contains(&size)
                .then_some(())
                .ok_or(format!("--size must be 1 to {MAX_VALUE_SIZE}"))
        };
        let positive =
            |value: u64, name: &str| (value > 0).then_some(()).ok_or(format!("{name} must be at least 1"));
        match self {
            Scenario::Storage(args) => {
                positive(args.count, "--count")?;
                positive(args.batch as u64, "--batch")?;
                if args.sizes.is_empty() {
                    return Err("--sizes must name at least one size".to_string());
                }
                args.sizes.iter().try_for_each(|size| size_ok(*size))
            }
            Scenario::Hop(args) => {
                positive(args.count, "--count")?;
                positive(args.inject_batch, "--inject-batch")?;
                size_ok(args.size)
            }
            Scenario::Tree(args) => {
                positive(args.count, "--count")?;
                positive(args.rate.unwrap_or(1), "--rate")?;
                positive(args.batch.unwrap_or(1), "--batch")?;
                positive(args.producers.unwrap_or(1) as u64, "--producers")?;
                size_ok(args.size)
            }
            Scenario::Refresh(args) => {
                positive(args.count, "--count")?;
                positive(args.inject_batch, "--inject-batch")?;
                size_ok(args.size)
            }
            Scenario::Fanout(args) => {
                if !(1..=MAX_FANOUT_CONSUMERS).contains(&args.consumers) {
                    return Err(format!("--consumers must be 1 to {MAX_FANOUT_CONSUMERS}"));
                }
                positive(args.count, "--count")?;
                positive(args.inject_batch, "--inject-batch")?;
                size_ok(args.size)
            }
            Scenario::Idle(args) => positive(args.topics as u64, "--topics"),
            Scenario::Compact(args) => {
                positive(args.updates, "--updates")?;
                positive(args.keys, "--keys")?;
                positive(args.batch, "--batch")?;
                positive(args.producers as u64, "--producers")?;
                if args.keys > args.updates {
                    return Err("--keys must be at most --updates (every key gets a value)".to_string());
                }
                if !(0.0..=1.0).contains(&args.delete_share) {
                    return Err("--delete-share must be 0 to 1".to_string());
                }
                if args.segment_bytes < 4096 {
                    return Err("--segment-bytes must be at least 4096".to_string());
                }
                // A value starts with its update's number, which the check of the copy reads back.
                (24..=MAX_VALUE_SIZE)
                    .contains(&args.value_bytes)
                    .then_some(())
                    .ok_or(format!("--value-bytes must be 24 to {MAX_VALUE_SIZE}"))
            }
        }
    }

    /// The scenario's name as typed on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Storage(_) => "storage",
            Scenario::Hop(_) => "hop",
            Scenario::Tree(_) => "tree",
            Scenario::Refresh(_) => "refresh",
            Scenario::Fanout(_) => "fanout",
            Scenario::Idle(_) => "idle",
            Scenario::Compact(_) => "compact",
        }
    }
}

/// Options of the `storage` scenario.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Records appended per case at most.
    #[arg(long, default_value_t = 2_000_000)]
    pub count: u64,
    /// Longest time one append case may run; a case stops at --count or here, whichever comes first.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Value sizes to append, in bytes (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![100usize, 1024], value_parser = parse_size_usize)]
    pub sizes: Vec<usize>,
    /// Records per append call.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Segment size; smaller segments seal sooner, giving the read case more sealed segments.
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    pub segment_bytes: u64,
}

/// Options of the `hop` scenario.
#[derive(Debug, Clone, Args)]
pub struct HopArgs {
    /// Records relayed.
    #[arg(long, default_value_t = 1_000_000)]
    pub count: u64,
    /// Value size of each record, in bytes.
    #[arg(long, default_value = "1024", value_parser = parse_size_usize)]
    pub size: usize,
    /// Records per `/test/inject-messages` request.
    #[arg(long, default_value_t = 100_000)]
    pub inject_batch: u64,
    /// Start the child first and inject while it is connected (ROOT's ingest then shares the CPU), instead
    /// of loading ROOT first and timing the child's catch-up.
    #[arg(long, default_value_t = false)]
    pub live: bool,
}

/// How producers put records into ROOT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProducerKind {
    /// `POST /test/inject-messages` with a count: ROOT generates the records (highest throughput).
    Inject,
    /// `POST /api/v1/topics/{topic}/messages` with JSON arrays, like a real producer; each record carries a
    /// `bench_ts_us` header with its publish time in microseconds.
    Http,
    /// PUBLISH frames on ROOT's consumer port through `client::Producer` (the binary path: no JSON, several
    /// publishes in flight per connection), with the same records and header as `http`.
    Tcp,
}

/// Options of the `tree` scenario.
#[derive(Debug, Clone, Args)]
pub struct TreeArgs {
    /// Records to publish at most.
    #[arg(long, default_value_t = 1_000_000)]
    pub count: u64,
    /// Longest time to publish; publishing stops at --count or here, whichever comes first.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Value size of each record, in bytes.
    #[arg(long, default_value = "1024", value_parser = parse_size_usize)]
    pub size: usize,
    /// Publish at this many records per second (open loop, for latency); without it, as fast as possible.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Records per publish request (default: 10,000 injected, 100 JSON or PUBLISH, 1 with --rate).
    #[arg(long)]
    pub batch: Option<u64>,
    /// Concurrent producer tasks (TCP: connections, each with 64 publishes in flight) as fast as possible
    /// (default 4), or most requests in flight with --rate (default 64).
    #[arg(long)]
    pub producers: Option<usize>,
    /// How records are published; the default is `http` with --rate and `inject` without.
    #[arg(long, value_enum)]
    pub producer: Option<ProducerKind>,
    /// Find parents through a registry (started by the run) instead of fixed `--parent-url`s.
    #[arg(long, default_value_t = false)]
    pub registry: bool,
}

/// Options of the `refresh` scenario.
#[derive(Debug, Clone, Args)]
pub struct RefreshArgs {
    /// Records in the topic.
    #[arg(long, default_value_t = 1_000_000)]
    pub count: u64,
    /// Value size of each record, in bytes.
    #[arg(long, default_value = "1024", value_parser = parse_size_usize)]
    pub size: usize,
    /// Records per `/test/inject-messages` request while loading ROOT.
    #[arg(long, default_value_t = 100_000)]
    pub inject_batch: u64,
}

/// Options of the `fanout` scenario.
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// TCP consumers connected to the broker.
    #[arg(long, default_value_t = 1000)]
    pub consumers: usize,
    /// Records published while they are connected; every consumer receives each one.
    #[arg(long, default_value_t = 2_000)]
    pub count: u64,
    /// Value size of each record, in bytes.
    #[arg(long, default_value = "256", value_parser = parse_size_usize)]
    pub size: usize,
    /// Records per `/test/inject-messages` request; requests are spread over the run.
    #[arg(long, default_value_t = 100)]
    pub inject_batch: u64,
}

/// Options of the `idle` scenario.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Topics created at ROOT and relayed down to LOCAL.
    #[arg(long, default_value_t = 10)]
    pub topics: usize,
    /// Records per topic.
    #[arg(long, default_value_t = 100)]
    pub records: u64,
    /// How long the tree idles before memory is read.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub settle: Duration,
}

/// Options of the `compact` scenario.
#[derive(Debug, Clone, Args)]
pub struct CompactArgs {
    /// Updates published (records with a value), spread evenly over the keys.
    #[arg(long, default_value_t = 1_000_000)]
    pub updates: u64,
    /// Distinct keys updated.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Value size of each update, in bytes.
    #[arg(long, default_value = "1024", value_parser = parse_size_usize)]
    pub value_bytes: usize,
    /// Share of the keys deleted by a tombstone after the updates (0 to 1).
    #[arg(long, default_value_t = 0.1)]
    pub delete_share: f64,
    /// ROOT's `--segment-bytes`: compaction never touches the active segment, so small segments leave
    /// nearly all the data sealed and compacted.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub segment_bytes: u64,
    /// ROOT's `--compaction-interval` for the measuring passes.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub compaction_interval: Duration,
    /// Records per PUBLISH frame.
    #[arg(long, default_value_t = 100)]
    pub batch: u64,
    /// Producer connections publishing at once (each with 64 frames in flight).
    #[arg(long, default_value_t = 2)]
    pub producers: usize,
    /// Compact while publishing (ROOT starts with compaction on; passes share the cores with the producers
    /// and the ingest) instead of publishing first and restarting ROOT for the measuring passes.
    #[arg(long, default_value_t = false)]
    pub live: bool,
}

pub use service::units::{parse_duration, parse_size};

/// [`parse_size`] for sizes held in a `usize`.
fn parse_size_usize(text: &str) -> Result<usize, String> {
    let size = parse_size(text)?;
    usize::try_from(size).map_err(|_| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1KiB").unwrap(), 1024);
        assert!(parse_size("1X").is_err());
        assert!(parse_size("").is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5").is_err());
    }

    #[test]
    fn command_lines_parse() {
        let cli = Cli::try_parse_from([
            "relay-bench",
            "tree",
            "--rate",
            "5000",
            "--size",
            "1K",
            "--bin-dir",
            "target/debug",
            "--broker-arg=--batch-max-records=500",
        ])
        .unwrap();
        let Scenario::Tree(tree) = &cli.scenario else { panic!("not tree: {:?}", cli.scenario) };
        assert_eq!(tree.rate, Some(5000));
        assert_eq!(tree.size, 1024);
        assert_eq!(cli.common.bin_dir, PathBuf::from("target/debug"));
        assert_eq!(cli.common.broker_args, vec!["--batch-max-records=500".to_string()]);
        assert_eq!(cli.common.flush, FlushArg::Always);

        let cli = Cli::try_parse_from(["relay-bench", "storage", "--sizes", "100,1K"]).unwrap();
        let Scenario::Storage(storage) = &cli.scenario else { panic!("not storage") };
        assert_eq!(storage.sizes, vec![100, 1024]);
        assert!(Cli::try_parse_from(["relay-bench", "nothing"]).is_err());
        cli.scenario.validate().unwrap();
    }

    #[test]
    fn impossible_values_are_refused() {
        for line in [
            &["relay-bench", "tree", "--rate", "0"][..],
            &["relay-bench", "tree", "--size", "2M"],
            &["relay-bench", "fanout", "--consumers", "0"],
            &["relay-bench", "storage", "--batch", "0"],
            &["relay-bench", "hop", "--count", "0"],
            &["relay-bench", "idle", "--topics", "0"],
            &["relay-bench", "compact", "--keys", "0"],
            &["relay-bench", "compact", "--delete-share", "1.5"],
            &["relay-bench", "compact", "--updates", "10", "--keys", "20"],
        ] {
            let cli = Cli::try_parse_from(line).unwrap();
            let message = cli.scenario.validate().unwrap_err();
            assert!(message.starts_with("--") && !message.contains('\n'), "{line:?}: {message}");
        }
    }
}
