//! The batcher: drains the channel, creates the schema, inserts over ClickHouse's HTTP interface.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{ClickHouseConfig, DropReason, UsageExporter, UsageMetrics, UsageRecord};

/// First retry delay after a failed insert; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A batch that ClickHouse *answers* with an error this many times in a row is dropped; a
/// ClickHouse that does not answer at all is waited for indefinitely (the channel bounds memory).
const MAX_REJECTIONS: u32 = 5;
/// On shutdown, how many attempts the last batch gets before it is dropped.
const SHUTDOWN_ATTEMPTS: u32 = 3;

/// Whether the exporter checks, after creating its schema, that the existing table has the
/// columns and types it writes (a table created by an older gateway, or by hand, may not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaValidation {
    /// A mismatch is logged and the batch dropped (counted) until the table is fixed.
    Enabled,
    /// Insert regardless; unknown columns are skipped by ClickHouse
    /// (`input_format_skip_unknown_fields=1`).
    Disabled,
}

/// The columns the exporter writes, with their ClickHouse types (valid on 18.16 and current).
const COLUMNS: &[(&str, &str)] = &[
    ("request_id", "String"),
    ("time", "DateTime('UTC')"),
    ("namespace", "String"),
    ("key_id", "String"),
    ("served_model", "String"),
    ("deployment", "String"),
    ("provider", "String"),
    ("endpoint", "String"),
    ("status", "UInt16"),
    ("error_type", "Nullable(String)"),
    ("input_tokens", "UInt32"),
    ("output_tokens", "UInt32"),
    ("ttft_ms", "Nullable(Float64)"),
    ("latency_ms", "Float64"),
    ("gateway_overhead_ms", "Float64"),
    ("streamed", "UInt8"),
    ("cost", "Float64"),
];

/// The `CREATE TABLE` statement for `database.table`.
pub fn create_table_sql(database: &str, table: &str) -> String {
    let columns = COLUMNS
        .iter()
        .map(|(name, kind)| format!("`{name}` {kind}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "CREATE TABLE IF NOT EXISTS `{database}`.`{table}` ({columns}) \
         ENGINE = MergeTree() PARTITION BY toYYYYMM(time) ORDER BY (namespace, time)"
    )
}

/// One row as ClickHouse's JSONEachRow reads it: `DateTime` as `YYYY-MM-DD hh:mm:ss` (UTC),
/// booleans as 0/1 (18.16 reads no `true` into `UInt8`).
#[derive(Serialize)]
struct Row<'a> {
    request_id: &'a str,
    time: String,
    namespace: &'a str,
    key_id: &'a str,
    served_model: &'a str,
    deployment: &'a str,
    provider: &'a str,
    endpoint: &'a str,
    status: u16,
    error_type: Option<&'a str>,
    input_tokens: u32,
    output_tokens: u32,
    ttft_ms: Option<f64>,
    latency_ms: f64,
    gateway_overhead_ms: f64,
    streamed: u8,
    cost: f64,
}

impl<'a> From<&'a UsageRecord> for Row<'a> {
    fn from(record: &'a UsageRecord) -> Self {
        Row {
            request_id: &record.request_id,
            time: record.time.format("%Y-%m-%d %H:%M:%S").to_string(),
            namespace: &record.namespace,
            key_id: &record.key_id,
            served_model: &record.served_model,
            deployment: &record.deployment,
            provider: &record.provider,
            endpoint: &record.endpoint,
            status: record.status,
            error_type: record.error_type.as_deref(),
            input_tokens: record.input_tokens,
            output_tokens: record.output_tokens,
            ttft_ms: record.ttft_ms.filter(|value| value.is_finite()),
            latency_ms: finite(record.latency_ms),
            gateway_overhead_ms: finite(record.gateway_overhead_ms),
            streamed: u8::from(record.streamed),
            cost: finite(record.cost),
        }
    }
}

/// JSON has no NaN or infinity; ClickHouse would refuse the whole batch for one.
fn finite(value: f64) -> f64 {
    if value.is_finite() { value } else { 0.0 }
}

fn encode(batch: &[UsageRecord]) -> Vec<u8> {
    let mut body = Vec::with_capacity(batch.len() * 320);
    for record in batch {
        serde_json::to_writer(&mut body, &Row::from(record))
            .expect("a usage row always serializes");
        body.push(b'\n');
    }
    body
}

/// Encodes (and compresses) a batch once, for every attempt to insert it.
fn prepare_body(batch: &[UsageRecord], compress: bool) -> std::io::Result<bytes::Bytes> {
    let body = encode(batch);
    Ok(bytes::Bytes::from(if compress {
        gzip(&body)?
    } else {
        body
    }))
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(body)?;
    encoder.finish()
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Starts the batcher with an explicit schema-validation choice.
pub fn spawn_clickhouse_exporter_with(
    config: ClickHouseConfig,
    validation: SchemaValidation,
) -> UsageExporter {
    let metrics = Arc::new(UsageMetrics::new());
    if !is_identifier(&config.database) || !is_identifier(&config.table) {
        tracing::error!(
            database = %config.database,
            table = %config.table,
            "usage export disabled: database and table names must be [A-Za-z0-9_]+"
        );
        return UsageExporter {
            sender: None,
            metrics,
        };
    }
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "usage export disabled: cannot build an HTTP client");
            return UsageExporter {
                sender: None,
                metrics,
            };
        }
    };
    let (sender, receiver) = mpsc::channel(config.channel_capacity.max(1));
    let batcher = Batcher {
        client: ClickHouseClient {
            http: client,
            config,
        },
        validation,
        metrics: metrics.clone(),
    };
    tokio::spawn(batcher.run(receiver));
    UsageExporter {
        sender: Some(sender),
        metrics,
    }
}

#[derive(Debug, thiserror::Error)]
enum ExportError {
    /// ClickHouse did not answer (down, refused, timed out): wait for it.
    #[error("ClickHouse unreachable: {0}")]
    Unreachable(reqwest::Error),
    /// ClickHouse answered with an error.
    #[error("ClickHouse answered {status}: {body}")]
    Rejected { status: u16, body: String },
    #[error("the table does not match the exporter's schema: {0}")]
    SchemaMismatch(String),
    #[error("cannot compress the batch: {0}")]
    Compress(std::io::Error),
}

struct ClickHouseClient {
    http: reqwest::Client,
    config: ClickHouseConfig,
}

impl ClickHouseClient {
    /// A POST to the HTTP interface. 18.16 refuses a POST without a body length, so statements
    /// go in the body and only inserts put their query in the URL.
    fn request(&self) -> reqwest::RequestBuilder {
        let mut request = self.http.post(&self.config.url);
        if let Some(user) = &self.config.user {
            request = request.basic_auth(user, self.config.password.as_deref());
        }
        request
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<String, ExportError> {
        let response = request.send().await.map_err(ExportError::Unreachable)?;
        let status = response.status();
        let body = response.text().await.map_err(ExportError::Unreachable)?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(ExportError::Rejected {
                status: status.as_u16(),
                body: body.chars().take(500).collect(),
            })
        }
    }

    async fn execute(&self, sql: &str) -> Result<String, ExportError> {
        self.send(self.request().body(sql.to_owned())).await
    }

    async fn ensure_schema(&self, validation: SchemaValidation) -> Result<(), ExportError> {
        let database = &self.config.database;
        let table = &self.config.table;
        self.execute(&format!("CREATE DATABASE IF NOT EXISTS `{database}`"))
            .await?;
        self.execute(&create_table_sql(database, table)).await?;
        if validation == SchemaValidation::Enabled {
            self.validate_schema().await?;
        }
        Ok(())
    }

    async fn validate_schema(&self) -> Result<(), ExportError> {
        #[derive(Deserialize)]
        struct Column {
            name: String,
            r#type: String,
        }
        let answer = self
            .execute(&format!(
                "SELECT name, type FROM system.columns WHERE database = '{}' AND table = '{}' FORMAT JSONEachRow",
                self.config.database, self.config.table
            ))
            .await?;
        let existing: Vec<Column> = answer
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .map_err(|error| {
                ExportError::SchemaMismatch(format!("unreadable system.columns: {error}"))
            })?;
        let problems: Vec<String> = COLUMNS
            .iter()
            .filter_map(
                |(name, kind)| match existing.iter().find(|column| column.name == *name) {
                    None => Some(format!("missing column {name} {kind}")),
                    Some(column) if !same_type(&column.r#type, kind) => Some(format!(
                        "column {name} is {} (expected {kind})",
                        column.r#type
                    )),
                    Some(_) => None,
                },
            )
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ExportError::SchemaMismatch(problems.join("; ")))
        }
    }

    /// Inserts a body made by [`prepare_body`] (gzipped when compression is on).
    async fn insert(&self, body: bytes::Bytes) -> Result<(), ExportError> {
        let query = format!(
            "INSERT INTO `{}`.`{}` FORMAT JSONEachRow",
            self.config.database, self.config.table
        );
        let mut request = self.request().query(&[
            ("query", query.as_str()),
            ("input_format_skip_unknown_fields", "1"),
        ]);
        if self.config.compression {
            request = request.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        self.send(request.body(body)).await.map(drop)
    }
}

/// ClickHouse spells `DateTime('UTC')` with or without quotes depending on its version.
fn same_type(actual: &str, expected: &str) -> bool {
    let normalize = |kind: &str| kind.replace(['\'', '"', ' ', '\\'], "");
    normalize(actual) == normalize(expected)
}

struct Batcher {
    client: ClickHouseClient,
    validation: SchemaValidation,
    metrics: Arc<UsageMetrics>,
}

impl Batcher {
    async fn run(self, mut receiver: mpsc::Receiver<UsageRecord>) {
        let batch_size = self.client.config.batch_size.max(1);
        let flush_interval = self.client.config.flush_interval;
        let mut schema_ready = self.create_schema().await;
        let mut batch: Vec<UsageRecord> = Vec::with_capacity(batch_size);
        loop {
            // Wait for the first row without a deadline: an idle gateway sends nothing.
            if receiver.recv_many(&mut batch, batch_size).await == 0 {
                return;
            }
            let deadline = tokio::time::Instant::now() + flush_interval;
            let mut closed = false;
            while batch.len() < batch_size {
                let room = batch_size - batch.len();
                match tokio::time::timeout_at(deadline, receiver.recv_many(&mut batch, room)).await
                {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            // Encoding and gzip take a few milliseconds for a large batch: keep them off the
            // async workers that serve requests.
            let compress = self.client.config.compression;
            let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
            let rows = full.len() as u64;
            let prepared = tokio::task::spawn_blocking(move || prepare_body(&full, compress)).await;
            match prepared {
                Ok(Ok(body)) => self.export(body, rows, &mut schema_ready, closed).await,
                Ok(Err(error)) => self.drop_batch(&ExportError::Compress(error), rows),
                Err(error) => {
                    tracing::error!(%error, "usage export: encoding a batch panicked");
                    self.metrics.dropped(DropReason::rejected, rows);
                }
            }
            if closed {
                return;
            }
        }
    }

    fn drop_batch(&self, error: &ExportError, rows: u64) {
        tracing::error!(%error, rows, "usage export: dropping a batch");
        self.metrics.dropped(DropReason::rejected, rows);
    }

    async fn create_schema(&self) -> bool {
        match self.client.ensure_schema(self.validation).await {
            Ok(()) => true,
            Err(error) => {
                self.metrics.insert_errors.inc();
                tracing::warn!(%error, "usage export: cannot create the ClickHouse schema yet");
                false
            }
        }
    }

    /// Inserts one batch, retrying with backoff; returns when it is in or has been dropped.
    async fn export(
        &self,
        body: bytes::Bytes,
        rows: u64,
        schema_ready: &mut bool,
        shutting_down: bool,
    ) {
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut rejections = 0;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = if *schema_ready {
                self.client.insert(body.clone()).await
            } else {
                match self.client.ensure_schema(self.validation).await {
                    Ok(()) => {
                        *schema_ready = true;
                        self.client.insert(body.clone()).await
                    }
                    Err(error) => Err(error),
                }
            };
            let error = match result {
                Ok(()) => {
                    self.metrics.rows_exported.inc_by(rows);
                    self.metrics
                        .batch_duration
                        .observe(started.elapsed().as_secs_f64());
                    return;
                }
                Err(error) => error,
            };
            self.metrics.insert_errors.inc();
            // Whatever failed, check the schema again next time: ClickHouse may have come back
            // with an empty data directory.
            *schema_ready = false;
            let give_up = match &error {
                ExportError::Unreachable(_) => shutting_down && attempts >= SHUTDOWN_ATTEMPTS,
                ExportError::SchemaMismatch(_) | ExportError::Compress(_) => true,
                ExportError::Rejected { .. } => {
                    rejections += 1;
                    rejections >= MAX_REJECTIONS || (shutting_down && attempts >= SHUTDOWN_ATTEMPTS)
                }
            };
            if give_up {
                self.drop_batch(&error, rows);
                return;
            }
            tracing::warn!(%error, retry_in = ?backoff, "usage export: insert failed, retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_encode_as_clickhouse_reads_them() {
        let record = UsageRecord {
            request_id: "req-1".into(),
            time: chrono::DateTime::parse_from_rfc3339("2026-11-26T15:04:05.678Z")
                .unwrap()
                .into(),
            namespace: "team-a".into(),
            key_id: "key-1".into(),
            served_model: "llama".into(),
            deployment: "llama-vllm".into(),
            provider: "openai_compatible".into(),
            endpoint: "/v1/chat/completions".into(),
            status: 200,
            error_type: None,
            input_tokens: 12,
            output_tokens: 34,
            ttft_ms: Some(f64::NAN),
            latency_ms: 56.5,
            gateway_overhead_ms: 0.25,
            streamed: true,
            cost: 0.5,
        };
        let line = String::from_utf8(encode(&[record])).unwrap();
        assert_eq!(
            line,
            "{\"request_id\":\"req-1\",\"time\":\"2026-11-26 15:04:05\",\"namespace\":\"team-a\",\
             \"key_id\":\"key-1\",\"served_model\":\"llama\",\"deployment\":\"llama-vllm\",\
             \"provider\":\"openai_compatible\",\"endpoint\":\"/v1/chat/completions\",\"status\":200,\
             \"error_type\":null,\"input_tokens\":12,\"output_tokens\":34,\"ttft_ms\":null,\
             \"latency_ms\":56.5,\"gateway_overhead_ms\":0.25,\"streamed\":1,\"cost\":0.5}\n"
        );
    }

    #[test]
    fn the_schema_is_plain_mergetree_without_datetime64() {
        let sql = create_table_sql("bud", "usage");
        assert!(sql.starts_with("CREATE TABLE IF NOT EXISTS `bud`.`usage` (`request_id` String, "));
        assert!(sql.ends_with(
            "ENGINE = MergeTree() PARTITION BY toYYYYMM(time) ORDER BY (namespace, time)"
        ));
        assert!(!sql.contains("DateTime64") && !sql.contains("LowCardinality"));
    }

    #[test]
    fn type_names_compare_across_versions() {
        assert!(same_type("DateTime(\\'UTC\\')", "DateTime('UTC')"));
        assert!(same_type("DateTime('UTC')", "DateTime('UTC')"));
        assert!(!same_type("DateTime", "DateTime('UTC')"));
    }

    #[test]
    fn only_plain_identifiers_are_accepted() {
        assert!(is_identifier("bud_usage_2"));
        assert!(!is_identifier("usage`; DROP TABLE x"));
        assert!(!is_identifier(""));
    }
}
