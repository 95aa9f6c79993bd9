//! The engine emulator: an OpenAI-compatible server whose time to first token and
//! inter-token gaps follow the performance model under the current load.
//!
//! It answers `/v1/chat/completions`, `/v1/completions` (streaming and not, with usage and
//! `stream_options.include_usage`), `/v1/models`, `/health`, and vLLM-style Prometheus
//! `/metrics`. Requests beyond `max_num_seqs` wait (and show as `vllm:num_requests_waiting`).
//! Failure injection: an error rate (HTTP 500) and a slow start (`/health` 503 and requests
//! refused until the delay passes). `time_scale` multiplies every simulated delay.

use crate::error::{Error, Result};
use crate::hardware::Accelerator;
use crate::model::ModelSpec;
use crate::params::{FittedParams, MAX_CORRECTION_LN};
use crate::perf::{Resolved, ServingConfig};
use crate::search::Rng;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use tokio_stream::wrappers::ReceiverStream;

/// Emulator settings.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The model architecture.
    pub model: ModelSpec,
    /// Names the server answers to (`--served-model-name`, else `--model`).
    pub served_names: Vec<String>,
    /// The device.
    pub accelerator: Accelerator,
    /// Serving configuration (TP, PP, engine, max batch).
    pub serving: ServingConfig,
    /// Fitted parameters.
    pub params: FittedParams,
    /// Multiplier on every simulated delay (0.01 = 100× faster).
    pub time_scale: f64,
    /// Share of requests answered with HTTP 500 (0..1).
    pub error_rate: f64,
    /// Seconds (wall clock, not scaled) before the server reports healthy.
    pub slow_start_secs: f64,
    /// Seed of the failure injection.
    pub seed: u64,
    /// Max context length (prompt + output).
    pub max_model_len: u32,
}

#[derive(Debug, Default)]
struct Counters {
    running: u32,
    waiting: u32,
    running_tokens: f64,
    prompt_tokens: u64,
    generation_tokens: u64,
    success: u64,
    errors: u64,
    ttft_sum: f64,
    ttft_count: u64,
    e2e_sum: f64,
}

/// Shared emulator state.
pub struct Emulator {
    cfg: EmulatorConfig,
    slots: Arc<Semaphore>,
    next_id: std::sync::atomic::AtomicU64,
    counters: Mutex<Counters>,
    rng: Mutex<Rng>,
    started: Instant,
    kv_capacity_tokens: f64,
}

impl Emulator {
    /// Build the emulator, validating the configuration against the model and device.
    pub fn new(cfg: EmulatorConfig) -> Result<Arc<Self>> {
        let r = Resolved::new(&cfg.serving, &cfg.model, &cfg.accelerator, &cfg.params)?;
        let (mem, _) = r.memory(cfg.max_model_len as f64, 1);
        if !mem.fits {
            return Err(Error::Unsupported(format!(
                "{} on {}× {}: {}",
                cfg.model.id,
                cfg.serving.devices(),
                cfg.accelerator.id,
                mem.verdict
            )));
        }
        // Each attention data-parallel rank has its own KV cache and its own batch limit.
        let ranks = cfg.serving.attention_dp.max(1);
        let per_token = r.kv_bytes_per_seq(1000.0) / 1000.0;
        let kv_capacity_tokens = (mem.kv_cache_bytes / per_token.max(1e-9)).max(1.0) * ranks as f64;
        let max_seqs = (cfg.serving.max_batch.unwrap_or(256).max(1) * ranks) as usize;
        Ok(Arc::new(Emulator {
            slots: Arc::new(Semaphore::new(max_seqs)),
            next_id: std::sync::atomic::AtomicU64::new(1),
            counters: Mutex::new(Counters::default()),
            rng: Mutex::new(Rng::new(cfg.seed)),
            started: Instant::now(),
            kv_capacity_tokens,
            cfg,
        }))
    }

    fn resolved(&self) -> Resolved<'_> {
        Resolved::new(
            &self.cfg.serving,
            &self.cfg.model,
            &self.cfg.accelerator,
            &self.cfg.params,
        )
        .expect("validated in Emulator::new")
    }

    fn ready(&self) -> bool {
        self.started.elapsed().as_secs_f64() >= self.cfg.slow_start_secs
    }

    fn scaled(&self, seconds: f64) -> Duration {
        Duration::from_secs_f64((seconds * self.cfg.time_scale).clamp(0.0, 3600.0))
    }

    /// Render Prometheus text metrics (vLLM names).
    pub fn metrics_text(&self) -> String {
        let c = self.counters.lock().expect("counters lock");
        let name = self.cfg.served_names.first().cloned().unwrap_or_default();
        let l = format!("model_name=\"{name}\"");
        let kv = (c.running_tokens / self.kv_capacity_tokens).clamp(0.0, 1.0);
        format!(
            "# HELP vllm:num_requests_running Number of requests currently running.\n# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{{{l}}} {}\n\
# HELP vllm:num_requests_waiting Number of requests waiting.\n# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{{l}}} {}\n\
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{{{l}}} {kv}\n\
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage (older name).\n# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc{{{l}}} {kv}\n\
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.\n# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total{{{l}}} {}\n\
# HELP vllm:generation_tokens_total Number of generation tokens processed.\n# TYPE vllm:generation_tokens_total counter\nvllm:generation_tokens_total{{{l}}} {}\n\
# HELP vllm:request_success_total Count of successfully processed requests.\n# TYPE vllm:request_success_total counter\nvllm:request_success_total{{{l},finished_reason=\"length\"}} {}\n\
# HELP bud_sim:request_errors_total Injected or rejected request errors.\n# TYPE bud_sim:request_errors_total counter\nbud_sim:request_errors_total{{{l}}} {}\n\
# HELP vllm:time_to_first_token_seconds Time to first token (simulated, scaled).\n# TYPE vllm:time_to_first_token_seconds summary\nvllm:time_to_first_token_seconds_sum{{{l}}} {}\nvllm:time_to_first_token_seconds_count{{{l}}} {}\n\
# HELP vllm:e2e_request_latency_seconds End-to-end request latency (simulated, scaled).\n# TYPE vllm:e2e_request_latency_seconds summary\nvllm:e2e_request_latency_seconds_sum{{{l}}} {}\nvllm:e2e_request_latency_seconds_count{{{l}}} {}\n",
            c.running,
            c.waiting,
            c.prompt_tokens,
            c.generation_tokens,
            c.success,
            c.errors,
            c.ttft_sum,
            c.ttft_count,
            c.e2e_sum,
            c.success
        )
    }
}

/// The router of the emulator.
pub fn router(emu: Arc<Emulator>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ping", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .with_state(emu)
}

/// Serve on `addr` until the process is stopped.
pub async fn run(emu: Arc<Emulator>, host: &str, port: u16) -> Result<()> {
    let addr = format!("{host}:{port}");
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| Error::Io(format!("binding {addr}: {e}")))?;
    eprintln!(
        "bud-sim serve: listening on http://{}",
        listener.local_addr().map(|a| a.to_string()).unwrap_or(addr)
    );
    axum::serve(listener, router(emu))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| Error::Io(e.to_string()))
}

fn error_response(status: StatusCode, message: &str, kind: &str, param: Option<&str>) -> Response {
    (status, Json(json!({"error": {"message": message, "type": kind, "param": param, "code": status.as_u16()}}))).into_response()
}

async fn health(State(emu): State<Arc<Emulator>>) -> Response {
    if emu.ready() {
        StatusCode::OK.into_response()
    } else {
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "engine is starting",
            "ServiceUnavailable",
            None,
        )
    }
}

async fn metrics(State(emu): State<Arc<Emulator>>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        emu.metrics_text(),
    )
        .into_response()
}

async fn models(State(emu): State<Arc<Emulator>>) -> Response {
    let now = unix_now();
    let data: Vec<Value> = emu
        .cfg
        .served_names
        .iter()
        .map(|n| json!({"id": n, "object": "model", "created": now, "owned_by": "bud-sim", "root": emu.cfg.model.id, "max_model_len": emu.cfg.max_model_len}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Rough token count of a text (about four characters per token, at least one).
pub fn count_tokens(text: &str) -> u32 {
    (text.chars().count().div_ceil(4)).max(1) as u32
}

const WORDS: &[&str] = &[
    "The",
    " model",
    " is",
    " simulated",
    " by",
    " Bud",
    " Foundry",
    ";",
    " tokens",
    " arrive",
    " at",
    " the",
    " predicted",
    " pace",
    ".",
];

struct Parsed {
    model: String,
    prompt_tokens: u32,
    max_tokens: u32,
    stream: bool,
    include_usage: bool,
}

fn parse_request(
    emu: &Emulator,
    body: &Value,
    chat: bool,
) -> std::result::Result<Parsed, Box<Response>> {
    parse_request_inner(emu, body, chat).map_err(Box::new)
}

#[expect(
    clippy::result_large_err,
    reason = "boxed once by parse_request; the early returns stay readable"
)]
fn parse_request_inner(
    emu: &Emulator,
    body: &Value,
    chat: bool,
) -> std::result::Result<Parsed, Response> {
    let bad =
        |m: &str, p: &str| error_response(StatusCode::BAD_REQUEST, m, "BadRequestError", Some(p));
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("`model` is required", "model"))?;
    if !emu.cfg.served_names.iter().any(|n| n == model) {
        return Err(error_response(
            StatusCode::NOT_FOUND,
            &format!(
                "The model `{model}` does not exist. Served models: {}",
                emu.cfg.served_names.join(", ")
            ),
            "NotFoundError",
            Some("model"),
        ));
    }
    let prompt_tokens = if chat {
        let msgs = body
            .get("messages")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("`messages` must be a non-empty array", "messages"))?;
        if msgs.is_empty() {
            return Err(bad("`messages` must be a non-empty array", "messages"));
        }
        let mut n = 0;
        for m in msgs {
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(" "),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            n += count_tokens(&content) + 4;
        }
        n
    } else {
        match body.get("prompt") {
            Some(Value::String(s)) => count_tokens(s),
            Some(Value::Array(a)) if !a.is_empty() => {
                if a.iter().all(Value::is_number) {
                    a.len() as u32
                } else {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(count_tokens)
                        .sum::<u32>()
                        .max(1)
                }
            }
            _ => {
                return Err(bad(
                    "`prompt` must be a string or a non-empty array",
                    "prompt",
                ));
            }
        }
    };
    let max_tokens = match body.get("max_completion_tokens").or(body.get("max_tokens")) {
        None | Some(Value::Null) => 16u64
            .min((emu.cfg.max_model_len as u64).saturating_sub(prompt_tokens as u64))
            .max(1),
        Some(v) => match v.as_u64() {
            Some(x) if x >= 1 => x,
            _ => {
                return Err(bad(
                    &format!("`max_tokens` must be a positive integer, got {v}"),
                    "max_tokens",
                ));
            }
        },
    };
    if prompt_tokens as u64 + max_tokens > emu.cfg.max_model_len as u64 {
        return Err(bad(
            &format!(
                "This model's maximum context length is {} tokens. However, you requested {} tokens ({} in the messages, {} in the completion).",
                emu.cfg.max_model_len,
                prompt_tokens as u64 + max_tokens,
                prompt_tokens,
                max_tokens
            ),
            "max_tokens",
        ));
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Parsed {
        model: model.to_string(),
        prompt_tokens,
        max_tokens: max_tokens as u32,
        stream,
        include_usage,
    })
}

fn should_fail(emu: &Emulator) -> bool {
    if emu.cfg.error_rate <= 0.0 {
        return false;
    }
    emu.rng.lock().expect("rng lock").unit() < emu.cfg.error_rate
}

async fn chat(State(emu): State<Arc<Emulator>>, body: Option<Json<Value>>) -> Response {
    handle(emu, body, true).await
}

async fn completions(State(emu): State<Arc<Emulator>>, body: Option<Json<Value>>) -> Response {
    handle(emu, body, false).await
}

/// A running request: holds a batch slot and its share of the KV cache, released on drop so
/// a client that disconnects mid-stream frees its slot, and sleeps off the model's delays
/// before its first token and between tokens under the load of the moment.
struct Admission {
    emu: Arc<Emulator>,
    _permit: tokio::sync::OwnedSemaphorePermit,
    tokens: f64,
    max_tokens: u32,
    timing: Timing,
    pacer: Pacer,
}

impl Admission {
    /// Wait for a batch slot; `None` when the engine is shutting down.
    async fn acquire(emu: Arc<Emulator>, prompt: u32, max_tokens: u32) -> Option<Self> {
        emu.counters.lock().expect("counters lock").waiting += 1;
        let permit = Arc::clone(&emu.slots).acquire_owned().await;
        let mut c = emu.counters.lock().expect("counters lock");
        c.waiting -= 1;
        let permit = permit.ok()?;
        c.running += 1;
        c.running_tokens += prompt as f64;
        c.prompt_tokens += prompt as u64;
        drop(c);
        Some(Admission {
            timing: emu.timing(prompt),
            emu,
            _permit: permit,
            tokens: prompt as f64,
            max_tokens,
            pacer: Pacer {
                owed: Duration::ZERO,
            },
        })
    }

    /// Wait out the time to the first token; `flush` sleeps even a debt below the pacer's
    /// granularity (a stream shows each token when it is due).
    async fn first_token(&mut self, flush: bool) {
        let delay = self.emu.first_token_delay(
            self.running(),
            self.timing.prompt as f64,
            &self.timing,
            self.max_tokens,
        );
        self.pacer.owe(self.emu.scaled(delay), flush).await;
    }

    /// Wait out the gap before output token `i` (none before the first) and count the token.
    async fn token(&mut self, i: u32, flush: bool) {
        if i > 0 {
            let gap =
                self.emu
                    .token_gap(self.running(), self.tokens, &self.timing, self.max_tokens);
            self.pacer.owe(self.emu.scaled(gap), flush).await;
        }
        self.add_token();
    }

    fn add_token(&mut self) {
        self.tokens += 1.0;
        let mut c = self.emu.counters.lock().expect("counters lock");
        c.running_tokens += 1.0;
        c.generation_tokens += 1;
    }

    fn running(&self) -> f64 {
        self.emu
            .counters
            .lock()
            .expect("counters lock")
            .running
            .max(1) as f64
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut c = self.emu.counters.lock().expect("counters lock");
        c.running = c.running.saturating_sub(1);
        c.running_tokens = (c.running_tokens - self.tokens).max(0.0);
    }
}

/// Paces simulated time: accumulates owed delay and sleeps in chunks of at least 2 ms so
/// heavy time scaling does not round every tiny sleep up to the timer resolution.
struct Pacer {
    owed: Duration,
}

impl Pacer {
    async fn owe(&mut self, d: Duration, flush: bool) {
        self.owed += d;
        if self.owed >= Duration::from_millis(2) || (flush && !self.owed.is_zero()) {
            tokio::time::sleep(self.owed).await;
            self.owed = Duration::ZERO;
        }
    }
}

struct Timing {
    prompt: u32,
    prefill_s: f64,
    prefill_work_s: f64,
}

impl Emulator {
    fn timing(&self, prompt: u32) -> Timing {
        let r = self.resolved();
        Timing {
            prompt,
            prefill_s: r.prefill(prompt as f64, true),
            prefill_work_s: r.prefill(prompt as f64, false),
        }
    }

    /// Multiplier of the learned correction (TPOT or TTFT) at this load, 1 without one.
    fn correction(
        &self,
        running: f64,
        t: &Timing,
        max_tokens: u32,
        step: f64,
        tpot: f64,
        ttft: bool,
    ) -> f64 {
        let Some(c) = &self.cfg.params.correction else {
            return 1.0;
        };
        let Some(model) = (if ttft {
            c.ttft.as_ref()
        } else {
            c.tpot.as_ref()
        }) else {
            return 1.0;
        };
        let w = crate::perf::Workload {
            input_tokens: t.prompt.max(1),
            output_tokens: max_tokens.max(1),
            concurrency: running.max(1.0) as u32,
        };
        let features = self.resolved().features(&w, running, step, tpot);
        model
            .predict(&features)
            .clamp(-MAX_CORRECTION_LN, MAX_CORRECTION_LN)
            .exp()
    }

    /// Seconds until the next token for a request at `ctx` tokens with `running` requests:
    /// the same TPOT the performance model predicts at this load.
    fn token_gap(&self, running: f64, ctx: f64, t: &Timing, max_tokens: u32) -> f64 {
        let r = self.resolved();
        let (step, _) = r.decode_step(running, ctx);
        let tpot = step
            + r.p.mix_factor * (running - 1.0).max(0.0) * t.prefill_work_s
                / max_tokens.max(1) as f64;
        tpot * self.correction(running, t, max_tokens, step, tpot, false)
    }

    /// Seconds to the first token once admitted (the emulator's own queue adds the wait).
    fn first_token_delay(&self, running: f64, ctx: f64, t: &Timing, max_tokens: u32) -> f64 {
        let r = self.resolved();
        let (step, _) = r.decode_step(running, ctx);
        let tpot = step
            + r.p.mix_factor * (running - 1.0).max(0.0) * t.prefill_work_s
                / max_tokens.max(1) as f64;
        (t.prefill_s + r.ttft_steps(t.prompt) * step)
            * self.correction(running, t, max_tokens, step, tpot, true)
    }
}

fn word(i: u32) -> &'static str {
    WORDS[i as usize % WORDS.len()]
}

async fn handle(emu: Arc<Emulator>, body: Option<Json<Value>>, chat: bool) -> Response {
    if !emu.ready() {
        emu.counters.lock().expect("counters lock").errors += 1;
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "engine is starting (slow start injected)",
            "ServiceUnavailable",
            None,
        );
    }
    let Some(Json(body)) = body else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "the request body must be a JSON object",
            "BadRequestError",
            None,
        );
    };
    let req = match parse_request(&emu, &body, chat) {
        Ok(r) => r,
        Err(resp) => {
            emu.counters.lock().expect("counters lock").errors += 1;
            return *resp;
        }
    };
    if should_fail(&emu) {
        emu.counters.lock().expect("counters lock").errors += 1;
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected failure (--error-rate)",
            "InternalServerError",
            None,
        );
    }
    let n = emu
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = if chat {
        format!("chatcmpl-sim-{n}")
    } else {
        format!("cmpl-sim-{n}")
    };
    let created = unix_now();
    if req.stream {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::result::Result<Event, Infallible>>(16);
        tokio::spawn(stream_task(emu, req, id, created, chat, tx));
        return Sse::new(ReceiverStream::new(rx)).into_response();
    }
    let start = Instant::now();
    let admitted = Admission::acquire(Arc::clone(&emu), req.prompt_tokens, req.max_tokens).await;
    let Some(mut adm) = admitted else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "engine is shutting down",
            "ServiceUnavailable",
            None,
        );
    };
    adm.first_token(false).await;
    let ttft = start.elapsed().as_secs_f64();
    let mut text = String::new();
    for i in 0..req.max_tokens {
        adm.token(i, i + 1 == req.max_tokens).await;
        text.push_str(word(i));
    }
    adm.pacer.owe(Duration::ZERO, true).await;
    finish(&emu, ttft, start);
    let usage = json!({"prompt_tokens": req.prompt_tokens, "completion_tokens": req.max_tokens, "total_tokens": req.prompt_tokens + req.max_tokens});
    let body = if chat {
        json!({"id": id, "object": "chat.completion", "created": created, "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": "length"}],
            "usage": usage})
    } else {
        json!({"id": id, "object": "text_completion", "created": created, "model": req.model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": "length"}],
            "usage": usage})
    };
    drop(adm);
    Json(body).into_response()
}

fn finish(emu: &Emulator, ttft: f64, start: Instant) {
    let mut c = emu.counters.lock().expect("counters lock");
    c.success += 1;
    c.ttft_sum += ttft;
    c.ttft_count += 1;
    c.e2e_sum += start.elapsed().as_secs_f64();
}

fn chunk(
    id: &str,
    created: u64,
    model: &str,
    chat: bool,
    content: Option<&str>,
    role: bool,
    finish: Option<&str>,
) -> Value {
    if chat {
        let mut delta = serde_json::Map::new();
        if role {
            delta.insert("role".into(), json!("assistant"));
        }
        if let Some(c) = content {
            delta.insert("content".into(), json!(c));
        }
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    } else {
        json!({"id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": content.unwrap_or(""), "logprobs": null, "finish_reason": finish}]})
    }
}

async fn stream_task(
    emu: Arc<Emulator>,
    req: Parsed,
    id: String,
    created: u64,
    chat: bool,
    tx: tokio::sync::mpsc::Sender<std::result::Result<Event, Infallible>>,
) {
    let send = |v: Value| {
        let tx = tx.clone();
        async move {
            tx.send(Ok(Event::default().data(v.to_string())))
                .await
                .is_ok()
        }
    };
    let start = Instant::now();
    let admitted = Admission::acquire(Arc::clone(&emu), req.prompt_tokens, req.max_tokens).await;
    let Some(mut adm) = admitted else {
        return;
    };
    adm.first_token(true).await;
    if chat && !send(chunk(&id, created, &req.model, chat, Some(""), true, None)).await {
        return;
    }
    let ttft = start.elapsed().as_secs_f64();
    for i in 0..req.max_tokens {
        adm.token(i, true).await;
        let last = i + 1 == req.max_tokens;
        if !send(chunk(
            &id,
            created,
            &req.model,
            chat,
            Some(word(i)),
            false,
            last.then_some("length"),
        ))
        .await
        {
            return;
        }
    }
    finish(&emu, ttft, start);
    drop(adm);
    if req.include_usage {
        let usage = json!({"prompt_tokens": req.prompt_tokens, "completion_tokens": req.max_tokens, "total_tokens": req.prompt_tokens + req.max_tokens});
        let object = if chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let _ = send(json!({"id": id, "object": object, "created": created, "model": req.model, "choices": [], "usage": usage})).await;
    }
    let _ = tx.send(Ok(Event::default().data("[DONE]"))).await;
}
