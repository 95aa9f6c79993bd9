//! `Evaluation`: a benchmark of a deployed model through the gateway — a load profile
//! (latency and throughput percentiles, compared with the simulator's prediction) or an
//! accuracy dataset (a score).

use crate::common::{ConfigMapKeyRef, DNS_SUBDOMAIN_PATTERN, PredictedMetrics, SecretKeyRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A benchmark of a deployed model.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "bud.studio",
    version = "v1alpha1",
    kind = "Evaluation",
    namespaced,
    status = "EvaluationStatus",
    shortname = "ev",
    category = "bud",
    doc = "A benchmark of a deployed model through the gateway: a load profile recording TTFT/TPOT/throughput percentiles and their deviation from the simulator's prediction, or an accuracy dataset recording a score.",
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.target.modelDeployment"
    ),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "TTFT p50",
        type_ = "string",
        json_path = ".status.results.ttftMs.p50"
    ),
    printcolumn(
        name = "TPOT p50",
        type_ = "string",
        json_path = ".status.results.tpotMs.p50"
    ),
    printcolumn(name = "Score", type_ = "string", json_path = ".status.results.score"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("an Evaluation's spec is immutable; create a new Evaluation"))]
#[x_kube(validation = Rule::new("(self.type == 'Load') == has(self.load)").message("spec.load is required for type Load and not allowed otherwise").field_path(".load"))]
#[x_kube(validation = Rule::new("(self.type == 'Accuracy') == has(self.accuracy)").message("spec.accuracy is required for type Accuracy and not allowed otherwise").field_path(".accuracy"))]
pub struct EvaluationSpec {
    /// What to benchmark.
    pub target: EvaluationTarget,
    /// `Load` (latency and throughput) or `Accuracy` (a dataset score).
    #[serde(rename = "type")]
    pub type_: EvaluationType,
    /// The load to drive; for `type: Load`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadProfile>,
    /// The dataset to score; for `type: Accuracy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<AccuracyBenchmark>,
}

/// The deployed model to benchmark.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationTarget {
    /// ModelDeployment in this namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub model_deployment: String,
    /// Gateway base URL; the operator's configured gateway when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://.+"))]
    pub gateway_url: Option<String>,
    /// Secret key holding an API key for the gateway.
    pub api_key_secret_ref: SecretKeyRef,
}

/// Kinds of evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EvaluationType {
    Load,
    Accuracy,
}

/// A closed-loop load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadProfile {
    /// Prompt length in tokens.
    #[schemars(range(min = 1, max = 2_000_000))]
    pub input_tokens: i32,
    /// Completion length in tokens.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub output_tokens: i32,
    /// Concurrent requests.
    #[schemars(range(min = 1, max = 10_000))]
    pub concurrency: i32,
    /// Requests to send in all.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub requests: i32,
    /// Stream responses (measures TTFT and TPOT).
    #[serde(default = "yes")]
    pub stream: bool,
}

fn yes() -> bool {
    true
}

/// A dataset of prompts and expected answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccuracyBenchmark {
    /// JSON Lines of `{"prompt": ..., "expected": ...}` in a ConfigMap.
    pub dataset_ref: ConfigMapKeyRef,
    /// How an answer is scored.
    #[serde(default)]
    pub scoring: Scoring,
    /// Score at most this many samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000))]
    pub max_samples: Option<i32>,
}

/// Scoring rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Scoring {
    /// The answer, trimmed, equals the expected text.
    #[default]
    ExactMatch,
    /// The answer contains the expected text.
    Contains,
}

/// Results of an evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationStatus {
    /// `Succeeded` or `Failed` and the summary `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Measured results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<EvaluationResults>,
    /// The simulator's prediction for the deployment at this load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<PredictedMetrics>,
    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

/// Measured results (decimal strings).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationResults {
    /// Time to first token, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<Percentiles>,
    /// Time per output token, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpot_ms: Option<Percentiles>,
    /// End-to-end latency, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e_latency_ms: Option<Percentiles>,
    /// Output tokens per second over all requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens_per_second: Option<String>,
    /// Completed requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<String>,
    /// Failed requests over all requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<String>,
    /// Accuracy score in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<String>,
    /// Requests or samples measured.
    #[serde(default)]
    pub samples: i64,
    /// Measured TPOT p50 relative to the prediction, in percent (e.g. `"-4.2"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpot_deviation_percent: Option<String>,
    /// Measured TTFT p50 relative to the prediction, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_deviation_percent: Option<String>,
}

/// Percentiles of a measurement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    pub p50: String,
    pub p90: String,
    pub p99: String,
    pub mean: String,
}
