//! `bud-operator`: runs Bud Foundry's controllers. It serves `/metrics`, `/healthz` and
//! `/readyz`, takes part in lease-based leader election (only the leader reconciles), and
//! shuts down gracefully on SIGTERM or Ctrl-C, releasing its lease.

#![forbid(unsafe_code)]

mod leader;
mod telemetry;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use bud_controllers::{Context, metrics::Metrics};
use clap::Parser;
use leader::{LeaderElector, LeaseSettings};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// The Bud Foundry operator.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Address of the metrics and health server.
    #[arg(long, env = "BUD_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Take part in leader election; disable only when exactly one replica runs.
    #[arg(long, env = "BUD_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the leader-election Lease (defaults to the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, env = "BUD_LEASE_NAME", default_value = "bud-operator")]
    lease_name: String,
    /// This replica's identity in the election (defaults to the pod name, else host and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a lease lasts without renewal.
    #[arg(long, env = "BUD_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Container image of each engine, `ENGINE=IMAGE` (engines: vllm, sglang, tgi, llamacpp,
    /// tensorrtllm, hf-downloader, s3-downloader); repeat the flag or separate with commas.
    #[arg(long, env = "BUD_ENGINE_IMAGES", value_delimiter = ',')]
    engine_image: Vec<String>,
    /// Prometheus URL that KEDA ScaledObjects query for engine metrics.
    #[arg(
        long,
        env = "BUD_PROMETHEUS_URL",
        default_value = "http://prometheus-server.monitoring:80"
    )]
    prometheus_url: String,
    /// OpenTelemetry collector (OTLP/HTTP base URL, e.g. http://otel-collector:4318): every
    /// reconcile becomes a span.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Log format: `text` or `json`. Log levels come from RUST_LOG (default `info`).
    #[arg(long, env = "BUD_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Endpoint for every AWS API the EKS clusters use (EKS, STS), e.g. a moto server;
    /// the SDK's regional endpoints when unset.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    aws_endpoint_url: Option<String>,
    /// Azure AD authority that issues service-principal tokens for AKS clusters.
    #[arg(long, env = "BUD_AZURE_AUTHORITY_URL", default_value = bud_controllers::budcluster::aks::DEFAULT_AUTHORITY_URL)]
    azure_authority_url: String,
    /// Azure Resource Manager endpoint for AKS clusters.
    #[arg(long, env = "BUD_AZURE_RESOURCE_MANAGER_URL", default_value = bud_controllers::budcluster::aks::DEFAULT_RESOURCE_MANAGER_URL)]
    azure_resource_manager_url: String,
    /// Namespace where the kubeconfig Secrets of EKS/AKS clusters are written (defaults to
    /// the lease namespace, i.e. the operator's own).
    #[arg(long, env = "BUD_KUBECONFIG_SECRET_NAMESPACE")]
    kubeconfig_secret_namespace: Option<String>,
}

struct Health {
    registry: Registry,
    ready: AtomicBool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Before the runtime: the OTLP exporter's blocking client must not live inside it.
    let _telemetry = telemetry::init(cli.log_format == "json", cli.otlp_endpoint.as_deref())?;
    tokio::runtime::Runtime::new()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Pick ring for every client that does not choose its own: a workspace-wide build can
    // link aws-lc-rs too (feature unification), and then rustls refuses to guess. Fails
    // only if a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let client = kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!("cannot build a Kubernetes client (in-cluster or KUBECONFIG): {e}")
    })?;
    let identity = cli.identity.clone().unwrap_or_else(default_identity);

    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let leader_gauge = Gauge::<i64>::default();
    registry.register(
        "bud_operator_leader",
        "1 while this replica is the leader",
        leader_gauge.clone(),
    );
    let health = Arc::new(Health {
        registry,
        ready: AtomicBool::new(false),
    });

    let listener = tokio::net::TcpListener::bind(cli.metrics_addr)
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot listen on --metrics-addr {}: {e}", cli.metrics_addr)
        })?;
    tracing::info!(addr = %listener.local_addr()?, %identity, "serving /metrics, /healthz and /readyz");
    let app = Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(health.clone());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut server_shutdown = shutdown_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_shutdown.wait_for(|stop| *stop).await;
            })
            .await
    });
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(true);
    });

    let elector = cli.leader_election.then(|| {
        LeaderElector::new(
            client.clone(),
            LeaseSettings {
                namespace: cli.lease_namespace.clone(),
                name: cli.lease_name.clone(),
                identity: identity.clone(),
                lease_duration: Duration::from_secs(cli.lease_duration_seconds),
                renew_every: Duration::from_secs((cli.lease_duration_seconds / 3).max(1)),
            },
        )
    });
    if let Some(elector) = &elector {
        let mut stop = shutdown_rx.clone();
        tokio::select! {
            result = elector.acquire() => result?,
            _ = stop.wait_for(|s| *s) => { server.await??; return Ok(()); }
        }
        tracing::info!(lease = %cli.lease_name, "acquired leadership");
    }
    leader_gauge.set(1);
    health.ready.store(true, Ordering::Relaxed);

    let ctx = Arc::new(Context::new(client.clone(), metrics, Some(identity)));
    let stop_signal = {
        let mut stop = shutdown_rx.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    let cluster_settings = bud_controllers::budcluster::Settings {
        aws_endpoint_url: cli.aws_endpoint_url.clone(),
        azure_authority_url: cli.azure_authority_url.clone(),
        azure_resource_manager_url: cli.azure_resource_manager_url.clone(),
        kubeconfig_secret_namespace: cli
            .kubeconfig_secret_namespace
            .clone()
            .unwrap_or_else(|| cli.lease_namespace.clone()),
    };
    let stop = || {
        let mut stop = shutdown_rx.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    let deployment_settings = bud_controllers::modeldeployment::Settings {
        images: engine_images(&cli),
        prometheus_url: cli.prometheus_url.clone(),
    };
    let controllers = async {
        tokio::join!(
            bud_controllers::budcluster::run_with(ctx.clone(), cluster_settings, stop_signal),
            bud_controllers::simulation::run(ctx.clone(), stop()),
            bud_controllers::modeldeployment::run(ctx.clone(), deployment_settings, stop()),
            bud_controllers::apikey::run(ctx.clone(), stop()),
        )
    };
    let lost = async {
        match &elector {
            Some(elector) => elector.hold().await,
            None => std::future::pending().await,
        }
    };
    let lost_leadership = tokio::select! {
        _ = controllers => false,
        _ = lost => true,
    };
    leader_gauge.set(0);
    if lost_leadership {
        anyhow::bail!("lost leadership; exiting so that a fresh start rejoins the election");
    }
    if let Some(elector) = &elector
        && let Err(err) = elector.release().await
    {
        tracing::warn!(error = %err, "could not release the lease");
    }
    server.await??;
    Ok(())
}

/// The engine images: defaults overridden by `--engine-image ENGINE=IMAGE`.
fn engine_images(cli: &Cli) -> bud_controllers::modeldeployment::render::EngineImages {
    let mut images = bud_controllers::modeldeployment::render::EngineImages::default();
    for entry in &cli.engine_image {
        let Some((engine, image)) = entry.split_once('=') else {
            tracing::warn!(%entry, "ignoring --engine-image without ENGINE=IMAGE");
            continue;
        };
        let slot = match engine {
            "vllm" => &mut images.vllm,
            "sglang" => &mut images.sglang,
            "tgi" => &mut images.tgi,
            "llamacpp" => &mut images.llama_cpp,
            "tensorrtllm" => &mut images.tensorrt_llm,
            "hf-downloader" => &mut images.hf_downloader,
            "s3-downloader" => &mut images.s3_downloader,
            other => {
                tracing::warn!(engine = %other, "ignoring --engine-image for an unknown engine; known: vllm, sglang, tgi, llamacpp, tensorrtllm, hf-downloader, s3-downloader");
                continue;
            }
        };
        *slot = image.to_owned();
    }
    images
}

async fn serve_metrics(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &health.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            e.to_string(),
        ),
    }
}

/// Ready once this replica leads (or runs without election); followers report not ready so
/// that dashboards and rollouts can tell them apart.
async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "waiting for leadership")
    }
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "bud-operator".into());
    format!("{host}-{}", std::process::id())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
