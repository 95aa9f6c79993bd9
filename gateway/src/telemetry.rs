//! Logs and, when an OTLP endpoint is set, OpenTelemetry traces.
//!
//! Each inference request is one span named `{operation} {model}` carrying the GenAI semantic
//! convention attributes (`gen_ai.operation.name`, `gen_ai.provider.name`,
//! `gen_ai.request.model`, `gen_ai.usage.input_tokens`, …). Without an endpoint no span is
//! created on the request path.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the exporter alive; flushes spans when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn tracing_enabled(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {e}");
        }
    }
}

/// Installs the global subscriber. Call outside the tokio runtime: the OTLP exporter uses a
/// blocking HTTP client on its own thread. `otlp_endpoint` is the collector's base URL
/// (e.g. `http://127.0.0.1:4318`); spans go to `{endpoint}/v1/traces`.
pub fn init(json_logs: bool, otlp_endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json_logs {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let Some(endpoint) = otlp_endpoint else {
        tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .init();
        return Ok(Telemetry { provider: None });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("bud-gateway").build())
        .build();
    let tracer = provider.tracer("bud-gateway");
    // Only the request spans go to OTLP; logs stay on stderr.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.target() == REQUEST_SPAN_TARGET
        }));
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .init();
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// The target of the per-request spans (see `server::record`).
pub const REQUEST_SPAN_TARGET: &str = "bud_gateway::request";
