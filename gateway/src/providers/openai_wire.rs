//! The OpenAI wire protocol over HTTP, shared by every OpenAI-compatible provider:
//! JSON POSTs, error bodies and `data:` SSE streams ending in `[DONE]`.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::time::Instant;

use super::sse::{SseEvent, SseParser};
use super::{ChunkStream, ProviderError, Timeouts};

const MAX_ERROR_MESSAGE: usize = 1_000;
/// How long to wait for the rest of a stream's body after `[DONE]`.
const DRAIN_AFTER_DONE: Duration = Duration::from_millis(20);

/// Sends a JSON POST and waits for the response headers within the first-byte timeout.
pub async fn send(
    request: reqwest::RequestBuilder,
    body: &Value,
    timeouts: Timeouts,
) -> Result<reqwest::Response, ProviderError> {
    let bytes = serde_json::to_vec(body).map_err(|e| ProviderError::Translation(e.to_string()))?;
    let future = request
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(bytes)
        .send();
    let response = match tokio::time::timeout(timeouts.first_byte, future).await {
        Err(_) => return Err(ProviderError::Timeout("first_byte")),
        Ok(Err(e)) => return Err(classify(&e)),
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    if !status.is_success() {
        let body = tokio::time::timeout(Duration::from_secs(5), response.bytes())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        return Err(ProviderError::Status {
            status: status.as_u16(),
            message: error_message(&body),
        });
    }
    Ok(response)
}

/// Maps a reqwest error to a provider error without echoing URLs with credentials.
pub fn classify(e: &reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout("connect")
    } else if e.is_connect() {
        ProviderError::Connect(source_chain(e))
    } else if e.is_body() || e.is_decode() {
        ProviderError::Stream(source_chain(e))
    } else {
        ProviderError::Connect(source_chain(e))
    }
}

fn source_chain(e: &reqwest::Error) -> String {
    let mut message = String::from(if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    });
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// Extracts a readable message from an upstream error body (OpenAI or Anthropic shape).
pub fn error_message(body: &[u8]) -> String {
    let message = match serde_json::from_slice::<Value>(body) {
        Ok(v) => v
            .pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .or_else(|| v.get("detail").filter(|e| e.is_string()))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string()),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let mut message = message.trim().to_string();
    if message.len() > MAX_ERROR_MESSAGE {
        let mut cut = MAX_ERROR_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    message
}

/// Reads a whole JSON response within the total deadline.
pub async fn read_json(
    response: reqwest::Response,
    deadline: Instant,
) -> Result<Value, ProviderError> {
    let bytes = match tokio::time::timeout_at(deadline, response.bytes()).await {
        Err(_) => return Err(ProviderError::Timeout("total")),
        Ok(Err(e)) => return Err(classify(&e)),
        Ok(Ok(b)) => b,
    };
    serde_json::from_slice(&bytes).map_err(|e| ProviderError::Decode(e.to_string()))
}

/// Turns a streaming response into SSE events, failing when the total deadline passes.
pub fn sse_events(
    response: reqwest::Response,
    deadline: Instant,
) -> impl futures::Stream<Item = Result<SseEvent, ProviderError>> + Send {
    let mut body = response.bytes_stream();
    async_stream::stream! {
        let mut parser = SseParser::default();
        loop {
            match tokio::time::timeout_at(deadline, body.next()).await {
                Err(_) => { yield Err(ProviderError::Timeout("total")); return; }
                Ok(None) => break,
                Ok(Some(Err(e))) => { yield Err(ProviderError::Stream(source_chain(&e))); return; }
                Ok(Some(Ok(bytes))) => {
                    for event in parser.push(&bytes) {
                        yield Ok(event);
                    }
                }
            }
        }
        if let Some(event) = parser.finish() {
            yield Ok(event);
        }
    }
}

/// OpenAI `data:` chunks until `[DONE]`; an in-band `{"error": …}` becomes an error item.
/// A stream that ends without `[DONE]` is reported as truncated.
pub fn openai_chunks(response: reqwest::Response, deadline: Instant) -> ChunkStream {
    let events = sse_events(response, deadline);
    Box::pin(async_stream::stream! {
        futures::pin_mut!(events);
        let mut done = false;
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => { yield Err(e); return; }
            };
            if event.data.trim() == "[DONE]" {
                done = true;
                // Read the body's end (usually already buffered) so the connection goes back
                // to the pool instead of being closed.
                let _ = tokio::time::timeout(DRAIN_AFTER_DONE, async {
                    while events.next().await.is_some() {}
                })
                .await;
                break;
            }
            match serde_json::from_str::<Value>(&event.data) {
                Ok(v) if v.get("error").is_some_and(|e| !e.is_null()) => {
                    let message = error_message(event.data.as_bytes());
                    let status = v.pointer("/error/code").and_then(Value::as_u64).unwrap_or(502);
                    yield Err(ProviderError::Status { status: status as u16, message });
                    return;
                }
                Ok(v) => yield Ok(v),
                Err(e) => { yield Err(ProviderError::Decode(e.to_string())); return; }
            }
        }
        if !done {
            yield Err(ProviderError::Stream("upstream stream ended before [DONE]".into()));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_message_reads_both_shapes() {
        assert_eq!(
            error_message(br#"{"error":{"message":"bad model"}}"#),
            "bad model"
        );
        assert_eq!(
            error_message(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#
            ),
            "busy"
        );
        assert_eq!(error_message(b"plain text"), "plain text");
        assert_eq!(error_message(&[b'x'; 5000]).len(), MAX_ERROR_MESSAGE);
    }
}
