//! The emulator binary over raw HTTP/1.1 on a loopback address (the OpenAI-client tests in
//! `tests/python` cover the wire format in depth).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(extra: &[&str]) -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_bud-sim"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--model",
            "Qwen/Qwen3-8B",
        ])
        .args([
            "--served-model-name",
            "qwen3-8b",
            "--time-scale",
            "0.001",
            "--enforce-eager",
            "--max-num-seqs",
            "4",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child, addr);
    // Poll readiness with a deadline.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((200, _)) = request(&server.1, "GET", "/health", "") {
            break;
        }
        assert!(Instant::now() < deadline, "emulator not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

fn request(addr: &str, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[test]
fn chat_models_metrics_and_errors() {
    let s = start(&[]);
    let (status, body) = request(&s.1, "GET", "/v1/models", "").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\"qwen3-8b\""));
    let (status, body) = request(
        &s.1,
        "POST",
        "/v1/chat/completions",
        r#"{"model":"qwen3-8b","messages":[{"role":"user","content":"hi"}],"max_tokens":4}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"completion_tokens\":4"), "{body}");
    let (status, body) = request(
        &s.1,
        "POST",
        "/v1/completions",
        r#"{"model":"other","prompt":"x"}"#,
    )
    .unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("qwen3-8b"));
    let (_, metrics) = request(&s.1, "GET", "/metrics", "").unwrap();
    for name in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:generation_tokens_total",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
}

#[test]
fn injected_errors() {
    let s = start(&["--error-rate", "1"]);
    let (status, body) = request(
        &s.1,
        "POST",
        "/v1/chat/completions",
        r#"{"model":"qwen3-8b","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .unwrap();
    assert_eq!(status, 500);
    assert!(body.contains("\"error\""));
}

/// The line `bud-sim serve` prints on starting, naming what it emulates.
fn startup_line(args: &[&str]) -> String {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_bud-sim"))
        .args(["serve", "--host", "127.0.0.1", "--port", "0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("emulating") {
                let _ = tx.send(line);
                return;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    line.expect("no startup line")
}

#[test]
fn expert_parallelism_spreads_a_moe_models_experts_and_leaves_dense_models_alone() {
    // vLLM's container arguments, as the operator renders them for an expert-parallel plan.
    let line = startup_line(&[
        "--model",
        "Qwen/Qwen3-30B-A3B",
        "--tensor-parallel-size",
        "2",
        "--enable-expert-parallel",
        "--max-num-seqs",
        "64",
    ]);
    assert!(
        line.contains("on 2× h100_sxm (TP2 PP1 EP2, bf16)"),
        "{line}"
    );
    let sliced = startup_line(&["--model", "Qwen/Qwen3-30B-A3B", "-t", "2"]);
    assert!(sliced.contains("(TP2 PP1, bf16)"), "{sliced}");
    let dense = startup_line(&[
        "--model",
        "Qwen/Qwen3-8B",
        "-t",
        "2",
        "--enable-expert-parallel",
    ]);
    assert!(dense.contains("(TP2 PP1, bf16)"), "{dense}");
    // SGLang's --ep-size and TensorRT-LLM's --ep_size may spread the experts over part of the
    // group and slice them over the rest: EP 2 of TP 4 (MoE TP 2).
    let mixed = startup_line(&[
        "--model",
        "Qwen/Qwen3-30B-A3B",
        "-t",
        "4",
        "--expert-parallel-size",
        "2",
    ]);
    assert!(
        mixed.contains("on 4× h100_sxm (TP4 PP1 EP2, bf16)"),
        "{mixed}"
    );
}

#[test]
fn data_parallel_ranks_each_run_attention_and_hold_their_own_batch() {
    // vLLM's arguments for a DEP plan: TP 1 per rank, four ranks, experts over all four.
    let line = startup_line(&[
        "--model",
        "Qwen/Qwen3-30B-A3B",
        "--tensor-parallel-size",
        "1",
        "--data-parallel-size",
        "4",
        "--enable-expert-parallel",
        "--max-num-seqs",
        "64",
    ]);
    assert!(
        line.contains("on 4× h100_sxm (TP1 PP1 DP4 EP4, bf16), up to 256 running requests"),
        "{line}"
    );
}
