//! The `bud-sim` command line: every subcommand, and errors that name what was wrong.

use bud_simulator::params::{ExpectedError, FittedParams};
use std::path::PathBuf;
use std::process::{Command, Output};

fn bud_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bud-sim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run bud-sim")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bud-sim-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

#[test]
fn catalog_lists_hardware_and_models() {
    let o = bud_sim(&["catalog"]);
    assert!(o.status.success());
    let out = text(&o.stdout);
    assert!(
        out.contains("h100_sxm")
            && out.contains("NVIDIA-H100-80GB-HBM3")
            && out.contains("Qwen/Qwen3-8B")
    );
}

#[test]
fn plan_table_and_json() {
    let o = bud_sim(&[
        "plan",
        "--model",
        "Qwen/Qwen3-8B",
        "--input-tokens",
        "1024",
        "--output-tokens",
        "256",
        "--concurrency",
        "16",
        "--tpot-ms",
        "50",
        "--pool",
        "NVIDIA-L4:8",
        "--pool",
        "NVIDIA-A10G:8:0.6:edge",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("rank") && out.contains("evaluated"), "{out}");
    // Qwen3-8B was never measured on an L4: the model alone, with its expected error.
    let model_error = FittedParams::builtin()
        .held_back_error
        .unwrap()
        .agg
        .model
        .unwrap();
    assert!(
        out.contains(&format!(
            "model alone predicts it ({:.1} % TTFT, {:.1} % TPOT)",
            model_error.ttft_percent, model_error.tpot_percent
        )),
        "{out}"
    );
    let o = bud_sim(&[
        "plan",
        "--model",
        "Qwen/Qwen3-8B",
        "--pool",
        "l4:8",
        "--json",
    ]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["recommendations"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    let prediction = &v["recommendations"][0]["prediction"];
    assert_eq!(prediction["measuredDeployment"], false);
    assert_eq!(
        prediction["expectedError"]["ttftPercent"].as_f64(),
        Some(model_error.ttft_percent)
    );
}

/// A reader that stops early (`bud-sim plan --json | head`) ends the command quietly.
#[test]
fn a_closed_pipe_ends_output_quietly() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_bud-sim"))
        .args([
            "plan",
            "--model",
            "meta-llama/Llama-3.1-8B-Instruct",
            "--pool",
            "h100_sxm:8",
            "--pool",
            "l4:8",
            "--pool",
            "a100_sxm:8",
            "--max-results",
            "500",
            "--json",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Far less than the JSON (about 150 kB, over twice a pipe's buffer), then hang up.
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{:?}: {}", o.status, text(&o.stderr));
    assert!(!text(&o.stderr).contains("panicked"), "{}", text(&o.stderr));
}

#[test]
fn plan_from_yaml_request() {
    let dir = scratch("plan-yaml");
    let req = dir.join("req.yaml");
    std::fs::write(
        &req,
        "model: meta-llama/Llama-3.1-8B-Instruct\nworkload: {inputTokens: 512, outputTokens: 128, concurrency: 4}\nslo: {ttftMs: 800}\npools:\n  - {accelerator: NVIDIA-L40S, count: 2, cluster: gpu-a}\n",
    )
    .unwrap();
    let o = bud_sim(&["plan", "--request", req.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["recommendations"][0]["cluster"], "gpu-a");
}

#[test]
fn bad_input_names_what_was_wrong() {
    let o = bud_sim(&[
        "plan",
        "--model",
        "Qwen/Qwen3-8B",
        "--pool",
        "NVIDIA-Voodoo3:4",
    ]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("NVIDIA-Voodoo3") && err.contains("h100_sxm"),
        "{err}"
    );
    let o = bud_sim(&["plan", "--model", "acme/nope", "--pool", "l4:1"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("Qwen/Qwen3-8B"));
    let o = bud_sim(&["plan", "--model", "Qwen/Qwen3-8B", "--pool", "l4:many"]);
    assert!(text(&o.stderr).contains("count"));
    let o = bud_sim(&[
        "serve",
        "--model",
        "Qwen/Qwen3-8B",
        "--accelerator",
        "tpu-v9",
    ]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("accepted"));
    let o = bud_sim(&[
        "serve",
        "--model",
        "Qwen/Qwen3-30B-A3B",
        "-t",
        "4",
        "--expert-parallel-size",
        "3",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("--expert-parallel-size 3 must divide the 4"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn predict_one_configuration() {
    // Llama-3.1-70B FP8 on four H100s under vLLM was measured at 1024/1024 tokens and 16 and
    // 32 users.
    let measured = [
        "predict",
        "--model",
        "meta-llama/Llama-3.1-70B",
        "--accelerator",
        "NVIDIA-H100-80GB-HBM3",
        "--tp",
        "4",
        "--precision",
        "fp8",
        "--input-tokens",
        "1024",
        "--output-tokens",
        "1024",
        "--concurrency",
        "32",
    ];
    let o = bud_sim(&measured);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let expected = FittedParams::builtin().held_back_error.unwrap().agg;
    let measured_error = expected.measured_deployment.unwrap();
    for line in [
        "basis: measured deployment".to_string(),
        format!("(expected error {:.1} %)", measured_error.ttft_percent),
        "weights".to_string(),
        "KV cache".to_string(),
        "fits:".to_string(),
    ] {
        assert!(out.contains(&line), "{line} in\n{out}");
    }
    let o = bud_sim(&[&measured[..], &["--json"]].concat());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["measuredDeployment"], true);
    assert_eq!(v["running"], 32);
    assert!(v["ttftMs"].as_f64().unwrap() > 0.0);
    assert!(v["memory"]["fits"].as_bool().unwrap());
    // Its fine-tune, never measured, leans on the same measurements and says whose they are.
    let mut instruct = measured.to_vec();
    instruct[2] = "meta-llama/Llama-3.1-70B-Instruct";
    let o = bud_sim(&[&instruct[..], &["--json"]].concat());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let twin: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(twin["measuredAs"], "meta-llama/Llama-3.1-70B");
    assert_eq!(twin["measuredDeployment"], false);
    // It trusts them a little less than the model's own (a twin's prior weight).
    let (own, borrowed) = (
        v["tpotMs"].as_f64().unwrap(),
        twin["tpotMs"].as_f64().unwrap(),
    );
    assert!(
        own != borrowed && (own - borrowed).abs() < 0.05 * own,
        "{own} vs {borrowed}"
    );
    let o = bud_sim(&instruct);
    assert!(
        text(&o.stdout)
            .contains("leaning on the measurements of this deployment of meta-llama/Llama-3.1-70B")
    );

    // One L4 cannot hold a 70B model: the breakdown, no latencies, and the verdict as the error.
    let o = bud_sim(&[
        "predict",
        "--model",
        "meta-llama/Llama-3.1-70B",
        "--accelerator",
        "l4",
    ]);
    assert!(!o.status.success());
    let out = text(&o.stdout);
    assert!(out.contains("weights") && !out.contains("TTFT"), "{out}");
    assert!(
        text(&o.stderr).contains("does not fit"),
        "{}",
        text(&o.stderr)
    );

    // Neither a configuration nor a CSV, and a bad precision: errors that say what to give.
    let o = bud_sim(&["predict"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("--input SCENARIOS.csv"));
    let o = bud_sim(&["predict", "--model", "Qwen/Qwen3-8B", "--precision", "fp9"]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("--precision") && err.contains("fp8"), "{err}");
}

#[test]
fn predict_writes_every_row_and_reasons_for_bad_ones() {
    let dir = scratch("predict");
    let input = dir.join("scenarios.csv");
    std::fs::write(
        &input,
        "id,backend,backend_version,model_path,system,precision,mode,isl,osl,gemm_quant_mode,moe_quant_mode,batch_size,tp_size,pp_size,attention_dp_size,moe_tp_size,moe_ep_size\n\
         ok1,vllm,0.11,meta-llama/Llama-3.1-70B,h100_sxm,fp8,agg,1024,1024,fp8,fp8,16,4,1,,4,1\n\
         ok2,trtllm,,Qwen/Qwen3-8B,h200_sxm,,agg,512,128,,,8,1,1,,,\n\
         bad_model,vllm,,acme/unknown,h100_sxm,,agg,1024,128,,,8,1,1,,,\n\
         bad_gpu,vllm,,Qwen/Qwen3-8B,voodoo,,agg,1024,128,,,8,1,1,,,\n\
         bad_num,vllm,,Qwen/Qwen3-8B,h100_sxm,,agg,lots,128,,,8,1,1,,,\n\
         no_fit,vllm,,meta-llama/Llama-3.1-70B,l4,bf16,agg,1024,128,,,8,1,1,,,\n",
    )
    .unwrap();
    let output = dir.join("predictions.csv");
    let o = bud_sim(&[
        "predict",
        "--input",
        input.to_str().unwrap(),
        "--models-dir",
        "data/models",
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut rdr = csv::Reader::from_path(&output).unwrap();
    let headers = rdr.headers().unwrap().clone();
    assert_eq!(&headers[0], "id");
    assert_eq!(&headers[1], "ttft_ms");
    assert_eq!(&headers[2], "tpot_ms");
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 6);
    let reason = headers.iter().position(|h| h == "reason").unwrap();
    for r in &rows {
        let ok = r[0].starts_with("ok");
        assert_eq!(!r[1].is_empty(), ok, "{r:?}");
        assert_eq!(r[reason].is_empty(), ok, "{r:?}");
    }
    assert!(rows[2][reason].contains("acme/unknown"));
    assert!(rows[3][reason].contains("voodoo"));
    assert!(rows[4][reason].contains("isl"));
    assert!(rows[5][reason].contains("does not fit"));
    // Llama-3.1-70B FP8 on four H100s under vLLM was measured (at other lengths and
    // concurrencies); Qwen3-8B under TensorRT-LLM on H200 never was.
    let basis = headers.iter().position(|h| h == "basis").unwrap();
    assert_eq!(&rows[0][basis], "measured deployment");
    assert_eq!(&rows[1][basis], "model");
    assert_eq!(&rows[2][basis], "");
    // Each basis with its own held-back error, as the shipped parameters record it.
    let expected = FittedParams::builtin().held_back_error.unwrap().agg;
    let ttft_error = headers
        .iter()
        .position(|h| h == "expected_ttft_error_pct")
        .unwrap();
    let pct = |e: Option<ExpectedError>| format!("{:.1}", e.unwrap().ttft_percent);
    assert_eq!(rows[0][ttft_error], pct(expected.measured_deployment));
    assert_eq!(rows[1][ttft_error], pct(expected.model));
    assert_eq!(&rows[2][ttft_error], "");
}

#[test]
fn accuracy_calibrate_and_bench_run() {
    let o = bud_sim(&["accuracy", "--data", "data"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("held-back agg"));
    assert!(
        text(&o.stdout).contains("Leave-one-model-out cross-validation recorded by calibrate"),
        "{}",
        text(&o.stdout)
    );
    let dir = scratch("calibrate");
    let out = dir.join("params.json");
    let o = bud_sim(&[
        "calibrate",
        "--data",
        "data",
        "--out",
        out.to_str().unwrap(),
        "--rounds",
        "1",
        "--no-correction",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(
        p["command"]
            .as_str()
            .unwrap()
            .starts_with("bud-sim calibrate")
    );
    assert!(p["engines"]["vllm"]["memEff"].is_f64());
    assert_eq!(p["fittedOnEveryRow"], true);
    let split: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("params_split.json")).unwrap())
            .unwrap();
    assert_eq!(split["fittedOnEveryRow"], false);
    let cross_validated = split["heldBackError"]["aggModelCrossValidation"]["rows"].as_u64();
    assert!(cross_validated.is_some_and(|rows| rows > 0), "{split}");
    let o = bud_sim(&[
        "accuracy",
        "--data",
        "data",
        "--params",
        out.to_str().unwrap(),
    ]);
    assert!(text(&o.stdout).contains("not a score"));
    let o = bud_sim(&["bench-plan", "--iterations", "1"]);
    assert!(o.status.success());
    assert!(text(&o.stdout).contains("median"));
}
