//! Property tests of the analytic model: monotonic in concurrency, prompt and output length,
//! memory bandwidth and interconnect bandwidth. (The learned correction is bounded but not
//! monotone, so these properties are checked on the analytic part.)

use bud_simulator::hardware::accelerator;
use bud_simulator::model::model;
use bud_simulator::params::FittedParams;
use bud_simulator::perf::Resolved;
use bud_simulator::{Engine, Precision, ServingConfig, Workload};
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
