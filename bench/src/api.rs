//! The HTTP calls the bench makes to the processes it runs: health, topic positions, test injection, JSON
//! publishing and the consumer-app's stats and refresh. Every call has a timeout. This module knows the
//! endpoints' shapes; it does not decide when to call them.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// How long one ordinary request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How often health is polled while waiting for a process to come up.
const HEALTH_POLL: Duration = Duration::from_millis(20);

/// A topic's positions on a broker (`GET /api/v1/topics/{topic}`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct TopicPosition {
    /// The oldest offset stored.
    pub log_start: u64,
    /// The offset the next record will get: every record below it is stored.
    pub end_offset: u64,
    /// Every record below this offset is on disk.
    pub durable_offset: u64,
    /// Bytes of records stored.
    pub bytes: u64,
}

/// One topic in a consumer-app's `GET /api/v1/stats`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct AppTopic {
    /// Records held.
    pub records: u64,
    /// Bytes of records held.
    pub bytes: u64,
    /// The copy holds every record below this offset.
    pub position: u64,
    /// Whether a full refresh is being received.
    pub refreshing: bool,
}

/// One refresh in a consumer-app's stats.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct AppRefresh {
    /// The topic refreshed.
    pub topic: String,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// When it completed or was abandoned.
    pub finished_ms: Option<u64>,
    /// Records received for the new copy.
    pub n_records: u64,
    /// `running`, `completed` or `abandoned`.
    pub outcome: String,
}

/// The parts of a consumer-app's `GET /api/v1/stats` the bench reads.
#[derive(Debug, Clone, Deserialize)]
pub struct AppStats {
    /// Per topic figures.
    pub topics: std::collections::BTreeMap<String, AppTopic>,
    /// The most recent refreshes, newest first.
    pub recent_refreshes: Vec<AppRefresh>,
}

/// An HTTP client for the processes of a run (plain HTTP to 127.0.0.1, no proxy).
#[derive(Debug, Clone)]
pub struct Api {
    /// The connection pool.
    client: reqwest::Client,
}

impl Api {
    /// A client with the bench's timeouts.
    pub fn new() -> Result<Api> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(64)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Api { client })
    }

    /// Waits until `GET {base}/health` answers 200.
    pub async fn wait_healthy(&self, base: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let url = format!("{base}/health");
        loop {
            let answer = self.client.get(&url).timeout(Duration::from_secs(1)).send().await;
            if matches!(&answer, Ok(response) if response.status().is_success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{url} did not answer 200 within {timeout:?} (last answer: {answer:?})");
            }
            tokio::time::sleep(HEALTH_POLL).await;
        }
    }

    /// `GET {base}/api/v1/topics/{topic}`; `None` while the broker does not have the topic.
    pub async fn topic(&self, base: &str, topic: &str) -> Result<Option<TopicPosition>> {
        let response = self
            .client
            .get(format!("{base}/api/v1/topics/{topic}"))
            .send()
            .await
            .with_context(|| format!("GET {base}/api/v1/topics/{topic}"))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = checked(response, "topic").await?;
        Ok(Some(response.json().await.context("topic description")?))
    }

    /// How many topics a broker holds (`GET {base}/api/v1/topics`).
    pub async fn topic_count(&self, base: &str) -> Result<usize> {
        let response = self.client.get(format!("{base}/api/v1/topics")).send().await?;
        let body: serde_json::Value = checked(response, "topics").await?.json().await?;
        Ok(body.get("topics").and_then(serde_json::Value::as_array).map_or(0, Vec::len))
    }

    /// `POST {base}/test/inject-messages` with `count` generated records of `size` value bytes; returns
    /// the records appended.
    pub async fn inject(&self, base: &str, topic: &str, count: u64, size: usize) -> Result<u64> {
        let body = serde_json::json!({ "topic": topic, "count": count, "size": size });
        let response = self
            .client
            .post(format!("{base}/test/inject-messages"))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {base}/test/inject-messages"))?;
        let answer: serde_json::Value = checked(response, "inject").await?.json().await?;
        answer.get("count").and_then(serde_json::Value::as_u64).context("inject answer without a count")
    }

    /// `POST {base}/api/v1/topics/{topic}/messages` with a JSON body already built.
    pub async fn publish(&self, base: &str, topic: &str, body: String) -> Result<()> {
        let response = self
            .client
            .post(format!("{base}/api/v1/topics/{topic}/messages"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {base}/api/v1/topics/{topic}/messages"))?;
        checked(response, "publish").await?;
        Ok(())
    }

    /// `PUT {base}/api/v1/topics/{topic}` with `settings` (ROOT only): creates the topic with them, or
    /// changes an existing topic's.
    pub async fn put_topic_settings(
        &self,
        base: &str,
        topic: &str,
        settings: &serde_json::Value,
    ) -> Result<()> {
        let response = self
            .client
            .put(format!("{base}/api/v1/topics/{topic}"))
            .json(settings)
            .send()
            .await
            .with_context(|| format!("PUT {base}/api/v1/topics/{topic}"))?;
        checked(response, "topic settings").await?;
        Ok(())
    }

    /// `GET {base}/metrics`: the Prometheus text of a broker or a consumer-app.
    pub async fn metrics(&self, base: &str) -> Result<Metrics> {
        let response = self
            .client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .with_context(|| format!("GET {base}/metrics"))?;
        Ok(Metrics(checked(response, "metrics").await?.text().await.context("metrics")?))
    }

    /// A consumer-app's `GET {base}/api/v1/stats`.
    pub async fn app_stats(&self, base: &str) -> Result<AppStats> {
        let response = self.client.get(format!("{base}/api/v1/stats")).send().await?;
        checked(response, "consumer-app stats").await?.json().await.context("consumer-app stats")
    }

    /// What a consumer-app's copy holds for one key (`GET {base}/api/v1/topics/{topic}/keys/{key}`): the
    /// status (200, or 404 for a deleted or unknown key) and the JSON body.
    pub async fn app_key(&self, base: &str, topic: &str, key: &str) -> Result<(u16, serde_json::Value)> {
        let url = format!("{base}/api/v1/topics/{topic}/keys/{key}");
        let response = self.client.get(&url).send().await.with_context(|| format!("GET {url}"))?;
        let status = response.status().as_u16();
        let body = response.json().await.with_context(|| format!("GET {url}: not JSON"))?;
        Ok((status, body))
    }

    /// Asks a consumer-app for a full refresh of `topic` (`POST {base}/api/v1/refresh`).
    pub async fn app_refresh(&self, base: &str, topic: &str) -> Result<()> {
        let response = self
            .client
            .post(format!("{base}/api/v1/refresh"))
            .json(&serde_json::json!({ "topic": topic }))
            .send()
            .await?;
        checked(response, "consumer-app refresh").await?;
        Ok(())
    }
}

/// A scrape of a `/metrics` endpoint (Prometheus text format).
#[derive(Debug, Clone, Default)]
pub struct Metrics(pub String);

impl Metrics {
    /// The sum of every sample of the metric `name` (over all its label sets); 0 if it has none.
    pub fn sum(&self, name: &str) -> f64 {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let rest = line.strip_prefix(name)?;
                let value = if let Some(labelled) = rest.strip_prefix('{') {
                    labelled.split_once('}')?.1
                } else {
                    rest.strip_prefix(' ')?
                };
                value.split_whitespace().next()?.parse::<f64>().ok()
            })
            .sum()
    }

    /// The value of the metric `name` with the label `label="value"`, if present.
    pub fn labelled(&self, name: &str, label: &str, value: &str) -> Option<f64> {
        let wanted = format!("{label}=\"{value}\"");
        self.0.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
            let (labels, sample) = line.strip_prefix(name)?.strip_prefix('{')?.split_once('}')?;
            labels.split(',').any(|pair| pair == wanted).then_some(())?;
            sample.split_whitespace().next()?.parse::<f64>().ok()
        })
    }
}

/// The response if its status is a success, otherwise an error quoting the body.
async fn checked(response: reqwest::Response, what: &str) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    bail!("{what}: HTTP {status}: {}", body.chars().take(500).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_label_sets() {
        let text = "# HELP relay_x x\n# TYPE relay_x counter\nrelay_x_total 3\nrelay_x_total_other 9\n\
                    relay_y{topic=\"a\"} 1.5\nrelay_y{topic=\"b\",node=\"n\"} 2\n";
        let metrics = Metrics(text.to_string());
        assert_eq!(metrics.sum("relay_x_total"), 3.0);
        assert_eq!(metrics.sum("relay_y"), 3.5);
        assert_eq!(metrics.sum("relay_z"), 0.0);
        assert_eq!(metrics.labelled("relay_y", "topic", "b"), Some(2.0));
        assert_eq!(metrics.labelled("relay_y", "topic", "c"), None);
    }
}
