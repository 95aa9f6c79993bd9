//! Anthropic Messages API: `x-api-key` + `anthropic-version`, requests and responses
//! translated from and to the canonical OpenAI shape (see [`crate::translate::anthropic`]).

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::Value;
use tokio::time::Instant;

use super::{ChunkStream, Operation, Provider, ProviderError, Timeouts, openai_wire};
use crate::routing::spec::ProviderKind;
use crate::translate::anthropic as translate;

pub const ANTHROPIC_VERSION: &str = "2023-06-01";

#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    client: reqwest::Client,
    api_key: Option<String>,
}

impl AnthropicProvider {
    pub fn new(client: reqwest::Client, api_key: Option<String>) -> Self {
        Self { client, api_key }
    }

    fn request(&self, base_url: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .post(format!("{base_url}/messages"))
            .header("anthropic-version", ANTHROPIC_VERSION);
        if let Some(key) = &self.api_key {
            request = request.header("x-api-key", key);
        }
        request
    }

    fn prepare(
        &self,
        base_url: &str,
        op: Operation,
        body: &Value,
    ) -> Result<(reqwest::RequestBuilder, Value), ProviderError> {
        if op != Operation::Chat {
            return Err(ProviderError::Unsupported(format!(
                "the {} endpoint is not supported for Anthropic models",
                op.as_str()
            )));
        }
        let translated = translate::openai_request_to_anthropic(body)
            .map_err(|e| ProviderError::Translation(e.0))?;
        Ok((self.request(base_url), translated))
    }
}

/// Anthropic events (their data) until `message_stop`; `error` events become errors.
fn anthropic_events(response: reqwest::Response, deadline: Instant) -> ChunkStream {
    let events = openai_wire::sse_events(response, deadline);
    Box::pin(async_stream::stream! {
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => { yield Err(e); return; }
            };
            let data: Value = match serde_json::from_str(&event.data) {
                Ok(v) => v,
                Err(e) => { yield Err(ProviderError::Decode(e.to_string())); return; }
            };
            match data.get("type").and_then(Value::as_str) {
                Some("error") => {
                    let error_type = data.pointer("/error/type").and_then(Value::as_str).unwrap_or("api_error");
                    let message = data.pointer("/error/message").and_then(Value::as_str).unwrap_or("upstream error");
                    yield Err(ProviderError::Status { status: translate::error_status(error_type), message: message.to_string() });
                    return;
                }
                Some("message_stop") => {
                    yield Ok(data);
                    return;
                }
                _ => yield Ok(data),
            }
        }
        yield Err(ProviderError::Stream("upstream stream ended before message_stop".into()));
    })
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Anthropic
    }

    async fn infer(
        &self,
        base_url: &str,
        op: Operation,
        body: &Value,
        timeouts: Timeouts,
    ) -> Result<Value, ProviderError> {
        let deadline = Instant::now() + timeouts.total;
        let (request, translated) = self.prepare(base_url, op, body)?;
        let response = openai_wire::send(request, &translated, timeouts).await?;
        let message = openai_wire::read_json(response, deadline).await?;
        Ok(translate::anthropic_response_to_openai(
            &message,
            unix_now(),
        ))
    }

    async fn infer_stream(
        &self,
        base_url: &str,
        op: Operation,
        body: &Value,
        timeouts: Timeouts,
    ) -> Result<ChunkStream, ProviderError> {
        let deadline = Instant::now() + timeouts.total;
        let (request, translated) = self.prepare(base_url, op, body)?;
        let response = openai_wire::send(request, &translated, timeouts).await?;
        let mut events = anthropic_events(response, deadline);
        Ok(Box::pin(async_stream::stream! {
            let mut state = translate::AnthropicToOpenAiStream::new(unix_now());
            while let Some(event) = events.next().await {
                let data = match event {
                    Ok(d) => d,
                    Err(e) => { yield Err(e); return; }
                };
                match state.on_event(&data) {
                    Ok(chunks) => for chunk in chunks { yield Ok(chunk); },
                    Err(e) => { yield Err(ProviderError::Status { status: e.status, message: e.message }); return; }
                }
            }
        }))
    }

    fn speaks_anthropic(&self) -> bool {
        true
    }

    async fn messages(
        &self,
        base_url: &str,
        body: &Value,
        timeouts: Timeouts,
    ) -> Result<Value, ProviderError> {
        let deadline = Instant::now() + timeouts.total;
        let response = openai_wire::send(self.request(base_url), body, timeouts).await?;
        openai_wire::read_json(response, deadline).await
    }

    async fn messages_stream(
        &self,
        base_url: &str,
        body: &Value,
        timeouts: Timeouts,
    ) -> Result<ChunkStream, ProviderError> {
        let deadline = Instant::now() + timeouts.total;
        let response = openai_wire::send(self.request(base_url), body, timeouts).await?;
        Ok(anthropic_events(response, deadline))
    }
}
