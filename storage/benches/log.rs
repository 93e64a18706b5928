//! Micro-benchmarks of the storage hot paths: appending batches of 100 records (100 B and 1 KiB, encoded
//! size) with `FlushPolicy::Always` and `Never`, sequential reads of a sealed segment, and random lookups
//! in sealed segments. Run with `cargo bench -p storage --bench log`; the whole run takes about two
//! minutes. Appends keep the data set bounded with retention (outside the timed part), so the figures are
//! those of a steady state with the data in the page cache.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use protocol::{NewRecord, TopicUid};
use rand::{Rng, SeedableRng};
use storage::{FlushPolicy, Log, LogConfig, Store};

/// Records per append, as the targets specify.
const BATCH: usize = 100;
/// Key length of every benchmark record.
const KEY_LEN: usize = 8;
/// Fixed header of a record (see `protocol::record`).
const HEADER_LEN: usize = 29;

/// Prints what the figures were measured on.
fn print_machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| info.lines().find(|line| line.starts_with("model name")).map(str::to_string))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {} | {cores} cores | Linux {}", cpu.trim(), kernel.trim());
}

/// A store in a fresh temporary directory.
fn store(config: LogConfig) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(dir.path(), config).expect("open store");
    (dir, store)
}

/// The value of a record whose encoded size is `record_len`.
fn value(record_len: usize) -> Vec<u8> {
    vec![0x5a; record_len - HEADER_LEN - KEY_LEN]
}

/// Appends batches of `record_len`-byte records under `policy` for one benchmark.
fn bench_append(c: &mut Criterion, group_name: &str, bytes: bool) {
    let mut group = c.benchmark_group(group_name);
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    for record_len in [100usize, 1024] {
        for (policy_name, policy) in [("never", FlushPolicy::Never), ("always", FlushPolicy::Always)] {
            let config = LogConfig {
                segment_bytes: 128 << 20,
                retention_bytes: Some(256 << 20),
                flush: policy,
                ..LogConfig::default()
            };
            let (_dir, store) = store(config);
            let log = store.create_topic("bench", TopicUid(1), 0).expect("create topic");
            let value = value(record_len);
            let key = [7u8; KEY_LEN];
            let batch: Vec<_> = (0..BATCH).map(|_| NewRecord::new(&key, &value)).collect();
            group.throughput(if bytes {
                Throughput::Bytes((BATCH * record_len) as u64)
            } else {
                Throughput::Elements(BATCH as u64)
            });
            let id = BenchmarkId::new(format!("{record_len}B"), policy_name);
            group.bench_function(id, |bencher| {
                bencher.iter_custom(|iterations| {
                    let mut elapsed = Duration::ZERO;
                    for i in 0..iterations {
                        let start = Instant::now();
                        black_box(log.append(&batch).expect("append"));
                        elapsed += start.elapsed();
                        if i % 4096 == 4095 {
                            store.enforce_retention().expect("retention");
                        }
                    }
                    elapsed
                });
            });
        }
    }
    group.finish();
}

fn append_records(c: &mut Criterion) {
    print_machine();
    bench_append(c, "append_records", false);
}

fn append_bytes(c: &mut Criterion) {
    bench_append(c, "append_bytes", true);
}

/// A log of 100-byte records whose first segment (64 MiB) is sealed; returns it and that segment's range.
fn sealed_log() -> (tempfile::TempDir, Store, Arc<Log>, u64, u64) {
    let config = LogConfig { segment_bytes: 64 << 20, flush: FlushPolicy::Never, ..LogConfig::default() };
    let (dir, store) = store(config);
    let log = store.create_topic("bench", TopicUid(1), 0).expect("create topic");
    let value = value(100);
    let key = [7u8; KEY_LEN];
    let batch: Vec<_> = (0..BATCH).map(|_| NewRecord::new(&key, &value)).collect();
    while log.segments().len() < 2 {
        log.append(&batch).expect("append");
    }
    let first = log.segments()[0].clone();
    let last_offset = first.last_offset.expect("sealed segment holds records");
    (dir, store, log, first.base_offset, last_offset + 1)
}

fn sequential_read(c: &mut Criterion) {
    let (_dir, _store, log, start, end) = sealed_log();
    let mut group = c.benchmark_group("read");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(end - start));
    group.bench_function("sequential_sealed_100B", |bencher| {
        bencher.iter(|| {
            let mut next = start;
            let mut n_bytes = 0;
            while next < end {
                let chunk = log.read(next, 10_000, 1 << 20).expect("read");
                n_bytes += chunk.records.len();
                next = chunk.next_offset;
            }
            black_box(n_bytes)
        });
    });
    group.finish();
}

fn random_lookup(c: &mut Criterion) {
    let (_dir, _store, log, start, end) = sealed_log();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let offsets: Vec<u64> = (0..1 << 16).map(|_| rng.random_range(start..end)).collect();
    let mut group = c.benchmark_group("lookup");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    group.bench_function("random_sealed_one_record", |bencher| {
        let mut i = 0;
        bencher.iter(|| {
            i = (i + 1) % offsets.len();
            black_box(log.read(offsets[i], 1, 1).expect("read").next_offset)
        });
    });
    group.finish();
}

criterion_group!(benches, append_records, append_bytes, sequential_read, random_lookup);
criterion_main!(benches);
