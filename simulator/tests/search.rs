//! The configuration search: ranking, determinism (exhaustive and NSGA-II), rejection
//! reasons and the nearest miss.

use bud_simulator::search::{CandidatePool, Objective, PlanRequest, SearchMode, Slo};
use bud_simulator::{Engine, Precision, Workload, plan};

fn pool(acc: &str, count: u32, cluster: &str) -> CandidatePool {
    CandidatePool {
        accelerator: acc.into(),
        count,
        max_per_node: None,
        price_per_hour: None,
        cluster: Some(cluster.into()),
    }
}

fn request() -> PlanRequest {
    PlanRequest {
        model: "meta-llama/Llama-3.1-70B-Instruct".into(),
        model_config: None,
        workload: Workload {
            input_tokens: 2048,
            output_tokens: 512,
            concurrency: 64,
        },
        slo: Slo {
            ttft_ms: Some(2000.0),
            tpot_ms: Some(40.0),
            e2e_ms: None,
            min_tokens_per_s_per_user: None,
        },
        pools: [
            "NVIDIA-H100-80GB-HBM3",
            "h200_sxm",
            "a100_sxm",
            "l40s",
            "mi300x",
            "b200_sxm",
        ]
        .iter()
        .map(|a| pool(a, 32, "lab"))
        .collect(),
        objective: Objective::LowestCost,
        engines: None,
        precisions: None,
        checkpoint_precisions_only: false,
        max_results: Some(10),
        search: SearchMode::Auto,
        seed: None,
    }
}

#[test]
fn ranked_by_cost_and_meeting_the_slo() {
    let r = plan(&request()).unwrap();
    assert!(!r.recommendations.is_empty());
    assert_eq!(r.strategy, "exhaustive");
    let costs: Vec<f64> = r.recommendations.iter().map(|x| x.cost_per_hour).collect();
    assert!(costs.windows(2).all(|w| w[0] <= w[1] + 1e-9), "{costs:?}");
    for x in &r.recommendations {
        assert!(x.prediction.ttft_ms <= 2000.0 && x.prediction.tpot_ms <= 40.0);
        assert!(x.gpus_per_replica * x.replicas <= 32);
        assert_eq!(x.cluster.as_deref(), Some("lab"));
        assert!(x.prediction.memory.fits);
    }
    assert_eq!(r.recommendations[0].rank, 1);
    assert!(r.recommendations[0].pareto_optimal);
    assert!(r.evaluated > 100);
    assert!(r.rejections.values().sum::<usize>() > 0);
}

#[test]
fn deterministic_exhaustive_and_genetic() {
    let a = serde_json::to_string(&plan(&request()).unwrap()).unwrap();
    let b = serde_json::to_string(&plan(&request()).unwrap()).unwrap();
    assert_eq!(a, b);
    let mut g = request();
    g.search = SearchMode::Genetic;
    g.seed = Some(7);
    let ga = plan(&g).unwrap();
    let gb = plan(&g).unwrap();
    assert_eq!(
        serde_json::to_string(&ga).unwrap(),
        serde_json::to_string(&gb).unwrap()
    );
    assert_eq!(ga.strategy, "nsga2");
    assert!(!ga.recommendations.is_empty());
    // The genetic search should find something close to the exhaustive optimum.
    let best = plan(&request()).unwrap().recommendations[0].cost_per_hour;
    assert!(ga.recommendations[0].cost_per_hour <= best * 2.0);
}

#[test]
fn infeasible_requests_explain_what_to_relax() {
    let mut r = request();
    r.slo.tpot_ms = Some(1.0);
    let res = plan(&r).unwrap();
    assert!(res.recommendations.is_empty());
    assert!(res.rejections.get("TpotAboveSlo").copied().unwrap_or(0) > 0);
    let miss = res.nearest_miss.expect("a nearest miss");
    assert_eq!(miss.reason, "TpotAboveSlo");
    assert!(
        miss.advice.contains("relax the TPOT target"),
        "{}",
        miss.advice
    );
    // Every reason comes with a candidate it rejected and why.
    assert_eq!(
        res.rejection_examples.keys().collect::<Vec<_>>(),
        res.rejections.keys().collect::<Vec<_>>()
    );
    let example = &res.rejection_examples["TpotAboveSlo"];
    assert!(
        example.contains("replica(s) of") && example.contains("exceeds the 1.0 ms target"),
        "{example}"
    );
}

/// A layout the model cannot run (TP 8 over Qwen2.5-7B's 28 heads) is rejected with why.
#[test]
fn unsupported_candidates_say_why() {
    let mut r = request();
    r.model = "Qwen/Qwen2.5-7B-Instruct".into();
    r.pools = vec![pool("h100_sxm", 8, "a")];
    let res = plan(&r).unwrap();
    assert!(!res.recommendations.is_empty());
    assert!(res.recommendations.iter().all(|rec| rec.tp != 8));
    let example = &res.rejection_examples["UnsupportedCombination"];
    assert!(
        example.contains("TP8") && example.contains("28 attention heads"),
        "{example}"
    );
}

#[test]
fn price_override_and_throughput_objective() {
    let mut r = request();
    r.pools = vec![
        pool("h100_sxm", 16, "a"),
        CandidatePool {
            price_per_hour: Some(0.01),
            ..pool("h200_sxm", 16, "b")
        },
    ];
    let res = plan(&r).unwrap();
    assert_eq!(res.recommendations[0].accelerator, "h200_sxm");
    r.objective = Objective::HighestThroughputPerDollar;
    let res = plan(&r).unwrap();
    let tpd: Vec<f64> = res
        .recommendations
        .iter()
        .map(|x| x.tokens_per_dollar)
        .collect();
    assert!(tpd.windows(2).all(|w| w[0] >= w[1] - 1e-9));
}

#[test]
fn bad_requests_name_the_field() {
    let mut r = request();
    r.pools[0].accelerator = "NVIDIA-Voodoo".into();
    assert!(plan(&r).unwrap_err().to_string().contains("accepted"));
    let mut r = request();
    r.workload.concurrency = 0;
    assert!(plan(&r).unwrap_err().to_string().contains("concurrency"));
    let mut r = request();
    r.slo.ttft_ms = Some(-1.0);
    assert!(plan(&r).unwrap_err().to_string().contains("slo.ttftMs"));
}

#[test]
fn request_round_trips_as_camel_case_yaml() {
    let yaml = r#"
model: Qwen/Qwen3-8B
workload: { inputTokens: 512, outputTokens: 128, concurrency: 8 }
slo: { ttftMs: 1000, tpotMs: 50 }
pools:
  - { accelerator: NVIDIA-L4, count: 4, cluster: edge }
  - { accelerator: NVIDIA-A10G, count: 4, pricePerHour: 0.5 }
objective: LowestCost
"#;
    let req: PlanRequest = serde_yaml::from_str(yaml).unwrap();
    let res = plan(&req).unwrap();
    assert!(!res.recommendations.is_empty());
    let json = serde_json::to_value(&res).unwrap();
    assert!(json["recommendations"][0]["gpusPerReplica"].is_u64());
    assert!(json["recommendations"][0]["prediction"]["ttftMs"].is_f64());
}

#[test]
fn checkpoint_precisions_only_keeps_what_the_engine_serves_from_the_checkpoint() {
    // Llama-3.1-70B-Instruct's checkpoint is BF16. As a what-if, any precision the devices
    // support is a candidate; for a deployment only BF16, and FP8 on vLLM and SGLang, which
    // quantize while loading.
    let mut req = request();
    req.slo = Slo::default();
    req.max_results = Some(500);
    let combinations = |req: &PlanRequest| {
        let mut seen: Vec<(Engine, Precision)> = plan(req)
            .unwrap()
            .recommendations
            .iter()
            .map(|r| (r.engine, r.precision))
            .collect();
        seen.sort();
        seen.dedup();
        seen
    };
    let what_if = combinations(&req);
    assert!(
        what_if.contains(&(Engine::Trtllm, Precision::Fp8)),
        "{what_if:?}"
    );
    assert!(
        what_if.iter().any(|&(_, p)| p == Precision::Int4),
        "{what_if:?}"
    );
    req.checkpoint_precisions_only = true;
    let deployable = combinations(&req);
    assert!(
        deployable.contains(&(Engine::Vllm, Precision::Fp8)),
        "{deployable:?}"
    );
    assert!(
        deployable.contains(&(Engine::Trtllm, Precision::Bf16)),
        "{deployable:?}"
    );
    for (engine, precision) in deployable {
        assert!(
            precision == Precision::Bf16 || engine.quantizes_at_load(precision),
            "{engine} cannot serve the BF16 checkpoint at {precision}"
        );
    }
    // gpt-oss-120b's checkpoint keeps MXFP4 experts beside BF16 attention; served as it is it
    // fits one H100 (its experts at BF16 would take four).
    let mut oss = request();
    oss.model = "openai/gpt-oss-120b".into();
    oss.pools = vec![pool("h100_sxm", 8, "lab")];
    oss.slo = Slo::default();
    oss.checkpoint_precisions_only = true;
    let best = &plan(&oss).unwrap().recommendations[0];
    assert_eq!(
        (best.precision, best.gpus_per_replica),
        (Precision::Bf16, 1),
        "{best:?}"
    );
}

#[test]
fn attention_data_parallelism_is_searched_for_moe_models() {
    // DeepSeek-R1 at 1,024 users on B200s: attention data-parallel ranks keep one copy of each
    // request's MLA cache instead of one per tensor-parallel device, so they hold more users.
    let mut req = request();
    req.model = "deepseek-ai/DeepSeek-R1".into();
    req.pools = vec![pool("b200_sxm", 16, "lab")];
    req.workload = Workload {
        input_tokens: 1024,
        output_tokens: 1024,
        concurrency: 1024,
    };
    req.slo = Slo {
        tpot_ms: Some(50.0),
        ..Slo::default()
    };
    req.objective = Objective::HighestThroughputPerDollar;
    req.max_results = Some(500);
    let result = plan(&req).unwrap();
    let dep: Vec<_> = result
        .recommendations
        .iter()
        .filter(|r| r.attention_data_parallel > 1)
        .collect();
    assert!(!dep.is_empty(), "{:?}", result.recommendations);
    for r in &dep {
        let ranks = r.tp * r.attention_data_parallel;
        // The experts are spread over every rank; the search never has ranks share sliced
        // experts, and only vLLM and SGLang run attention more than one device wide per rank.
        assert_eq!(
            (r.expert_parallel, r.gpus_per_replica, r.pp),
            (ranks, ranks, 1),
            "{r:?}"
        );
        assert!(
            r.tp == 1 || matches!(r.engine, Engine::Vllm | Engine::Sglang),
            "{r:?}"
        );
        assert!(
            r.layout()
                .contains(&format!("DP{}", r.attention_data_parallel))
        );
        // The batch limit is the replica's: one limit per rank, summed.
        assert_eq!(r.max_batch % r.attention_data_parallel, 0, "{r:?}");
    }
    assert!(
        dep.iter().any(|r| r.tp > 1),
        "no layout with attention ranks two or more devices wide: {dep:?}"
    );
    // Experts spread over part of a tensor-parallel group and sliced over the rest, on the
    // engines that have it (SGLang's --ep-size, TensorRT-LLM's --ep_size below the TP size).
    let mixed: Vec<_> = result
        .recommendations
        .iter()
        .filter(|r| r.expert_parallel > 1 && r.expert_parallel < r.tp * r.attention_data_parallel)
        .collect();
    assert!(!mixed.is_empty(), "{:?}", result.recommendations);
    for r in mixed {
        assert!(matches!(r.engine, Engine::Sglang | Engine::Trtllm), "{r:?}");
        assert_eq!(r.attention_data_parallel, 1, "{r:?}");
        assert_eq!(r.tp % r.expert_parallel, 0, "{r:?}");
    }
    // At this load the best DEP layout out-earns the best tensor-parallel one.
    let best_dense_attention = result
        .recommendations
        .iter()
        .find(|r| r.attention_data_parallel == 1)
        .expect("a tensor-parallel layout also meets the SLO");
    assert!(
        dep[0].tokens_per_dollar > best_dense_attention.tokens_per_dollar,
        "{:?} vs {best_dense_attention:?}",
        dep[0]
    );
    // A dense model is never split this way.
    let dense = plan(&request()).unwrap();
    assert!(
        dense
            .recommendations
            .iter()
            .all(|r| r.attention_data_parallel == 1 && r.expert_parallel == 1)
    );
}
