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
