//! Smoke tests of `relay-bench` as a user runs it: the in-process `storage` scenario and short runs of
//! `fanout`, `refresh`, `hop`, `tree` and `compact` against the real `broker`, `consumer-app` and
//! `registry` binaries of this workspace (built here with the same profile if needed), each checked through the `report.json`
//! it writes, plus a run interrupted with SIGINT that must leave no process behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `relay-bench` binary under test.
const BENCH: &str = env!("CARGO_BIN_EXE_relay-bench");

/// The relay binaries the process scenarios start.
const RELAY_BINARIES: [&str; 3] = ["broker", "consumer-app", "registry"];

/// The directory holding the relay binaries: `RELAY_BENCH_BIN_DIR` if set, otherwise the directory of
/// `relay-bench` itself, where the binaries that are missing are built first with the same profile.
/// Binaries already there are used as they are: rebuilding one could replace it while another package's
/// tests are running it.
fn relay_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("RELAY_BENCH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let dir = Path::new(BENCH).parent().expect("relay-bench has a directory").to_path_buf();
    let missing: Vec<&str> =
        RELAY_BINARIES.into_iter().filter(|binary| !dir.join(binary).is_file()).collect();
    if !missing.is_empty() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root");
        let mut build = Command::new(env!("CARGO"));
        build.current_dir(workspace).arg("build");
        for package in &missing {
            build.args(["-p", package, "--bin", package]);
        }
        if dir.file_name().is_some_and(|name| name == "release") {
            build.arg("--release");
        }
        let output = build.output().expect("cargo runs");
        assert!(
            output.status.success(),
            "building {missing:?} for the process scenarios failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for binary in RELAY_BINARIES {
        assert!(dir.join(binary).is_file(), "{} is missing after the build", dir.join(binary).display());
    }
    dir
}

/// Runs `relay-bench` with `args` (plus `--out`, `--quiet` and `--bin-dir`) and a time limit.
fn bench(out: &Path, bin_dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(BENCH);
    command.args(args).arg("--out").arg(out).arg("--bin-dir").arg(bin_dir).args([
        "--quiet",
        "--timeout",
        "3m",
    ]);
    let output = command.output().expect("relay-bench runs");
    assert!(
        output.status.success(),
        "relay-bench {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The one run folder of `scenario` under `out` and its parsed `report.json`.
fn report(out: &Path, scenario: &str) -> (PathBuf, Value) {
    let runs: Vec<PathBuf> = std::fs::read_dir(out)
        .expect("the results folder exists")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with(scenario)))
        .collect();
    assert_eq!(runs.len(), 1, "one {scenario} run folder in {}: {runs:?}", out.display());
    let text = std::fs::read_to_string(runs[0].join("report.json")).expect("report.json is written");
    (runs[0].clone(), serde_json::from_str(&text).expect("report.json is JSON"))
}

/// The value of the figure whose name starts with `prefix`.
fn figure(report: &Value, prefix: &str) -> f64 {
    let figures = report["figures"].as_array().expect("figures");
    let found = figures
        .iter()
        .find(|figure| figure["name"].as_str().is_some_and(|name| name.starts_with(prefix)))
        .unwrap_or_else(|| panic!("no figure {prefix:?} in {figures:#?}"));
    found["value"].as_f64().expect("a numeric value")
}

/// Checks what every report has: the machine, figures with units, and the plot.
fn check_common(run_dir: &Path, report: &Value, scenario: &str) {
    assert_eq!(report["scenario"], scenario);
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(!report["machine"]["cpu_model"].as_str().unwrap().is_empty());
    assert!(report["machine"]["memory_bytes"].as_u64().unwrap() > 0);
    for figure in report["figures"].as_array().unwrap() {
        assert!(figure["name"].is_string() && figure["unit"].is_string() && figure["value"].is_number());
    }
    let svg = std::fs::read_to_string(run_dir.join("plot.svg")).expect("plot.svg is written");
    assert!(svg.starts_with("<svg") && (svg.contains("polyline") || svg.contains("circle")));
    assert!(!run_dir.join("data").exists(), "data is removed without --keep");
}

/// Whether process `pid` still exists (a zombie counts as gone).
fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Waits until none of `pids` exists.
fn assert_all_gone(pids: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while pids.iter().any(|pid| alive(*pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<u64> = pids.iter().copied().filter(|pid| alive(*pid)).collect();
    assert!(left.is_empty(), "processes left running: {left:?}");
}

/// The PIDs of every process in the report but the bench itself.
fn child_pids(report: &Value) -> Vec<u64> {
    report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|process| process["name"] != "relay-bench")
        .map(|process| process["pid"].as_u64().unwrap())
        .collect()
}

#[test]
fn storage_scenario_reports_appends_reads_and_latency() {
    let out = tempfile::tempdir().unwrap();
    let output = bench(
        out.path(),
        Path::new("unused"),
        &["storage", "--count", "3000", "--duration", "5s", "--sizes", "100,1K", "--segment-bytes", "64K"],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("append 100 B, no flush") && stdout.contains("machine:"), "{stdout}");
    let (run_dir, report) = report(out.path(), "storage");
    check_common(&run_dir, &report, "storage");
    for prefix in [
        "append 100 B, no flush: records/s",
        "append 100 B, flush: records/s",
        "append 1024 B, no flush: MB/s",
        "append 1024 B, flush: MB/s",
        "read 100 B sealed: records/s",
        "read + CRC check 1024 B sealed: records/s",
    ] {
        assert!(figure(&report, prefix) > 0.0, "{prefix}");
    }
    let latencies = report["latencies"].as_array().unwrap();
    assert_eq!(latencies.len(), 4);
    for latency in latencies {
        assert_eq!(latency["count"].as_u64().unwrap(), 30, "3000 records in batches of 100");
        let p50 = latency["p50_us"].as_u64().unwrap();
        let p99 = latency["p99_us"].as_u64().unwrap();
        assert!(p50 >= 1 && p50 <= p99 && p99 <= latency["max_us"].as_u64().unwrap());
        assert!(latency["p90_us"].is_u64() && latency["p999_us"].is_u64());
    }
    let with_target =
        report["figures"].as_array().unwrap().iter().filter(|figure| figure["target"].is_object());
    assert!(with_target.count() >= 3);
}

#[test]
fn fanout_and_refresh_drive_the_real_binaries_and_stop_them() {
    let bin_dir = relay_bin_dir();
    let out = tempfile::tempdir().unwrap();
    bench(out.path(), &bin_dir, &["fanout", "--consumers", "20", "--count", "300", "--inject-batch", "50"]);
    let (run_dir, fanout) = report(out.path(), "fanout");
    check_common(&run_dir, &fanout, "fanout");
    assert_eq!(figure(&fanout, "consumers connected"), 20.0);
    assert_eq!(figure(&fanout, "consumers that received every record"), 20.0);
    assert!(figure(&fanout, "deliveries") > 0.0);
    assert_eq!(fanout["latencies"][0]["count"].as_u64().unwrap(), 20 * 300);
    assert!(run_dir.join("logs").join("root.log").is_file());
    let pids = child_pids(&fanout);
    assert_eq!(pids.len(), 1, "{:#?}", fanout["processes"]);
    assert_all_gone(&pids);

    bench(out.path(), &bin_dir, &["refresh", "--count", "3000", "--size", "1K", "--inject-batch", "1000"]);
    let (run_dir, refresh) = report(out.path(), "refresh");
    check_common(&run_dir, &refresh, "refresh");
    assert!(figure(&refresh, "full refresh into the consumer-app") > 0.0);
    assert!(figure(&refresh, "initial catch-up into the consumer-app") > 0.0);
    let names: Vec<&str> =
        refresh["processes"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, vec!["root", "consumer-app", "relay-bench"]);
    for process in refresh["processes"].as_array().unwrap() {
        assert!(process["cpu_seconds"].as_f64().unwrap() >= 0.0);
        assert!(process["peak_rss_mib"].as_f64().unwrap() > 0.0);
    }
    assert_all_gone(&child_pids(&refresh));
}

#[test]
fn hop_and_tree_relay_through_the_pipe() {
    let bin_dir = relay_bin_dir();
    let out = tempfile::tempdir().unwrap();
    // Enough records that the child's CPU time spans several of the kernel's 10 ms accounting ticks.
    bench(out.path(), &bin_dir, &["hop", "--count", "30000", "--size", "1K", "--inject-batch", "1000"]);
    let (run_dir, hop) = report(out.path(), "hop");
    check_common(&run_dir, &hop, "hop");
    assert!(figure(&hop, "pipe, one hop: records/s") > 0.0);
    assert!(figure(&hop, "pipe, one hop") > 0.0);
    assert!(figure(&hop, "child CPU per relayed record") > 0.0);
    let names: Vec<&str> =
        hop["processes"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, vec!["root", "l2", "relay-bench"]);
    assert_all_gone(&child_pids(&hop));

    bench(out.path(), &bin_dir, &["tree", "--rate", "500", "--duration", "2s", "--size", "256"]);
    let (run_dir, tree) = report(out.path(), "tree");
    check_common(&run_dir, &tree, "tree");
    assert!(figure(&tree, "end to end, stored in the consumer-app") > 0.0);
    assert_eq!(figure(&tree, "records missing at the measuring consumer"), 0.0);
    assert_eq!(figure(&tree, "records duplicated at the measuring consumer"), 0.0);
    let hops: Vec<&str> =
        tree["hops"].as_array().unwrap().iter().filter_map(|hop| hop["hop"].as_str()).collect();
    assert_eq!(hops, vec!["ROOT -> L2", "L2 -> L3", "L3 -> POS", "POS -> LOCAL", "LOCAL -> consumer-app"]);
    let latencies = tree["latencies"].as_array().unwrap();
    let names: Vec<&str> = latencies.iter().filter_map(|latency| latency["name"].as_str()).collect();
    assert_eq!(names, vec!["publish -> stored", "publish -> delivered", "ROOT append -> delivered"]);
    assert_eq!(figure(&tree, "requested rate"), 500.0);
    let published = figure(&tree, "records published") as u64;
    assert!((900..=1000).contains(&published), "about 500 records/s for 2 s: {published}");
    for latency in latencies {
        assert_eq!(latency["count"].as_u64().unwrap(), published, "every record measured once");
        assert!(!latency["series"].as_array().unwrap().is_empty());
        assert!(latency["curve"].as_array().unwrap().len() >= 2);
    }
    assert_all_gone(&child_pids(&tree));
}

#[test]
fn compact_compacts_and_a_new_consumer_app_copies_little_more_than_the_live_keys() {
    let bin_dir = relay_bin_dir();
    let out = tempfile::tempdir().unwrap();
    let output = bench(
        out.path(),
        &bin_dir,
        &["compact", "--updates", "20000", "--keys", "200", "--value-bytes", "1K", "--segment-bytes", "64K"],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("compaction rate") && stdout.contains("full copy"), "{stdout}");
    let (run_dir, compact) = report(out.path(), "compact");
    check_common(&run_dir, &compact, "compact");
    assert_eq!(figure(&compact, "records published"), 20_020.0, "20,000 updates and 20 tombstones");
    assert!(figure(&compact, "compaction passes") >= 1.0);
    assert!(figure(&compact, "compaction rate (") > 0.0);
    // 20,000 updates of 200 keys: all but the latest of each key, less what the active segment holds.
    let removed = figure(&compact, "compaction: records removed");
    assert!((15_000.0..=20_020.0).contains(&removed), "records removed: {removed}");
    let before = figure(&compact, "log size before compaction");
    let after = figure(&compact, "log size after compaction");
    assert!(after > 0.0 && after < before / 10.0, "log size {before} MB -> {after} MB");
    assert_eq!(figure(&compact, "live keys"), 180.0);
    // Every key of the new copy was checked against the model (the scenario fails on a mismatch).
    assert_eq!(figure(&compact, "keys checked in the new copy"), 200.0);
    let received = figure(&compact, "full copy: bytes received (consumer_app_bytes_received_total)");
    let held_bytes = figure(&compact, "full copy: bytes held by the consumer-app");
    assert_eq!(received, held_bytes, "the consumer-app counts every byte of a compacted range it stores");
    let ratio = figure(&compact, "full copy: bytes moved / live keys' latest records");
    assert!((0.9..3.0).contains(&ratio), "bytes moved / live keys' latest records: {ratio}");
    let held = figure(&compact, "full copy: bytes held by the consumer-app");
    let moved = figure(&compact, "full copy: bytes moved (sent by ROOT)");
    assert!(held > 0.0 && held <= moved, "the copy holds {held} MB of the {moved} MB ROOT sent");
    let names: Vec<&str> =
        compact["processes"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, vec!["root", "consumer-app", "relay-bench"]);
    assert_all_gone(&child_pids(&compact));
}

#[test]
fn an_interrupted_run_stops_every_process_it_started() {
    let bin_dir = relay_bin_dir();
    let out = tempfile::tempdir().unwrap();
    let mut child = Command::new(BENCH)
        .args(["fanout", "--consumers", "5", "--count", "1000000", "--inject-batch", "10", "--quiet"])
        .arg("--out")
        .arg(out.path())
        .arg("--bin-dir")
        .arg(&bin_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The broker is running once its log names its addresses; its PID is a child of the bench.
    let deadline = Instant::now() + Duration::from_secs(60);
    let children_path = format!("/proc/{0}/task/{0}/children", child.id());
    let mut broker_pids: Vec<u64> = Vec::new();
    while broker_pids.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let started = std::fs::read_dir(out.path()).into_iter().flatten().flatten().any(|run| {
            std::fs::read_to_string(run.path().join("logs/root.log"))
                .is_ok_and(|log| log.contains("broker started"))
        });
        if started {
            let children = std::fs::read_to_string(&children_path).unwrap_or_default();
            broker_pids = children.split_whitespace().filter_map(|pid| pid.parse().ok()).collect();
        }
    }
    assert!(!broker_pids.is_empty(), "the broker did not start within a minute");
    // SAFETY: kill only sends a signal to the bench process this test started and has not waited for.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "relay-bench did not stop within 30 s of SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "an interrupted run fails");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_all_gone(&broker_pids);
}
