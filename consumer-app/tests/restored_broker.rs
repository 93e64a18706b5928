//! A consumer-app whose broker comes back with less than the app holds (its data directory restored from an
//! older copy) is not stranded: it waits at its own position while the broker refetches the missing range
//! from its parent, then goes on, and its copy ends with every offset once, in order. An app holding records
//! that ROOT lost (ROOT began a new epoch where its log was cut) is refreshed to ROOT's history instead.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{AppProcess, POLL, WAIT, start_broker};
use testkit::{Config, Level, TestBroker};

/// Copies a directory tree, as a backup of a stopped broker would.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            // A SQLite companion file (-wal, -shm) may go away as the stopped broker's last handle closes.
            match std::fs::copy(entry.path(), &target) {
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => panic!("cannot copy {}: {error}", entry.path().display()),
            }
        }
    }
}

/// The L2's settings: a child of ROOT at `parent`, on the consumer address `consumers` once that is known.
fn l2_config(
    parent: std::net::SocketAddr,
    consumers: Option<std::net::SocketAddr>,
) -> impl FnOnce(&mut Config) {
    move |config: &mut Config| {
        config.level = Level::L2;
        config.node_id = "l2".to_string();
        config.parent_url = Some(parent.to_string());
        config.pipe_heartbeat = Duration::from_millis(200);
        config.batch_max_records = 2000;
        if let Some(consumers) = consumers {
            config.consumer_addr = consumers;
        }
    }
}

/// Waits until the L2 holds `end` records of `topic`.
async fn wait_held(l2: &TestBroker, topic: &str, end: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while l2.node.store.topic(topic).is_none_or(|log| log.next_offset() < end) {
        assert!(tokio::time::Instant::now() < deadline, "the L2 never held {end} records of {topic}");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restored_from_an_older_copy_makes_its_consumer_wait_not_strand() {
    let root = start_broker().await;
    let l2_dir = Arc::new(tempfile::tempdir().unwrap());
    let l2 = TestBroker::start_in(Arc::clone(&l2_dir), l2_config(root.http, None)).await;
    let consumers = l2.consumers;
    root.inject("prices", 2_000, 100).await;
    wait_held(&l2, "prices", 2_000).await;

    // A backup of the L2 at 2,000 records, taken while it is stopped.
    let l2_dir = l2.stop().await;
    let backup = tempfile::tempdir().unwrap();
    copy_dir(&l2_dir.path().join("data"), backup.path());
    let l2 = TestBroker::start_in(Arc::clone(&l2_dir), l2_config(root.http, Some(consumers))).await;

    let app_dir = tempfile::tempdir().unwrap();
    let app = AppProcess::start(consumers, app_dir.path(), &[("CONSUMER_TOPICS", "prices")]).await;
    root.inject("prices", 3_000, 100).await;
    app.wait_for_position("prices", 5_000).await;

    // The L2's data directory is restored from the backup: it holds 2,000 records, the app 5,000. ROOT is
    // down while the L2 comes back, so the L2 cannot refetch before the app reconnects to it.
    let mut root_config = root.node.config.clone();
    root_config.http_addr = root.http;
    root_config.consumer_addr = root.consumers;
    let root_dir = root.stop().await;
    let l2_dir = l2.stop().await;
    std::fs::remove_dir_all(l2_dir.path().join("data")).unwrap();
    copy_dir(backup.path(), &l2_dir.path().join("data"));
    let l2 =
        TestBroker::start_in(Arc::clone(&l2_dir), l2_config(root_config.http_addr, Some(consumers))).await;
    app.wait_for("/api/v1/stats", "the app connected to the restored L2", |stats| {
        stats["connection"]["connected"] == true
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let root = TestBroker::start_in(root_dir, |config| *config = root_config).await;
    root.inject("prices", 1_000, 100).await;
    wait_held(&l2, "prices", 6_000).await;
    app.wait_for_position("prices", 6_000).await;
    let (_, stats) = app.get("/api/v1/stats").await;
    assert_eq!(stats["recent_refreshes"].as_array().map(Vec::len), Some(0), "the app was refreshed: {stats}");

    app.stop().await;
    common::check_copy(app_dir.path(), "prices", 6_000);
    l2.stop().await;
    root.stop().await;
}

/// Every record of `topic` in `log`, as stored.
fn all_bytes(log: &storage::Log) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut next = log.log_start();
    while next < log.next_offset() {
        let chunk = log.read(next, 10_000, 8 * 1024 * 1024).unwrap();
        assert!(chunk.n_records > 0);
        next += chunk.n_records;
        bytes.extend_from_slice(&chunk.records);
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_holding_records_root_lost_is_refreshed_to_roots_new_epoch() {
    let root = start_broker().await;
    let app_dir = tempfile::tempdir().unwrap();
    let app = AppProcess::start(root.consumers, app_dir.path(), &[("CONSUMER_TOPICS", "prices")]).await;
    root.inject("prices", 2_000, 100).await;
    app.wait_for_position("prices", 2_000).await;

    // ROOT stops, and a byte of its active segment (every record is in it) is flipped: recovery cuts the
    // log at the damaged record, and ROOT begins epoch 1 there.
    let mut root_config = root.node.config.clone();
    root_config.http_addr = root.http;
    root_config.consumer_addr = root.consumers;
    let segment = root.node.store.topic("prices").unwrap().segments().last().unwrap().path.clone();
    let root_dir = root.stop().await;
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&segment).unwrap();
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, 130_000).unwrap();
        file.write_all_at(&[byte[0] ^ 0x5a], 130_000).unwrap();
    }
    let root = TestBroker::start_in(root_dir, |config| *config = root_config).await;
    let log = root.node.store.topic("prices").unwrap();
    let cut = log.next_offset();
    assert!(cut < 2_000, "recovery kept the damaged record");
    assert_eq!(log.epochs().last().map(|epoch| (epoch.epoch, epoch.start_offset)), Some((1, cut)));

    // The lost offsets go to new records; the app must hold ROOT's, not its old ones.
    root.inject("prices", 3_000, 100).await;
    app.wait_for("/api/v1/stats", "the app was refreshed", |stats| {
        stats["recent_refreshes"].as_array().is_some_and(|refreshes| !refreshes.is_empty())
    })
    .await;
    app.wait_for_position("prices", cut + 3_000).await;
    let expected = all_bytes(&log);
    app.stop().await;
    common::check_copy(app_dir.path(), "prices", cut + 3_000);
    let store =
        storage::Store::open(consumer_app::copy::store_dir(app_dir.path()), common::log_config()).unwrap();
    let copy = store.topic("prices").unwrap();
    assert!(all_bytes(&copy) == expected, "the app's copy differs from ROOT's");
    assert_eq!(copy.epochs(), log.epochs());
    root.stop().await;
}
