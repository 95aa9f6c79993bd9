//! The inference endpoints: authenticate, read and validate the body, resolve the model,
//! admit against the key's limits, forward, and answer in the caller's wire format
//! (JSON or an exact SSE stream).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use serde_json::{Value, json};

use super::proxy::{self, Attempt, StreamOutcome, UpstreamRequest};
use super::record::RequestRecord;
use super::{AppState, RequestId};
use crate::error::{ApiFormat, GatewayError};
use crate::limits::{KeyLimits, LimitDecision, RateLimitHeaders};
use crate::providers::Operation;
use crate::translate::anthropic as translate;

/// Which public endpoint a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Completions,
    Embeddings,
    Messages,
}

impl Api {
    fn format(self) -> ApiFormat {
        if self == Api::Messages {
            ApiFormat::Anthropic
        } else {
            ApiFormat::OpenAi
        }
    }
    fn operation(self) -> Operation {
        match self {
            Api::Chat | Api::Messages => Operation::Chat,
            Api::Completions => Operation::Completions,
            Api::Embeddings => Operation::Embeddings,
        }
    }
    fn label(self) -> &'static str {
        match self {
            Api::Chat => "chat_completions",
            Api::Completions => "completions",
            Api::Embeddings => "embeddings",
            Api::Messages => "messages",
        }
    }
}

pub async fn chat_completions(
    state: State<Arc<AppState>>,
    id: Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state.0, Api::Chat, id.0.0, headers, body).await
}
pub async fn completions(
    state: State<Arc<AppState>>,
    id: Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state.0, Api::Completions, id.0.0, headers, body).await
}
pub async fn embeddings(
    state: State<Arc<AppState>>,
    id: Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state.0, Api::Embeddings, id.0.0, headers, body).await
}
pub async fn messages(
    state: State<Arc<AppState>>,
    id: Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state.0, Api::Messages, id.0.0, headers, body).await
}

async fn handle(
    state: Arc<AppState>,
    api: Api,
    request_id: String,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let format = api.format();
    let mut record = RequestRecord::new(state.clone(), api.label(), request_id);
    match run(&state, api, &headers, body, &mut record).await {
        Ok(response) => response,
        Err((error, rate_headers)) => {
            record.fail(error.status.as_u16(), error.kind.as_str());
            let mut response = error.into_response(format);
            if let Some(h) = rate_headers {
                add_rate_headers(response.headers_mut(), &h, format);
            }
            response
        }
    }
}

type Failure = (GatewayError, Option<RateLimitHeaders>);

fn fail(e: GatewayError) -> Failure {
    (e, None)
}

async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, GatewayError> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(GatewayError::too_large(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // http-body-util's `LengthLimitError` is not re-exported; recognise it by its text.
        let mut source: Option<&dyn std::error::Error> = Some(&e);
        while let Some(s) = source {
            if s.to_string().contains("length limit exceeded") {
                return GatewayError::too_large(limit);
            }
            source = s.source();
        }
        GatewayError::invalid("could not read the request body")
    })
}

fn optional_u64(
    obj: &serde_json::Map<String, Value>,
    field: &str,
) -> Result<Option<u64>, GatewayError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            GatewayError::invalid(format!("`{field}` must be a non-negative integer"))
        }),
    }
}

/// Checks the fields the gateway itself relies on; the rest is the upstream's business.
fn validate(api: Api, body: &Value) -> Result<(String, bool, Option<u64>), GatewayError> {
    let obj = body
        .as_object()
        .ok_or_else(|| GatewayError::invalid("the request body must be a JSON object"))?;
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(GatewayError::invalid("you must provide a model parameter"));
        }
        Some(_) => return Err(GatewayError::invalid("`model` must be a string")),
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(GatewayError::invalid("`stream` must be a boolean")),
    };
    if let Some(options) = obj.get("stream_options")
        && !options.is_null()
        && !options.is_object()
    {
        return Err(GatewayError::invalid("`stream_options` must be an object"));
    }
    let max_tokens =
        optional_u64(obj, "max_completion_tokens")?.or(optional_u64(obj, "max_tokens")?);
    match api {
        Api::Chat => match obj.get("messages") {
            Some(Value::Array(m)) if !m.is_empty() && m.iter().all(Value::is_object) => {}
            Some(Value::Array(m)) if m.is_empty() => {
                return Err(GatewayError::invalid("`messages` must not be empty"));
            }
            _ => {
                return Err(GatewayError::invalid(
                    "`messages` must be an array of message objects",
                ));
            }
        },
        Api::Messages => {
            match obj.get("messages") {
                Some(Value::Array(m)) if m.iter().all(Value::is_object) => {}
                _ => {
                    return Err(GatewayError::invalid(
                        "messages: Field required (an array of message objects)",
                    ));
                }
            }
            if max_tokens.is_none() {
                return Err(GatewayError::invalid("max_tokens: Field required"));
            }
        }
        Api::Completions => match obj.get("prompt") {
            Some(Value::String(_) | Value::Array(_)) => {}
            _ => {
                return Err(GatewayError::invalid(
                    "`prompt` must be a string or an array",
                ));
            }
        },
        Api::Embeddings => {
            if stream {
                return Err(GatewayError::invalid("embeddings cannot be streamed"));
            }
            match obj.get("input") {
                Some(Value::String(_) | Value::Array(_)) => {}
                _ => {
                    return Err(GatewayError::invalid(
                        "`input` must be a string or an array",
                    ));
                }
            }
        }
    }
    Ok((model, stream, max_tokens))
}

async fn run(
    state: &Arc<AppState>,
    api: Api,
    headers: &HeaderMap,
    body: Body,
    record: &mut RequestRecord,
) -> Result<Response, Failure> {
    let snapshot = state.snapshot.load_full();
    let key = crate::keys::authenticate(headers, &snapshot, chrono::Utc::now()).map_err(fail)?;
    record.namespace = key.namespace.clone();
    record.key_id = key.key_id.clone();
    record.billable = true;

    let bytes = read_body(body, headers, state.max_body_bytes)
        .await
        .map_err(fail)?;
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|e| fail(GatewayError::invalid(format!("invalid JSON body: {e}"))))?;
    let (model, stream, max_tokens) = validate(api, &body).map_err(fail)?;
    // Bounded: a caller can send any string as the model.
    record.served_model = model.chars().take(256).collect();
    record.streamed = stream;
    let route = snapshot.resolve(&key, &model).map_err(fail)?;
    record.model_resolved = true;

    // `/v1/messages` keeps the caller's body for providers that speak Anthropic natively; the
    // OpenAI form serves the others (and may not exist, e.g. for document blocks).
    let (mut canonical, anthropic) = if api == Api::Messages {
        (
            translate::anthropic_request_to_openai(&body).map_err(|e| e.0),
            Some(body),
        )
    } else {
        (Ok(body), None)
    };
    let client_wants_usage = api == Api::Messages
        || canonical
            .as_ref()
            .ok()
            .and_then(|c| c.pointer("/stream_options/include_usage"))
            .and_then(Value::as_bool)
            == Some(true);
    if let Ok(canonical) = canonical.as_mut() {
        if stream && api != Api::Embeddings {
            canonical["stream_options"] = json!({"include_usage": true});
        } else if let Some(obj) = canonical.as_object_mut() {
            // OpenAI rejects stream_options on non-streaming requests.
            obj.remove("stream_options");
        }
    }
    let mut request = UpstreamRequest {
        op: api.operation(),
        canonical,
        anthropic,
    };

    // Reserve the completion budget plus a rough input estimate (4 bytes per token).
    let reserve = max_tokens.unwrap_or(state.default_reserve_tokens) + (bytes.len() as u64 / 4);
    let limits = KeyLimits {
        requests_per_minute: key.limits.requests_per_minute,
        tokens_per_minute: key.limits.tokens_per_minute,
    };
    let rate_headers = match state.limiter.admit(&key.key_id, &limits, reserve).await {
        LimitDecision::Allowed { admission, headers } => {
            record.admission = Some(admission);
            headers
        }
        LimitDecision::Limited {
            retry_after,
            headers,
        } => {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            return Err((
                GatewayError::rate_limited(secs, "Rate limit exceeded for this API key"),
                Some(headers),
            ));
        }
    };
    drop(bytes);

    let mut upstream_time = Duration::ZERO;
    let mut last_attempt: Option<Attempt> = None;
    let result = if stream {
        proxy::forward_stream(
            state,
            &route,
            &mut request,
            &mut upstream_time,
            &mut last_attempt,
        )
        .await
        .map(|outcome| stream_response(api, outcome, client_wants_usage, &model, record))
    } else {
        proxy::forward_unary(
            state,
            &route,
            &mut request,
            &mut upstream_time,
            &mut last_attempt,
        )
        .await
        .map(|outcome| unary_response(api, outcome.body, outcome.native, &model, record))
    };
    record.upstream_time += upstream_time;
    if let Some(attempt) = &last_attempt {
        note_attempt(record, attempt);
    }
    match result {
        Ok(mut response) => {
            add_rate_headers(response.headers_mut(), &rate_headers, api.format());
            Ok(response)
        }
        Err(e) => Err((e, Some(rate_headers))),
    }
}

fn note_attempt(record: &mut RequestRecord, attempt: &Attempt) {
    record.deployment = format!(
        "{}/{}",
        attempt.backend.namespace, attempt.backend.deployment
    );
    record.provider = attempt.backend.provider_kind.as_str().to_string();
    record.upstream = attempt.endpoint.label.clone();
    record.price_per_token = attempt.backend.price_per_token;
}

fn unary_response(
    api: Api,
    mut body: Value,
    native: bool,
    model: &str,
    record: &mut RequestRecord,
) -> Response {
    record.status = Some(200);
    if native {
        if let Some(usage) = body.get("usage") {
            record.take_anthropic_usage(usage);
        }
        if let Some(m) = body.get_mut("model") {
            *m = Value::String(model.to_string());
        }
        return Json(body).into_response();
    }
    if let Some(usage) = body.get("usage") {
        record.take_usage(usage);
    }
    let body = if api == Api::Messages {
        translate::openai_response_to_anthropic(&body, model)
    } else {
        if body.get("model").is_some() {
            body["model"] = Value::String(model.to_string());
        }
        body
    };
    Json(body).into_response()
}

/// Moves the record into the stream so it finalises when the stream ends or the client
/// disconnects (the body is dropped, which drops the upstream stream and cancels it).
fn stream_response(
    api: Api,
    outcome: StreamOutcome,
    client_wants_usage: bool,
    model: &str,
    record: &mut RequestRecord,
) -> Response {
    note_attempt(record, &outcome.attempt);
    let owned = std::mem::replace(
        record,
        RequestRecord::new(record_state(record), record.endpoint, String::new()),
    );
    // The placeholder left behind must not emit a second row or metric.
    record.armed = false;
    // TTFT is the first event carrying output (engines often send an empty role chunk first);
    // a stream with no output at all falls back to its first event.
    let first_event_ttft = outcome.first_event_at.duration_since(owned.started);
    let model = model.to_string();
    let StreamOutcome {
        attempt,
        first,
        rest,
        in_flight,
        native,
        ..
    } = outcome;
    let state = record_state(record);
    let upstream_started = std::time::Instant::now();
    let frames = async_stream::stream! {
        let _in_flight = in_flight;
        let mut record = owned;
        let upstream = futures::stream::once(async { Ok(first) }).chain(rest);
        futures::pin_mut!(upstream);
        let mut anthropic = (api == Api::Messages).then(|| translate::OpenAiToAnthropicStream::new(&model));
        let mut failed = None;
        while let Some(item) = upstream.next().await {
            match item {
                Ok(mut event) if native => {
                    if record.ttft.is_none() && carries_output(&event, true) {
                        record.ttft = Some(record.started.elapsed());
                    }
                    // An Anthropic event from an Anthropic upstream: relayed as is.
                    record.take_anthropic_event_usage(&event);
                    if let Some(message) = event.get_mut("message").filter(|m| m.get("model").is_some()) {
                        message["model"] = Value::String(model.clone());
                    }
                    let name = event.get("type").and_then(Value::as_str).unwrap_or("message").to_string();
                    yield Ok::<Bytes, Infallible>(anthropic_frame(&name, &event));
                }
                Ok(mut chunk) => {
                    if record.ttft.is_none() && carries_output(&chunk, false) {
                        record.ttft = Some(record.started.elapsed());
                    }
                    if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
                        record.take_usage(usage);
                    }
                    if let Some(state) = anthropic.as_mut() {
                        for (name, data) in state.on_chunk(&chunk) {
                            yield Ok(anthropic_frame(name, &data));
                        }
                        continue;
                    }
                    if !client_wants_usage && let Some(obj) = chunk.as_object_mut() {
                        let usage_only = obj.get("usage").is_some_and(Value::is_object)
                            && obj.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty);
                        if usage_only {
                            continue;
                        }
                        obj.remove("usage");
                    }
                    if chunk.get("model").is_some() {
                        chunk["model"] = Value::String(model.clone());
                    }
                    yield Ok(openai_frame(&chunk));
                }
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        record.upstream_time += upstream_started.elapsed();
        record.ttft.get_or_insert(first_event_ttft);
        match failed {
            None => {
                attempt.endpoint.record_completion();
                record.status = Some(200);
                match anthropic.as_mut() {
                    // A native stream already carried its message_stop.
                    Some(_) if native => {}
                    Some(state) => for (name, data) in state.finish() {
                        yield Ok(anthropic_frame(name, &data));
                    },
                    None => yield Ok(Bytes::from_static(b"data: [DONE]\n\n")),
                }
            }
            Some(error) => {
                // The status line is gone: report the failure in-band.
                proxy::report_failure(&state, &attempt.backend, &attempt.endpoint, &error);
                let gateway_error = proxy::upstream_error(&error);
                record.fail(gateway_error.status.as_u16(), error.kind());
                tracing::warn!(error = %error, "upstream stream failed after the first byte");
                match api {
                    Api::Messages => yield Ok(anthropic_frame("error", &gateway_error.body(ApiFormat::Anthropic))),
                    _ => yield Ok(openai_frame(&gateway_error.body(ApiFormat::OpenAi))),
                }
            }
        }
    };
    let mut response = Response::new(Body::from_stream(frames));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    *response.status_mut() = StatusCode::OK;
    response
}

/// Whether a stream item carries generated output: text, a tool call, or (Anthropic) a
/// content delta.
fn carries_output(item: &Value, anthropic_event: bool) -> bool {
    if anthropic_event {
        return item.get("type").and_then(Value::as_str) == Some("content_block_delta");
    }
    let Some(choice) = item.pointer("/choices/0") else {
        return false;
    };
    let non_empty = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|t| !t.is_empty());
    non_empty(choice.pointer("/delta/content"))
        || non_empty(choice.get("text"))
        || choice
            .pointer("/delta/tool_calls")
            .is_some_and(|t| !t.is_null())
        || choice
            .get("delta")
            .and_then(translate::reasoning_of)
            .is_some()
}

fn record_state(record: &RequestRecord) -> Arc<AppState> {
    record.state()
}

fn openai_frame(data: &Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut out, data).expect("a JSON value serialises");
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn anthropic_frame(name: &str, data: &Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    serde_json::to_writer(&mut out, data).expect("a JSON value serialises");
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Formats a duration like OpenAI's reset headers (`1s`, `6m0s`, `250ms`).
pub fn format_reset(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m{}s", secs / 60, secs % 60)
    }
}

/// The key's rate-limit state in the caller's API: OpenAI's `x-ratelimit-*` headers (reset as a
/// duration), or Anthropic's `anthropic-ratelimit-*` ones (reset as an RFC 3339 time).
fn add_rate_headers(headers: &mut HeaderMap, h: &RateLimitHeaders, format: ApiFormat) {
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    // Limit, remaining and reset of the request bucket, then of the token bucket.
    let (names, reset): ([&'static str; 6], fn(Duration) -> String) = match format {
        ApiFormat::OpenAi => (
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
            format_reset,
        ),
        ApiFormat::Anthropic => (
            [
                "anthropic-ratelimit-requests-limit",
                "anthropic-ratelimit-requests-remaining",
                "anthropic-ratelimit-requests-reset",
                "anthropic-ratelimit-tokens-limit",
                "anthropic-ratelimit-tokens-remaining",
                "anthropic-ratelimit-tokens-reset",
            ],
            |d| {
                (chrono::Utc::now() + chrono::TimeDelta::from_std(d).unwrap_or_default())
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            },
        ),
    };
    if let Some(limit) = h.limit_requests {
        put(names[0], limit.to_string());
        put(names[1], h.remaining_requests.unwrap_or(0).to_string());
        put(names[2], reset(h.reset_requests));
    }
    if let Some(limit) = h.limit_tokens {
        put(names[3], limit.to_string());
        put(names[4], h.remaining_tokens.unwrap_or(0).to_string());
        put(names[5], reset(h.reset_tokens));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_types() {
        assert!(validate(Api::Chat, &json!([])).is_err());
        assert!(validate(Api::Chat, &json!({"model": 3, "messages": [{}]})).is_err());
        assert!(validate(Api::Chat, &json!({"model": "m", "messages": []})).is_err());
        assert!(
            validate(
                Api::Chat,
                &json!({"model": "m", "messages": [{}], "stream": "yes"})
            )
            .is_err()
        );
        assert!(
            validate(
                Api::Chat,
                &json!({"model": "m", "messages": [{}], "max_tokens": -1})
            )
            .is_err()
        );
        assert_eq!(
            validate(
                Api::Chat,
                &json!({"model": "m", "messages": [{}], "max_tokens": 7, "stream": true})
            )
            .unwrap(),
            ("m".to_string(), true, Some(7))
        );
        assert!(
            validate(Api::Messages, &json!({"model": "m", "messages": []})).is_err(),
            "max_tokens required"
        );
        assert!(
            validate(
                Api::Embeddings,
                &json!({"model": "m", "input": "x", "stream": true})
            )
            .is_err()
        );
    }

    #[test]
    fn output_is_text_tool_calls_or_content_deltas() {
        assert!(!carries_output(
            &json!({"choices": [{"delta": {"role": "assistant", "content": ""}}]}),
            false
        ));
        assert!(carries_output(
            &json!({"choices": [{"delta": {"content": "a"}}]}),
            false
        ));
        assert!(carries_output(
            &json!({"choices": [{"delta": {"tool_calls": [{"index": 0}]}}]}),
            false
        ));
        assert!(carries_output(&json!({"choices": [{"text": "x"}]}), false));
        assert!(!carries_output(&json!({"choices": [], "usage": {}}), false));
        assert!(!carries_output(&json!({"type": "message_start"}), true));
        assert!(carries_output(
            &json!({"type": "content_block_delta"}),
            true
        ));
    }

    #[test]
    fn formats_resets() {
        assert_eq!(format_reset(Duration::from_millis(250)), "250ms");
        assert_eq!(format_reset(Duration::from_millis(1500)), "2s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
    }
}
