//! Hand-computed checks of the formulas: KV bytes per token, weight bytes, memory fit,
//! catalog lookups and errors.

use bud_simulator::hardware::{DeviceKind, HardwareCatalog};
use bud_simulator::model::{AttentionKind, ModelCatalog, ModelSpec};
use bud_simulator::{
    Engine, Error, Precision, ServingConfig, Workload, accelerator, model, predict, predict_with,
};

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs()
}

#[test]
fn kv_bytes_per_token_gqa() {
    // Llama-3.1-8B: 32 layers × 8 KV heads × 128 dims × (K and V) × 2 bytes.
    let m = model("meta-llama/Llama-3.1-8B-Instruct").unwrap();
    assert_eq!(
        m.kv_bytes_per_token(Precision::Bf16),
        (32 * 8 * 128 * 2 * 2) as f64
    );
    assert_eq!(
        m.kv_bytes_per_token(Precision::Fp8),
        (32 * 8 * 128 * 2) as f64
    );
    // Qwen3-8B: 36 layers.
    let q = model("Qwen/Qwen3-8B").unwrap();
    assert_eq!(
        q.kv_bytes_per_token(Precision::Bf16),
        (36 * 8 * 128 * 2 * 2) as f64
    );
}

#[test]
fn kv_bytes_per_token_mla() {
    // DeepSeek-V3: one 512-dim latent plus a 64-dim RoPE key per layer, 61 layers.
    let m = model("deepseek-ai/DeepSeek-V3").unwrap();
    assert!(matches!(
        m.attention,
        AttentionKind::Mla {
            kv_lora_rank: 512,
            qk_rope_head_dim: 64
        }
    ));
    assert_eq!(
        m.kv_bytes_per_token(Precision::Bf16),
        (61 * (512 + 64) * 2) as f64
    );
}

#[test]
fn sparse_attention_caches_its_indexer_keys() {
    // GLM-5: MLA (512 + 64) in 78 layers, and DeepSeek sparse attention's indexer keys beside
    // them, 128 FP8 values and one 4-byte scale per token and layer at any cache precision.
    let m = model("zhipuai/GLM-5").unwrap();
    assert_eq!(m.attention_topk, 2048);
    assert_eq!(m.index_key_bytes_per_token_layer, 132.0);
    assert_eq!(
        m.kv_bytes_per_token(Precision::Fp8),
        (78 * (512 + 64) + 78 * 132) as f64
    );
    assert_eq!(
        m.kv_bytes_per_token(Precision::Bf16),
        (78 * (512 + 64) * 2 + 78 * 132) as f64
    );
    // A model without an indexer caches none.
    let v3 = model("deepseek-ai/DeepSeek-V3").unwrap();
    assert_eq!(v3.index_key_bytes_per_token_layer, 0.0);
}

#[test]
fn sliding_window_caps_kv_growth() {
    // gpt-oss alternates 128-token sliding and full attention layers.
    let m = model("openai/gpt-oss-120b").unwrap();
    assert_eq!(m.sliding_window, 128);
    assert_eq!(m.sliding_layers, 18);
    let at_4k = m.kv_elems_for_context(4096.0);
    let at_8k = m.kv_elems_for_context(8192.0);
    // Only the 18 full layers grow; the sliding ones hold 128 tokens.
    let per_layer_tok = m.kv_elems_per_token_layer;
    assert!(close(at_8k - at_4k, 18.0 * per_layer_tok * 4096.0, 1e-9));
}

#[test]
fn linear_attention_layers_hold_no_per_token_cache() {
    let m = model("Qwen/Qwen3.5-397B-A17B").unwrap();
    assert_eq!(m.linear_layers, 45);
    assert_eq!(m.full_attention_layers, 15);
    assert!(m.state_elems_per_seq > 0.0);
}

#[test]
fn parameter_counts_match_published_sizes() {
    for (id, billions) in [
        ("meta-llama/Llama-3.1-8B-Instruct", 8.03),
        ("meta-llama/Llama-3.1-70B", 70.6),
        ("Qwen/Qwen3-8B", 8.19),
        ("deepseek-ai/DeepSeek-V3", 671.0),
        ("mistralai/Mixtral-8x7B-v0.1", 46.7),
        ("Qwen/Qwen3-235B-A22B-FP8", 235.0),
        ("openai/gpt-oss-120b", 116.8),
    ] {
        let m = model(id).unwrap();
        assert!(
            close(m.total_params() / 1e9, billions, 0.02),
            "{id}: {:.2}B",
            m.total_params() / 1e9
        );
    }
    // MoE with shared experts and dense first layers: DeepSeek-V3 activates about 37B.
    let ds = model("deepseek-ai/DeepSeek-V3").unwrap();
    assert!(close(ds.active_params() / 1e9, 37.0, 0.05));
    assert_eq!(ds.moe.as_ref().unwrap().moe_layers, 58);
}

#[test]
fn weight_bytes_by_precision() {
    let m = model("meta-llama/Llama-3.1-8B-Instruct").unwrap();
    let bf16 = m.weight_bytes(Precision::Bf16, Precision::Bf16);
    assert!(close(bf16, 8.03e9 * 2.0, 0.02));
    // FP8 halves everything but the 16-bit embeddings.
    let fp8 = m.weight_bytes(Precision::Fp8, Precision::Fp8);
    assert!(close(fp8, bf16 / 2.0 + m.embedding_params, 1e-9));
}

#[test]
fn native_precisions_are_read_from_quantization_config() {
    assert_eq!(
        model("Qwen/Qwen3-235B-A22B-FP8").unwrap().native_precision,
        Precision::Fp8
    );
    let oss = model("openai/gpt-oss-120b").unwrap();
    assert_eq!(oss.native_expert_precision, Precision::Fp4);
    assert_eq!(oss.native_precision, Precision::Bf16);
    assert_eq!(
        model("moonshotai/Kimi-K2.5")
            .unwrap()
            .native_expert_precision,
        Precision::Int4
    );
}

#[test]
fn memory_fit_verdicts() {
    let w = Workload {
        input_tokens: 1024,
        output_tokens: 256,
        concurrency: 8,
    };
    let mut cfg = ServingConfig::new("meta-llama/Llama-3.1-70B", "h100_sxm", Engine::Vllm);
    cfg.precision = Some(Precision::Bf16);
    let one = predict(&cfg, &w).unwrap();
    assert!(!one.memory.fits);
    assert!(
        one.memory.verdict.starts_with("does not fit"),
        "{}",
        one.memory.verdict
    );
    cfg.tp = 4;
    let four = predict(&cfg, &w).unwrap();
    assert!(four.memory.fits, "{}", four.memory.verdict);
    // 141 GB of bf16 weights over four GPUs.
    assert!(close(four.memory.weights_bytes, 70.6e9 * 2.0 / 4.0, 0.03));
    assert!(four.max_concurrency >= 8);
}

#[test]
fn kv_capacity_limits_concurrency_and_adds_queueing() {
    let mut cfg = ServingConfig::new("meta-llama/Llama-3.1-70B", "h100_sxm", Engine::Vllm);
    cfg.tp = 2;
    cfg.precision = Some(Precision::Fp8);
    let w = Workload {
        input_tokens: 8192,
        output_tokens: 2048,
        concurrency: 400,
    };
    let p = predict(&cfg, &w).unwrap();
    assert!(p.max_concurrency < 400);
    assert_eq!(p.running, p.max_concurrency);
    assert!(p.queue_wait_ms > 0.0);
    assert!(p.memory.verdict.contains("queue"), "{}", p.memory.verdict);
}

#[test]
fn trtllm_reserves_full_length_kv_while_vllm_admits_on_demand() {
    // Llama-3.1-70B, fp8 KV: 80 layers × 8 KV heads × 128 dims × 2 (K and V) × 1 byte =
    // 163,840 bytes per token, halved by TP 2.
    let w = Workload {
        input_tokens: 1024,
        output_tokens: 2048,
        concurrency: 8,
    };
    let per_token = 80.0 * 8.0 * 128.0 * 2.0 / 2.0;
    let mut cfg = ServingConfig::new("meta-llama/Llama-3.1-70B", "h100_sxm", Engine::Vllm);
    cfg.tp = 2;
    cfg.precision = Some(Precision::Fp8);
    let vllm = predict(&cfg, &w).unwrap();
    // Paged admission: the mean running context, prompt plus half the output.
    assert!(close(
        vllm.memory.kv_per_request_bytes,
        per_token * (1024.0 + 1024.0),
        0.001
    ));
    cfg.engine = Engine::Trtllm;
    let trtllm = predict(&cfg, &w).unwrap();
    // GUARANTEED_NO_EVICT: prompt plus the whole output, reserved at admission.
    assert!(close(
        trtllm.memory.kv_per_request_bytes,
        per_token * (1024.0 + 2048.0),
        0.001
    ));
    assert!(trtllm.max_concurrency < vllm.max_concurrency);
}

#[test]
fn accelerator_lookup_accepts_node_labels() {
    for (label, id) in [
        ("NVIDIA-H100-80GB-HBM3", "h100_sxm"),
        ("NVIDIA-A100-SXM4-80GB", "a100_sxm"),
        ("NVIDIA-L4", "l4"),
        ("NVIDIA-L40S", "l40s"),
        ("NVIDIA-A10G", "a10g"),
        ("NVIDIA-H200", "h200_sxm"),
        ("NVIDIA-B200", "b200_sxm"),
        ("h100_sxm", "h100_sxm"),
        ("nvidia.com/gpu.product=NVIDIA-L4", "l4"),
    ] {
        assert_eq!(accelerator(label).unwrap().id, id, "{label}");
    }
    let cpu = accelerator("xeon_granite_rapids").unwrap();
    assert_eq!(cpu.kind, DeviceKind::Cpu);
    let all = HardwareCatalog::builtin().all();
    for id in [
        "mi300x",
        "gaudi2",
        "gaudi3",
        "a100_40gb",
        "h100_pcie",
        "epyc_genoa",
        "xeon_sapphire_rapids",
        "gb200",
    ] {
        assert!(all.iter().any(|a| a.id == id), "{id} missing");
    }
}

#[test]
fn unknown_names_list_accepted_values() {
    let e = accelerator("NVIDIA-GTX-1080").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::UnknownAccelerator { .. }));
    assert!(
        msg.contains("h100_sxm") && msg.contains("NVIDIA-GTX-1080"),
        "{msg}"
    );
    let e = model("acme/does-not-exist").unwrap_err();
    assert!(e.to_string().contains("Qwen/Qwen3-8B"));
    let e = "tensorflow".parse::<Engine>().unwrap_err();
    assert!(e.to_string().contains("vllm"));
    let e = "fp3".parse::<Precision>().unwrap_err();
    assert!(e.to_string().contains("fp8"));
}

/// Layouts no engine would start get an error naming the field and what would work.
#[test]
fn impossible_layouts_are_rejected_with_the_fix() {
    let w = Workload {
        input_tokens: 1024,
        output_tokens: 128,
        concurrency: 8,
    };
    let error = |model_id: &str, edit: &dyn Fn(&mut ServingConfig)| {
        let mut cfg = ServingConfig::new(model_id, "h100_sxm", Engine::Vllm);
        edit(&mut cfg);
        predict(&cfg, &w).unwrap_err().to_string()
    };
    // Qwen3-8B has 32 attention heads: TP 3 cannot split them.
    let e = error("Qwen/Qwen3-8B", &|c| c.tp = 3);
    assert!(
        e.contains("tp") && e.contains("32 attention heads") && e.contains("1, 2, 4, 8, 16, 32"),
        "{e}"
    );
    let e = error("Qwen/Qwen3-8B", &|c| c.moe_ep = Some(2));
    assert!(e.contains("moeEp") && e.contains("dense"), "{e}");
    // Qwen3-30B-A3B has 128 routed experts.
    let e = error("Qwen/Qwen3-30B-A3B", &|c| {
        c.tp = 2;
        c.moe_ep = Some(3);
    });
    assert!(
        e.contains("moeEp") && e.contains("128 routed experts"),
        "{e}"
    );
    let e = error("Qwen/Qwen3-8B", &|c| c.max_batch = Some(0));
    assert!(e.contains("maxBatch"), "{e}");
}

#[test]
fn model_lookup_accepts_hf_urls_and_any_config() {
    assert_eq!(model("hf://Qwen/Qwen3-8B").unwrap().id, "Qwen/Qwen3-8B");
    assert_eq!(
        ModelCatalog::builtin().get("qwen/qwen3-8b").unwrap().id,
        "Qwen/Qwen3-8B"
    );
    // Another published name of the same network: Meta's earlier repository names, with or
    // without `-Instruct`.
    for (asked, found) in [
        (
            "meta-llama/Meta-Llama-3.1-70B-Instruct",
            "meta-llama/Llama-3.1-70B-Instruct",
        ),
        (
            "meta-llama/Llama-3.1-405B-Instruct",
            "meta-llama/Meta-Llama-3.1-405B",
        ),
        ("Qwen/Qwen3-8B-Instruct", "Qwen/Qwen3-8B"),
        (
            "meta-llama/Llama-3.2-1B",
            "meta-llama/Llama-3.2-1B-Instruct",
        ),
    ] {
        assert_eq!(model(asked).unwrap().id, found, "{asked}");
    }
    assert!(model("meta-llama/Llama-3.1-7B").is_err());
    let text = r#"{"model_type":"llama","hidden_size":2048,"num_hidden_layers":16,"num_attention_heads":32,
        "num_key_value_heads":8,"intermediate_size":8192,"vocab_size":128256,"tie_word_embeddings":true}"#;
    let m = ModelSpec::from_config_json("meta-llama/Llama-3.2-1B", text).unwrap();
    assert!(close(m.total_params() / 1e9, 1.24, 0.03));
    assert!(
        ModelSpec::from_config_json("x", "{}")
            .unwrap_err()
            .to_string()
            .contains("hidden_size")
    );
}

#[test]
fn engines_must_match_hardware() {
    let w = Workload {
        input_tokens: 128,
        output_tokens: 128,
        concurrency: 1,
    };
    let cfg = ServingConfig::new("Qwen/Qwen3-8B", "xeon_granite_rapids", Engine::Trtllm);
    assert!(matches!(predict(&cfg, &w), Err(Error::Unsupported(_))));
    let cpu = ServingConfig::new("Qwen/Qwen3-8B", "xeon_granite_rapids", Engine::LlamaCpp);
    let p = predict(&cpu, &w).unwrap();
    assert!(p.tpot_ms > 20.0, "CPU decode should be slow: {}", p.tpot_ms);
    let mut fp4 = ServingConfig::new("Qwen/Qwen3-8B", "h100_sxm", Engine::Vllm);
    fp4.precision = Some(Precision::Fp4);
    assert!(predict(&fp4, &w).unwrap_err().to_string().contains("fp4"));
}

#[test]
fn engines_differ() {
    let w = Workload {
        input_tokens: 1024,
        output_tokens: 512,
        concurrency: 16,
    };
    let mut tp: Vec<f64> = Vec::new();
    for e in [Engine::Vllm, Engine::Sglang, Engine::Trtllm] {
        let mut cfg = ServingConfig::new("meta-llama/Llama-3.1-70B", "h100_sxm", e);
        cfg.tp = 4;
        cfg.precision = Some(Precision::Fp8);
        tp.push(predict(&cfg, &w).unwrap().tpot_ms);
    }
    assert!(tp[0] != tp[1] && tp[1] != tp[2]);
}

#[test]
fn attention_flops_run_at_bf16_whatever_the_weights() {
    // Llama-3.1-8B on one H100, a 4,096-token prompt, no fitted scales: FP8 weights run the
    // dense GEMMs on FP8 tensor cores, but attention over the prompt stays on BF16 ones.
    use bud_simulator::params::FittedParams;
    use bud_simulator::perf::Resolved;
    let params = FittedParams::default();
    let m = model("meta-llama/Llama-3.1-8B-Instruct").unwrap();
    let h100 = accelerator("h100_sxm").unwrap();
    let tokens = 4096.0;
    let dense = 2.0 * tokens * (m.attention_params + m.dense_mlp_params);
    // No sliding layers: every layer attends to half the prompt on average.
    let attention = tokens * m.prefill_attn_flops_per_ctx_token * tokens / 2.0;
    let mut cfg = ServingConfig::new("meta-llama/Llama-3.1-8B-Instruct", "h100_sxm", Engine::Vllm);
    for (precision, dense_peak) in [
        (Precision::Bf16, h100.bf16_flops),
        (Precision::Fp8, h100.fp8_flops.unwrap()),
    ] {
        cfg.precision = Some(precision);
        let r = Resolved::new(&cfg, m, h100, &params).unwrap();
        // Without overhead: the FLOPs at peak (TP 1, so no all-reduces).
        let expected = dense / dense_peak + attention / h100.bf16_flops;
        assert!(
            close(r.prefill(tokens, false), expected, 1e-9),
            "{precision}: {} vs {expected}",
            r.prefill(tokens, false)
        );
    }
}

#[test]
fn prefill_pays_the_expert_overhead_once_per_routed_expert_a_device_holds() {
    // DeepSeek-V3 (256 routed experts in 58 MoE layers) on eight H200s, and a dense model,
    // with a 10 µs cost per expert and layer: with expert parallelism 8 each device holds 32
    // experts per layer (18.56 ms), with MoE tensor parallelism all 256 (148.48 ms).
    use bud_simulator::params::FittedParams;
    use bud_simulator::perf::Resolved;
    let h200 = accelerator("h200_sxm").unwrap();
    let without = FittedParams::default();
    let mut with = without.clone();
    with.engines.get_mut("trtllm").unwrap().expert_overhead_us = 10.0;
    let added = |name: &str, moe_ep: Option<u32>| {
        let mut cfg = ServingConfig::new(name, "h200_sxm", Engine::Trtllm);
        cfg.tp = 8;
        cfg.moe_ep = moe_ep;
        let m = model(name).unwrap();
        let at = |p: &FittedParams| {
            Resolved::new(&cfg, m, h200, p)
                .unwrap()
                .prefill(1024.0, true)
        };
        at(&with) - at(&without)
    };
    let v3 = "deepseek-ai/DeepSeek-V3";
    assert!(close(added(v3, Some(8)), 10e-6 * 32.0 * 58.0, 1e-9));
    assert!(close(added(v3, None), 10e-6 * 256.0 * 58.0, 1e-9));
    assert_eq!(added("meta-llama/Llama-3.1-70B", None), 0.0);
}

/// What raising one of `engine`'s parameters (`raise`) adds to `name`'s decode step (16
/// sequences at a 2,048-token context) and to its prefill of 1,024 tokens on eight B200s, in
/// seconds.
fn added_to_step_and_prefill(
    engine: Engine,
    raise: impl Fn(&mut bud_simulator::params::EngineParams),
    name: &str,
) -> (f64, f64) {
    use bud_simulator::params::FittedParams;
    use bud_simulator::perf::Resolved;
    let b200 = accelerator("b200_sxm").unwrap();
    let without = FittedParams::default();
    let mut with = without.clone();
    raise(with.engines.get_mut(&engine.to_string()).unwrap());
    let mut cfg = ServingConfig::new(name, "b200_sxm", engine);
    cfg.tp = 8;
    let m = model(name).unwrap();
    let at = |p: &FittedParams| {
        let r = Resolved::new(&cfg, m, b200, p).unwrap();
        (r.decode_step(16.0, 2048.0).0, r.prefill(1024.0, true))
    };
    let ((step, prefill), (step0, prefill0)) = (at(&with), at(&without));
    (step - step0, prefill - prefill0)
}

#[test]
fn sparse_attention_models_pay_their_indexer_in_every_layer_of_a_decode_step() {
    // GLM-5 (DeepSeek Sparse Attention, 78 layers) and DeepSeek-V3 (dense MLA) on eight
    // B200s, with a 10 µs cost per sparse-attention layer: GLM-5's step grows by 0.78 ms,
    // DeepSeek-V3's not at all, and neither prefill changes.
    let added = |name| {
        added_to_step_and_prefill(Engine::Sglang, |p| p.sparse_attention_layer_us = 10.0, name)
    };
    assert_eq!(model("zhipuai/GLM-5").unwrap().num_layers, 78);
    let (step, prefill) = added("zhipuai/GLM-5");
    assert!(close(step, 10e-6 * 78.0, 1e-9));
    assert_eq!(prefill, 0.0, "prefill does not pay it");
    assert_eq!(added("deepseek-ai/DeepSeek-V3"), (0.0, 0.0));
}

#[test]
fn the_per_layer_overhead_scales_with_the_model_width() {
    // 10 µs per layer at the reference width of 7,168 (DeepSeek-V3's, 61 layers) on eight
    // B200s: DeepSeek-V3's decode step and prefill each grow by 0.61 ms; gpt-oss-120b's
    // (2,880 wide, 36 layers) by 10 µs × 36 × 2,880 / 7,168 = 0.1446 ms.
    use bud_simulator::perf::REFERENCE_LAYER_WIDTH;
    let added =
        |name| added_to_step_and_prefill(Engine::Trtllm, |p| p.layer_overhead_us += 10.0, name);
    let v3 = model("deepseek-ai/DeepSeek-V3").unwrap();
    assert_eq!(
        (v3.hidden_size as f64, v3.num_layers),
        (REFERENCE_LAYER_WIDTH, 61)
    );
    let (step, prefill) = added("deepseek-ai/DeepSeek-V3");
    assert!(close(step, 10e-6 * 61.0, 1e-9) && close(prefill, 10e-6 * 61.0, 1e-9));
    let (step, prefill) = added("openai/gpt-oss-120b");
    let narrow = 10e-6 * 36.0 * 2880.0 / 7168.0;
    assert!(close(step, narrow, 1e-9) && close(prefill, narrow, 1e-9));
}

#[test]
fn release_multipliers_apply_only_to_the_release_they_were_fitted_for() {
    use bud_simulator::params::{FittedParams, ReleaseScale};
    let mut params = FittedParams::builtin().clone();
    params.release_scale.insert(
        ReleaseScale::key(Engine::Vllm, "9.9.9"),
        ReleaseScale {
            decode: 2.0,
            prefill: 1.5,
        },
    );
    let m = model("Qwen/Qwen3-8B").unwrap();
    let h100 = accelerator("h100_sxm").unwrap();
    let w = Workload {
        input_tokens: 1024,
        output_tokens: 256,
        concurrency: 8,
    };
    let mut cfg = ServingConfig::new("Qwen/Qwen3-8B", "h100_sxm", Engine::Vllm);
    let family = predict_with(&cfg, m, h100, &params, &w).unwrap();
    cfg.engine_version = Some("0.0.1".into());
    let other = predict_with(&cfg, m, h100, &params, &w).unwrap();
    assert_eq!(family.decode_step_ms, other.decode_step_ms);
    cfg.engine_version = Some("9.9.9".into());
    let release = predict_with(&cfg, m, h100, &params, &w).unwrap();
    assert!(close(
        release.decode_step_ms,
        2.0 * family.decode_step_ms,
        1e-9
    ));
    assert!(close(release.prefill_ms, 1.5 * family.prefill_ms, 1e-9));
    // The same version of another engine is another release.
    cfg.engine = Engine::Sglang;
    let sglang = predict_with(&cfg, m, h100, &params, &w).unwrap();
    cfg.engine_version = None;
    let sglang_family = predict_with(&cfg, m, h100, &params, &w).unwrap();
    assert_eq!(sglang.decode_step_ms, sglang_family.decode_step_ms);
}

#[test]
fn anchors_take_a_share_of_the_spread_off_scattered_measurements() {
    use bud_simulator::params::Anchors;
    use std::collections::BTreeMap;
    // Two measurements at the point asked about: TPOT log errors 0.1 and 0.1 (consistent),
    // TTFT log errors 0.4 and −0.2 (scattered). Prior weight 1, so the weights sum to 3 and the
    // means are 0.2 / 3 for both. Around them, TPOT varies by 2·(0.1 − 0.2/3)² / 3 and TTFT by
    // ((0.4 − 0.2/3)² + (−0.2 − 0.2/3)²) / 3 = 0.0607; a discount of 0.5 takes half of that off.
    let points = vec![[10.0, 8.0, 4.0, 0.1, 0.4], [10.0, 8.0, 4.0, 0.1, -0.2]];
    let mut anchors = Anchors {
        bandwidth: 1.0,
        prior_weight: 1.0,
        layout_width: 0.0,
        spread_discount: 0.0,
        own_prior_weights: BTreeMap::new(),
        deployments: BTreeMap::new(),
        architectures: BTreeMap::new(),
    };
    let mean = 0.2 / 3.0;
    let (tpot, ttft) = anchors.adjust("", &points, [10.0, 8.0, 4.0]);
    assert!(close(tpot, mean, 1e-12) && close(ttft, mean, 1e-12));
    anchors.spread_discount = 0.5;
    let tpot_variance = 2.0 * (0.1 - mean).powi(2) / 3.0;
    let ttft_variance = ((0.4 - mean).powi(2) + (-0.2 - mean).powi(2)) / 3.0;
    let (tpot, ttft) = anchors.adjust("", &points, [10.0, 8.0, 4.0]);
    assert!(
        close(tpot, mean - 0.5 * tpot_variance, 1e-12),
        "TPOT {tpot}"
    );
    assert!(
        close(ttft, mean - 0.5 * ttft_variance, 1e-12),
        "TTFT {ttft}"
    );
    assert!(close(ttft, 0.0363, 1e-3), "TTFT {ttft}");
}

#[test]
fn anchors_average_nearby_measurements_of_the_same_deployment() {
    use bud_simulator::params::{
        Anchors, ErrorByBasis, ExpectedError, FittedParams, HeldBackError,
    };
    use bud_simulator::perf::Resolved;
    use std::collections::BTreeMap;
    // Two measured points: one exactly where we ask (TPOT 0.3 and TTFT −0.2 in log error),
    // one two doublings of input length away (no error). Kernel width 1, prior weight 0.5:
    // weights 1 and e^(−4/2) = 0.1353, so TPOT moves by 0.3 / (1 + 0.1353 + 0.5).
    let points = vec![[10.0, 8.0, 4.0, 0.3, -0.2], [12.0, 8.0, 4.0, 0.0, 0.0]];
    let mut anchors = Anchors {
        bandwidth: 1.0,
        prior_weight: 0.5,
        layout_width: 0.0,
        spread_discount: 0.0,
        own_prior_weights: BTreeMap::new(),
        deployments: BTreeMap::new(),
        architectures: BTreeMap::new(),
    };
    let denominator = 1.0 + (-2.0f64).exp() + 0.5;
    let (tpot, ttft) = anchors.adjust("", &points, [10.0, 8.0, 4.0]);
    assert!(close(tpot, 0.3 / denominator, 1e-9) && close(ttft, -0.2 / denominator, 1e-9));
    // Leave-one-point-out ignores the point measured exactly there.
    let (tpot, _) = anchors.adjust_except(&points, &[], [10.0, 8.0, 4.0], true, 0.5);
    assert_eq!(tpot, 0.0);

    // Applied to the deployment measured (Qwen3-8B, H100, vLLM, TP 2) at 1,024 / 256 tokens
    // and concurrency 16, and to no other layout.
    let mut params = FittedParams::default();
    let m = model("Qwen/Qwen3-8B").unwrap();
    let h100 = accelerator("h100_sxm").unwrap();
    let mut cfg = ServingConfig::new("Qwen/Qwen3-8B", "h100_sxm", Engine::Vllm);
    cfg.tp = 2;
    let w = Workload {
        input_tokens: 1024,
        output_tokens: 256,
        concurrency: 16,
    };
    let plain = predict_with(&cfg, m, h100, &params, &w).unwrap();
    let key = Resolved::new(&cfg, m, h100, &params).unwrap().deployment;
    anchors
        .deployments
        .insert(key, vec![[10.0, 8.0, 4.0, 0.3, -0.2]]);
    params.anchors = Some(anchors);
    let anchored = predict_with(&cfg, m, h100, &params, &w).unwrap();
    let shift: f64 = 0.3 / (1.0 + 0.5);
    assert!(close(anchored.tpot_ms, plain.tpot_ms * shift.exp(), 1e-9));
    assert!(anchored.ttft_ms < plain.ttft_ms);
    assert!(anchored.measured_deployment && !plain.measured_deployment);
    // vLLM's own weight of "no change", 0.1, replaces the prior weight for vLLM's own points.
    let anchors = params.anchors.as_mut().unwrap();
    anchors.own_prior_weights.insert("vllm".into(), 0.1);
    let trusted = predict_with(&cfg, m, h100, &params, &w).unwrap();
    let shift: f64 = 0.3 / (1.0 + 0.1);
    assert!(close(trusted.tpot_ms, plain.tpot_ms * shift.exp(), 1e-9));
    params.anchors.as_mut().unwrap().own_prior_weights.clear();
    // Each basis carries its own expected error; uncalibrated parameters promise none.
    assert_eq!(plain.expected_error, None);
    let figure = |ttft_percent: f64| ExpectedError {
        rows: 10,
        ttft_percent,
        tpot_percent: ttft_percent / 2.0,
    };
    params.held_back_error = Some(HeldBackError {
        agg: ErrorByBasis {
            measured_deployment: Some(figure(10.0)),
            model: Some(figure(30.0)),
        },
        disagg: ErrorByBasis::default(),
        agg_model_cross_validation: None,
    });
    let expected = |cfg: &ServingConfig, w: &Workload| {
        let p = predict_with(cfg, m, h100, &params, w).unwrap();
        (p.measured_deployment, p.expected_error)
    };
    assert_eq!(expected(&cfg, &w), (true, Some(figure(10.0))));
    // Four doublings of load away from the one measured point, the anchor's weight
    // (e^-8) is far below the prior's: the prediction is the model's, and says so.
    let far = Workload {
        concurrency: 256,
        ..w
    };
    assert_eq!(expected(&cfg, &far), (false, Some(figure(30.0))));
    cfg.tp = 4;
    assert_eq!(expected(&cfg, &w), (false, Some(figure(30.0))));
    params.held_back_error = None;
    let other = predict_with(&cfg, m, h100, &params, &w).unwrap();
    assert!(!other.measured_deployment);
    params.anchors = None;
    assert_eq!(other, predict_with(&cfg, m, h100, &params, &w).unwrap());
}

#[test]
fn a_model_never_measured_leans_on_a_measured_model_of_its_architecture() {
    use bud_simulator::params::{Anchors, FittedParams};
    use bud_simulator::perf::Resolved;
    use std::collections::BTreeMap;
    let h100 = accelerator("h100_sxm").unwrap();
    let base = model("meta-llama/Llama-3.1-70B").unwrap();
    let instruct = model("meta-llama/Llama-3.1-70B-Instruct").unwrap();
    let w = Workload {
        input_tokens: 1024,
        output_tokens: 256,
        concurrency: 16,
    };
    let config = |id: &str| {
        let mut cfg = ServingConfig::new(id, "h100_sxm", Engine::Vllm);
        cfg.tp = 4;
        cfg
    };
    // The base model measured on 4 H100 with vLLM, 0.3 slower in log TPOT right here.
    let mut params = FittedParams::default();
    let key = Resolved::new(&config(&base.id), base, h100, &params)
        .unwrap()
        .deployment;
    params.anchors = Some(Anchors {
        bandwidth: 1.0,
        prior_weight: 1.0,
        layout_width: 0.0,
        spread_discount: 0.0,
        own_prior_weights: BTreeMap::new(),
        deployments: BTreeMap::from([(key, vec![[10.0, 8.0, 4.0, 0.3, 0.0]])]),
        architectures: BTreeMap::from([(base.id.clone(), base.architecture())]),
    });
    let plain = predict_with(
        &config(&instruct.id),
        instruct,
        h100,
        &FittedParams::default(),
        &w,
    )
    .unwrap();
    let borrowed = predict_with(&config(&instruct.id), instruct, h100, &params, &w).unwrap();
    let own = predict_with(&config(&base.id), base, h100, &params, &w).unwrap();
    // The fine-tune gets the base model's anchors, says whose, and keeps the model's basis.
    assert!(close(borrowed.tpot_ms, plain.tpot_ms * 0.15f64.exp(), 1e-9));
    assert_eq!(borrowed.tpot_ms, own.tpot_ms);
    assert_eq!(borrowed.measured_as.as_deref(), Some(base.id.as_str()));
    assert!(!borrowed.measured_deployment);
    assert!(own.measured_deployment && own.measured_as.is_none());
    // An engine's weight for its own points does not reach a twin's: those keep prior weight 1.
    let anchors = params.anchors.as_mut().unwrap();
    anchors.own_prior_weights.insert("vllm".into(), 0.001);
    let borrowed_now = predict_with(&config(&instruct.id), instruct, h100, &params, &w).unwrap();
    assert_eq!(borrowed_now, borrowed);
    let own_now = predict_with(&config(&base.id), base, h100, &params, &w).unwrap();
    assert!(close(
        own_now.tpot_ms,
        plain.tpot_ms * (0.3f64 / 1.001).exp(),
        1e-9
    ));
    params.anchors.as_mut().unwrap().own_prior_weights.clear();
    // Another layout of the fine-tune, and a model of another architecture, borrow nothing.
    let mut tp2 = config(&instruct.id);
    tp2.tp = 2;
    assert_eq!(
        predict_with(&tp2, instruct, h100, &params, &w).unwrap(),
        predict_with(&tp2, instruct, h100, &FittedParams::default(), &w).unwrap()
    );
    let small = model("meta-llama/Llama-3.1-8B-Instruct").unwrap();
    let p = predict_with(&config(&small.id), small, h100, &params, &w).unwrap();
    assert!(p.measured_as.is_none());

    // With a layout width of one doubling, TP 2 leans on the TP 4 measurement, one doubling
    // of TP and one of MoE TP (a dense model's follows its TP) away: weight e^(−2/2).
    params.anchors.as_mut().unwrap().layout_width = 1.0;
    let mut base_tp2 = config(&base.id);
    base_tp2.tp = 2;
    let plain = predict_with(&base_tp2, base, h100, &FittedParams::default(), &w).unwrap();
    let neighbour = predict_with(&base_tp2, base, h100, &params, &w).unwrap();
    let weight = (-1.0f64).exp();
    let shift = 0.3 * weight / (weight + 1.0);
    assert!(close(neighbour.tpot_ms, plain.tpot_ms * shift.exp(), 1e-9));
    // Another layout's measurements do not make the deployment a measured one.
    assert!(!neighbour.measured_deployment && neighbour.measured_as.is_none());
    // The fine-tune's TP 2 borrows the same through its base model.
    let instruct_tp2 = predict_with(&tp2, instruct, h100, &params, &w).unwrap();
    assert_eq!(instruct_tp2.tpot_ms, neighbour.tpot_ms);
}

#[test]
fn disaggregated_correction_multiplies_bounded_and_anchors_its_configuration() {
    use bud_simulator::batch::{ModelResolver, disagg_analytic, predict_disagg, read_rows};
    use bud_simulator::gbdt::Gbdt;
    use bud_simulator::params::{
        Anchors, Correction, DisaggCorrection, FittedParams, MAX_DISAGG_CORRECTION_LN,
    };
    use std::collections::BTreeMap;
    let csv = "id,backend,model_path,system,precision,mode,isl,osl,prefill_batch_size,prefill_num_workers,prefill_tp_size,decode_batch_size,decode_num_workers,decode_tp_size\n\
               a,sglang,deepseek-ai/DeepSeek-V3,b200_sxm,fp8,disagg,1024,1024,1,1,8,32,2,8\n\
               b,sglang,deepseek-ai/DeepSeek-V3,b200_sxm,fp8,disagg,1024,1024,1,1,8,32,4,8\n";
    let rows = read_rows(csv.as_bytes()).unwrap();
    let hw = HardwareCatalog::builtin();
    let mut models = ModelResolver::new(None);
    let mut params = FittedParams::default();
    let plain = disagg_analytic(&rows[0], &mut models, hw, &params).unwrap();
    let predicted = predict_disagg(&rows[0], &mut models, hw, &params).unwrap();
    assert_eq!(
        (plain.ttft_ms, plain.tpot_ms),
        (predicted.ttft_ms, predicted.tpot_ms)
    );
    assert!(!predicted.measured_deployment);
    // Trees with no splits predict their base: TTFT × 3, TPOT × e^10 bounded to e^3.
    let constant = |base: f64| Gbdt {
        base,
        learning_rate: 0.1,
        trees: vec![],
    };
    let mut disagg = DisaggCorrection {
        correction: Correction {
            features: vec![],
            ttft: Some(constant(3f64.ln())),
            tpot: Some(constant(10.0)),
        },
        anchors: None,
    };
    params.disagg = Some(disagg.clone());
    let p = predict_disagg(&rows[0], &mut models, hw, &params).unwrap();
    assert!(close(p.ttft_ms, plain.ttft_ms * 3.0, 1e-9));
    let bounded = plain.tpot_ms * MAX_DISAGG_CORRECTION_LN.exp();
    assert!(close(p.tpot_ms, bounded, 1e-9));
    assert!(!p.measured_deployment);
    // One measured point of the first configuration, where we ask, with prior weight 1:
    // half its log error; the second configuration (four decode workers) is not anchored.
    disagg.correction.ttft = None;
    disagg.correction.tpot = None;
    disagg.anchors = Some(Anchors {
        bandwidth: 1.0,
        prior_weight: 1.0,
        layout_width: 0.0,
        spread_discount: 0.0,
        own_prior_weights: BTreeMap::new(),
        deployments: BTreeMap::from([(
            plain.deployment.clone(),
            vec![[plain.at[0], plain.at[1], plain.at[2], 0.2, 0.8]],
        )]),
        architectures: BTreeMap::new(),
    });
    params.disagg = Some(disagg);
    let p = predict_disagg(&rows[0], &mut models, hw, &params).unwrap();
    assert!(close(p.ttft_ms, plain.ttft_ms * 0.4f64.exp(), 1e-9));
    assert!(close(p.tpot_ms, plain.tpot_ms * 0.1f64.exp(), 1e-9));
    assert!(p.measured_deployment);
    let other = disagg_analytic(&rows[1], &mut models, hw, &params).unwrap();
    assert_ne!(other.deployment, plain.deployment);
    let p = predict_disagg(&rows[1], &mut models, hw, &params).unwrap();
    assert_eq!((other.ttft_ms, other.tpot_ms), (p.ttft_ms, p.tpot_ms));
    assert!(!p.measured_deployment);
}

#[test]
fn an_engine_serves_a_checkpoint_as_it_is_or_quantized_while_loading() {
    use bud_simulator::{Engine, Precision};
    // Qwen3-8B is a BF16 checkpoint: vLLM and SGLang quantize it to FP8 while loading;
    // TensorRT-LLM needs an FP8 checkpoint, and INT4 takes one quantized offline everywhere.
    let qwen = model("Qwen/Qwen3-8B").unwrap();
    let bf16 = Some((Precision::Bf16, Precision::Bf16));
    assert_eq!(
        qwen.served_precisions(Engine::Trtllm, Precision::Bf16),
        bf16
    );
    assert_eq!(
        qwen.served_precisions(Engine::Vllm, Precision::Fp8),
        Some((Precision::Fp8, Precision::Fp8))
    );
    assert_eq!(qwen.served_precisions(Engine::Trtllm, Precision::Fp8), None);
    assert_eq!(
        qwen.served_precisions(Engine::Sglang, Precision::Int4),
        None
    );
    // gpt-oss ships MXFP4 experts beside BF16 attention: served as it is, and not requantized.
    let oss = model("openai/gpt-oss-120b").unwrap();
    assert_eq!(
        oss.served_precisions(Engine::Vllm, Precision::Bf16),
        Some((Precision::Bf16, Precision::Fp4))
    );
    assert_eq!(oss.served_precisions(Engine::Vllm, Precision::Fp8), None);
}

#[test]
fn architecture_groups_fine_tunes_and_quantized_checkpoints_only() {
    let catalog = ModelCatalog::builtin();
    let architecture = |id: &str| catalog.get(id).unwrap().architecture();
    let mut groups: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for id in catalog.ids() {
        groups.entry(architecture(id)).or_default().push(id);
    }
    let shared: Vec<Vec<&str>> = groups.into_values().filter(|g| g.len() > 1).collect();
    for g in &shared {
        println!("{g:?}");
    }
    // A fine-tune shares its base model's network, a re-trained release its predecessor's,
    // and an offline-quantized checkpoint its source's; different sizes never do.
    assert_eq!(
        architecture("meta-llama/Llama-3.1-70B"),
        architecture("meta-llama/Llama-3.1-70B-Instruct")
    );
    assert_eq!(
        architecture("deepseek-ai/DeepSeek-R1"),
        architecture("deepseek-ai/DeepSeek-V3")
    );
    assert_eq!(
        architecture("meta-llama/Llama-3.1-8B-Instruct"),
        architecture("nvidia/Llama-3.1-8B-Instruct-FP8")
    );
    assert_ne!(architecture("Qwen/Qwen3-8B"), architecture("Qwen/Qwen3-4B"));
    assert_ne!(
        architecture("meta-llama/Llama-3.1-8B"),
        architecture("meta-llama/Llama-3.1-70B")
    );
}
