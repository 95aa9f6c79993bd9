//! The per-request record: filled in as the request proceeds and finalised exactly once when
//! it drops (end of response, end of stream, or client disconnect). Finalising emits the
//! usage row, the metrics, and settles the rate-limit reservation.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::limits::Admission;
use crate::metrics::{ModelLabels, RequestLabels, TokenLabels};
use crate::usage::UsageRecord;

use super::AppState;

/// Status recorded when the client went away before the response finished.
pub const CLIENT_CLOSED: u16 = 499;

pub struct RequestRecord {
    state: Arc<AppState>,
    pub endpoint: &'static str,
    pub request_id: String,
    pub started: Instant,
    pub time: chrono::DateTime<chrono::Utc>,
    pub namespace: String,
    pub key_id: String,
    pub served_model: String,
    /// The served name exists in the snapshot: only then is it a metric label (a bounded set).
    pub model_resolved: bool,
    pub deployment: String,
    pub provider: String,
    pub upstream: String,
    /// `None` until the response is decided; a drop while `None` means the client left.
    pub status: Option<u16>,
    pub error_type: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub ttft: Option<Duration>,
    /// Time spent waiting on upstreams (all attempts).
    pub upstream_time: Duration,
    pub streamed: bool,
    /// USD per token (input, output) of the deployment that answered.
    pub price_per_token: (f64, f64),
    pub admission: Option<Admission>,
    /// Whether to emit a usage row (requests rejected before authentication are not usage).
    pub billable: bool,
    /// A disarmed record (a placeholder left behind when the real one moved into a stream)
    /// emits nothing.
    pub armed: bool,
    /// The OpenTelemetry span (disabled unless an OTLP endpoint is configured).
    pub span: tracing::Span,
}

/// The GenAI semantic-convention operation name of a gateway endpoint.
fn gen_ai_operation(endpoint: &str) -> &'static str {
    match endpoint {
        "completions" => "text_completion",
        "embeddings" => "embeddings",
        _ => "chat",
    }
}

impl RequestRecord {
    pub fn new(state: Arc<AppState>, endpoint: &'static str, request_id: String) -> Self {
        let span = if state.tracing_enabled {
            tracing::info_span!(
                target: "bud_gateway::request",
                "gen_ai",
                otel.name = tracing::field::Empty,
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
                gen_ai.operation.name = gen_ai_operation(endpoint),
                gen_ai.provider.name = tracing::field::Empty,
                gen_ai.request.model = tracing::field::Empty,
                gen_ai.response.model = tracing::field::Empty,
                gen_ai.usage.input_tokens = tracing::field::Empty,
                gen_ai.usage.output_tokens = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
                error.type = tracing::field::Empty,
                server.address = tracing::field::Empty,
                bud.request_id = %request_id,
                bud.namespace = tracing::field::Empty,
                bud.deployment = tracing::field::Empty,
                bud.streamed = tracing::field::Empty,
                bud.ttft_ms = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        Self {
            span,
            state,
            endpoint,
            request_id,
            started: Instant::now(),
            time: chrono::Utc::now(),
            namespace: String::new(),
            key_id: String::new(),
            served_model: String::new(),
            model_resolved: false,
            deployment: String::new(),
            provider: String::new(),
            upstream: String::new(),
            status: None,
            error_type: None,
            input_tokens: 0,
            output_tokens: 0,
            ttft: None,
            upstream_time: Duration::ZERO,
            streamed: false,
            price_per_token: (0.0, 0.0),
            admission: None,
            billable: false,
            armed: true,
        }
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    pub fn fail(&mut self, status: u16, error_type: &str) {
        self.status = Some(status);
        self.error_type = Some(error_type.to_string());
    }

    /// Reads Anthropic-shaped `usage` (cache reads and writes count as input).
    pub fn take_anthropic_usage(&mut self, usage: &serde_json::Value) {
        let n = |k: &str| usage.get(k).and_then(serde_json::Value::as_u64);
        if let Some(input) = n("input_tokens") {
            self.input_tokens = input
                + n("cache_creation_input_tokens").unwrap_or(0)
                + n("cache_read_input_tokens").unwrap_or(0);
        }
        if let Some(output) = n("output_tokens") {
            self.output_tokens = output;
        }
    }

    /// Usage from an Anthropic stream event (`message_start` and `message_delta` carry it).
    pub fn take_anthropic_event_usage(&mut self, event: &serde_json::Value) {
        if let Some(usage) = event
            .pointer("/message/usage")
            .or_else(|| event.get("usage"))
        {
            self.take_anthropic_usage(usage);
        }
    }

    /// Reads OpenAI-shaped `usage` into the record.
    pub fn take_usage(&mut self, usage: &serde_json::Value) {
        if let Some(n) = usage
            .get("prompt_tokens")
            .and_then(serde_json::Value::as_u64)
        {
            self.input_tokens = n;
        }
        if let Some(n) = usage
            .get("completion_tokens")
            .and_then(serde_json::Value::as_u64)
        {
            self.output_tokens = n;
        }
    }
}

impl RequestRecord {
    fn record_span(&self, status: u16) {
        let span = &self.span;
        span.record(
            "otel.name",
            format!("{} {}", gen_ai_operation(self.endpoint), self.served_model),
        );
        span.record("gen_ai.request.model", self.served_model.as_str());
        span.record("http.response.status_code", status);
        span.record("bud.namespace", self.namespace.as_str());
        span.record("bud.streamed", self.streamed);
        if !self.provider.is_empty() {
            span.record("gen_ai.provider.name", self.provider.as_str());
            span.record("gen_ai.response.model", self.served_model.as_str());
            span.record("bud.deployment", self.deployment.as_str());
            span.record("server.address", self.upstream.as_str());
        }
        if self.input_tokens > 0 || self.output_tokens > 0 {
            span.record("gen_ai.usage.input_tokens", self.input_tokens);
            span.record("gen_ai.usage.output_tokens", self.output_tokens);
        }
        if let Some(ttft) = self.ttft {
            span.record("bud.ttft_ms", ttft.as_secs_f64() * 1000.0);
        }
        if let Some(error) = &self.error_type {
            span.record("error.type", error.as_str());
            span.record("otel.status_code", "ERROR");
        }
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let latency = self.started.elapsed();
        let status = match self.status {
            Some(s) => s,
            None => {
                self.error_type
                    .get_or_insert_with(|| "client_disconnected".to_string());
                CLIENT_CLOSED
            }
        };
        if !self.span.is_disabled() {
            self.record_span(status);
        }
        let metrics = &self.state.metrics;
        let model = if self.model_resolved {
            self.served_model.clone()
        } else {
            "-".to_string()
        };
        metrics
            .requests
            .get_or_create(&RequestLabels {
                endpoint: self.endpoint,
                model: model.clone(),
                status,
            })
            .inc();
        let labels = ModelLabels {
            endpoint: self.endpoint,
            model: model.clone(),
        };
        metrics
            .latency
            .get_or_create(&labels)
            .observe(latency.as_secs_f64());
        if let Some(ttft) = self.ttft {
            metrics
                .ttft
                .get_or_create(&labels)
                .observe(ttft.as_secs_f64());
        }
        if self.input_tokens > 0 {
            metrics
                .tokens
                .get_or_create(&TokenLabels {
                    model: model.clone(),
                    direction: "input",
                })
                .inc_by(self.input_tokens);
        }
        if self.output_tokens > 0 {
            metrics
                .tokens
                .get_or_create(&TokenLabels {
                    model,
                    direction: "output",
                })
                .inc_by(self.output_tokens);
        }
        if let Some(admission) = self.admission.take() {
            let limiter = self.state.limiter.clone();
            let actual = self.input_tokens + self.output_tokens;
            // A local settlement finishes on its first poll: do it here rather than pay for a
            // task. Only one that waits (Redis) is spawned, to finish in the background.
            let mut settle = Box::pin(async move { limiter.settle(admission, actual).await });
            let waker = futures::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            if settle.as_mut().poll(&mut cx).is_pending()
                && let Ok(handle) = tokio::runtime::Handle::try_current()
            {
                handle.spawn(settle);
            }
        }
        if !self.billable {
            return;
        }
        let latency_ms = latency.as_secs_f64() * 1000.0;
        let upstream_ms = self.upstream_time.as_secs_f64() * 1000.0;
        self.state.usage.record(UsageRecord {
            request_id: std::mem::take(&mut self.request_id),
            time: self.time,
            namespace: std::mem::take(&mut self.namespace),
            key_id: std::mem::take(&mut self.key_id),
            served_model: std::mem::take(&mut self.served_model),
            deployment: std::mem::take(&mut self.deployment),
            provider: std::mem::take(&mut self.provider),
            endpoint: std::mem::take(&mut self.upstream),
            status,
            error_type: self.error_type.take(),
            input_tokens: u32::try_from(self.input_tokens).unwrap_or(u32::MAX),
            output_tokens: u32::try_from(self.output_tokens).unwrap_or(u32::MAX),
            ttft_ms: self.ttft.map(|t| t.as_secs_f64() * 1000.0),
            latency_ms,
            gateway_overhead_ms: (latency_ms - upstream_ms).max(0.0),
            streamed: self.streamed,
            cost: self.price_per_token.0 * self.input_tokens as f64
                + self.price_per_token.1 * self.output_tokens as f64,
        });
    }
}
