//! Golden tests: every file in `tests/fixtures/anthropic/` is `{"input": …, "expected": …}`
//! and its name starts with the direction it pins. `UPDATE_GOLDEN=1` rewrites `expected`
//! (review the diff before committing).

use std::path::PathBuf;

use serde_json::{Value, json};

use super::*;

const CREATED: i64 = 1_700_000_000;

fn run(direction: &str, input: &Value) -> Value {
    match direction {
        "openai_request_to_anthropic" => match openai_request_to_anthropic(input) {
            Ok(v) => v,
            Err(e) => json!({"translation_error": e.0}),
        },
        "anthropic_response_to_openai" => anthropic_response_to_openai(input, CREATED),
        "anthropic_stream_to_openai" => {
            let mut state = AnthropicToOpenAiStream::new(CREATED);
            let mut out = Vec::new();
            for event in input.as_array().expect("stream input is an array") {
                match state.on_event(event) {
                    Ok(chunks) => out.extend(chunks),
                    Err(e) => {
                        out.push(
                            json!({"stream_error": {"status": e.status, "message": e.message}}),
                        );
                        break;
                    }
                }
            }
            Value::Array(out)
        }
        "anthropic_request_to_openai" => match anthropic_request_to_openai(input) {
            Ok(v) => v,
            Err(e) => json!({"translation_error": e.0}),
        },
        "openai_response_to_anthropic" => openai_response_to_anthropic(input, "claude-alias"),
        "openai_stream_to_anthropic" => {
            let mut state = OpenAiToAnthropicStream::new("claude-alias");
            let mut out = Vec::new();
            for chunk in input.as_array().expect("stream input is an array") {
                out.extend(
                    state
                        .on_chunk(chunk)
                        .into_iter()
                        .map(|(name, data)| json!([name, data])),
                );
            }
            out.extend(
                state
                    .finish()
                    .into_iter()
                    .map(|(name, data)| json!([name, data])),
            );
            Value::Array(out)
        }
        other => panic!("unknown direction {other}"),
    }
}

const DIRECTIONS: [&str; 6] = [
    "openai_request_to_anthropic",
    "anthropic_response_to_openai",
    "anthropic_stream_to_openai",
    "anthropic_request_to_openai",
    "openai_response_to_anthropic",
    "openai_stream_to_anthropic",
];

#[test]
fn golden_fixtures() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/anthropic");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut seen = std::collections::HashSet::new();
    let mut failures = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        let direction = DIRECTIONS
            .iter()
            .find(|d| stem.starts_with(&format!("{d}__")))
            .unwrap_or_else(|| panic!("{name}: name must start with a direction and `__`"));
        seen.insert(*direction);
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let mut fixture: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let actual = run(direction, &fixture["input"]);
        if update {
            fixture["expected"] = actual;
            std::fs::write(
                entry.path(),
                serde_json::to_string_pretty(&fixture).unwrap() + "\n",
            )
            .unwrap();
        } else if fixture["expected"] != actual {
            failures.push(format!(
                "{name}\n  expected: {}\n  actual:   {}",
                fixture["expected"], actual
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
    for direction in DIRECTIONS {
        assert!(
            seen.contains(direction),
            "no golden fixture for {direction}"
        );
    }
}

mod never_panics {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::super::*;

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            prop_oneof![
                Just("user"),
                Just("assistant"),
                Just("system"),
                Just("tool"),
                Just("text"),
                Just("image_url"),
                Just("tool_use"),
                Just("tool_result"),
                Just("image"),
                Just("message_start"),
                Just("content_block_start"),
                Just("content_block_delta"),
                Just("message_delta"),
                Just("message_stop"),
                Just("error"),
                Just("x"),
            ]
            .prop_map(|s| Value::String(s.to_string())),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            Just("role"),
                            Just("content"),
                            Just("messages"),
                            Just("type"),
                            Just("text"),
                            Just("tool_calls"),
                            Just("function"),
                            Just("arguments"),
                            Just("tools"),
                            Just("tool_choice"),
                            Just("system"),
                            Just("delta"),
                            Just("index"),
                            Just("message"),
                            Just("usage"),
                            Just("choices"),
                            Just("source"),
                            Just("image_url"),
                            Just("url"),
                            Just("input"),
                            Just("content_block"),
                            Just("stop"),
                            Just("max_tokens"),
                            Just("n"),
                        ],
                        inner,
                    ),
                    0..5,
                )
                .prop_map(|kv| Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>()
                )),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn translations_never_panic(value in json(), events in prop::collection::vec(json(), 0..6)) {
            let _ = openai_request_to_anthropic(&value);
            let _ = anthropic_request_to_openai(&value);
            let _ = anthropic_response_to_openai(&value, 0);
            let _ = openai_response_to_anthropic(&value, "m");
            let mut to_openai = AnthropicToOpenAiStream::new(0);
            let mut to_anthropic = OpenAiToAnthropicStream::new("m");
            for event in &events {
                let _ = to_openai.on_event(event);
                let _ = to_anthropic.on_chunk(event);
            }
            let _ = to_anthropic.finish();
        }
    }
}
