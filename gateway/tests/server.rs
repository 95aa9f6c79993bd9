//! The whole request path in-process: the gateway's router on 127.0.0.1 in front of mock
//! upstreams (axum servers speaking the OpenAI and Anthropic wire formats).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use bud_gateway::keys::hash_key;
use bud_gateway::limits::Limiter;
use bud_gateway::metrics::Metrics;
use bud_gateway::providers::{HttpClients, Timeouts};
use bud_gateway::routing::balancer::HealthConfig;
use bud_gateway::routing::{Snapshot, SnapshotBuilder, file};
use bud_gateway::server::proxy::ForwardConfig;
use bud_gateway::server::{self, AppState, ServerConfig};
use bud_gateway::usage::UsageExporter;

const KEY: &str = "sk-rust-test";

async fn spawn(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("127.0.0.1:{}", addr.port())
}

fn sse(events: Vec<String>) -> Response {
    let body = events.concat();
    ([("content-type", "text/event-stream")], Body::from(body)).into_response()
}

/// An OpenAI-compatible engine.
async fn openai_chat(version: axum::http::Version, Json(body): Json<Value>) -> Response {
    let model = body["model"].clone();
    if body["stream"] == json!(true) {
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let mut events = vec![chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        )];
        events.push(chunk(json!({"content": "Hi"}), Value::Null));
        events.push(chunk(json!({}), json!("stop")));
        if body.pointer("/stream_options/include_usage") == Some(&json!(true)) {
            events.push(format!("data: {}\n\n", json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}})));
        }
        events.push("data: [DONE]\n\n".into());
        return sse(events);
    }
    Json(json!({"id": "c", "object": "chat.completion", "created": 1, "model": model,
        "system_fingerprint": format!("{version:?}"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}}))
    .into_response()
}

/// An Anthropic upstream that is overloaded (529) when `overloaded` is set.
async fn anthropic_messages(
    overloaded: bool,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    assert_eq!(headers["x-api-key"], "ant-key");
    if overloaded {
        return (
            StatusCode::from_u16(529).unwrap(),
            Json(
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}),
            ),
        )
            .into_response();
    }
    if body["stream"] == json!(true) {
        let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
        return sse(vec![
            ev(
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1", "model": body["model"], "usage": {"input_tokens": 7, "output_tokens": 1}}}),
            ),
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Bonjour"}}),
            ),
            ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            ev(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
            ),
            ev("message_stop", json!({"type": "message_stop"})),
        ]);
    }
    Json(json!({"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
        "content": [{"type": "text", "text": "Bonjour"}], "stop_reason": "end_turn", "usage": {"input_tokens": 7, "output_tokens": 2}}))
    .into_response()
}

async fn gateway() -> String {
    gateway_with(0).await
}

async fn gateway_with(h2c_connections: usize) -> String {
    let engine = spawn(axum::Router::new().route("/v1/chat/completions", post(openai_chat))).await;
    let claude = spawn(
        axum::Router::new().route("/v1/messages", post(|h, b| anthropic_messages(false, h, b))),
    )
    .await;
    let busy = spawn(
        axum::Router::new().route("/v1/messages", post(|h, b| anthropic_messages(true, h, b))),
    )
    .await;
    let (engine_host, engine_port) = engine.split_once(':').unwrap();
    let routes = format!(
        r#"
deployments:
  - name: engine
    route: {{servedName: qwen, provider: Engine}}
    endpoints: [{{address: {engine_host}, port: {engine_port}}}]
  - name: claude
    route: {{servedName: claude, provider: Anthropic, baseUrl: "http://{claude}/v1", credentialsSecretRef: {{name: ant, key: k}}}}
  - name: busy
    route: {{servedName: claude-ha, provider: Anthropic, baseUrl: "http://{busy}/v1", credentialsSecretRef: {{name: ant, key: k}}, priority: 0}}
  - name: backup
    route: {{servedName: claude-ha, provider: Engine, priority: 1}}
    endpoints: [{{address: {engine_host}, port: {engine_port}}}]
apiKeys:
  - {{name: k, keyHash: "sha256:{hash}", keyId: kid}}
credentials:
  - {{name: ant, key: k, value: ant-key}}
"#,
        hash = hash_key(KEY)
    );
    let builder =
        SnapshotBuilder::new(HttpClients::new(Duration::from_secs(1), h2c_connections).unwrap());
    let snapshot = file::build_from_str(&builder, &routes).unwrap();
    assert!(snapshot.warnings.is_empty(), "{:?}", snapshot.warnings);
    let config = ServerConfig {
        max_body_bytes: 4096,
        default_reserve_tokens: 100,
        forward: ForwardConfig {
            timeouts: Timeouts {
                first_byte: Duration::from_secs(5),
                total: Duration::from_secs(10),
            },
            max_attempts_per_group: 2,
            health: HealthConfig::default(),
        },
        retry_budget_ratio: 0.2,
        retry_budget_min: 10,
        tracing: false,
    };
    let state = Arc::new(AppState::new(
        config,
        Arc::new(ArcSwap::<Snapshot>::from_pointee(snapshot)),
        Metrics::default(),
        Limiter::local(),
        UsageExporter::disabled(),
        reqwest::Client::new(),
    ));
    state.set_ready(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(listener, state, std::future::pending()));
    format!("http://{addr}")
}

async fn post_json(url: &str, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}{path}"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn openai_chat_plain_and_streaming() {
    let gw = gateway().await;
    let r = post_json(
        &gw,
        "/v1/chat/completions",
        json!({"model": "qwen", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Hi");
    assert_eq!(body["model"], "qwen");

    let r = post_json(
        &gw,
        "/v1/chat/completions",
        json!({"model": "qwen", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    let text = r.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        !text.contains("usage"),
        "usage stripped when not asked for: {text}"
    );
    assert_eq!(text.matches("data: ").count(), 4);
}

#[tokio::test]
async fn anthropic_both_ways_and_529_failover() {
    let gw = gateway().await;
    let r = post_json(
        &gw,
        "/v1/chat/completions",
        json!({"model": "claude", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Bonjour");
    assert_eq!(body["usage"]["prompt_tokens"], 7);

    // Anthropic upstream: its events are relayed as they came (this mock sends no ping).
    let r = post_json(&gw, "/v1/messages", json!({"model": "claude", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "x"}]})).await;
    let text = r.text().await.unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert!(!names.contains(&"ping"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"));
    assert!(text.contains(r#""output_tokens":2"#), "{text}");

    // An OpenAI-compatible engine: its chunks become Anthropic events, in Anthropic's order.
    let r = post_json(&gw, "/v1/messages", json!({"model": "qwen", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "x"}]})).await;
    let text = r.text().await.unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );

    let r = post_json(&gw, "/v1/messages", json!({"model": "claude-ha", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["content"][0]["text"], "Hi",
        "served by the fallback engine"
    );
}

#[tokio::test]
async fn client_errors() {
    let gw = gateway().await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{gw}/v1/chat/completions"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = post_json(
        &gw,
        "/v1/chat/completions",
        json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status(), 404);
    let r = post_json(
        &gw,
        "/v1/chat/completions",
        json!({"model": "qwen", "messages": [{"role": "user", "content": "x".repeat(5000)}]}),
    )
    .await;
    assert_eq!(r.status(), 413);
    let r = client
        .post(format!("{gw}/v1/messages"))
        .header("x-api-key", KEY)
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error");
}

#[tokio::test]
async fn engines_over_h2c_and_http1() {
    for (connections, version) in [(0, "HTTP/1.1"), (3, "HTTP/2.0")] {
        let gw = gateway_with(connections).await;
        for _ in 0..5 {
            let r = post_json(
                &gw,
                "/v1/chat/completions",
                json!({"model": "qwen", "messages": [{"role": "user", "content": "x"}]}),
            )
            .await;
            assert_eq!(r.status(), 200);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["system_fingerprint"], version);
        }
    }
}
