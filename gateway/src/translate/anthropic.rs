//! OpenAI chat completions <-> Anthropic Messages, both directions, streaming included.
//!
//! - [`openai_request_to_anthropic`], [`anthropic_response_to_openai`] and
//!   [`AnthropicToOpenAiStream`] serve the Anthropic *provider* (OpenAI in, Anthropic upstream).
//! - [`anthropic_request_to_openai`], [`openai_response_to_anthropic`] and
//!   [`OpenAiToAnthropicStream`] serve the `/v1/messages` *endpoint* (Anthropic in, any upstream).

use serde_json::{Map, Value, json};

use super::TranslateError;

/// `max_tokens` is required by Anthropic; used when an OpenAI request names none.
pub const DEFAULT_ANTHROPIC_MAX_TOKENS: u64 = 4096;

// ---------------------------------------------------------------------------------------------
// OpenAI request -> Anthropic request
// ---------------------------------------------------------------------------------------------

/// Translates an OpenAI chat request (with `model` already the upstream model).
pub fn openai_request_to_anthropic(request: &Value) -> Result<Value, TranslateError> {
    let obj = request
        .as_object()
        .ok_or_else(|| TranslateError::new("request must be an object"))?;
    let mut out = Map::new();
    out.insert(
        "model".into(),
        obj.get("model").cloned().unwrap_or(Value::Null),
    );

    if obj.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(TranslateError::new(
            "n > 1 is not supported by this model's provider",
        ));
    }

    let mut system_parts: Vec<String> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    let messages_in = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::new("`messages` must be an array"))?;
    for message in messages_in {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        match role {
            "system" | "developer" => system_parts.push(text_of(message.get("content"))?),
            "user" => {
                let blocks = openai_content_to_blocks(message.get("content"))?;
                push_merged(&mut messages, "user", blocks);
            }
            "assistant" => {
                let mut blocks = Vec::new();
                let text = match message.get("content") {
                    None | Some(Value::Null) => String::new(),
                    other => text_of(other)?,
                };
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in message
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let function = call.get("function").unwrap_or(&Value::Null);
                    let arguments = function
                        .get("arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("{}");
                    let input: Value = if arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(arguments).map_err(|_| {
                            TranslateError::new("tool call arguments must be a JSON object")
                        })?
                    };
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.get("id").cloned().unwrap_or(Value::Null),
                        "name": function.get("name").cloned().unwrap_or(Value::Null),
                        "input": input,
                    }));
                }
                if blocks.is_empty() {
                    blocks.push(json!({"type": "text", "text": ""}));
                }
                push_merged(&mut messages, "assistant", blocks);
            }
            "tool" => {
                let content = text_of(message.get("content"))?;
                let block = json!({
                    "type": "tool_result",
                    "tool_use_id": message.get("tool_call_id").cloned().unwrap_or(Value::Null),
                    "content": content,
                });
                push_merged(&mut messages, "user", vec![block]);
            }
            other => {
                return Err(TranslateError::new(format!(
                    "unsupported message role `{other}`"
                )));
            }
        }
    }
    if !system_parts.is_empty() {
        out.insert("system".into(), Value::String(system_parts.join("\n\n")));
    }
    out.insert("messages".into(), Value::Array(messages));

    let max_tokens = obj
        .get("max_completion_tokens")
        .and_then(Value::as_u64)
        .or_else(|| obj.get("max_tokens").and_then(Value::as_u64))
        .unwrap_or(DEFAULT_ANTHROPIC_MAX_TOKENS);
    out.insert("max_tokens".into(), json!(max_tokens));

    for key in ["temperature", "top_p"] {
        if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    match obj.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if !a.is_empty() => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(tools) = obj.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                let f = t.get("function").unwrap_or(t);
                let mut tool = Map::new();
                tool.insert("name".into(), f.get("name").cloned().unwrap_or(Value::Null));
                if let Some(d) = f.get("description").filter(|d| !d.is_null()) {
                    tool.insert("description".into(), d.clone());
                }
                tool.insert(
                    "input_schema".into(),
                    f.get("parameters")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object"})),
                );
                Value::Object(tool)
            })
            .collect();
        if !tools.is_empty() {
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    let parallel_disabled = obj.get("parallel_tool_calls") == Some(&Value::Bool(false));
    let tool_choice = match obj.get("tool_choice") {
        Some(Value::String(s)) if s == "auto" => Some(json!({"type": "auto"})),
        Some(Value::String(s)) if s == "required" => Some(json!({"type": "any"})),
        Some(Value::String(s)) if s == "none" => Some(json!({"type": "none"})),
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .cloned()
                .unwrap_or(Value::Null);
            Some(json!({"type": "tool", "name": name}))
        }
        _ if parallel_disabled && out.contains_key("tools") => Some(json!({"type": "auto"})),
        _ => None,
    };
    if let Some(mut choice) = tool_choice {
        if parallel_disabled && choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = Value::Bool(true);
        }
        out.insert("tool_choice".into(), choice);
    }
    if let Some(user) = obj.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if obj.get("stream") == Some(&Value::Bool(true)) {
        out.insert("stream".into(), Value::Bool(true));
    }
    Ok(Value::Object(out))
}

/// Appends blocks to the last message when it has the same role (Anthropic wants turns to
/// alternate), otherwise starts a new message.
fn push_merged(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if let Some(last) = messages.last_mut()
        && last["role"] == role
        && let Some(content) = last["content"].as_array_mut()
    {
        content.extend(blocks);
        return;
    }
    messages.push(json!({"role": role, "content": blocks}));
}

/// The plain text of an OpenAI content field (a string or text parts).
fn text_of(content: Option<&Value>) -> Result<String, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        text.push_str(part.get("text").and_then(Value::as_str).unwrap_or(""))
                    }
                    _ => return Err(TranslateError::new("only text parts are supported here")),
                }
            }
            Ok(text)
        }
        Some(_) => Err(TranslateError::new(
            "message content must be a string or an array of parts",
        )),
    }
}

fn openai_content_to_blocks(content: Option<&Value>) -> Result<Vec<Value>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(vec![json!({"type": "text", "text": ""})]),
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => Ok(
                    json!({"type": "text", "text": part.get("text").cloned().unwrap_or(json!(""))}),
                ),
                Some("image_url") => {
                    let url = part
                        .pointer("/image_url/url")
                        .and_then(Value::as_str)
                        .ok_or_else(|| TranslateError::new("image_url.url must be a string"))?;
                    Ok(json!({"type": "image", "source": image_source(url)?}))
                }
                other => Err(TranslateError::new(format!(
                    "content part type `{}` is not supported by this model's provider",
                    other.unwrap_or("?")
                ))),
            })
            .collect(),
        Some(_) => Err(TranslateError::new(
            "message content must be a string or an array of parts",
        )),
    }
}

fn image_source(url: &str) -> Result<Value, TranslateError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| TranslateError::new("malformed data URL"))?;
        let media_type = meta
            .strip_suffix(";base64")
            .ok_or_else(|| TranslateError::new("only base64 data URLs are supported"))?;
        Ok(json!({"type": "base64", "media_type": media_type, "data": data}))
    } else {
        Ok(json!({"type": "url", "url": url}))
    }
}

// ---------------------------------------------------------------------------------------------
// Anthropic response -> OpenAI response
// ---------------------------------------------------------------------------------------------

fn stop_reason_to_finish(reason: Option<&str>) -> Option<&'static str> {
    reason.map(|r| match r {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    })
}

fn anthropic_usage_to_openai(usage: &Value) -> Value {
    let input = usage
        .get("input_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        + usage
            .get("cache_creation_input_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0)
        + usage
            .get("cache_read_input_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0);
    let output = usage
        .get("output_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output})
}

/// Translates an Anthropic message into an OpenAI chat completion; `created` is unix seconds.
pub fn anthropic_response_to_openai(response: &Value, created: i64) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for block in response
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => {
                reasoning.push_str(block.get("thinking").and_then(Value::as_str).unwrap_or(""))
            }
            Some("tool_use") => tool_calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").unwrap_or(&json!({})).to_string(),
                }
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::String(text) }});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    if !reasoning.is_empty() {
        // vLLM's and DeepSeek's field for a reasoning model's thinking.
        message["reasoning_content"] = Value::String(reasoning);
    }
    let finish = stop_reason_to_finish(response.get("stop_reason").and_then(Value::as_str))
        .unwrap_or("stop");
    json!({
        "id": response.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": created,
        "model": response.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
        "usage": anthropic_usage_to_openai(response.get("usage").unwrap_or(&Value::Null)),
    })
}

// ---------------------------------------------------------------------------------------------
// Anthropic stream -> OpenAI chunks
// ---------------------------------------------------------------------------------------------

/// An error event inside an Anthropic stream: the HTTP status it stands for and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    pub status: u16,
    pub message: String,
}

/// The HTTP status an Anthropic error type stands for (`overloaded_error` is 529).
pub fn error_status(error_type: &str) -> u16 {
    match error_type {
        "overloaded_error" => 529,
        "rate_limit_error" => 429,
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        _ => 500,
    }
}

/// Turns Anthropic stream events into OpenAI `chat.completion.chunk`s.
#[derive(Debug, Default)]
pub struct AnthropicToOpenAiStream {
    id: String,
    model: String,
    created: i64,
    /// Content block index -> tool call index.
    tool_indexes: Vec<(u64, u64)>,
    input_tokens: u64,
    output_tokens: u64,
    finish_reason: Option<&'static str>,
}

impl AnthropicToOpenAiStream {
    pub fn new(created: i64) -> Self {
        Self {
            created,
            ..Self::default()
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": null}],
        })
    }

    /// Feeds one event (its `type` field decides); returns the chunks it produces.
    pub fn on_event(&mut self, event: &Value) -> Result<Vec<Value>, StreamError> {
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "message_start" => {
                let message = event.get("message").unwrap_or(&Value::Null);
                self.id = message
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                self.model = message
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let usage = message.get("usage").unwrap_or(&Value::Null);
                self.input_tokens = anthropic_usage_to_openai(usage)["prompt_tokens"]
                    .as_u64()
                    .unwrap_or(0);
                self.output_tokens = usage
                    .get("output_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                Ok(vec![
                    self.chunk(json!({"role": "assistant", "content": ""}), None),
                ])
            }
            "content_block_start" => {
                let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                let block = event.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let tool_index = self.tool_indexes.len() as u64;
                        self.tool_indexes.push((index, tool_index));
                        Ok(vec![self.chunk(
                            json!({"tool_calls": [{
                                "index": tool_index,
                                "id": block.get("id").cloned().unwrap_or(Value::Null),
                                "type": "function",
                                "function": {"name": block.get("name").cloned().unwrap_or(Value::Null), "arguments": ""},
                            }]}),
                            None,
                        )])
                    }
                    Some("text") => {
                        let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                        if text.is_empty() {
                            Ok(vec![])
                        } else {
                            Ok(vec![self.chunk(json!({"content": text}), None)])
                        }
                    }
                    _ => Ok(vec![]),
                }
            }
            "content_block_delta" => {
                let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                let delta = event.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => Ok(vec![self.chunk(
                        json!({"content": delta.get("text").cloned().unwrap_or(json!(""))}),
                        None,
                    )]),
                    Some("thinking_delta") => Ok(vec![self.chunk(
                        json!({"reasoning_content": delta.get("thinking").cloned().unwrap_or(json!(""))}),
                        None,
                    )]),
                    Some("input_json_delta") => {
                        let tool_index = self
                            .tool_indexes
                            .iter()
                            .find(|(block, _)| *block == index)
                            .map(|(_, t)| *t)
                            .unwrap_or(0);
                        Ok(vec![self.chunk(
                            json!({"tool_calls": [{
                                "index": tool_index,
                                "function": {"arguments": delta.get("partial_json").cloned().unwrap_or(json!(""))},
                            }]}),
                            None,
                        )])
                    }
                    _ => Ok(vec![]),
                }
            }
            "message_delta" => {
                if let Some(tokens) = event
                    .pointer("/usage/output_tokens")
                    .and_then(Value::as_u64)
                {
                    self.output_tokens = tokens;
                }
                if let Some(tokens) = event.pointer("/usage/input_tokens").and_then(Value::as_u64) {
                    self.input_tokens = tokens;
                }
                self.finish_reason = stop_reason_to_finish(
                    event.pointer("/delta/stop_reason").and_then(Value::as_str),
                );
                Ok(vec![self.chunk(
                    json!({}),
                    Some(self.finish_reason.unwrap_or("stop")),
                )])
            }
            "message_stop" => {
                let (input, output) = (self.input_tokens, self.output_tokens);
                Ok(vec![json!({
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
                })])
            }
            "error" => {
                let error_type = event
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("api_error");
                let status = error_status(error_type);
                let message = event
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream error");
                Err(StreamError {
                    status,
                    message: message.to_string(),
                })
            }
            _ => Ok(vec![]),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Anthropic request -> OpenAI request
// ---------------------------------------------------------------------------------------------

/// Translates a `/v1/messages` request into an OpenAI chat request.
pub fn anthropic_request_to_openai(request: &Value) -> Result<Value, TranslateError> {
    let obj = request
        .as_object()
        .ok_or_else(|| TranslateError::new("request must be an object"))?;
    let mut out = Map::new();
    out.insert(
        "model".into(),
        obj.get("model").cloned().unwrap_or(Value::Null),
    );
    let mut messages = Vec::new();
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let text: Vec<&str> = blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            messages.push(json!({"role": "system", "content": text.join("\n\n")}));
        }
        Some(_) => {
            return Err(TranslateError::new(
                "`system` must be a string or an array of text blocks",
            ));
        }
    }
    let messages_in = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::new("`messages` must be an array"))?;
    for message in messages_in {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let content = message.get("content");
        match (role, content) {
            ("user" | "assistant", Some(Value::String(s))) => {
                messages.push(json!({"role": role, "content": s}));
            }
            ("user", Some(Value::Array(blocks))) => {
                let mut parts = Vec::new();
                for block in blocks {
                    match block.get("type").and_then(Value::as_str) {
                        Some("text") => parts.push(json!({"type": "text", "text": block.get("text").cloned().unwrap_or(json!(""))})),
                        Some("image") => parts.push(json!({"type": "image_url", "image_url": {"url": image_url_of(block.get("source"))?}})),
                        Some("tool_result") => messages.push(json!({
                            "role": "tool",
                            "tool_call_id": block.get("tool_use_id").cloned().unwrap_or(Value::Null),
                            "content": tool_result_text(block.get("content"))?,
                        })),
                        other => {
                            return Err(TranslateError::new(format!(
                                "content block type `{}` is not supported by this model's provider",
                                other.unwrap_or("?")
                            )));
                        }
                    }
                }
                if !parts.is_empty() {
                    let content = if parts.iter().all(|p| p["type"] == "text") {
                        Value::String(
                            parts
                                .iter()
                                .filter_map(|p| p["text"].as_str())
                                .collect::<Vec<_>>()
                                .join(""),
                        )
                    } else {
                        Value::Array(parts)
                    };
                    messages.push(json!({"role": "user", "content": content}));
                }
            }
            ("assistant", Some(Value::Array(blocks))) => {
                let mut text = String::new();
                let mut tool_calls = Vec::new();
                for block in blocks {
                    match block.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            text.push_str(block.get("text").and_then(Value::as_str).unwrap_or(""))
                        }
                        Some("tool_use") => tool_calls.push(json!({
                            "id": block.get("id").cloned().unwrap_or(Value::Null),
                            "type": "function",
                            "function": {
                                "name": block.get("name").cloned().unwrap_or(Value::Null),
                                "arguments": block.get("input").unwrap_or(&json!({})).to_string(),
                            },
                        })),
                        Some("thinking" | "redacted_thinking") => {}
                        other => {
                            return Err(TranslateError::new(format!(
                                "content block type `{}` is not supported by this model's provider",
                                other.unwrap_or("?")
                            )));
                        }
                    }
                }
                let mut m = json!({"role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::String(text) }});
                if !tool_calls.is_empty() {
                    m["tool_calls"] = Value::Array(tool_calls);
                }
                messages.push(m);
            }
            _ => {
                return Err(TranslateError::new(
                    "each message needs role user|assistant and string or block content",
                ));
            }
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(v) = obj.get("max_tokens") {
        out.insert("max_tokens".into(), v.clone());
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(stops) = obj
        .get("stop_sequences")
        .and_then(Value::as_array)
        .filter(|s| !s.is_empty())
    {
        out.insert("stop".into(), Value::Array(stops.clone()));
    }
    if let Some(tools) = obj.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut function = Map::new();
                function.insert("name".into(), t.get("name").cloned().unwrap_or(Value::Null));
                if let Some(d) = t.get("description").filter(|d| !d.is_null()) {
                    function.insert("description".into(), d.clone());
                }
                function.insert(
                    "parameters".into(),
                    t.get("input_schema")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object"})),
                );
                json!({"type": "function", "function": function})
            })
            .collect();
        if !tools.is_empty() {
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = obj.get("tool_choice").filter(|c| c.is_object()) {
        let mapped = match choice.get("type").and_then(Value::as_str) {
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => {
                json!({"type": "function", "function": {"name": choice.get("name").cloned().unwrap_or(Value::Null)}})
            }
            _ => json!("auto"),
        };
        out.insert("tool_choice".into(), mapped);
        if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
            out.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    if let Some(user) = request.pointer("/metadata/user_id").and_then(Value::as_str) {
        out.insert("user".into(), json!(user));
    }
    if obj.get("stream") == Some(&Value::Bool(true)) {
        out.insert("stream".into(), Value::Bool(true));
    }
    Ok(Value::Object(out))
}

fn image_url_of(source: Option<&Value>) -> Result<String, TranslateError> {
    let source = source.ok_or_else(|| TranslateError::new("image block needs a source"))?;
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => Ok(format!(
            "data:{};base64,{}",
            source
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("image/png"),
            source.get("data").and_then(Value::as_str).unwrap_or("")
        )),
        Some("url") => Ok(source
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()),
        _ => Err(TranslateError::new("image source must be base64 or url")),
    }
}

fn tool_result_text(content: Option<&Value>) -> Result<String, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(blocks)) => Ok(blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("")),
        Some(_) => Err(TranslateError::new(
            "tool_result content must be a string or text blocks",
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAI response -> Anthropic response
// ---------------------------------------------------------------------------------------------

fn finish_to_stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

fn message_id(id: Option<&str>) -> String {
    match id {
        Some(id) if id.starts_with("msg_") => id.to_string(),
        Some(id) if !id.is_empty() => format!("msg_{id}"),
        _ => "msg_gateway".to_string(),
    }
}

fn parse_arguments(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(arguments).unwrap_or_else(|_| json!({"_raw_arguments": arguments}))
}

/// Translates an OpenAI chat completion into an Anthropic message; `model` is the name the
/// client asked for.
pub fn openai_response_to_anthropic(response: &Value, model: &str) -> Value {
    let choice = response.pointer("/choices/0").unwrap_or(&Value::Null);
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    if let Some(thinking) = reasoning_of(message) {
        content.push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
    }
    if let Some(text) = message
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").cloned().unwrap_or(Value::Null),
            "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
            "input": parse_arguments(call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("")),
        }));
    }
    let usage = response.get("usage").unwrap_or(&Value::Null);
    json!({
        "id": message_id(response.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": finish_to_stop_reason(choice.get("finish_reason").and_then(Value::as_str)),
        "stop_sequence": null,
        "usage": {
            "input_tokens": usage.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
            "output_tokens": usage.get("completion_tokens").and_then(Value::as_u64).unwrap_or(0),
        },
    })
}

/// A reasoning model's thinking in an OpenAI message or delta: `reasoning_content` (vLLM,
/// SGLang, DeepSeek) or `reasoning` (newer vLLM), when not empty. Anthropic clients get it as a
/// `thinking` block whose `signature` is empty (only Anthropic signs its own thinking).
pub(crate) fn reasoning_of(message: &Value) -> Option<&str> {
    ["reasoning_content", "reasoning"]
        .iter()
        .find_map(|k| message.get(*k).and_then(Value::as_str))
        .filter(|t| !t.is_empty())
}

// ---------------------------------------------------------------------------------------------
// OpenAI chunks -> Anthropic stream events
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    None,
    Thinking,
    Text,
    Tool(u64),
}

/// Turns OpenAI chunks into Anthropic events, in Anthropic's order: `message_start`, `ping`,
/// content blocks (`content_block_start`, deltas, `content_block_stop`), `message_delta`,
/// `message_stop`. Each event is `(name, data)`.
#[derive(Debug)]
pub struct OpenAiToAnthropicStream {
    model: String,
    started: bool,
    block_index: u64,
    open: OpenBlock,
    finish_reason: Option<String>,
    input_tokens: u64,
    output_tokens: u64,
}

impl OpenAiToAnthropicStream {
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_string(),
            started: false,
            block_index: 0,
            open: OpenBlock::None,
            finish_reason: None,
            input_tokens: 0,
            output_tokens: 0,
        }
    }

    fn start(&mut self, id: Option<&str>, events: &mut Vec<(&'static str, Value)>) {
        if self.started {
            return;
        }
        self.started = true;
        events.push((
            "message_start",
            json!({"type": "message_start", "message": {
                "id": message_id(id),
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        ));
        events.push(("ping", json!({"type": "ping"})));
    }

    fn close_block(&mut self, events: &mut Vec<(&'static str, Value)>) {
        if self.open != OpenBlock::None {
            events.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": self.block_index}),
            ));
            self.block_index += 1;
            self.open = OpenBlock::None;
        }
    }

    /// Feeds one OpenAI chunk.
    pub fn on_chunk(&mut self, chunk: &Value) -> Vec<(&'static str, Value)> {
        let mut events = Vec::new();
        self.start(chunk.get("id").and_then(Value::as_str), &mut events);
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.input_tokens = usage
                .get("prompt_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(self.input_tokens);
            self.output_tokens = usage
                .get("completion_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(self.output_tokens);
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            return events;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(thinking) = reasoning_of(delta) {
            if self.open != OpenBlock::Thinking {
                self.close_block(&mut events);
                events.push((
                    "content_block_start",
                    json!({"type": "content_block_start", "index": self.block_index, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
                ));
                self.open = OpenBlock::Thinking;
            }
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": self.block_index, "delta": {"type": "thinking_delta", "thinking": thinking}}),
            ));
        }
        if let Some(text) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            if self.open != OpenBlock::Text {
                self.close_block(&mut events);
                events.push((
                    "content_block_start",
                    json!({"type": "content_block_start", "index": self.block_index, "content_block": {"type": "text", "text": ""}}),
                ));
                self.open = OpenBlock::Text;
            }
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": self.block_index, "delta": {"type": "text_delta", "text": text}}),
            ));
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let tool_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            if self.open != OpenBlock::Tool(tool_index) {
                self.close_block(&mut events);
                events.push((
                    "content_block_start",
                    json!({"type": "content_block_start", "index": self.block_index, "content_block": {
                        "type": "tool_use",
                        "id": call.get("id").cloned().unwrap_or(Value::Null),
                        "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
                        "input": {},
                    }}),
                ));
                self.open = OpenBlock::Tool(tool_index);
            }
            if let Some(arguments) = call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
            {
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": self.block_index, "delta": {"type": "input_json_delta", "partial_json": arguments}}),
                ));
            }
        }
        if let Some(finish) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(finish.to_string());
        }
        events
    }

    /// Ends the message after the upstream's last chunk.
    pub fn finish(&mut self) -> Vec<(&'static str, Value)> {
        let mut events = Vec::new();
        self.start(None, &mut events);
        self.close_block(&mut events);
        events.push((
            "message_delta",
            json!({"type": "message_delta",
                "delta": {"stop_reason": finish_to_stop_reason(self.finish_reason.as_deref()), "stop_sequence": null},
                "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}}),
        ));
        events.push(("message_stop", json!({"type": "message_stop"})));
        events
    }
}

#[cfg(test)]
mod golden;
