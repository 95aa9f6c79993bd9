//! Usage export against a real `clickhouse-server`: rows read back (compressed and plain),
//! the schema recreated after it disappears, schema validation switched on and off, and an
//! outage (server killed) with recovery (server restarted on the same data directory); and,
//! when `BUD_TEST_CLICKHOUSE_CURRENT_URL` is set, the same schema and rows on current ClickHouse.
//!
//! Uses the ClickHouse at `BUD_TEST_CLICKHOUSE_URL` when set (see `tests/services.sh`),
//! otherwise starts its own server on free loopback ports; the outage test always starts its
//! own. When neither is possible the tests print why and pass without checking anything.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bud_gateway::usage::{
    ClickHouseConfig, SchemaValidation, UsageExporter, UsageRecord, spawn_clickhouse_exporter,
    spawn_clickhouse_exporter_with,
};
use prometheus_client::registry::Registry;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A ClickHouse server child with its own config and data directory; killed on drop.
struct ClickHouseServer {
    child: Option<Child>,
    program: (PathBuf, Option<&'static str>),
    http_port: u16,
    dir: PathBuf,
}

/// `clickhouse-server` (Debian's 18.16), or `clickhouse server` (current single binary).
fn clickhouse_program() -> Option<(PathBuf, Option<&'static str>)> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .collect();
    let find = |name: &str| {
        dirs.iter()
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    };
    find("clickhouse-server")
        .map(|path| (path, None))
        .or_else(|| find("clickhouse").map(|path| (path, Some("server"))))
}

impl ClickHouseServer {
    fn start() -> Option<ClickHouseServer> {
        let program = clickhouse_program()?;
        let dir = std::env::temp_dir().join(format!(
            "bud-usage-clickhouse-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["data", "tmp", "user_files", "format_schemas"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create the ClickHouse directories");
        }
        let http_port = free_port();
        let tcp_port = free_port();
        let d = dir.display();
        // `<yandex>` is the root both 18.16 and current ClickHouse read.
        std::fs::write(
            dir.join("config.xml"),
            format!(
                "<yandex>\n\
                 <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog><console>0</console></logger>\n\
                 <http_port>{http_port}</http_port><tcp_port>{tcp_port}</tcp_port>\n\
                 <listen_host>127.0.0.1</listen_host>\n\
                 <path>{d}/data/</path><tmp_path>{d}/tmp/</tmp_path>\n\
                 <user_files_path>{d}/user_files/</user_files_path><format_schema_path>{d}/format_schemas/</format_schema_path>\n\
                 <users_config>{d}/users.xml</users_config>\n\
                 <default_profile>default</default_profile><default_database>default</default_database>\n\
                 <mark_cache_size>268435456</mark_cache_size>\n\
                 </yandex>\n"
            ),
        )
        .expect("write config.xml");
        std::fs::write(
            dir.join("users.xml"),
            "<yandex><profiles><default></default></profiles>\
             <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>\
             <profile>default</profile><quota>default</quota></default></users>\
             <quotas><default></default></quotas></yandex>\n",
        )
        .expect("write users.xml");
        let mut server = ClickHouseServer {
            child: None,
            program,
            http_port,
            dir,
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let mut command = Command::new(&self.program.0);
        if let Some(subcommand) = self.program.1 {
            command.arg(subcommand);
        }
        let child = command
            .arg(format!(
                "--config-file={}",
                self.dir.join("config.xml").display()
            ))
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start clickhouse-server");
        self.child = Some(child);
        let url = self.url();
        wait_for(
            "clickhouse-server to answer /ping",
            Duration::from_secs(60),
            || ping(&url),
        );
    }

    /// Kills the server (an outage, not a clean shutdown).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A blocking HTTP call to ClickHouse (std only, so the checks do not share the exporter's
/// client or runtime). Returns the body of a 200 answer.
fn query(url: &str, sql: &str) -> Option<String> {
    use std::io::{Read, Write};
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!(
        "POST / HTTP/1.0\r\nHost: {address}\r\nContent-Length: {}\r\n\r\n{sql}",
        sql.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_owned()))
}

fn ping(url: &str) -> bool {
    query(url, "SELECT 1").is_some_and(|body| body.trim() == "1")
}

fn count(url: &str, table: &str) -> u64 {
    query(url, &format!("SELECT count() FROM {table}"))
        .and_then(|body| body.trim().parse().ok())
        .unwrap_or(0)
}

/// The exporter's warnings in the output of a failing test.
fn init_tracing() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
}

fn shared_clickhouse() -> Option<(String, Option<ClickHouseServer>)> {
    if let Ok(url) = std::env::var("BUD_TEST_CLICKHOUSE_URL") {
        return Some((url, None));
    }
    let server = ClickHouseServer::start()?;
    Some((server.url(), Some(server)))
}

fn skip(test: &str) {
    println!(
        "SKIPPED {test}: clickhouse-server is not installed and BUD_TEST_CLICKHOUSE_URL is not set (run gateway/tests/services.sh)"
    );
}

fn unique_database(name: &str) -> String {
    format!(
        "bud_test_{name}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn config(url: &str, database: &str) -> ClickHouseConfig {
    ClickHouseConfig {
        database: database.to_owned(),
        table: "usage".to_owned(),
        batch_size: 25,
        flush_interval: Duration::from_millis(50),
        channel_capacity: 1000,
        ..ClickHouseConfig::new(url)
    }
}

fn row(request_id: String) -> UsageRecord {
    UsageRecord {
        request_id,
        time: chrono::Utc::now(),
        namespace: "team-a".into(),
        key_id: "key-1".into(),
        served_model: "llama-3-8b".into(),
        deployment: "llama-vllm".into(),
        provider: "openai_compatible".into(),
        endpoint: "/v1/chat/completions".into(),
        status: 200,
        error_type: None,
        input_tokens: 12,
        output_tokens: 34,
        ttft_ms: None,
        latency_ms: 56.5,
        gateway_overhead_ms: 0.25,
        streamed: false,
        cost: 0.001,
    }
}

fn metric(exporter: &UsageExporter, name: &str) -> f64 {
    let mut registry = Registry::default();
    exporter.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `condition` on the test runtime without blocking the exporter's task.
async fn eventually(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_read_back_compressed_and_plain() {
    init_tracing();
    let Some((url, _server)) = shared_clickhouse() else {
        return skip("rows_are_read_back_compressed_and_plain");
    };
    for (compression, validation) in [
        (true, SchemaValidation::Enabled),
        (false, SchemaValidation::Disabled),
    ] {
        let database = unique_database(if compression { "gzip" } else { "plain" });
        let exporter = spawn_clickhouse_exporter_with(
            ClickHouseConfig {
                compression,
                ..config(&url, &database)
            },
            validation,
        );
        for i in 0..120 {
            let mut record = row(format!("req-{i:03}"));
            if i == 7 {
                record.status = 429;
                record.error_type = Some("rate_limited".into());
                record.ttft_ms = Some(12.5);
                record.streamed = true;
                record.input_tokens = 4_000_000_000;
            }
            exporter.record(record);
        }
        let table = format!("{database}.usage");
        eventually("120 rows in ClickHouse", Duration::from_secs(30), || {
            count(&url, &table) == 120
        })
        .await;
        // The exporter counts a batch once ClickHouse has answered the insert, so the rows can
        // be visible a moment before the counter moves.
        eventually(
            "the exporter to count the 120 rows",
            Duration::from_secs(10),
            || metric(&exporter, "usage_rows_exported_total") == 120.0,
        )
        .await;
        assert_eq!(metric(&exporter, "usage_rows_dropped_total"), 0.0);
        let special = query(
            &url,
            &format!(
                "SELECT request_id, namespace, status, error_type, input_tokens, ttft_ms, streamed, latency_ms \
                 FROM {table} WHERE request_id = 'req-007' FORMAT TabSeparated"
            ),
        )
        .unwrap();
        assert_eq!(
            special.trim(),
            "req-007\tteam-a\t429\trate_limited\t4000000000\t12.5\t1\t56.5"
        );
        let plain = query(
            &url,
            &format!("SELECT error_type, ttft_ms, streamed FROM {table} WHERE request_id = 'req-008' FORMAT TabSeparated"),
        )
        .unwrap();
        assert_eq!(plain.trim(), "\\N\t\\N\t0");
        let _ = query(&url, &format!("DROP DATABASE {database}"));
    }
}

/// Current ClickHouse (`BUD_TEST_CLICKHOUSE_CURRENT_URL`, e.g. the chDB-backed
/// `usage_chdb_http.py` that `services.sh` starts with `BUD_TEST_CHDB=1`): the same schema,
/// validation and JSONEachRow inserts must work there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_clickhouse_accepts_the_same_schema_and_rows() {
    init_tracing();
    let Ok(url) = std::env::var("BUD_TEST_CLICKHOUSE_CURRENT_URL") else {
        println!(
            "SKIPPED current_clickhouse_accepts_the_same_schema_and_rows: BUD_TEST_CLICKHOUSE_CURRENT_URL is not set \
             (BUD_TEST_CHDB=1 gateway/tests/services.sh start)"
        );
        return;
    };
    for compression in [true, false] {
        let database = unique_database("current");
        let table = format!("{database}.usage");
        let exporter = spawn_clickhouse_exporter(ClickHouseConfig {
            compression,
            ..config(&url, &database)
        });
        for i in 0..60 {
            let mut record = row(format!("req-{i:03}"));
            if i == 7 {
                record.error_type = Some("upstream_timeout".into());
                record.ttft_ms = Some(3.5);
                record.streamed = true;
            }
            exporter.record(record);
        }
        eventually(
            "60 rows in current ClickHouse",
            Duration::from_secs(30),
            || count(&url, &table) == 60,
        )
        .await;
        let special = query(
            &url,
            &format!(
                "SELECT request_id, error_type, ttft_ms, streamed, toString(time) != '' \
                 FROM {table} WHERE request_id = 'req-007' FORMAT TabSeparated"
            ),
        )
        .unwrap();
        assert_eq!(special.trim(), "req-007\tupstream_timeout\t3.5\t1\t1");
        assert_eq!(metric(&exporter, "usage_rows_dropped_total"), 0.0);
        let _ = query(&url, &format!("DROP DATABASE {database}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_table_is_recreated() {
    init_tracing();
    let Some((url, _server)) = shared_clickhouse() else {
        return skip("a_dropped_table_is_recreated");
    };
    let database = unique_database("recreate");
    let table = format!("{database}.usage");
    let exporter = spawn_clickhouse_exporter(config(&url, &database));
    exporter.record(row("before".into()));
    eventually("the first row", Duration::from_secs(30), || {
        count(&url, &table) == 1
    })
    .await;
    query(&url, &format!("DROP TABLE {table}")).expect("drop the table");
    exporter.record(row("after".into()));
    eventually(
        "the row after the table was dropped",
        Duration::from_secs(30),
        || count(&url, &table) == 1,
    )
    .await;
    assert!(metric(&exporter, "usage_insert_errors_total") >= 1.0);
    let _ = query(&url, &format!("DROP DATABASE {database}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_validation_can_be_switched_off_for_a_foreign_table() {
    init_tracing();
    let Some((url, _server)) = shared_clickhouse() else {
        return skip("schema_validation_can_be_switched_off_for_a_foreign_table");
    };
    let database = unique_database("foreign");
    let table = format!("{database}.usage");
    query(&url, &format!("CREATE DATABASE {database}")).unwrap();
    // A table created by hand with fewer columns and a plain DateTime.
    query(
        &url,
        &format!(
            "CREATE TABLE {table} (request_id String, time DateTime, namespace String, status UInt16) \
             ENGINE = MergeTree() PARTITION BY toYYYYMM(time) ORDER BY (namespace, time)"
        ),
    )
    .unwrap();

    let validating =
        spawn_clickhouse_exporter_with(config(&url, &database), SchemaValidation::Enabled);
    validating.record(row("refused".into()));
    eventually(
        "the mismatch to be reported",
        Duration::from_secs(30),
        || metric(&validating, "usage_rows_dropped_total{reason=\"rejected\"}") == 1.0,
    )
    .await;
    assert_eq!(count(&url, &table), 0);

    let lenient =
        spawn_clickhouse_exporter_with(config(&url, &database), SchemaValidation::Disabled);
    lenient.record(row("accepted".into()));
    eventually(
        "the row in the foreign table",
        Duration::from_secs(30),
        || count(&url, &table) == 1,
    )
    .await;
    let _ = query(&url, &format!("DROP DATABASE {database}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_drops_beyond_the_bound_and_recovery_delivers_the_rest() {
    init_tracing();
    let Some(mut server) = ClickHouseServer::start() else {
        return skip("an_outage_drops_beyond_the_bound_and_recovery_delivers_the_rest");
    };
    let url = server.url();
    let database = unique_database("outage");
    let table = format!("{database}.usage");
    let capacity = 100;
    let batch_size = 10;
    let exporter = spawn_clickhouse_exporter(ClickHouseConfig {
        channel_capacity: capacity,
        batch_size,
        ..config(&url, &database)
    });
    for i in 0..20 {
        exporter.record(row(format!("before-{i}")));
    }
    eventually(
        "the rows before the outage",
        Duration::from_secs(30),
        || count(&url, &table) == 20,
    )
    .await;

    server.kill();
    let during = 500;
    let started = Instant::now();
    for i in 0..during {
        exporter.record(row(format!("during-{i}")));
    }
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "record() must never wait on ClickHouse"
    );
    // At most one batch in the batcher's hands plus a full channel survive; the rest is counted.
    let dropped = metric(&exporter, "usage_rows_dropped_total") as usize;
    assert!(
        dropped >= during - capacity - batch_size && dropped <= during - capacity,
        "dropped {dropped}"
    );
    eventually(
        "the failed inserts to be counted",
        Duration::from_secs(30),
        || metric(&exporter, "usage_insert_errors_total") >= 1.0,
    )
    .await;

    server.spawn();
    let kept = (during - dropped) as u64;
    eventually(
        "the buffered rows after recovery",
        Duration::from_secs(60),
        || count(&url, &table) == 20 + kept,
    )
    .await;
    for i in 0..30 {
        exporter.record(row(format!("after-{i}")));
    }
    eventually(
        "the rows recorded after recovery",
        Duration::from_secs(30),
        || count(&url, &table) == 50 + kept,
    )
    .await;
    // Every row is either exported or counted as dropped (the export counter moves once
    // ClickHouse has answered the insert, a moment after the rows are visible).
    eventually(
        "every row to be either exported or counted as dropped",
        Duration::from_secs(10),
        || {
            let exported = metric(&exporter, "usage_rows_exported_total") as usize;
            let dropped = metric(&exporter, "usage_rows_dropped_total") as usize;
            exported + dropped == 20 + during + 30
        },
    )
    .await;
}
