//! Property tests of the analytic model: monotonic in concurrency, prompt and output length,
//! memory bandwidth and interconnect bandwidth. (The learned correction is bounded but not
//! monotone, so these properties are checked on the analytic part.) And of the full model over
//! the whole catalogs: an error, or finite positive figures (or a verdict when it does not fit).

use bud_simulator::hardware::{HardwareCatalog, accelerator};
use bud_simulator::model::{ModelCatalog, model};
use bud_simulator::params::FittedParams;
use bud_simulator::perf::Resolved;
use bud_simulator::{Engine, Precision, ServingConfig, Workload, predict_with};
use proptest::prelude::*;

fn analytic(cfg: &ServingConfig, acc: &bud_simulator::Accelerator, w: Workload) -> (f64, f64) {
    let m = model(&cfg.model).unwrap();
    let r = Resolved::new(cfg, m, acc, FittedParams::builtin()).unwrap();
    let (p, _) = r.predict_analytic(&w).unwrap();
    (p.ttft_ms, p.tpot_ms)
}

fn cfg(engine: Engine, tp: u32) -> ServingConfig {
    let mut c = ServingConfig::new("meta-llama/Llama-3.1-70B", "h100_sxm", engine);
    c.tp = tp;
    c.precision = Some(Precision::Fp8);
    c
}

fn engine_strategy() -> impl Strategy<Value = Engine> {
    prop_oneof![
        Just(Engine::Vllm),
        Just(Engine::Sglang),
        Just(Engine::Trtllm)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn tpot_and_ttft_grow_with_concurrency(e in engine_strategy(), tp in prop::sample::select(vec![2u32, 4, 8]), c in 1u32..256, isl in 16u32..8192, osl in 16u32..4096) {
        let acc = accelerator("h100_sxm").unwrap();
        let w = Workload { input_tokens: isl, output_tokens: osl, concurrency: c };
        let (t1, p1) = analytic(&cfg(e, tp), acc, w);
        let (t2, p2) = analytic(&cfg(e, tp), acc, Workload { concurrency: c + 1, ..w });
        prop_assert!(p2 >= p1 * (1.0 - 1e-9));
        prop_assert!(t2 >= t1 * (1.0 - 1e-9));
    }

    #[test]
    fn ttft_grows_with_prompt_and_tpot_with_output_context(e in engine_strategy(), c in 1u32..64, isl in 16u32..8000, osl in 16u32..4000) {
        let acc = accelerator("h100_sxm").unwrap();
        let w = Workload { input_tokens: isl, output_tokens: osl, concurrency: c };
        let (t1, _) = analytic(&cfg(e, 4), acc, w);
        let (t2, _) = analytic(&cfg(e, 4), acc, Workload { input_tokens: isl + 64, ..w });
        prop_assert!(t2 >= t1 * (1.0 - 1e-9));
    }

    #[test]
    fn faster_memory_and_links_never_slow_decode(e in engine_strategy(), tp in prop::sample::select(vec![1u32, 2, 4, 8]), c in 1u32..128, scale in 1.0f64..4.0) {
        let base = accelerator("h100_sxm").unwrap().clone();
        let mut fast = base.clone();
        fast.memory_bandwidth *= scale;
        fast.intra_node_bandwidth *= scale;
        let w = Workload { input_tokens: 1024, output_tokens: 256, concurrency: c };
        let (_, slow_tpot) = analytic(&cfg(e, tp), &base, w);
        let (_, fast_tpot) = analytic(&cfg(e, tp), &fast, w);
        prop_assert!(fast_tpot <= slow_tpot * (1.0 + 1e-9));
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn every_catalog_configuration_predicts_or_says_why(
        model_index in 0usize..1000,
        accelerator_index in 0usize..1000,
        engine in prop_oneof![Just(Engine::Vllm), Just(Engine::Sglang), Just(Engine::Trtllm), Just(Engine::LlamaCpp)],
        tp in prop::sample::select(vec![1u32, 2, 4, 8]),
        precision in prop::sample::select(vec![None, Some(Precision::Bf16), Some(Precision::Fp8), Some(Precision::Int4), Some(Precision::Fp4)]),
        c in 1u32..1024, isl in 1u32..65536, osl in 1u32..16384,
    ) {
        let models = ModelCatalog::builtin();
        let ids = models.ids();
        let m = models.get(ids[model_index % ids.len()]).unwrap();
        let accelerators = HardwareCatalog::builtin().all();
        let acc = &accelerators[accelerator_index % accelerators.len()];
        let mut cfg = ServingConfig::new(&m.id, &acc.id, engine);
        cfg.tp = tp;
        cfg.precision = precision;
        if m.is_moe() {
            cfg.moe_ep = Some(tp);
        }
        let w = Workload { input_tokens: isl, output_tokens: osl, concurrency: c };
        match predict_with(&cfg, m, acc, FittedParams::builtin(), &w) {
            Err(e) => prop_assert!(!e.to_string().is_empty()),
            Ok(p) if !p.memory.fits => prop_assert!(p.memory.verdict.starts_with("does not fit")),
            Ok(p) => {
                for (name, v) in [
                    ("ttft", p.ttft_ms), ("tpot", p.tpot_ms), ("e2e", p.e2e_ms),
                    ("tokens/s", p.tokens_per_s), ("requests/s", p.requests_per_s),
                    ("decode step", p.decode_step_ms), ("prefill", p.prefill_ms),
                ] {
                    prop_assert!(v.is_finite() && v > 0.0, "{name} = {v} for {cfg:?} {w:?}");
                }
                prop_assert!(p.running >= 1 && p.running <= c && p.max_concurrency >= 1);
                prop_assert!(p.e2e_ms >= p.ttft_ms);
            }
        }
    }
}
