//! The bridge between the API types and the simulator: candidate pools from BudCluster
//! inventories, plan requests from Simulation specs, and recommendations back into status.
//! Pure functions only.

use bud_crds::budcluster::BudCluster;
use bud_crds::common::{
    EngineType, Precision as ApiPrecision, PredictedMetrics, SloTargets, Workload as ApiWorkload,
};
use bud_crds::conditions::{READY, is_true};
use bud_crds::simulation::{
    CandidateAccelerator, Objective as ApiObjective, Recommendation as ApiRecommendation,
    RejectionCount,
};
use bud_simulator::search::{
    CandidatePool, Objective, PlanRequest, PlanResult, Recommendation, SearchMode, Slo,
};
use bud_simulator::{Engine, Precision, Workload};

/// Decimal string with `places` decimals, the API's way of carrying measurements.
pub fn decimal(value: f64, places: usize) -> String {
    if value.is_finite() {
        format!("{value:.places$}")
    } else {
        "0".to_owned()
    }
}

/// Parses a decimal price string; `None` for anything else.
pub fn parse_price(text: &str) -> Option<f64> {
    text.parse::<f64>()
        .ok()
        .filter(|p| p.is_finite() && *p >= 0.0)
}

/// Simulator engines for an API engine; `Auto` allows all. TGI has no fitted model of its
/// own and is predicted with vLLM's parameters (both run continuous batching on CUDA).
pub fn engines_for(engine: EngineType) -> Option<Vec<Engine>> {
    match engine {
        EngineType::Auto => None,
        EngineType::Vllm | EngineType::Tgi => Some(vec![Engine::Vllm]),
        EngineType::SgLang => Some(vec![Engine::Sglang]),
        EngineType::TensorRtLlm => Some(vec![Engine::Trtllm]),
        EngineType::LlamaCpp => Some(vec![Engine::LlamaCpp]),
    }
}

/// The API's name of a simulator engine.
pub fn engine_type(engine: Engine) -> EngineType {
    match engine {
        Engine::Vllm => EngineType::Vllm,
        Engine::Sglang => EngineType::SgLang,
        Engine::Trtllm => EngineType::TensorRtLlm,
        Engine::LlamaCpp => EngineType::LlamaCpp,
    }
}

pub fn precision(p: ApiPrecision) -> Precision {
    match p {
        ApiPrecision::Bf16 | ApiPrecision::Fp16 => Precision::Bf16,
        ApiPrecision::Fp8 => Precision::Fp8,
        ApiPrecision::Int8 => Precision::Int8,
        ApiPrecision::Int4 => Precision::Int4,
        ApiPrecision::Fp4 => Precision::Fp4,
    }
}

pub fn api_precision(p: Precision) -> ApiPrecision {
    match p {
        Precision::Bf16 => ApiPrecision::Bf16,
        Precision::Fp8 => ApiPrecision::Fp8,
        Precision::Int8 => ApiPrecision::Int8,
        Precision::Int4 => ApiPrecision::Int4,
        Precision::Fp4 => ApiPrecision::Fp4,
    }
}

pub fn workload(w: &ApiWorkload) -> Workload {
    Workload {
        input_tokens: w.input_tokens.max(1) as u32,
        output_tokens: w.output_tokens.max(1) as u32,
        concurrency: w.concurrency.max(1) as u32,
    }
}

pub fn slo(s: &SloTargets) -> Slo {
    Slo {
        ttft_ms: s.ttft_ms.map(f64::from),
        tpot_ms: s.tpot_ms.map(f64::from),
        e2e_ms: s.e2e_latency_ms.map(f64::from),
        min_tokens_per_s_per_user: s.min_tokens_per_second_per_user.map(f64::from),
    }
}

/// The model id the simulator knows a `hf://org/name` URI by; `None` for other schemes.
pub fn model_id_of_uri(uri: &str) -> Option<String> {
    uri.strip_prefix("hf://")
        .map(|rest| rest.trim_end_matches('/').to_owned())
}

/// Whether a cluster may take work: its Ready condition is True.
pub fn cluster_ready(cluster: &BudCluster) -> bool {
    cluster
        .status
        .as_ref()
        .is_some_and(|s| is_true(&s.conditions, READY))
}

/// Candidate pools from the accelerators Ready clusters can allocate, with the clusters'
/// price overrides. Products the simulator does not know are left out and named in the
/// returned list so that status can say so.
pub fn pools_from_clusters<'a>(
    clusters: impl IntoIterator<Item = &'a BudCluster>,
) -> (Vec<CandidatePool>, Vec<String>) {
    let mut pools = Vec::new();
    let mut unknown = Vec::new();
    for cluster in clusters {
        if !cluster_ready(cluster) {
            continue;
        }
        let name = cluster.metadata.name.clone().unwrap_or_default();
        for acc in cluster
            .status
            .as_ref()
            .map(|s| s.accelerators.as_slice())
            .unwrap_or_default()
        {
            if acc.allocatable <= 0 {
                continue;
            }
            if bud_simulator::accelerator(&acc.product).is_err() {
                unknown.push(format!("{} (cluster {name})", acc.product));
                continue;
            }
            pools.push(CandidatePool {
                accelerator: acc.product.clone(),
                count: acc.allocatable.clamp(0, i64::from(u32::MAX)) as u32,
                max_per_node: Some(acc.max_per_node.clamp(1, i64::from(u32::MAX)) as u32),
                price_per_hour: cluster
                    .spec
                    .accelerator_prices
                    .get(&acc.product)
                    .and_then(|p| parse_price(p)),
                cluster: Some(name.clone()),
            });
        }
    }
    (pools, unknown)
}

/// A candidate pool listed explicitly in a Simulation.
pub fn pool_from_candidate(c: &CandidateAccelerator) -> CandidatePool {
    CandidatePool {
        accelerator: c.product.clone(),
        count: c.count.max(1) as u32,
        max_per_node: c.max_per_node.map(|m| m.max(1) as u32),
        price_per_hour: c.price_per_hour.as_deref().and_then(parse_price),
        cluster: None,
    }
}

/// Everything a plan needs besides the pools.
pub struct PlanInputs<'a> {
    pub model_id: String,
    pub model_config: Option<String>,
    pub workload: &'a ApiWorkload,
    pub slo: &'a SloTargets,
    pub objective: ApiObjective,
    pub engines: &'a [EngineType],
    pub precisions: &'a [ApiPrecision],
    /// Only precisions the engines serve from the model's own checkpoint (see
    /// `PlanRequest::checkpoint_precisions_only`).
    pub checkpoint_precisions_only: bool,
    pub max_results: usize,
}

/// The simulator request for `inputs` over `pools`.
pub fn plan_request(inputs: &PlanInputs<'_>, pools: Vec<CandidatePool>) -> PlanRequest {
    let engines: Vec<Engine> = inputs
        .engines
        .iter()
        .filter_map(|e| engines_for(*e))
        .flatten()
        .collect();
    let precisions: Vec<Precision> = inputs.precisions.iter().map(|p| precision(*p)).collect();
    PlanRequest {
        model: inputs.model_id.clone(),
        model_config: inputs.model_config.clone(),
        workload: workload(inputs.workload),
        slo: slo(inputs.slo),
        pools,
        objective: match inputs.objective {
            ApiObjective::LowestCost => Objective::LowestCost,
            ApiObjective::HighestThroughputPerDollar => Objective::HighestThroughputPerDollar,
        },
        engines: (!engines.is_empty()).then_some(engines),
        precisions: (!precisions.is_empty()).then_some(precisions),
        checkpoint_precisions_only: inputs.checkpoint_precisions_only,
        max_results: Some(inputs.max_results),
        search: SearchMode::Auto,
        seed: None,
    }
}

/// The product a recommendation runs on, as the cluster names it: the pool's own string
/// (a node label value) rather than the simulator's catalog id.
fn product_of(rec: &Recommendation, pools: &[CandidatePool]) -> String {
    pools
        .iter()
        .find(|p| {
            p.cluster == rec.cluster
                && bud_simulator::accelerator(&p.accelerator)
                    .map(|a| a.id == rec.accelerator)
                    .unwrap_or(false)
        })
        .map(|p| p.accelerator.clone())
        .unwrap_or_else(|| rec.accelerator.clone())
}

/// Predicted metrics of a recommendation over all its replicas.
pub fn predicted_metrics(rec: &Recommendation) -> PredictedMetrics {
    PredictedMetrics {
        total_tokens_per_second: Some(decimal(rec.total_tokens_per_s, 0)),
        cost_per_hour: Some(decimal(rec.cost_per_hour, 2)),
        ..prediction_metrics(&rec.prediction, rec.replicas)
    }
}

/// Predicted metrics of one replica's prediction over `replicas` replicas, with what the
/// prediction rests on and how far to trust it (no cost: that needs the pool's price).
pub fn prediction_metrics(p: &bud_simulator::Prediction, replicas: u32) -> PredictedMetrics {
    let replicas = f64::from(replicas);
    PredictedMetrics {
        ttft_ms: Some(decimal(p.ttft_ms, 1)),
        tpot_ms: Some(decimal(p.tpot_ms, 2)),
        e2e_latency_ms: Some(decimal(p.e2e_ms, 0)),
        tokens_per_second_per_user: Some(decimal(p.tokens_per_s_per_user, 1)),
        total_tokens_per_second: Some(decimal(p.tokens_per_s * replicas, 0)),
        requests_per_second: Some(decimal(p.requests_per_s * replicas, 2)),
        max_concurrency_per_replica: Some(i64::from(p.max_concurrency)),
        cost_per_hour: None,
        basis: Some(
            if p.measured_deployment {
                "MeasuredDeployment"
            } else {
                "Model"
            }
            .to_string(),
        ),
        measured_as: p.measured_as.clone(),
        expected_ttft_error_percent: p.expected_error.map(|e| decimal(e.ttft_percent, 1)),
        expected_tpot_error_percent: p.expected_error.map(|e| decimal(e.tpot_percent, 1)),
    }
}

/// A simulator recommendation as the API shows it.
pub fn api_recommendation(rec: &Recommendation, pools: &[CandidatePool]) -> ApiRecommendation {
    ApiRecommendation {
        rank: rec.rank as i32,
        cluster: rec.cluster.clone(),
        accelerator: product_of(rec, pools),
        accelerators_per_replica: rec.gpus_per_replica as i32,
        replicas: rec.replicas as i32,
        tensor_parallel: rec.tp as i32,
        pipeline_parallel: rec.pp as i32,
        expert_parallel: (rec.expert_parallel > 1).then_some(rec.expert_parallel as i32),
        attention_data_parallel: (rec.attention_data_parallel > 1)
            .then_some(rec.attention_data_parallel as i32),
        precision: Some(api_precision(rec.precision)),
        engine: engine_type(rec.engine),
        max_batch_size: Some(rec.max_batch as i32),
        predicted: predicted_metrics(rec),
    }
}

/// One line for `kubectl get`: `2x NVIDIA-H100-80GB-HBM3 TP2 VLLM FP8, 1 replica`, or with
/// eight attention data-parallel ranks sharing the experts `8x NVIDIA-B200 TP1 DP8 EP8 VLLM
/// FP4, 1 replica` ([`ApiRecommendation::layout`]).
pub fn describe(rec: &ApiRecommendation) -> String {
    format!(
        "{}x {} {} {} {}, {} replica{}",
        rec.accelerators_per_replica,
        rec.accelerator,
        rec.layout(),
        rec.engine.as_str(),
        rec.precision.map(|p| p.as_str()).unwrap_or_default(),
        rec.replicas,
        if rec.replicas == 1 { "" } else { "s" }
    )
}

/// Rejection counts as the API shows them, most frequent first.
pub fn rejection_counts(result: &PlanResult) -> Vec<RejectionCount> {
    let mut counts: Vec<RejectionCount> = result
        .rejections
        .iter()
        .map(|(reason, count)| RejectionCount {
            reason: reason.clone(),
            count: *count as i64,
            example: result.rejection_examples.get(reason).cloned(),
        })
        .collect();
    counts.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
    counts
}

/// The nearest miss as a sentence: what it was, why it failed, what to relax.
pub fn nearest_miss(result: &PlanResult, pools: &[CandidatePool]) -> Option<String> {
    result.nearest_miss.as_ref().map(|miss| {
        let rec = api_recommendation(&miss.candidate, pools);
        format!("{} failed {}: {}", describe(&rec), miss.reason, miss.advice)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bud_crds::budcluster::{
        AcceleratorInventory, BudClusterSpec, BudClusterStatus, ClusterType,
    };
    use bud_crds::conditions::new_condition;
    use k8s_openapi::jiff::Timestamp;
    use std::collections::BTreeMap;

    fn cluster(name: &str, ready: bool, accelerators: Vec<AcceleratorInventory>) -> BudCluster {
        let mut c = BudCluster::new(
            name,
            BudClusterSpec {
                type_: ClusterType::Local,
                kubeconfig: None,
                eks: None,
                aks: None,
                workload_namespace: None,
                accelerator_prices: BTreeMap::from([(
                    "NVIDIA-H100-80GB-HBM3".to_owned(),
                    "2.49".to_owned(),
                )]),
            },
        );
        c.status = Some(BudClusterStatus {
            conditions: vec![new_condition(
                READY,
                ready,
                "x",
                "",
                None,
                Timestamp::UNIX_EPOCH,
            )],
            accelerators,
            ..Default::default()
        });
        c
    }

    fn acc(product: &str, allocatable: i64, max_per_node: i64) -> AcceleratorInventory {
        AcceleratorInventory {
            vendor: "NVIDIA".into(),
            product: product.into(),
            resource_name: "nvidia.com/gpu".into(),
            memory_mib: None,
            count: allocatable,
            allocatable,
            nodes: 1,
            max_per_node,
        }
    }

    #[test]
    fn pools_come_from_ready_clusters_with_their_prices() {
        let clusters = [
            cluster(
                "a",
                true,
                vec![
                    acc("NVIDIA-H100-80GB-HBM3", 16, 8),
                    acc("NVIDIA-Made-Up-9000", 4, 4),
                    acc("NVIDIA-L4", 0, 0),
                ],
            ),
            cluster("b", false, vec![acc("NVIDIA-L4", 2, 1)]),
        ];
        let (pools, unknown) = pools_from_clusters(&clusters);
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].accelerator, "NVIDIA-H100-80GB-HBM3");
        assert_eq!(
            (
                pools[0].count,
                pools[0].max_per_node,
                pools[0].price_per_hour
            ),
            (16, Some(8), Some(2.49))
        );
        assert_eq!(pools[0].cluster.as_deref(), Some("a"));
        assert_eq!(unknown, ["NVIDIA-Made-Up-9000 (cluster a)"]);
    }

    #[test]
    fn a_plan_over_the_pools_maps_back_to_cluster_products() {
        let clusters = [cluster(
            "a",
            true,
            vec![acc("NVIDIA-H100-80GB-HBM3", 16, 8), acc("NVIDIA-L4", 2, 1)],
        )];
        let (pools, _) = pools_from_clusters(&clusters);
        let inputs = PlanInputs {
            model_id: "Qwen/Qwen3-8B".into(),
            model_config: None,
            workload: &ApiWorkload::default(),
            slo: &SloTargets {
                ttft_ms: Some(2000),
                tpot_ms: Some(100),
                ..Default::default()
            },
            objective: ApiObjective::LowestCost,
            engines: &[],
            precisions: &[],
            checkpoint_precisions_only: true,
            max_results: 3,
        };
        let request = plan_request(&inputs, pools.clone());
        let result = bud_simulator::plan(&request).unwrap();
        assert!(!result.recommendations.is_empty(), "{result:?}");
        // Nothing the engine would not serve from Qwen3-8B's BF16 checkpoint.
        for r in &result.recommendations {
            assert!(
                r.precision == Precision::Bf16 || r.engine.quantizes_at_load(r.precision),
                "{r:?}"
            );
        }
        // Each rejection reason the API shows carries an example candidate and why (nothing
        // decodes a token in half a millisecond).
        let mut strict = request.clone();
        strict.slo.tpot_ms = Some(0.5);
        let rejections = rejection_counts(&bud_simulator::plan(&strict).unwrap());
        assert!(!rejections.is_empty());
        for r in &rejections {
            assert!(
                r.example
                    .as_deref()
                    .is_some_and(|e| e.contains("replica(s) of")),
                "{r:?}"
            );
        }
        let best = api_recommendation(&result.recommendations[0], &pools);
        assert!(
            ["NVIDIA-H100-80GB-HBM3", "NVIDIA-L4"].contains(&best.accelerator.as_str()),
            "{best:?}"
        );
        assert_eq!(best.cluster.as_deref(), Some("a"));
        assert_eq!(best.rank, 1);
        assert!(best.predicted.cost_per_hour.is_some());
        // Qwen3-8B was never measured on these GPUs: the model alone predicts it.
        assert_eq!(best.predicted.basis.as_deref(), Some("Model"));
        let model_error = bud_simulator::params::FittedParams::builtin()
            .held_back_error
            .and_then(|e| e.agg.model)
            .unwrap();
        assert_eq!(
            best.predicted.expected_ttft_error_percent,
            Some(decimal(model_error.ttft_percent, 1))
        );
        assert_eq!(
            best.predicted.expected_tpot_error_percent,
            Some(decimal(model_error.tpot_percent, 1))
        );
        assert!(describe(&best).contains(&best.accelerator));
    }

    #[test]
    fn uri_to_model_id() {
        assert_eq!(
            model_id_of_uri("hf://Qwen/Qwen3-8B").as_deref(),
            Some("Qwen/Qwen3-8B")
        );
        assert_eq!(model_id_of_uri("s3://bucket/model"), None);
    }
}
