//! Prometheus metrics of the consumer-app: what arrived, how far behind the broker the copy is, how long
//! records took from ROOT to local durability, refreshes, handler failures and dead letters.
//!
//! This module owns the registry and its text encoding; it decides nothing. The counters double as the
//! figures `GET /api/v1/stats` shows, so the two never disagree.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The label of per-topic metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    /// Topic name.
    pub topic: String,
}

impl TopicLabel {
    /// The label for `topic`.
    pub fn new(topic: &str) -> Self {
        TopicLabel { topic: topic.to_string() }
    }
}

/// Every metric the consumer-app exports.
#[derive(Debug)]
pub struct Metrics {
    /// The registry the metrics are encoded from.
    registry: Registry,
    /// Records stored in the local copy, per topic (refresh records included).
    pub records_received: Family<TopicLabel, Counter>,
    /// Record bytes stored in the local copy, per topic.
    pub bytes_received: Family<TopicLabel, Counter>,
    /// Records the broker sent that the copy already held, per topic.
    pub duplicates_dropped: Family<TopicLabel, Counter>,
    /// BATCH frames received from the broker.
    pub batches_received: Counter,
    /// Appends to the local copy: one flush and one index transaction each, for one or more batches.
    pub appends: Counter,
    /// Records the copy is behind the broker's log end, per topic.
    pub lag: Family<TopicLabel, Gauge>,
    /// Seconds from a record's ROOT timestamp to its durability in the local copy.
    pub end_to_end_latency: Histogram,
    /// Full refreshes completed, per topic.
    pub refreshes: Family<TopicLabel, Counter>,
    /// Records a handler processed successfully.
    pub handler_successes: Counter,
    /// Handler attempts that failed (each retry counts).
    pub handler_failures: Counter,
    /// Records that went to the dead-letter table.
    pub dead_letters: Counter,
    /// 1 while connected to the broker, 0 otherwise.
    pub broker_connected: Gauge,
    /// Connections made to the broker since start.
    pub broker_connects: Counter,
    /// Compaction passes over a topic of the copy.
    pub compaction_passes: Counter,
    /// Bytes of sealed segments compaction read.
    pub compaction_bytes_read: Counter,
    /// Bytes compaction wrote to compacted segments.
    pub compaction_bytes_written: Counter,
    /// Records compaction removed (older records of a key, expired tombstones).
    pub compaction_records_removed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("consumer_app");
        let records_received = Family::<TopicLabel, Counter>::default();
        let bytes_received = Family::<TopicLabel, Counter>::default();
        let duplicates_dropped = Family::<TopicLabel, Counter>::default();
        let lag = Family::<TopicLabel, Gauge>::default();
        let batches_received = Counter::default();
        let appends = Counter::default();
        // From 100 microseconds to about 52 seconds, doubling.
        let end_to_end_latency = Histogram::new(exponential_buckets(0.0001, 2.0, 20));
        let refreshes = Family::<TopicLabel, Counter>::default();
        let handler_successes = Counter::default();
        let handler_failures = Counter::default();
        let dead_letters = Counter::default();
        let broker_connected = Gauge::default();
        let broker_connects = Counter::default();
        registry.register("records_received", "Records stored in the local copy", records_received.clone());
        registry.register("bytes_received", "Record bytes stored in the local copy", bytes_received.clone());
        registry.register(
            "duplicates_dropped",
            "Records received that the copy already held",
            duplicates_dropped.clone(),
        );
        registry.register(
            "batches_received",
            "BATCH frames received from the broker",
            batches_received.clone(),
        );
        registry.register(
            "appends",
            "Appends to the local copy, each one flush and one index transaction for one or more batches",
            appends.clone(),
        );
        registry.register("lag_records", "Records the copy is behind the broker's log end", lag.clone());
        registry.register(
            "end_to_end_latency_seconds",
            "Time from a record's ROOT timestamp to its durability in the local copy",
            end_to_end_latency.clone(),
        );
        registry.register("refreshes", "Full refreshes completed", refreshes.clone());
        registry.register("handler_successes", "Records a handler processed", handler_successes.clone());
        registry.register("handler_failures", "Handler attempts that failed", handler_failures.clone());
        registry.register("dead_letters", "Records that went to the dead-letter table", dead_letters.clone());
        registry.register("broker_connected", "1 while connected to the broker", broker_connected.clone());
        registry.register("broker_connects", "Connections made to the broker", broker_connects.clone());
        let (compaction_passes, compaction_bytes_read) = (Counter::default(), Counter::default());
        let (compaction_bytes_written, compaction_records_removed) = (Counter::default(), Counter::default());
        registry.register("compaction_passes", "Compaction passes over a topic", compaction_passes.clone());
        registry.register(
            "compaction_bytes_read",
            "Bytes of sealed segments compaction read",
            compaction_bytes_read.clone(),
        );
        registry.register(
            "compaction_bytes_written",
            "Bytes compaction wrote to compacted segments",
            compaction_bytes_written.clone(),
        );
        registry.register(
            "compaction_records_removed",
            "Records compaction removed (older records of a key, expired tombstones)",
            compaction_records_removed.clone(),
        );
        Metrics {
            registry,
            records_received,
            bytes_received,
            duplicates_dropped,
            batches_received,
            appends,
            lag,
            end_to_end_latency,
            refreshes,
            handler_successes,
            handler_failures,
            dead_letters,
            broker_connected,
            broker_connects,
            compaction_passes,
            compaction_bytes_read,
            compaction_bytes_written,
            compaction_records_removed,
        }
    }

    /// Counts what a round of compaction did.
    pub fn record_compaction(&self, report: &storage::CompactionReport) {
        for topic in &report.topics {
            self.compaction_passes.inc();
            self.compaction_bytes_read.inc_by(topic.bytes_read);
            self.compaction_bytes_written.inc_by(topic.bytes_written);
            self.compaction_records_removed.inc_by(topic.records_removed);
        }
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error here would be a bug in an encoder, and an empty page
        // is a better answer to a scrape than a panic.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_family() {
        let metrics = Metrics::new();
        metrics.records_received.get_or_create(&TopicLabel::new("prices")).inc_by(5);
        metrics.lag.get_or_create(&TopicLabel::new("prices")).set(3);
        metrics.end_to_end_latency.observe(0.002);
        let text = metrics.encode();
        assert!(text.contains("consumer_app_records_received_total{topic=\"prices\"} 5"), "{text}");
        assert!(text.contains("consumer_app_lag_records{topic=\"prices\"} 3"), "{text}");
        assert!(text.contains("consumer_app_end_to_end_latency_seconds_count 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
