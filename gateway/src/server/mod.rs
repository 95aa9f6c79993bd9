//! The HTTP server: routes, shared state, request ids, health and metrics endpoints.

pub mod inference;
pub mod proxy;
pub mod record;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use crate::error::{ApiFormat, GatewayError};
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::routing::Snapshot;
use crate::usage::UsageExporter;
use proxy::{ForwardConfig, RetryBudget};

/// Request-path settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub max_body_bytes: usize,
    /// Tokens reserved at admission when a request names no `max_tokens`.
    pub default_reserve_tokens: u64,
    pub forward: ForwardConfig,
    pub retry_budget_ratio: f64,
    pub retry_budget_min: u64,
    /// Create a span per request (an OTLP endpoint is configured).
    pub tracing: bool,
}

/// Shared by every request.
pub struct AppState {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub ready: AtomicBool,
    pub metrics: Metrics,
    pub registry: Registry,
    pub limiter: Limiter,
    pub usage: UsageExporter,
    pub forward: ForwardConfig,
    pub retry_budget: RetryBudget,
    pub max_body_bytes: usize,
    pub default_reserve_tokens: u64,
    pub probe_client: reqwest::Client,
    pub tracing_enabled: bool,
}

impl AppState {
    pub fn new(
        config: ServerConfig,
        snapshot: Arc<ArcSwap<Snapshot>>,
        metrics: Metrics,
        limiter: Limiter,
        usage: UsageExporter,
        probe_client: reqwest::Client,
    ) -> Self {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        {
            let sub = registry.sub_registry_with_prefix("bud_gateway");
            limiter.register_metrics(sub);
            usage.register_metrics(sub);
        }
        Self {
            snapshot,
            ready: AtomicBool::new(false),
            metrics,
            registry,
            limiter,
            usage,
            forward: config.forward,
            retry_budget: RetryBudget::new(config.retry_budget_ratio, config.retry_budget_min),
            max_body_bytes: config.max_body_bytes,
            default_reserve_tokens: config.default_reserve_tokens,
            probe_client,
            tracing_enabled: config.tracing,
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

/// The request id of this request (from a sane inbound `x-request-id`, or generated).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

const REQUEST_ID: &str = "x-request-id";

fn valid_request_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// 128 random bits as 32 hex digits, from a per-thread generator (no system call per request).
fn new_request_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map(str::to_string)
        .unwrap_or_else(new_request_id);
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// All routes of the gateway.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(inference::chat_completions))
        .route("/v1/completions", post(inference::completions))
        .route("/v1/embeddings", post(inference::embeddings))
        .route("/v1/messages", post(inference::messages))
        .route("/v1/models", get(models))
        .route("/v1/models/{model}", get(model))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

async fn not_found(headers: HeaderMap) -> Response {
    GatewayError::not_found("Unknown path").into_response(format_of(&headers))
}

/// Anthropic clients send `anthropic-version`; everything else is treated as OpenAI.
pub fn format_of(headers: &HeaderMap) -> ApiFormat {
    if headers.contains_key("anthropic-version") {
        ApiFormat::Anthropic
    } else {
        ApiFormat::OpenAi
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "routes not loaded").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, &state.registry).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed").into_response();
    }
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// The served names the caller's key may use, in a shape both SDKs accept.
async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let format = format_of(&headers);
    let snapshot = state.snapshot.load();
    let key = match crate::keys::authenticate(&headers, &snapshot, chrono::Utc::now()) {
        Ok(k) => k,
        Err(e) => return e.into_response(format),
    };
    let data: Vec<Value> = snapshot
        .models_for(&key)
        .iter()
        .map(|m| model_object(m))
        .collect();
    let first = data.first().map(|m| m["id"].clone()).unwrap_or(Value::Null);
    let last = data.last().map(|m| m["id"].clone()).unwrap_or(Value::Null);
    axum::Json(json!({"object": "list", "data": data, "has_more": false, "first_id": first, "last_id": last}))
        .into_response()
}

/// One served name, if the caller's key may use it.
async fn model(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let format = format_of(&headers);
    let snapshot = state.snapshot.load();
    let key = match crate::keys::authenticate(&headers, &snapshot, chrono::Utc::now()) {
        Ok(k) => k,
        Err(e) => return e.into_response(format),
    };
    match snapshot.resolve(&key, &name) {
        Ok(m) => axum::Json(model_object(&m)).into_response(),
        Err(e) => e.into_response(format),
    }
}

fn model_object(m: &crate::routing::ModelRoute) -> Value {
    json!({
        "id": m.served_name,
        "object": "model",
        "created": 0,
        "owned_by": m.namespace,
        "type": "model",
        "display_name": m.served_name,
        "created_at": "1970-01-01T00:00:00Z",
    })
}

/// Serves until `shutdown` resolves; every accepted socket gets `TCP_NODELAY`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
