//! The real `registry` binary as a process: it serves, passes its own healthcheck, exits 0 on SIGTERM, and a
//! bad flag makes it exit non-zero with one readable line.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{ProcessGuard, listening_address};

const BINARY: &str = env!("CARGO_BIN_EXE_registry");
const DEADLINE: Duration = Duration::from_secs(20);

fn wait_for_exit(child: &mut Child) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(started.elapsed() < DEADLINE, "the registry did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_binary_serves_passes_its_healthcheck_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0", "--log-json", "--db"])
        .arg(dir.path().join("data/registry.sqlite"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the registry");
    let mut guard = ProcessGuard(child);
    let address = listening_address(&mut guard.0);

    let health = Command::new(BINARY)
        .args(["healthcheck", "--url", &format!("http://{address}/health")])
        .output()
        .expect("run the healthcheck");
    assert!(health.status.success(), "healthcheck failed: {}", String::from_utf8_lossy(&health.stderr));
    let wrong_path = Command::new(BINARY)
        .args(["healthcheck", "--url", &format!("http://{address}/no-such-page")])
        .output()
        .expect("run the healthcheck");
    assert_eq!(wrong_path.status.code(), Some(1), "a 404 is not healthy");

    let pid = guard.0.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
    assert!(kill.success());
    let status = wait_for_exit(&mut guard.0);
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(dir.path().join("data/registry.sqlite").exists(), "the database directory was created");
}

#[test]
fn bad_flags_exit_non_zero_with_one_line() {
    for args in [&["--bogus"][..], &["--expiry", "soon"], &["--expiry", "5000"], &["--listen", "nowhere"]] {
        let output = Command::new(BINARY).args(args).output().expect("run the registry");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("registry: "), "{stderr}");
    }
    let output = Command::new(BINARY)
        .args(["--expiry", "1s", "--heartbeat-interval", "2s"])
        .output()
        .expect("run the registry");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("registry: --heartbeat-interval (2s)"), "{stderr}");
}

#[test]
fn the_healthcheck_fails_when_nothing_listens() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let output = Command::new(BINARY)
        .args(["healthcheck", "--url", &format!("http://{address}/health")])
        .output()
        .expect("run the healthcheck");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&output.stderr).trim_end().lines().count(), 1);
}
