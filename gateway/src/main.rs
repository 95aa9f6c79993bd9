//! `bud-gateway`: parses flags, wires the library's pieces, serves until SIGTERM/ctrl-c.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use clap::Parser;

use bud_gateway::limits::Limiter;
use bud_gateway::metrics::{Metrics, ReloadLabels};
use bud_gateway::providers::{HttpClients, Timeouts};
use bud_gateway::routing::balancer::HealthConfig;
use bud_gateway::routing::file::FileSource;
use bud_gateway::routing::kubernetes::KubernetesSource;
use bud_gateway::routing::{Snapshot, SnapshotBuilder};
use bud_gateway::server::proxy::ForwardConfig;
use bud_gateway::server::{self, AppState, ServerConfig};
use bud_gateway::usage::{self, ClickHouseConfig, SchemaValidation, UsageExporter};

#[derive(Debug, Parser)]
#[command(
    name = "bud-gateway",
    version,
    about = "OpenAI- and Anthropic-compatible gateway of Bud Foundry"
)]
struct Args {
    /// Address to listen on (`127.0.0.1:0` picks a free port; the chosen one is printed).
    #[arg(long, env = "BUD_GATEWAY_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Routes file (YAML): deployments, keys, credentials. Reloaded when it changes.
    #[arg(long, env = "BUD_GATEWAY_ROUTES_FILE")]
    routes_file: Option<PathBuf>,
    /// How often the routes file is checked for changes, in milliseconds.
    #[arg(long, env = "BUD_GATEWAY_ROUTES_POLL_MS", default_value_t = 1000)]
    routes_poll_ms: u64,
    /// Watch ModelDeployments, ApiKeys and credential Secrets (kubeconfig or in-cluster).
    #[arg(long, env = "BUD_GATEWAY_KUBERNETES", conflicts_with = "routes_file")]
    kubernetes: bool,
    /// Label selector restricting the Secret watch, e.g. `bud.studio/credentials=true`.
    #[arg(long, env = "BUD_GATEWAY_SECRET_LABEL_SELECTOR")]
    secret_label_selector: Option<String>,
    /// Shared rate limits across replicas through this Redis (or Valkey) URL.
    #[arg(long, env = "BUD_GATEWAY_REDIS_URL")]
    redis_url: Option<String>,
    /// ClickHouse HTTP URL for usage rows (e.g. http://127.0.0.1:8123); unset = no export.
    #[arg(long, env = "BUD_GATEWAY_CLICKHOUSE_URL")]
    clickhouse_url: Option<String>,
    #[arg(long, env = "BUD_GATEWAY_CLICKHOUSE_DATABASE", default_value = "bud")]
    clickhouse_database: String,
    #[arg(long, env = "BUD_GATEWAY_CLICKHOUSE_TABLE", default_value = "usage")]
    clickhouse_table: String,
    #[arg(long, env = "BUD_GATEWAY_CLICKHOUSE_USER")]
    clickhouse_user: Option<String>,
    #[arg(long, env = "BUD_GATEWAY_CLICKHOUSE_PASSWORD", hide_env_values = true)]
    clickhouse_password: Option<String>,
    /// Gzip insert bodies (switch off for servers that reject compressed inserts).
    #[arg(long, env = "BUD_GATEWAY_CLICKHOUSE_COMPRESSION", default_value_t = true, action = clap::ArgAction::Set)]
    clickhouse_compression: bool,
    /// Check the table's columns before inserting.
    #[arg(long, env = "BUD_GATEWAY_CLICKHOUSE_SCHEMA_VALIDATION", default_value_t = true, action = clap::ArgAction::Set)]
    clickhouse_schema_validation: bool,
    #[arg(
        long,
        env = "BUD_GATEWAY_CLICKHOUSE_BATCH_SIZE",
        default_value_t = 1000
    )]
    clickhouse_batch_size: usize,
    #[arg(long, env = "BUD_GATEWAY_CLICKHOUSE_FLUSH_MS", default_value_t = 1000)]
    clickhouse_flush_ms: u64,
    #[arg(
        long,
        env = "BUD_GATEWAY_CLICKHOUSE_CHANNEL_CAPACITY",
        default_value_t = 100_000
    )]
    clickhouse_channel_capacity: usize,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "BUD_GATEWAY_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    max_body_bytes: usize,
    #[arg(long, env = "BUD_GATEWAY_CONNECT_TIMEOUT_MS", default_value_t = 2_000)]
    connect_timeout_ms: u64,
    /// Until response headers (and for streams the first event) arrive.
    #[arg(
        long,
        env = "BUD_GATEWAY_FIRST_BYTE_TIMEOUT_MS",
        default_value_t = 120_000
    )]
    first_byte_timeout_ms: u64,
    #[arg(long, env = "BUD_GATEWAY_TOTAL_TIMEOUT_MS", default_value_t = 600_000)]
    total_timeout_ms: u64,
    /// Attempts within one priority group before falling back to the next.
    #[arg(long, env = "BUD_GATEWAY_MAX_ATTEMPTS", default_value_t = 3)]
    max_attempts: u32,
    /// Retries allowed per request on average (plus `retry_budget_min` in reserve).
    #[arg(long, env = "BUD_GATEWAY_RETRY_BUDGET_RATIO", default_value_t = 0.2)]
    retry_budget_ratio: f64,
    #[arg(long, env = "BUD_GATEWAY_RETRY_BUDGET_MIN", default_value_t = 10)]
    retry_budget_min: u64,
    /// Consecutive failures that eject an endpoint.
    #[arg(long, env = "BUD_GATEWAY_EJECT_AFTER", default_value_t = 3)]
    eject_after: u32,
    /// First probe delay after an ejection (doubles while probes fail).
    #[arg(long, env = "BUD_GATEWAY_EJECTION_MS", default_value_t = 5_000)]
    ejection_ms: u64,
    #[arg(long, env = "BUD_GATEWAY_EJECTION_MAX_MS", default_value_t = 60_000)]
    ejection_max_ms: u64,
    /// Tokens reserved at admission when a request names no max_tokens.
    #[arg(
        long,
        env = "BUD_GATEWAY_DEFAULT_RESERVE_TOKENS",
        default_value_t = 1024
    )]
    default_reserve_tokens: u64,
    /// Speak HTTP/2 without TLS (h2c) to engines over this many connections per engine;
    /// 0 = HTTP/1.1 with a connection pool.
    #[arg(
        long,
        env = "BUD_GATEWAY_UPSTREAM_H2C_CONNECTIONS",
        default_value_t = 0
    )]
    upstream_h2c_connections: usize,
    /// OTLP/HTTP collector base URL (e.g. http://127.0.0.1:4318): one span per request with
    /// the GenAI semantic-convention attributes.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Log as JSON lines.
    #[arg(long, env = "BUD_GATEWAY_LOG_JSON")]
    log_json: bool,
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Before the runtime: the OTLP exporter's blocking client must not live inside it.
    let telemetry = bud_gateway::telemetry::init(args.log_json, args.otlp_endpoint.as_deref())?;
    let tracing = telemetry.tracing_enabled();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(args, tracing));
    drop(runtime);
    drop(telemetry);
    result
}

async fn run(args: Args, tracing: bool) -> anyhow::Result<()> {
    let clients = HttpClients::new(
        Duration::from_millis(args.connect_timeout_ms),
        args.upstream_h2c_connections,
    )
    .context("building HTTP clients")?;
    let probe_client = clients.default.clone();
    let builder = Arc::new(SnapshotBuilder::new(clients));
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
    let metrics = Metrics::default();

    let limiter = match &args.redis_url {
        Some(url) => Limiter::redis(url).await.context("connecting to Redis")?,
        None => Limiter::local(),
    };
    let usage = match &args.clickhouse_url {
        Some(url) => {
            let config = ClickHouseConfig {
                url: url.clone(),
                database: args.clickhouse_database.clone(),
                table: args.clickhouse_table.clone(),
                user: args.clickhouse_user.clone(),
                password: args.clickhouse_password.clone(),
                compression: args.clickhouse_compression,
                batch_size: args.clickhouse_batch_size,
                flush_interval: Duration::from_millis(args.clickhouse_flush_ms),
                channel_capacity: args.clickhouse_channel_capacity,
            };
            let validation = if args.clickhouse_schema_validation {
                SchemaValidation::Enabled
            } else {
                SchemaValidation::Disabled
            };
            usage::spawn_clickhouse_exporter_with(config, validation)
        }
        None => UsageExporter::disabled(),
    };

    let config = ServerConfig {
        max_body_bytes: args.max_body_bytes,
        default_reserve_tokens: args.default_reserve_tokens,
        forward: ForwardConfig {
            timeouts: Timeouts {
                first_byte: Duration::from_millis(args.first_byte_timeout_ms),
                total: Duration::from_millis(args.total_timeout_ms),
            },
            max_attempts_per_group: args.max_attempts.max(1),
            health: HealthConfig {
                eject_after_failures: args.eject_after.max(1),
                base_ejection: Duration::from_millis(args.ejection_ms),
                max_ejection: Duration::from_millis(args.ejection_max_ms.max(args.ejection_ms)),
            },
        },
        retry_budget_ratio: args.retry_budget_ratio,
        retry_budget_min: args.retry_budget_min,
        tracing,
    };
    let state = Arc::new(AppState::new(
        config,
        snapshot.clone(),
        metrics.clone(),
        limiter,
        usage,
        probe_client,
    ));

    let mut kubernetes_task = None;
    match &args.routes_file {
        None if args.kubernetes => {
            let client = kube::Client::try_default()
                .await
                .context("connecting to Kubernetes")?;
            let source = KubernetesSource {
                client,
                builder: builder.clone(),
                snapshot: snapshot.clone(),
                secret_label_selector: args.secret_label_selector.clone(),
            };
            let ready_state = state.clone();
            let reloads = metrics.reloads.clone();
            kubernetes_task = Some(tokio::spawn(async move {
                source
                    .run(
                        move || ready_state.set_ready(true),
                        move |ok| {
                            reloads
                                .get_or_create(&ReloadLabels {
                                    source: "kubernetes",
                                    result: if ok { "ok" } else { "error" },
                                })
                                .inc();
                        },
                    )
                    .await
            }));
        }
        Some(path) => {
            let source = FileSource {
                path: path.clone(),
                builder: builder.clone(),
                snapshot: snapshot.clone(),
                poll_interval: Duration::from_millis(args.routes_poll_ms.max(10)),
            };
            let contents = source.load()?;
            state.set_ready(true);
            let reloads = metrics.reloads.clone();
            tokio::spawn(source.watch(contents, move |ok| {
                reloads
                    .get_or_create(&ReloadLabels {
                        source: "file",
                        result: if ok { "ok" } else { "error" },
                    })
                    .inc();
            }));
        }
        None => {
            tracing::warn!(
                "no routes source configured (--routes-file or --kubernetes): serving no models"
            );
            state.set_ready(true);
        }
    }

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr()?;
    // Tests and scripts read this line to learn the port.
    println!("listening on {local}");
    tracing::info!(address = %local, "gateway listening");
    let serve = server::serve(listener, state, shutdown_signal());
    match kubernetes_task {
        None => serve.await?,
        Some(task) => tokio::select! {
            served = serve => served?,
            watched = task => {
                watched.context("Kubernetes source panicked")??;
            }
        },
    }
    Ok(())
}
