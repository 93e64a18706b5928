//! The broker's Prometheus metrics: the registry, the counters updated on the data paths, and the gauges
//! refreshed at scrape time from the store and the group offsets. This module owns metric names and
//! encoding; it does not decide what is measured where (the callers do).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a per-topic metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    /// The topic name.
    pub topic: String,
}

/// Labels of a per-group, per-topic metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// The consumer group (or, for a pipe child, its node id).
    pub group: String,
    /// The topic name.
    pub topic: String,
}

/// Labels of a per-child, per-topic metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChildLabels {
    /// The child broker's node id.
    pub child: String,
    /// The topic name.
    pub topic: String,
}

/// Labels of the connection gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `consumer` or `pipe`.
    pub kind: String,
}

/// All metrics of one broker. Cheap to update from any task: every metric is atomic inside.
#[derive(Debug)]
pub struct Metrics {
    /// The registry that `/metrics` encodes.
    registry: Registry,
    /// Records accepted by ingest or the pipe, per topic.
    pub records_in: Family<TopicLabels, Counter>,
    /// Record bytes accepted, per topic.
    pub bytes_in: Family<TopicLabels, Counter>,
    /// Records sent in BATCH frames, per topic.
    pub records_out: Family<TopicLabels, Counter>,
    /// Record bytes sent in BATCH frames, per topic.
    pub bytes_out: Family<TopicLabels, Counter>,
    /// The log end offset per topic (refreshed at scrape time).
    pub log_end_offset: Family<TopicLabels, Gauge>,
    /// The log start offset per topic (refreshed at scrape time).
    pub log_start_offset: Family<TopicLabels, Gauge>,
    /// Records between a group's committed offset and the log end (refreshed at scrape time).
    pub group_lag: Family<GroupLabels, Gauge>,
    /// Open consumer, producer and pipe connections, by kind.
    pub connections: Family<KindLabels, Gauge>,
    /// Consumer connections refused because `--max-connections` were already being served.
    pub connections_refused: Counter,
    /// Bytes of segment files on disk, all topics (refreshed at scrape time).
    pub storage_bytes: Gauge,
    /// Segments holding a record that fails its CRC, not served until repaired.
    pub damaged_segments: Gauge,
    /// Seconds from a record's ROOT timestamp to its delivery from this node, observed once per batch for
    /// the batch's last record.
    pub delivery_latency: Histogram,
    /// The pipe to the parent: 1 streaming, 0 not (always 0 on ROOT).
    pub pipe_connected: Gauge,
    /// Links to a parent that ended and were tried again.
    pub pipe_reconnects: Counter,
    /// Records received from the parent (duplicates included).
    pub pipe_records_received: Counter,
    /// Record bytes received from the parent.
    pub pipe_bytes_received: Counter,
    /// Full refreshes started by the parent.
    pub pipe_refreshes: Counter,
    /// Per connected child and topic, records stored here that the child has not acknowledged (refreshed
    /// at scrape time).
    pub child_lag: Family<ChildLabels, Gauge>,
    /// Frames refused with an ERROR frame, any connection.
    pub protocol_errors: Counter,
    /// What compaction did, over every topic.
    pub compaction: CompactionMetrics,
    /// Per topic, the offset below which compaction may have dropped deletes (refreshed at scrape time).
    pub delete_horizon: Family<TopicLabels, Gauge>,
}

/// Compaction's counters, over every topic.
#[derive(Debug, Default)]
pub struct CompactionMetrics {
    /// Passes over a topic.
    pub passes: Counter,
    /// Bytes of sealed segments read.
    pub bytes_read: Counter,
    /// Bytes written to compacted segments.
    pub bytes_written: Counter,
    /// Records removed (older records of a key, expired tombstones).
    pub records_removed: Counter,
    /// Tombstones removed after their retention.
    pub tombstones_removed: Counter,
    /// Time spent in passes, pacing included.
    pub seconds: Counter<f64, std::sync::atomic::AtomicU64>,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("relay");
        let records_in = Family::<TopicLabels, Counter>::default();
        let bytes_in = Family::<TopicLabels, Counter>::default();
        let records_out = Family::<TopicLabels, Counter>::default();
        let bytes_out = Family::<TopicLabels, Counter>::default();
        let log_end_offset = Family::<TopicLabels, Gauge>::default();
        let log_start_offset = Family::<TopicLabels, Gauge>::default();
        let group_lag = Family::<GroupLabels, Gauge>::default();
        let connections = Family::<KindLabels, Gauge>::default();
        let connections_refused = Counter::default();
        let storage_bytes = Gauge::default();
        let damaged_segments = Gauge::default();
        // From 100 microseconds to about 100 seconds.
        let delivery_latency = Histogram::new(exponential_buckets(0.0001, 2.0, 21));
        let pipe_connected = Gauge::default();
        let pipe_reconnects = Counter::default();
        let pipe_records_received = Counter::default();
        let pipe_bytes_received = Counter::default();
        let pipe_refreshes = Counter::default();
        let child_lag = Family::<ChildLabels, Gauge>::default();
        let protocol_errors = Counter::default();
        registry.register("records_in", "Records stored by ingest or the pipe", records_in.clone());
        registry.register("bytes_in", "Record bytes stored by ingest or the pipe", bytes_in.clone());
        registry.register("records_out", "Records sent to consumers and children", records_out.clone());
        registry.register("bytes_out", "Record bytes sent to consumers and children", bytes_out.clone());
        registry.register(
            "log_end_offset",
            "Offset the next record of the topic will get",
            log_end_offset.clone(),
        );
        registry.register(
            "log_start_offset",
            "Oldest offset still stored for the topic",
            log_start_offset.clone(),
        );
        registry.register(
            "group_lag",
            "Records stored but not yet acknowledged by the group",
            group_lag.clone(),
        );
        registry.register("connections", "Open consumer, producer and pipe connections", connections.clone());
        registry.register(
            "connections_refused",
            "Consumer connections refused at --max-connections",
            connections_refused.clone(),
        );
        registry.register("storage_bytes", "Bytes of segment files on disk", storage_bytes.clone());
        registry.register(
            "damaged_segments",
            "Segments holding a record that fails its CRC; their range is not served until repaired",
            damaged_segments.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "Time from a record's ROOT timestamp to its delivery from this node",
            delivery_latency.clone(),
        );
        registry.register("pipe_connected", "1 while the pipe to the parent streams", pipe_connected.clone());
        registry.register(
            "pipe_reconnects",
            "Links to a parent that ended and were retried",
            pipe_reconnects.clone(),
        );
        registry.register(
            "pipe_records_received",
            "Records received from the parent, duplicates included",
            pipe_records_received.clone(),
        );
        registry.register(
            "pipe_bytes_received",
            "Record bytes received from the parent",
            pipe_bytes_received.clone(),
        );
        registry.register("pipe_refreshes", "Full refreshes started by the parent", pipe_refreshes.clone());
        registry.register(
            "child_lag",
            "Records stored here that a connected child has not acknowledged",
            child_lag.clone(),
        );
        registry.register("protocol_errors", "ERROR frames sent to peers", protocol_errors.clone());
        let compaction = CompactionMetrics::default();
        let delete_horizon = Family::<TopicLabels, Gauge>::default();
        registry.register("compaction_passes", "Compaction passes over a topic", compaction.passes.clone());
        registry.register(
            "compaction_bytes_read",
            "Bytes of sealed segments compaction read",
            compaction.bytes_read.clone(),
        );
        registry.register(
            "compaction_bytes_written",
            "Bytes compaction wrote to compacted segments",
            compaction.bytes_written.clone(),
        );
        registry.register(
            "compaction_records_removed",
            "Records compaction removed (older records of a key, expired tombstones)",
            compaction.records_removed.clone(),
        );
        registry.register(
            "compaction_tombstones_removed",
            "Tombstones compaction removed after their retention",
            compaction.tombstones_removed.clone(),
        );
        registry.register(
            "compaction_seconds",
            "Time spent in compaction passes, pacing included",
            compaction.seconds.clone(),
        );
        registry.register(
            "delete_horizon",
            "Offset below which compaction may have dropped deletes; a reader resuming below it is refreshed",
            delete_horizon.clone(),
        );
        Metrics {
            registry,
            records_in,
            bytes_in,
            records_out,
            bytes_out,
            log_end_offset,
            log_start_offset,
            group_lag,
            connections,
            connections_refused,
            storage_bytes,
            damaged_segments,
            delivery_latency,
            pipe_connected,
            pipe_reconnects,
            pipe_records_received,
            pipe_bytes_received,
            pipe_refreshes,
            child_lag,
            protocol_errors,
            compaction,
            delete_horizon,
        }
    }

    /// Counts what a round of compaction did.
    pub fn record_compaction(&self, report: &storage::CompactionReport) {
        for topic in &report.topics {
            self.compaction.passes.inc();
            self.compaction.bytes_read.inc_by(topic.bytes_read);
            self.compaction.bytes_written.inc_by(topic.bytes_written);
            self.compaction.records_removed.inc_by(topic.records_removed);
            self.compaction.tombstones_removed.inc_by(topic.tombstones_removed);
            self.compaction.seconds.inc_by(topic.duration_us as f64 / 1e6);
        }
    }

    /// The labels of one topic.
    pub fn topic(topic: &str) -> TopicLabels {
        TopicLabels { topic: topic.to_string() }
    }

    /// Counts records stored.
    pub fn stored(&self, topic: &str, n_records: u64, n_bytes: u64) {
        let labels = Metrics::topic(topic);
        self.records_in.get_or_create(&labels).inc_by(n_records);
        self.bytes_in.get_or_create(&labels).inc_by(n_bytes);
    }

    /// Counts records sent, and observes the delivery latency of the batch's last record.
    pub fn delivered(&self, topic: &str, n_records: u64, n_bytes: u64, last_timestamp_ms: u64) {
        let labels = Metrics::topic(topic);
        self.records_out.get_or_create(&labels).inc_by(n_records);
        self.bytes_out.get_or_create(&labels).inc_by(n_bytes);
        let now_ms = protocol::now_ms();
        if last_timestamp_ms > 0 && now_ms >= last_timestamp_ms {
            self.delivery_latency.observe((now_ms - last_timestamp_ms) as f64 / 1000.0);
        }
    }

    /// Encodes every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; an error here would only mean a bug in the encoder, and an
        // empty answer is the harmless outcome.
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Converts a count to a gauge value, saturating rather than wrapping.
pub fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_in_the_text() {
        let metrics = Metrics::new();
        metrics.stored("prices", 3, 300);
        metrics.delivered("prices", 2, 200, protocol::now_ms().saturating_sub(5));
        metrics.group_lag.get_or_create(&GroupLabels { group: "g".into(), topic: "prices".into() }).set(7);
        let text = metrics.encode();
        assert!(text.contains("relay_records_in_total{topic=\"prices\"} 3"), "{text}");
        assert!(text.contains("relay_bytes_out_total{topic=\"prices\"} 200"), "{text}");
        assert!(text.contains("relay_group_lag{group=\"g\",topic=\"prices\"} 7"), "{text}");
        assert!(text.contains("relay_delivery_latency_seconds_count 1"), "{text}");
    }
}
