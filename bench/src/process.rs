//! One process the bench starts: spawning it with its output in a log file, learning the addresses it
//! bound from its JSON log lines, reading its CPU and memory, and stopping it by PID. A [`Service`] stops
//! its process when dropped, so an error, a panic or Ctrl-C (which drops the running scenario) never leaves
//! a process behind. This module knows nothing of brokers or consumers; `launch.rs` does.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::machine::{ProcessUsage, process_usage};

/// How long a process may take to stop after SIGTERM (brokers flush and close their stores) before it is
/// killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How often a stopping process, or a log file awaited for a line, is looked at.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Environment variable prefixes of the relay binaries. They are removed from a child's environment so a
/// variable set in the caller's shell cannot change what a run measures.
const CONFIG_ENV_PREFIXES: [&str; 3] = ["BROKER_", "CONSUMER_", "REGISTRY_"];

/// A process started by the bench, stopped when dropped.
#[derive(Debug)]
pub struct Service {
    /// A short name for reports and the log file (`root`, `l2`, `consumer-app`).
    name: String,
    /// The process.
    child: Child,
    /// Where its stdout and stderr go.
    log_path: PathBuf,
    /// How far the log has been scanned for lines, and the partial line at the end.
    scanned: u64,
    /// Log lines scanned but not yet matched, kept so a second wait can find them.
    lines: Vec<String>,
    /// Set once the process has been waited for.
    exit: Option<ExitStatus>,
}

impl Service {
    /// Starts `program` with `args` and `envs`, its stdout and stderr appended to `{log_dir}/{name}.log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(String, String)],
        log_dir: &Path,
    ) -> Result<Service> {
        if !program.is_file() {
            bail!(
                "{} not found: build the binaries first (cargo build --release -p broker -p registry \
                 -p consumer-app) or point --bin-dir at them",
                program.display()
            );
        }
        std::fs::create_dir_all(log_dir).with_context(|| format!("cannot create {}", log_dir.display()))?;
        let log_path = log_dir.join(format!("{name}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        // A process started again under the same name appends to the same log: only what it writes is
        // scanned for the lines awaited.
        let scanned = log.metadata().with_context(|| format!("cannot stat {}", log_path.display()))?.len();
        let log_err = log.try_clone().with_context(|| format!("cannot share {}", log_path.display()))?;
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null()).stdout(Stdio::from(log)).stderr(Stdio::from(log_err));
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if CONFIG_ENV_PREFIXES.iter().any(|prefix| key.starts_with(prefix)) {
                command.env_remove(&*key);
            }
        }
        command.env("RUST_LOG", std::env::var("RELAY_BENCH_RUST_LOG").unwrap_or_else(|_| "info".to_string()));
        command.envs(envs.iter().map(|(key, value)| (key, value)));
        // SAFETY: the closure runs in the child between fork and exec and calls only prctl, which is
        // async-signal-safe. It asks the kernel to send SIGTERM to the child if the thread that spawned it
        // dies, so even a bench killed with SIGKILL leaves no process behind. Processes are spawned from
        // the thread that runs the scenario future, which lives until the run ends.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| format!("cannot start {}", program.display()))?;
        Ok(Service { name: name.to_string(), child, log_path, scanned, lines: Vec::new(), exit: None })
    }

    /// The short name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time and memory used so far; `None` once the process has exited.
    pub fn usage(&self) -> Option<ProcessUsage> {
        if self.exit.is_some() {
            return None;
        }
        process_usage(self.pid())
    }

    /// Waits until the process logs a JSON line whose message is `message` and returns the values of
    /// `fields` in it (strings as they are, other values as JSON text). Fails if the process exits first or
    /// `timeout` passes, quoting the end of its log.
    pub async fn wait_for_log(
        &mut self,
        message: &str,
        fields: &[&str],
        timeout: Duration,
    ) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            self.scan_log()?;
            if let Some(values) = self.lines.iter().find_map(|line| match_line(line, message, fields)) {
                return Ok(values);
            }
            if let Some(status) = self.child.try_wait().context("cannot poll a child process")? {
                self.exit = Some(status);
                bail!("{} exited ({status}) before logging {message:?}:\n{}", self.name, self.log_tail(20));
            }
            if Instant::now() >= deadline {
                bail!("{} did not log {message:?} within {timeout:?}:\n{}", self.name, self.log_tail(20));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Fails, quoting the end of the log, if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("cannot poll a child process")? {
            self.exit = Some(status);
            bail!("{} exited unexpectedly ({status}):\n{}", self.name, self.log_tail(20));
        }
        Ok(())
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stops the process: SIGTERM, then SIGKILL if it is still running after [`STOP_GRACE`]. Blocks until it
    /// has exited; returns its exit status (`None` if it could not be waited for).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.exit {
            return Some(status);
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            self.exit = Some(status);
            return Some(status);
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory-safety preconditions. The child has not been waited for, so its PID
        // still names it (a PID is reused only after the parent reaps the process).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.exit = Some(status);
                    return Some(status);
                }
                Ok(None) => std::thread::sleep(POLL_INTERVAL),
                Err(_) => break,
            }
        }
        eprintln!("relay-bench: {} (pid {pid}) ignored SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        self.exit = status;
        status
    }

    /// Reads log lines written since the last scan.
    fn scan_log(&mut self) -> Result<()> {
        let mut file =
            File::open(&self.log_path).with_context(|| format!("cannot open {}", self.log_path.display()))?;
        file.seek(SeekFrom::Start(self.scanned))?;
        let mut bytes = Vec::new();
        // Logs are read with a bound: an address line comes among the first few lines, and a runaway log
        // must not fill the bench's memory.
        file.take(1 << 20).read_to_end(&mut bytes)?;
        let complete = bytes.iter().rposition(|&byte| byte == b'\n').map_or(0, |at| at + 1);
        self.scanned += complete as u64;
        self.lines.extend(String::from_utf8_lossy(&bytes[..complete]).lines().map(str::to_string));
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The values of `fields` if `line` is a JSON log line (as `tracing_subscriber`'s JSON format writes it)
/// whose message is `message`.
fn match_line(line: &str, message: &str, fields: &[&str]) -> Option<Vec<String>> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let line_fields = value.get("fields")?;
    if line_fields.get("message")?.as_str()? != message {
        return None;
    }
    fields
        .iter()
        .map(|name| {
            line_fields.get(*name).map(|field| match field {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_log_lines_match() {
        let line = r#"{"timestamp":"t","level":"INFO","fields":{"message":"broker started","http_addr":"127.0.0.1:4000","n":3},"target":"broker"}"#;
        assert_eq!(
            match_line(line, "broker started", &["http_addr", "n"]),
            Some(vec!["127.0.0.1:4000".to_string(), "3".to_string()])
        );
        assert_eq!(match_line(line, "other", &["http_addr"]), None);
        assert_eq!(match_line(line, "broker started", &["missing"]), None);
        assert_eq!(match_line("not json", "broker started", &[]), None);
    }

    #[tokio::test]
    async fn a_process_is_watched_and_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"echo '{"fields":{"message":"ready","port":7}}'; exec sleep 30"#;
        let mut service = Service::spawn(
            "sleeper",
            Path::new("/bin/sh"),
            &["-c".to_string(), script.to_string()],
            &[],
            dir.path(),
        )
        .unwrap();
        let values = service.wait_for_log("ready", &["port"], Duration::from_secs(10)).await.unwrap();
        assert_eq!(values, vec!["7".to_string()]);
        assert!(service.usage().is_some());
        service.check_running().unwrap();
        let status = service.stop().unwrap();
        assert!(!status.success());
        assert!(service.usage().is_none());
    }

    #[tokio::test]
    async fn an_early_exit_is_reported_with_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut service = Service::spawn(
            "failing",
            Path::new("/bin/sh"),
            &["-c".to_string(), "echo bad flag >&2; exit 2".to_string()],
            &[],
            dir.path(),
        )
        .unwrap();
        let error = service.wait_for_log("ready", &[], Duration::from_secs(10)).await.unwrap_err();
        let text = format!("{error:#}");
        assert!(text.contains("exited") && text.contains("bad flag"), "{text}");
    }

    #[test]
    fn a_missing_binary_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let error =
            Service::spawn("ghost", &dir.path().join("no-such-binary"), &[], &[], dir.path()).unwrap_err();
        assert!(error.to_string().contains("no-such-binary"));
    }
}
