//! Starting the relay binaries for a run: brokers at each level (with a fixed parent or through a
//! registry), the registry and consumer-apps, each on 127.0.0.1 with ports the system picks, learned from
//! their first log line. The [`Launcher`] owns every process it started and stops them children-first when
//! dropped. This module knows the binaries' flags; it measures nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::api::Api;
use crate::config::FlushArg;
use crate::machine::ProcessUsage;
use crate::process::Service;

/// How long a process may take to start and answer its health check.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a broker gets its records from.
#[derive(Debug, Clone)]
pub enum Parent {
    /// Nowhere: this is ROOT.
    None,
    /// A fixed parent, by its HTTP base URL.
    Fixed(String),
    /// Whichever parent the registry at this URL assigns (ROOT registers there and asks for none).
    Registry(String),
}

/// A running broker.
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    /// Its HTTP base URL (`http://127.0.0.1:port`).
    pub http: String,
    /// Its TCP consumer address (`127.0.0.1:port`).
    pub consumer_addr: String,
}

/// A running consumer-app.
#[derive(Debug, Clone)]
pub struct AppHandle {
    /// Its REST base URL.
    pub http: String,
}

/// Starts processes for one run and stops them all when dropped.
#[derive(Debug)]
pub struct Launcher {
    /// Directory holding the binaries.
    bin_dir: PathBuf,
    /// Directory of the processes' logs.
    log_dir: PathBuf,
    /// Parent directory of the processes' data directories.
    data_dir: PathBuf,
    /// Flush policy for every broker.
    flush: FlushArg,
    /// Extra arguments for every broker.
    broker_args: Vec<String>,
    /// HTTP client for health checks.
    api: Api,
    /// Every process started, in start order.
    services: Vec<Service>,
}

impl Launcher {
    /// A launcher for binaries in `bin_dir`, logging into `log_dir`, with data under `data_dir`.
    pub fn new(
        bin_dir: &Path,
        log_dir: &Path,
        data_dir: &Path,
        flush: FlushArg,
        broker_args: &[String],
        api: Api,
    ) -> Launcher {
        Launcher {
            bin_dir: bin_dir.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            flush,
            broker_args: broker_args.to_vec(),
            api,
            services: Vec::new(),
        }
    }

    /// Starts a broker named `name` at `level` (`root`, `l2`, `l3`, `pos`, `local`) and waits until it is
    /// healthy. `extra` arguments follow the common ones.
    pub async fn start_broker(
        &mut self,
        name: &str,
        level: &str,
        parent: &Parent,
        extra: &[String],
    ) -> Result<BrokerHandle> {
        let data = self.data_dir.join(name);
        let mut args: Vec<String> = vec![
            "--level".into(),
            level.into(),
            "--node-id".into(),
            format!("bench-{name}"),
            "--data-dir".into(),
            data.display().to_string(),
            "--http-addr".into(),
            "127.0.0.1:0".into(),
            "--consumer-addr".into(),
            "127.0.0.1:0".into(),
            "--test-endpoints".into(),
            "true".into(),
            "--log-json".into(),
            "true".into(),
            "--flush".into(),
            self.flush.as_flag().into(),
        ];
        match parent {
            Parent::None => {}
            Parent::Fixed(url) => args.extend(["--parent-url".to_string(), url.clone()]),
            Parent::Registry(url) => args.extend(["--registry-url".to_string(), url.clone()]),
        }
        args.extend(self.broker_args.iter().cloned());
        args.extend(extra.iter().cloned());
        let program = self.bin_dir.join("broker");
        let mut service = Service::spawn(name, &program, &args, &[], &self.log_dir)?;
        let addrs =
            service.wait_for_log("broker started", &["http_addr", "consumer_addr"], START_TIMEOUT).await;
        let addrs = self.keep(service, addrs)?;
        let http = format!("http://{}", addrs[0]);
        self.api.wait_healthy(&http, START_TIMEOUT).await.with_context(|| format!("broker {name}"))?;
        Ok(BrokerHandle { http, consumer_addr: addrs[1].clone() })
    }

    /// Starts a registry and returns its base URL once it is healthy.
    pub async fn start_registry(&mut self) -> Result<String> {
        let db = self.data_dir.join("registry").join("registry.sqlite");
        let args: Vec<String> = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--db".into(),
            db.display().to_string(),
            "--log-json".into(),
        ];
        let program = self.bin_dir.join("registry");
        let mut service = Service::spawn("registry", &program, &args, &[], &self.log_dir)?;
        let address = service.wait_for_log("registry listening", &["address"], START_TIMEOUT).await;
        let address = self.keep(service, address)?;
        let url = format!("http://{}", address[0]);
        self.api.wait_healthy(&url, START_TIMEOUT).await.context("registry")?;
        Ok(url)
    }

    /// Starts a consumer-app named `name` copying `topics` from the broker at `broker_addr`, and waits
    /// until its REST API is healthy.
    pub async fn start_consumer_app(
        &mut self,
        name: &str,
        broker_addr: &str,
        topics: &str,
    ) -> Result<AppHandle> {
        let data = self.data_dir.join(name);
        // The consumer-app is configured through its environment, as one image serves several consumers.
        let envs: Vec<(String, String)> = [
            ("CONSUMER_BROKER_ADDR", broker_addr.to_string()),
            ("CONSUMER_ID", format!("bench-{name}")),
            ("CONSUMER_TOPICS", topics.to_string()),
            ("CONSUMER_DATA_DIR", data.display().to_string()),
            ("CONSUMER_HTTP_LISTEN", "127.0.0.1:0".to_string()),
            ("CONSUMER_LOG_JSON", "true".to_string()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect();
        let program = self.bin_dir.join("consumer-app");
        let mut service = Service::spawn(name, &program, &[], &envs, &self.log_dir)?;
        let listen = service.wait_for_log("REST API listening", &["listen"], START_TIMEOUT).await;
        let listen = self.keep(service, listen)?;
        let http = format!("http://{}", listen[0]);
        self.api.wait_healthy(&http, START_TIMEOUT).await.with_context(|| format!("consumer-app {name}"))?;
        Ok(AppHandle { http })
    }

    /// Usage of the process named `name`, if it runs.
    pub fn usage(&self, name: &str) -> Option<ProcessUsage> {
        self.services.iter().find(|service| service.name() == name).and_then(Service::usage)
    }

    /// Name, PID and usage of every process, in start order.
    pub fn usages(&self) -> Vec<(String, u32, Option<ProcessUsage>)> {
        self.services
            .iter()
            .map(|service| (service.name().to_string(), service.pid(), service.usage()))
            .collect()
    }

    /// Fails if any process has exited, quoting its log.
    pub fn check_running(&mut self) -> Result<()> {
        self.services.iter_mut().try_for_each(Service::check_running)
    }

    /// Stops the process named `name` (by its PID, as at the end of a run) and forgets it, so that a
    /// process of the same name (a broker restarted on its data directory) can be started again.
    pub fn stop(&mut self, name: &str) {
        if let Some(index) = self.services.iter().position(|service| service.name() == name) {
            let mut service = self.services.remove(index);
            service.stop();
        }
    }

    /// The PID of the process named `name`, if it runs.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.services.iter().find(|service| service.name() == name).map(Service::pid)
    }

    /// Stops every process, the last started first (children before their parents).
    pub fn stop_all(&mut self) {
        while let Some(mut service) = self.services.pop() {
            service.stop();
        }
    }

    /// Keeps `service` (so it is stopped later) whatever the outcome of waiting for its start.
    fn keep<T>(&mut self, service: Service, outcome: Result<T>) -> Result<T> {
        self.services.push(service);
        outcome
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        self.stop_all();
    }
}
