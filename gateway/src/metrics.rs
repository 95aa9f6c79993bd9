//! Prometheus metrics of the request path. Label values are bounded: endpoint names, served
//! names from the snapshot, status codes, provider kinds and error kinds.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub model: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub endpoint: &'static str,
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub model: String,
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub provider: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub source: &'static str,
    pub result: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~65 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 18,
    ))
}

#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<ModelLabels, Histogram>,
    pub ttft: Family<ModelLabels, Histogram>,
    pub tokens: Family<TokenLabels, Counter>,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub retries: Counter,
    pub fallbacks: Counter,
    pub ejections: Counter,
    pub reloads: Family<ReloadLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            ttft: Family::new_with_constructor(latency_histogram),
            tokens: Family::default(),
            upstream_errors: Family::default(),
            retries: Counter::default(),
            fallbacks: Counter::default(),
            ejections: Counter::default(),
            reloads: Family::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("bud_gateway");
        r.register(
            "requests",
            "Requests by endpoint, served model and status",
            self.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Total request latency",
            self.latency.clone(),
        );
        r.register(
            "time_to_first_token_seconds",
            "Time to the first streamed token",
            self.ttft.clone(),
        );
        r.register(
            "tokens",
            "Tokens by served model and direction (input/output)",
            self.tokens.clone(),
        );
        r.register(
            "upstream_errors",
            "Upstream failures by provider and kind",
            self.upstream_errors.clone(),
        );
        r.register(
            "upstream_retries",
            "Attempts retried on another endpoint or deployment",
            self.retries.clone(),
        );
        r.register(
            "upstream_fallbacks",
            "Moves to a lower-priority deployment",
            self.fallbacks.clone(),
        );
        r.register(
            "endpoint_ejections",
            "Endpoints ejected after consecutive failures",
            self.ejections.clone(),
        );
        r.register(
            "routes_reloads",
            "Routing snapshot reloads by source and result",
            self.reloads.clone(),
        );
    }
}
