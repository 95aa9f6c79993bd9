//! `Simulation`: a what-if — which hardware and engine settings serve a model for a workload
//! and SLO at the lowest cost, and how fast they will be.

use crate::common::{
    ConfigMapKeyRef, DECIMAL_PATTERN, DNS_SUBDOMAIN_PATTERN, EngineType, Precision,
    PredictedMetrics, SloTargets, Workload,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A what-if search over hardware and engine settings.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "bud.studio",
    version = "v1alpha1",
    kind = "Simulation",
    namespaced,
    status = "SimulationStatus",
    shortname = "sim",
    category = "bud",
    doc = "A what-if: for a model, a workload and SLO targets, the simulator ranks the hardware and engine configurations the candidates offer by cost, with predicted TTFT, TPOT, throughput and cost, and says why the others were rejected.",
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model.id"),
    printcolumn(name = "Best", type_ = "string", json_path = ".status.best"),
    printcolumn(
        name = "Cost/h",
        type_ = "string",
        json_path = ".status.recommendations[0].predicted.costPerHour"
    ),
    printcolumn(
        name = "TTFT ms",
        type_ = "string",
        json_path = ".status.recommendations[0].predicted.ttftMs",
        priority = 1
    ),
    printcolumn(
        name = "TPOT ms",
        type_ = "string",
        json_path = ".status.recommendations[0].predicted.tpotMs",
        priority = 1
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SimulationSpec {
    /// The model to simulate.
    pub model: SimulationModel,
    /// The traffic to size for.
    #[serde(default)]
    pub workload: Workload,
    /// Targets every recommendation must meet.
    #[serde(default)]
    pub slo: SloTargets,
    /// Hardware to choose from: BudCluster inventories, an explicit list, or (both empty)
    /// every Ready BudCluster.
    #[serde(default)]
    pub candidates: Candidates,
    /// What to optimise.
    #[serde(default)]
    pub objective: Objective,
    /// Engines to consider; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 6))]
    pub engines: Vec<EngineType>,
    /// Weight precisions to consider; the model's dtype and the formats the hardware
    /// supports when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 6))]
    pub precisions: Vec<Precision>,
    /// Only precisions the engines serve from the model's own checkpoint: the checkpoint's,
    /// and FP8 on vLLM and SGLang, which quantize while loading. Without it a narrower
    /// precision assumes a checkpoint quantized offline (a what-if). The Simulations a
    /// ModelDeployment owns set it, so nothing is chosen that the engine would not serve.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checkpoint_precisions_only: bool,
    /// Number of recommendations to keep.
    #[serde(default = "default_max_results")]
    #[schemars(range(min = 1, max = 50))]
    pub max_results: i32,
}

fn default_max_results() -> i32 {
    5
}

/// The model to simulate: a catalog id or a `config.json` in a ConfigMap.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.id) != has(self.configRef)").message("set exactly one of model.id (a catalog model such as Qwen/Qwen3-8B) or model.configRef (a config.json in a ConfigMap)"))]
pub struct SimulationModel {
    /// Hugging Face id of a catalog model, e.g. `Qwen/Qwen3-8B` (an `hf://` URI works too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 512))]
    pub id: Option<String>,
    /// The model's Hugging Face `config.json` in a ConfigMap of this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_ref: Option<ConfigMapKeyRef>,
}

/// Hardware the search may use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Candidates {
    /// BudClusters whose accelerator inventories are candidates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = DNS_SUBDOMAIN_PATTERN)))]
    pub clusters: Vec<String>,
    /// Accelerators listed explicitly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub accelerators: Vec<CandidateAccelerator>,
}

/// An accelerator pool offered to the search.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.maxPerNode) || self.maxPerNode <= self.count").message("maxPerNode must not exceed count").field_path(".maxPerNode"))]
pub struct CandidateAccelerator {
    /// Accelerator product (e.g. `NVIDIA-H100-80GB-HBM3`) or a simulator catalog id (e.g.
    /// `h100_sxm`).
    #[schemars(length(min = 1, max = 253))]
    pub product: String,
    /// Accelerators available.
    #[schemars(range(min = 1, max = 100_000))]
    pub count: i32,
    /// Most accelerators on one node; defaults to 8 or count, whichever is smaller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 72))]
    pub max_per_node: Option<i32>,
    /// Price per accelerator per hour in US dollars; the catalog's list price when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DECIMAL_PATTERN))]
    pub price_per_hour: Option<String>,
}

/// The search's objective.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Objective {
    /// Cheapest configuration that meets every target.
    #[default]
    LowestCost,
    /// Most output tokens per second per dollar that meets every target.
    HighestThroughputPerDollar,
}

/// The search's outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimulationStatus {
    /// `Succeeded` or `Failed` (with the reason) and the summary `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One line describing the best recommendation, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<String>,
    /// Feasible configurations, best first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recommendations: Vec<Recommendation>,
    /// Why the other candidates were rejected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejections: Vec<RejectionCount>,
    /// The rejected candidate closest to feasible and what to relax to accept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nearest_miss: Option<String>,
    /// Number of configurations evaluated.
    #[serde(default)]
    pub evaluated: i64,
    /// Time the search took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_duration_ms: Option<i64>,
    /// When the search finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

/// A feasible configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    /// 1 for the best.
    pub rank: i32,
    /// BudCluster offering the hardware, when candidates came from clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Accelerator product, or `CPU`.
    pub accelerator: String,
    /// Accelerators per replica.
    pub accelerators_per_replica: i32,
    /// Replicas.
    pub replicas: i32,
    /// Tensor-parallel degree.
    pub tensor_parallel: i32,
    /// Pipeline-parallel degree.
    pub pipeline_parallel: i32,
    /// Expert-parallel degree of a mixture-of-experts model: its experts spread whole over
    /// this many of the tensor- and attention data-parallel ranks, each sliced over the rest;
    /// absent when every expert is sliced by tensor parallelism.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_parallel: Option<i32>,
    /// Attention data-parallel ranks of a mixture-of-experts model, each running attention
    /// for its own requests on tensorParallel accelerators; absent when attention is split
    /// by tensor parallelism alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_data_parallel: Option<i32>,
    /// Weight precision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// Engine.
    pub engine: EngineType,
    /// Most requests one replica runs at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<i32>,
    /// Predicted metrics under the workload.
    pub predicted: PredictedMetrics,
}

impl Recommendation {
    /// The parallel layout, e.g. `TP1 DP8 EP8` ([`crate::common::parallel_layout`]).
    pub fn layout(&self) -> String {
        crate::common::parallel_layout(
            self.tensor_parallel,
            self.pipeline_parallel,
            self.attention_data_parallel,
            self.expert_parallel,
        )
    }
}

/// Candidates rejected for one reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RejectionCount {
    /// The reason, e.g. `DoesNotFitMemory`, `TtftTooHigh`, `NotEnoughAccelerators`.
    pub reason: String,
    /// Number of candidates rejected for it.
    pub count: i64,
    /// The first candidate rejected for it and why, e.g. `1 replica(s) of 8× h100_sxm (TP8
    /// PP1, bf16, vllm): invalid value for tp: 8 does not divide the 28 attention heads ...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
}
