//! A child whose disk fills up pauses its pipe (it probes its disk at a growing interval, no reconnect storm,
//! the parent is not asked to resend what the child cannot store), stays responsive, and resumes by itself
//! when space returns, ending with a copy identical to ROOT's. The child's data directory is a small tmpfs
//! filled with a file; mounting needs root, which the project's machines and CI have.

mod tree;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tree::{Tree, wait_until};

/// A tmpfs mounted for the life of the value.
struct Tmpfs {
    /// The mount point.
    path: PathBuf,
    /// The directory holding the mount point.
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it), or `None` where mounting is not allowed.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .ok()?;
        status.success().then_some(Tmpfs { path, _dir: dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes a file of zeros into `dir` until the disk is full; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    for _ in 0..1_000_000 {
        if file.write_all(&chunk).is_err() {
            break;
        }
    }
    path
}

/// A counter's value in a Prometheus text page.
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_the_pipe_and_it_resumes_when_space_returns() {
    let Some(disk) = Tmpfs::mount("32m") else {
        eprintln!("skipped: this machine does not allow mounting a tmpfs (root is needed)");
        return;
    };
    let mut tree = Tree::new();
    tree.add("root", "root", &[]);
    tree.start("root").await;
    let root_url = format!("http://{}", tree.http_of("root"));
    tree.add("l2", "l2", &["--parent-url", &root_url]);
    tree.nodes.get_mut("l2").unwrap().data_dir = disk.path.join("l2");
    tree.start("l2").await;

    let first = tree.inject("root", "catalog", 2_000, 1_000).await;
    let uid = first["uid"].as_str().unwrap().to_string();
    tree.wait_copy("l2", "catalog", &uid, 2_000).await;

    // The disk is full: the L2's active segment (8 MiB, allocated) takes a few thousand more records, then
    // the next segment cannot be allocated.
    let filler = fill(&disk.path);
    tree.inject("root", "catalog", 20_000, 1_000).await;
    wait_until("the L2 pauses its pipe", || async { tree.log_of("l2").contains("the copy cannot store") })
        .await;
    let metrics_url = format!("http://{}/metrics", tree.http_of("l2"));
    let metrics = tree.http.get(&metrics_url).send().await.unwrap().text().await.unwrap();
    let reconnects = counter(&metrics, "relay_pipe_reconnects_total");
    let received = counter(&metrics, "relay_pipe_records_received_total");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = tree.http.get(&metrics_url).send().await.unwrap().text().await.unwrap();
    let (reconnects_after, received_after) = (
        counter(&metrics, "relay_pipe_reconnects_total"),
        counter(&metrics, "relay_pipe_records_received_total"),
    );
    println!(
        "while the disk was full, 3 s: {} reconnects, {} records resent",
        reconnects_after - reconnects,
        received_after - received
    );
    assert!(reconnects_after - reconnects <= 1.0, "the pipe reconnects while the disk is full:\n{metrics}");
    assert!(received_after - received <= 2_000.0, "the parent keeps resending what cannot be stored");
    // It stays responsive, and its copy so far is a valid prefix of ROOT's.
    let health = tree.http.get(format!("http://{}/health", tree.http_of("l2"))).send().await.unwrap();
    assert_eq!(health.status(), 200);

    std::fs::remove_file(filler).unwrap();
    tree.wait_copy("l2", "catalog", &uid, 22_000).await;
    let reference = tree.range("root", "catalog").await;
    tree.assert_same_copy("l2", "catalog", &reference).await;
    let log = tree.log_of("l2");
    assert!(log.contains("the copy can store again; resuming"), "{log}");
    assert_eq!(log.matches("the copy cannot store").count(), 1, "one line per pause:\n{log}");
    tree.assert_all_running();
}
