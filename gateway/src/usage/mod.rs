//! One usage row per request, exported to ClickHouse in batches.
//!
//! The request path calls [`UsageExporter::record`], which only tries to put the row into a
//! bounded channel: it never blocks and never awaits. When the channel is full (ClickHouse slow
//! or down) the row is dropped and counted in `usage_rows_dropped_total`. A batcher task
//! ([`spawn_clickhouse_exporter`]) drains the channel and inserts a batch when it holds
//! `batch_size` rows or `flush_interval` after its first row, over ClickHouse's HTTP interface
//! (`INSERT INTO … FORMAT JSONEachRow`, optionally gzip-compressed).
//!
//! The exporter creates its database and table at start and again after any failed insert (a
//! ClickHouse that came back empty gets its schema back). While ClickHouse is unreachable the
//! batch in hand is retried with exponential backoff and the channel fills up, so memory stays
//! bounded by `channel_capacity + batch_size` rows; a batch that ClickHouse answers with an
//! error five times in a row is dropped (counted) so one bad batch cannot stall the export.
//!
//! The schema uses only SQL that Debian's ClickHouse 18.16 and current ClickHouse both accept:
//! `DateTime('UTC')` (no `DateTime64`), `Nullable`, plain `MergeTree()` with `PARTITION BY`.
//!
//! This module must not know about HTTP requests, routing or keys: it receives finished rows.

mod clickhouse;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

pub use clickhouse::{SchemaValidation, create_table_sql, spawn_clickhouse_exporter_with};

/// One request, as the gateway saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    pub request_id: String,
    pub time: chrono::DateTime<chrono::Utc>,
    pub namespace: String,
    pub key_id: String,
    pub served_model: String,
    pub deployment: String,
    pub provider: String,
    pub endpoint: String,
    pub status: u16,
    pub error_type: Option<String>,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub ttft_ms: Option<f64>,
    pub latency_ms: f64,
    pub gateway_overhead_ms: f64,
    pub streamed: bool,
    pub cost: f64,
}

/// Where and how to export usage rows.
#[derive(Debug, Clone)]
pub struct ClickHouseConfig {
    /// ClickHouse's HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    pub database: String,
    pub table: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Gzip the insert bodies (`Content-Encoding: gzip`).
    pub compression: bool,
    /// Rows per insert, at most.
    pub batch_size: usize,
    /// How long a partial batch waits for more rows after its first.
    pub flush_interval: Duration,
    /// Rows buffered between the request path and the batcher; beyond this rows are dropped.
    pub channel_capacity: usize,
}

impl ClickHouseConfig {
    /// Defaults for everything but the URL: database `bud`, table `usage`, no credentials,
    /// compression on, batches of 1,000 rows or 1 s, 100,000 rows of buffer.
    pub fn new(url: impl Into<String>) -> Self {
        ClickHouseConfig {
            url: url.into(),
            database: "bud".to_owned(),
            table: "usage".to_owned(),
            user: None,
            password: None,
            compression: true,
            batch_size: 1000,
            flush_interval: Duration::from_secs(1),
            channel_capacity: 100_000,
        }
    }
}

/// Why rows were dropped (a metric label).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[expect(
    non_camel_case_types,
    reason = "the variant names are the metric label values"
)]
pub(crate) enum DropReason {
    /// The channel was full: the batcher is behind or ClickHouse is down.
    channel_full,
    /// ClickHouse refused the batch repeatedly (or the table's schema does not match).
    rejected,
    /// The exporter is disabled or its batcher has stopped.
    disabled,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DropLabels {
    pub(crate) reason: DropReason,
}

pub(crate) struct UsageMetrics {
    pub(crate) rows_exported: Counter,
    pub(crate) rows_dropped: Family<DropLabels, Counter>,
    pub(crate) insert_errors: Counter,
    pub(crate) batch_duration: Histogram,
}

impl UsageMetrics {
    fn new() -> Self {
        UsageMetrics {
            rows_exported: Counter::default(),
            rows_dropped: Family::default(),
            insert_errors: Counter::default(),
            batch_duration: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        }
    }

    pub(crate) fn dropped(&self, reason: DropReason, rows: u64) {
        self.rows_dropped
            .get_or_create(&DropLabels { reason })
            .inc_by(rows);
    }
}

/// The request path's handle on usage export; cheap to clone.
#[derive(Clone)]
pub struct UsageExporter {
    sender: Option<mpsc::Sender<UsageRecord>>,
    metrics: Arc<UsageMetrics>,
}

impl std::fmt::Debug for UsageExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageExporter")
            .field("enabled", &self.sender.is_some())
            .finish_non_exhaustive()
    }
}

impl UsageExporter {
    /// An exporter that drops every row silently (no ClickHouse configured).
    pub fn disabled() -> Self {
        UsageExporter {
            sender: None,
            metrics: Arc::new(UsageMetrics::new()),
        }
    }

    /// Queues one row; never blocks. A full channel drops the row and counts it.
    pub fn record(&self, record: UsageRecord) {
        let Some(sender) = &self.sender else {
            return;
        };
        match sender.try_send(record) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.dropped(DropReason::channel_full, 1)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.metrics.dropped(DropReason::disabled, 1)
            }
        }
    }

    /// Registers `usage_rows_exported_total`, `usage_rows_dropped_total{reason}`,
    /// `usage_insert_errors_total` and `usage_batch_duration_seconds`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let metrics = &self.metrics;
        registry.register(
            "usage_rows_exported",
            "Usage rows inserted into ClickHouse",
            metrics.rows_exported.clone(),
        );
        registry.register(
            "usage_rows_dropped",
            "Usage rows dropped, by reason (channel_full: ClickHouse slow or down)",
            metrics.rows_dropped.clone(),
        );
        registry.register(
            "usage_insert_errors",
            "Failed ClickHouse requests (inserts and schema creation)",
            metrics.insert_errors.clone(),
        );
        registry.register(
            "usage_batch_duration_seconds",
            "Time to insert one batch into ClickHouse, retries included",
            metrics.batch_duration.clone(),
        );
    }
}

/// Starts the batcher on the current tokio runtime and returns the request path's handle.
/// The batcher flushes what it holds and stops when every handle is dropped. Schema validation
/// is on; see [`spawn_clickhouse_exporter_with`] to switch it off. Panics outside a tokio runtime.
pub fn spawn_clickhouse_exporter(config: ClickHouseConfig) -> UsageExporter {
    spawn_clickhouse_exporter_with(config, SchemaValidation::Enabled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> UsageRecord {
        UsageRecord {
            request_id: "r".into(),
            time: chrono::Utc::now(),
            namespace: "ns".into(),
            key_id: "k".into(),
            served_model: "m".into(),
            deployment: "d".into(),
            provider: "p".into(),
            endpoint: "/v1/chat/completions".into(),
            status: 200,
            error_type: None,
            input_tokens: 1,
            output_tokens: 2,
            ttft_ms: None,
            latency_ms: 1.0,
            gateway_overhead_ms: 0.1,
            streamed: false,
            cost: 0.0,
        }
    }

    #[test]
    fn a_full_channel_drops_and_counts_without_blocking() {
        let (sender, _receiver) = mpsc::channel(2);
        let exporter = UsageExporter {
            sender: Some(sender),
            metrics: Arc::new(UsageMetrics::new()),
        };
        for _ in 0..5 {
            exporter.record(row());
        }
        let mut registry = Registry::default();
        exporter.register_metrics(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("usage_rows_dropped_total{reason=\"channel_full\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn the_disabled_exporter_drops_silently() {
        let exporter = UsageExporter::disabled();
        exporter.record(row());
        let mut registry = Registry::default();
        exporter.register_metrics(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("usage_rows_dropped_total{"), "{text}");
    }
}
