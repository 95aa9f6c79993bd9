//! Forwarding one request: endpoint choice, retries within a budget, fallback across
//! deployments by priority, passive health. Streams are retried only until their first event
//! arrived; after that the stream belongs to the client.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use super::AppState;
use crate::error::{ErrorKind, GatewayError};
use crate::metrics::UpstreamErrorLabels;
use crate::providers::{ChunkStream, Operation, ProviderError, Timeouts};
use crate::routing::balancer::{EndpointState, HealthConfig, InFlight, pick_endpoint_with};
use crate::routing::{Backend, ModelRoute};

/// Retries allowed as a fraction of requests (in thousandths), Linkerd-style: every request
/// deposits `ratio`, every retry withdraws one, the balance is capped.
#[derive(Debug)]
pub struct RetryBudget {
    balance_milli: AtomicU64,
    deposit_milli: u64,
    cap_milli: u64,
}

impl RetryBudget {
    pub fn new(ratio: f64, min_retries: u64) -> Self {
        let cap_milli = min_retries.max(1) * 1000;
        Self {
            balance_milli: AtomicU64::new(cap_milli),
            deposit_milli: (ratio.clamp(0.0, 10.0) * 1000.0) as u64,
            cap_milli,
        }
    }

    pub fn deposit(&self) {
        let _ = self
            .balance_milli
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((b + self.deposit_milli).min(self.cap_milli))
            });
    }

    pub fn try_withdraw(&self) -> bool {
        self.balance_milli
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                b.checked_sub(1000)
            })
            .is_ok()
    }
}

/// Settings of the forwarding loop.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    pub timeouts: Timeouts,
    /// Attempts per priority group before falling back to the next.
    pub max_attempts_per_group: u32,
    pub health: HealthConfig,
}

/// Where an attempt went.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub backend: Arc<Backend>,
    pub endpoint: Arc<EndpointState>,
}

/// The request as it can be sent upstream.
pub struct UpstreamRequest {
    pub op: Operation,
    /// The canonical (OpenAI) body; `Err` when the request has no OpenAI form (then only
    /// providers that speak Anthropic natively can take it).
    pub canonical: Result<Value, String>,
    /// For `/v1/messages`: the caller's body, sent as is to native Anthropic providers.
    pub anthropic: Option<Value>,
}

pub struct UnaryOutcome {
    pub attempt: Attempt,
    pub body: Value,
    /// The body is an Anthropic message (native call), not an OpenAI completion.
    pub native: bool,
}

pub struct StreamOutcome {
    pub attempt: Attempt,
    pub first: Value,
    pub rest: ChunkStream,
    /// Keeps the endpoint's outstanding count up until the stream ends.
    pub in_flight: InFlight,
    /// When the first event arrived.
    pub first_event_at: Instant,
    /// Items are Anthropic events (native call), not OpenAI chunks.
    pub native: bool,
}

enum Outcome {
    Unary(Value, bool),
    Stream(Value, ChunkStream, InFlight, Instant, bool),
}

/// Weighted random choice among the group's backends that still have an eligible endpoint.
fn pick(
    group: &[Arc<Backend>],
    excluded: &[Arc<EndpointState>],
    include_ejected: bool,
) -> Option<(Arc<Backend>, Arc<EndpointState>)> {
    let candidates: Vec<(&Arc<Backend>, Arc<EndpointState>)> = group
        .iter()
        .filter_map(|b| pick_endpoint_with(&b.endpoints, excluded, include_ejected).map(|e| (b, e)))
        .collect();
    let total: u64 = candidates
        .iter()
        .map(|(b, _)| u64::from(b.weight.max(1)))
        .sum();
    if candidates.is_empty() {
        return None;
    }
    let mut roll = fastrand::u64(..total);
    for (backend, endpoint) in &candidates {
        let w = u64::from(backend.weight.max(1));
        if roll < w {
            return Some(((*backend).clone(), endpoint.clone()));
        }
        roll -= w;
    }
    candidates.last().map(|(b, e)| ((*b).clone(), e.clone()))
}

/// Counts and logs a failed attempt (or a stream that broke after its first byte) and ejects
/// the endpoint after too many consecutive failures.
pub fn report_failure(
    state: &AppState,
    backend: &Backend,
    endpoint: &Arc<EndpointState>,
    error: &ProviderError,
) {
    state
        .metrics
        .upstream_errors
        .get_or_create(&UpstreamErrorLabels {
            provider: backend.provider_kind.as_str(),
            kind: error.kind(),
        })
        .inc();
    tracing::warn!(
        deployment = %format!("{}/{}", backend.namespace, backend.deployment),
        endpoint = %endpoint.label,
        error = %error,
        "upstream attempt failed"
    );
    let health = &state.forward.health;
    if error.is_health_failure() && endpoint.record_failure(health) {
        state.metrics.ejections.inc();
        tracing::warn!(endpoint = %endpoint.label, "endpoint ejected after consecutive failures");
        spawn_probe(state, backend, endpoint.clone(), health.clone());
    }
}

fn spawn_probe(
    state: &AppState,
    backend: &Backend,
    endpoint: Arc<EndpointState>,
    health: HealthConfig,
) {
    let url = backend.provider.probe_url(&endpoint.base_url);
    let client = state.probe_client.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(endpoint.ejection_delay(&health)).await;
            if Arc::strong_count(&endpoint) == 1 {
                return; // removed from every snapshot
            }
            let probe = client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status().as_u16() < 500) {
                tracing::info!(endpoint = %endpoint.label, "endpoint re-admitted after a successful probe");
                endpoint.readmit();
                return;
            }
        }
    });
}

/// Maps the last upstream error to the client's error once every attempt failed.
pub fn upstream_error(error: &ProviderError) -> GatewayError {
    match error {
        ProviderError::Status { status, message }
            if (400..500).contains(status) && *status != 408 =>
        {
            let kind = match status {
                401 => ErrorKind::Upstream,
                404 => ErrorKind::NotFound,
                413 => ErrorKind::PayloadTooLarge,
                429 => ErrorKind::RateLimited,
                _ => ErrorKind::InvalidRequest,
            };
            // An upstream 401/403 means our credentials are wrong, not the caller's.
            let status = if matches!(status, 401 | 403) {
                502
            } else {
                *status
            };
            let mut e = GatewayError::new(
                http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY),
                kind,
                format!("upstream: {message}"),
            );
            if status == 429 {
                e.retry_after = Some(1);
            }
            e
        }
        ProviderError::Status {
            status: 503 | 529,
            message,
        } => GatewayError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Overloaded,
            format!("upstream overloaded: {message}"),
        ),
        ProviderError::Timeout(which) => GatewayError::new(
            http::StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::UpstreamTimeout,
            format!("upstream timed out ({which})"),
        ),
        ProviderError::Translation(m) | ProviderError::Unsupported(m) => {
            GatewayError::invalid(m.clone())
        }
        other => GatewayError::new(
            http::StatusCode::BAD_GATEWAY,
            ErrorKind::Upstream,
            other.to_string(),
        ),
    }
}

/// Tries deployments in priority order and endpoints by the balancer until one answers.
/// `last_attempt` ends as the attempt that answered, or the last one that failed.
async fn forward(
    state: &AppState,
    route: &ModelRoute,
    request: &mut UpstreamRequest,
    stream: bool,
    upstream_time: &mut Duration,
    last_attempt: &mut Option<Attempt>,
) -> Result<Outcome, GatewayError> {
    let config = &state.forward;
    state.retry_budget.deposit();
    let mut excluded: Vec<Arc<EndpointState>> = Vec::new();
    let mut last_error: Option<ProviderError> = None;
    let mut attempts_total = 0u32;
    // The second pass runs only when every endpoint was ejected (panic routing).
    for include_ejected in [false, true] {
        if include_ejected {
            let has_endpoints = route
                .groups
                .iter()
                .flatten()
                .any(|b| !b.endpoints.is_empty());
            if attempts_total > 0 || !has_endpoints {
                break;
            }
            tracing::warn!(model = %route.served_name, "every endpoint is ejected; trying them anyway");
        }
        for (group_index, group) in route.groups.iter().enumerate() {
            if group_index > 0 && attempts_total > 0 {
                state.metrics.fallbacks.inc();
            }
            let mut attempts_in_group = 0u32;
            while attempts_in_group < config.max_attempts_per_group {
                let Some((backend, endpoint)) = pick(group, &excluded, include_ejected) else {
                    break;
                };
                if attempts_total > 0 {
                    if !state.retry_budget.try_withdraw() {
                        tracing::debug!("retry budget exhausted");
                        return Err(upstream_error(
                            last_error.as_ref().expect("an attempt failed"),
                        ));
                    }
                    state.metrics.retries.inc();
                }
                attempts_total += 1;
                attempts_in_group += 1;
                *last_attempt = Some(Attempt {
                    backend: backend.clone(),
                    endpoint: endpoint.clone(),
                });

                let model = Value::String(backend.upstream_model.clone());
                let native = request.anthropic.is_some() && backend.provider.speaks_anthropic();
                let provider = &backend.provider;
                let base_url = endpoint.base_url.as_str();
                let timeouts = config.timeouts;
                let in_flight = endpoint.start();
                let started = Instant::now();
                let result = match (native, &mut request.anthropic, &mut request.canonical) {
                    (true, Some(body), _) => {
                        body["model"] = model;
                        let body = &*body;
                        if stream {
                            first_event(
                                provider.messages_stream(base_url, body, timeouts),
                                timeouts,
                            )
                            .await
                            .map(|(first, rest)| {
                                Outcome::Stream(first, rest, in_flight, Instant::now(), true)
                            })
                        } else {
                            let r = provider.messages(base_url, body, timeouts).await;
                            drop(in_flight);
                            r.map(|v| Outcome::Unary(v, true))
                        }
                    }
                    (_, _, Ok(body)) => {
                        body["model"] = model;
                        let body = &*body;
                        let op = request.op;
                        if stream {
                            first_event(
                                provider.infer_stream(base_url, op, body, timeouts),
                                timeouts,
                            )
                            .await
                            .map(|(first, rest)| {
                                Outcome::Stream(first, rest, in_flight, Instant::now(), false)
                            })
                        } else {
                            let r = provider.infer(base_url, op, body, timeouts).await;
                            drop(in_flight);
                            r.map(|v| Outcome::Unary(v, false))
                        }
                    }
                    (_, _, Err(message)) => Err(ProviderError::Translation(message.clone())),
                };
                let elapsed = started.elapsed();
                *upstream_time += elapsed;
                match result {
                    Ok(outcome) => {
                        match outcome {
                            // A stream only counts as a success once it completes.
                            Outcome::Stream(..) => endpoint.record_latency(elapsed),
                            Outcome::Unary(..) => endpoint.record_success(elapsed),
                        }
                        return Ok(outcome);
                    }
                    Err(error) => {
                        report_failure(state, &backend, &endpoint, &error);
                        if !error.retryable() {
                            return Err(upstream_error(&error));
                        }
                        excluded.push(endpoint);
                        last_error = Some(error);
                    }
                }
            }
        }
    }
    match last_error {
        Some(e) => Err(upstream_error(&e)),
        None => Err(GatewayError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::NoEndpoints,
            format!("no ready endpoint for model `{}`", route.served_name),
        )),
    }
}

/// Waits for a stream's first event within the first-byte timeout: until then the attempt
/// can still be retried elsewhere.
async fn first_event(
    open: impl std::future::Future<Output = Result<ChunkStream, ProviderError>>,
    timeouts: Timeouts,
) -> Result<(Value, ChunkStream), ProviderError> {
    let started = Instant::now();
    let mut rest = open.await?;
    let remaining = timeouts.first_byte.saturating_sub(started.elapsed());
    match tokio::time::timeout(remaining, rest.next()).await {
        Err(_) => Err(ProviderError::Timeout("first_byte")),
        Ok(None) => Err(ProviderError::Stream(
            "upstream stream ended before its first event".into(),
        )),
        Ok(Some(Err(e))) => Err(e),
        Ok(Some(Ok(first))) => Ok((first, rest)),
    }
}

pub async fn forward_unary(
    state: &AppState,
    route: &ModelRoute,
    request: &mut UpstreamRequest,
    upstream_time: &mut Duration,
    last_attempt: &mut Option<Attempt>,
) -> Result<UnaryOutcome, GatewayError> {
    match forward(state, route, request, false, upstream_time, last_attempt).await? {
        Outcome::Unary(body, native) => Ok(UnaryOutcome {
            attempt: last_attempt.clone().expect("attempted"),
            body,
            native,
        }),
        Outcome::Stream(..) => unreachable!("unary forward returned a stream"),
    }
}

pub async fn forward_stream(
    state: &AppState,
    route: &ModelRoute,
    request: &mut UpstreamRequest,
    upstream_time: &mut Duration,
    last_attempt: &mut Option<Attempt>,
) -> Result<StreamOutcome, GatewayError> {
    match forward(state, route, request, true, upstream_time, last_attempt).await? {
        Outcome::Stream(first, rest, in_flight, first_event_at, native) => Ok(StreamOutcome {
            attempt: last_attempt.clone().expect("attempted"),
            first,
            rest,
            in_flight,
            first_event_at,
            native,
        }),
        Outcome::Unary(..) => unreachable!("stream forward returned a body"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_min_retries_then_ratio() {
        let budget = RetryBudget::new(0.5, 2);
        assert!(budget.try_withdraw());
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw());
        budget.deposit();
        assert!(!budget.try_withdraw());
        budget.deposit();
        assert!(budget.try_withdraw());
    }

    #[test]
    fn upstream_errors_map_to_client_statuses() {
        let s = |status| {
            upstream_error(&ProviderError::Status {
                status,
                message: "m".into(),
            })
            .status
            .as_u16()
        };
        assert_eq!(s(400), 400);
        assert_eq!(s(401), 502);
        assert_eq!(s(429), 429);
        assert_eq!(s(529), 503);
        assert_eq!(s(500), 502);
        assert_eq!(
            upstream_error(&ProviderError::Timeout("total"))
                .status
                .as_u16(),
            504
        );
    }
}
